"""The one padding helper (rcs_ray.modeling.padding): the pad id never occurs in the batch and stays inside the
embedding; right padding writes the mask and labels."""

import pytest
import torch

from rcs_ray.modeling.padding import IGNORE_INDEX, free_pad_id, right_pad

pytestmark = [pytest.mark.unit]


def test_the_preferred_id_is_taken_only_when_no_row_contains_it():
    rows = [[5, 1, 2, 9], [3, 9]]
    assert free_pad_id(rows, vocab_size=10, prefer=(7,)) == 7
    assert free_pad_id(rows, vocab_size=10, prefer=(9, None)) == 0  # 9 (say, the EOS) is text here
    assert free_pad_id([[0, 1, 2]], vocab_size=10, prefer=(12,)) == 3  # out of the embedding: not taken


def test_without_a_vocab_size_the_id_stays_below_the_largest_id_in_use():
    assert free_pad_id([torch.tensor([0, 1, 3])], prefer=(1,)) == 2
    with pytest.raises(ValueError, match="no token id below 3 is free"):
        free_pad_id([[0, 1, 2, 3]], vocab_size=None)
    with pytest.raises(ValueError, match="no token id below 3 is free"):
        free_pad_id([[0, 1], [2]], vocab_size=3)


def test_right_pad_writes_mask_and_labels():
    out = right_pad([[4, 5, 6], [7]], 0, width=4, labels=[[IGNORE_INDEX, 5, 6], [7]])
    assert out["input_ids"].tolist() == [[4, 5, 6, 0], [7, 0, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert out["labels"].tolist() == [[IGNORE_INDEX, 5, 6, IGNORE_INDEX], [7] + [IGNORE_INDEX] * 3]
