"""How the training workers split the reference forwards (rcs_ray/train/worker_refs.py): every pair once, and the
same number of forwards on every rank, which ZeRO-3 needs (each forward gathers every layer from every rank)."""

import numpy as np
import pytest

from rcs_ray.train.worker_refs import forward_rows

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("n, world, size", [(64, 2, 4), (9, 2, 4), (10, 4, 2), (7, 3, 8), (5, 1, 2), (3, 3, 1)])
def test_every_pair_once_and_as_many_forwards_on_every_rank(n, world, size):
    plans = [forward_rows(n, world, rank, size) for rank in range(world)]
    assert len({len(p) for p in plans}) == 1
    rows = np.concatenate([r for p in plans for r in p])
    assert sorted(rows.tolist()) == list(range(n))
    assert all(len(r) <= size for p in plans for r in p)


def test_a_rank_that_runs_out_gets_an_empty_forward():
    # 9 pairs on 2 ranks, 4 per forward: rank 0 holds 5 (two forwards), rank 1 holds 4 (one, then an empty one)
    assert [r.tolist() for r in forward_rows(9, 2, 0, 4)] == [[0, 1, 2, 3], [4]]
    assert [r.tolist() for r in forward_rows(9, 2, 1, 4)] == [[5, 6, 7, 8], []]
