"""Fixtures shared by the Ray tests."""

import pytest

from tests.ray.train_assets import build_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random Llama policy with its tokenizer, pairs and stage-1 data (tests/ray/train_assets.py)."""
    return build_assets(tmp_path_factory.mktemp("train_assets"))
