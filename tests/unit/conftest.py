"""Fixtures shared by the unit tests."""

import pytest

from tests.wordtok import word_tokenizer


@pytest.fixture(scope="module")
def tok():
    """The word-level tokenizer of tests/wordtok.py (every token id known)."""
    return word_tokenizer()
