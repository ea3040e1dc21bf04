"""The RC core against hand-computed expectations, invariances, and bad input."""

import numpy as np
import pytest

from rcs_ray import rc, selection

pytestmark = pytest.mark.unit

# Four candidates, K = 2 (objective 0 = harmless, objective 1 = helpful).
#   c0: (1, 0)  c1: (0, 3)  c2: (2, 2)  c3: (1, 1)
R = [[1, 0], [0, 3], [2, 2], [1, 1]]


def test_is_consistent_hand_computed():
    assert rc.is_consistent([2, 2], [1, 1]) is True
    assert rc.is_consistent([2, 2], [2, 1]) is False  # tie on objective 0 is not RC
    assert rc.is_consistent([2, 2], [2, 1], enforce=[1]) is True
    assert rc.is_consistent([2, 2], [2, 1], margin=-0.5) is True  # negative margin tolerates the tie
    assert rc.is_consistent([3, 3], [2, 2], margin=1.0) is False  # needs a lead > 1
    assert rc.is_consistent([3, 3], [1, 1], margin=1.0) is True
    assert rc.is_consistent([0, 5], [1, 0], enforce=[]) is True  # nothing enforced


def test_select_pair_hand_computed():
    # target helpful, RC on both: admissible (w,l): (2,0) gap 2, (2,3) gap 1, (3,0) gap 1 -> (2,0).
    assert rc.select_pair(R, target=1) == (2, 0)
    # c1 has the biggest helpful lead over c0 (3) but loses on harmless: only with harmless not enforced.
    assert rc.select_pair(R, target=1, enforce=[1]) == (1, 0)
    # target harmless, RC on both: (2,0) gap 1 and (2,3) gap 1 tie; (2,1) loses helpful -> (2,0), row-major first
    assert rc.select_pair(R, target=0) == (2, 0)


def test_select_pair_none_when_no_rc_pair():
    # Perfect conflict: whoever is more helpful is less harmless.
    conflict = [[0, 3], [1, 2], [2, 1], [3, 0]]
    assert rc.select_pair(conflict, target=1) is None
    assert rc.failure_reason(conflict, target=1) == "no_rc_pair"
    assert rc.select_pair(conflict, target=1, enforce=[1]) == (0, 3)


def test_select_pair_margin_semantics():
    ties = [[1, 1], [1, 3], [1, 2]]
    # harmless ties everywhere: strict RC fails, margin -0.5 tolerates the ties.
    assert rc.select_pair(ties, target=1) is None
    assert rc.select_pair(ties, target=1, margin=-0.5) == (1, 0)
    # the target always needs a strict win, whatever the margin
    assert rc.select_pair([[1, 2], [0, 2]], target=1, margin=-5.0) is None
    assert rc.failure_reason([[1, 2], [0, 2]], target=1) == "tied_on_target"
    # a positive margin applies to the target too: a lead of exactly 1 is not > 1
    assert rc.select_pair([[2, 2], [0, 1]], target=1, margin=1.0) is None
    assert rc.select_pair([[3, 3], [0, 1]], target=1, margin=1.0) == (0, 1)


def test_select_pair_ties_go_to_lowest_row_major():
    # gaps: (0,2)=2 and (1,2)=2 tie -> (0,2) first in row-major order
    assert rc.select_pair([[5, 3], [5, 3], [1, 1]], target=1, enforce=[1]) == (0, 2)
    assert rc.select_pair([[5, 1], [6, 3], [7, 3], [1, 1]], target=1, enforce=[1]) == (1, 0)


def test_single_candidate_and_identical_candidates():
    assert rc.select_pair([[1.0, 2.0]], target=0) is None
    assert rc.failure_reason([[1.0, 2.0]], target=0) == "too_few_candidates"
    assert rc.select_pair([[1.0, 2.0]] * 4, target=0) is None
    assert rc.failure_reason([[1.0, 2.0]] * 4, target=0) == "tied_on_target"


@pytest.mark.parametrize("bad", [[[1.0, float("nan")], [0.0, 0.0]], [[1.0, float("inf")], [0.0, 0.0]]])
def test_non_finite_rewards_raise(bad):
    with pytest.raises(ValueError, match="non-finite"):
        rc.select_pair(bad, target=0)
    with pytest.raises(ValueError, match="non-finite"):
        rc.is_consistent(bad[0], bad[1])


def test_shape_and_index_errors():
    with pytest.raises(ValueError, match="2-D"):
        rc.select_pair([1.0, 2.0], target=0)
    with pytest.raises(ValueError, match="out of range"):
        rc.select_pair(R, target=2)
    with pytest.raises(ValueError, match="out of range"):
        rc.select_pair(R, target=0, enforce=[0, 5])
    with pytest.raises(ValueError, match="objectives"):
        rc.is_consistent([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="margin"):
        rc.select_pair(R, target=0, margin=float("nan"))
    with pytest.raises(ValueError, match="integer"):
        rc.select_pair(R, target=0.5)


def _random_groups(seed, n_groups=200, k=3, integer=True):
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        m = int(rng.integers(1, 12))
        g = rng.integers(-3, 4, size=(m, k)).astype(float) if integer else rng.normal(size=(m, k))
        groups.append(g)
    return groups


@pytest.mark.parametrize("seed", [0, 1])
def test_invariance_to_candidate_permutation(seed):
    rng = np.random.default_rng(seed)
    for g in _random_groups(seed, integer=False):  # continuous: no gap ties, so the pair is unique
        perm = rng.permutation(len(g))
        base = rc.select_pair(g, target=1)
        permuted = rc.select_pair(g[perm], target=1)
        if base is None:
            assert permuted is None
        else:
            assert (perm[permuted[0]], perm[permuted[1]]) == base


@pytest.mark.parametrize("seed", [2, 3])
def test_invariance_to_shift_and_positive_scale(seed):
    rng = np.random.default_rng(seed)
    for g in _random_groups(seed):
        # exact in floating point, so gap ties among integer rewards stay ties
        shifted = g + rng.integers(-50, 50, size=g.shape[1])  # a constant per objective
        scaled = g * 2.0 ** rng.integers(-4, 5, size=g.shape[1])  # a positive factor per objective
        for target in range(g.shape[1]):
            base = rc.select_pair(g, target)
            assert rc.select_pair(shifted, target) == base
            assert rc.select_pair(scaled, target) == base


def test_selected_pair_is_consistent_and_maximal():
    for g in _random_groups(4):
        pair = rc.select_pair(g, target=2, enforce=[0, 1], margin=-0.5)
        mask = rc.rc_mask(g, 2, [0, 1], -0.5)
        if pair is None:
            assert not mask.any()
            continue
        w, l = pair
        assert rc.is_consistent(g[w], g[l], enforce=[0, 1], margin=-0.5)
        assert g[w, 2] > g[l, 2]
        gaps = (g[:, None, 2] - g[None, :, 2])[mask]
        assert g[w, 2] - g[l, 2] == gaps.max()


@pytest.mark.parametrize("margin", [0.0, -0.5, 0.7])
def test_batch_form_equals_single(margin):
    groups = _random_groups(5, n_groups=300)
    for target, enforce in [(0, None), (1, [0]), (2, [0, 1]), (2, [])]:
        batch = rc.select_pairs(groups, target, enforce, margin)
        single = [rc.select_pair(g, target, enforce, margin) for g in groups]
        assert [None if w < 0 else (w, l) for w, l in batch.tolist()] == single


def test_batch_form_chunks(monkeypatch):
    monkeypatch.setattr(rc, "_CHUNK_ELEMENTS", 50)  # force many chunks
    groups = _random_groups(6, n_groups=50)
    batch = rc.select_pairs(groups, 1)
    assert [None if w < 0 else (w, l) for w, l in batch.tolist()] == [rc.select_pair(g, 1) for g in groups]


def test_batch_form_errors():
    assert rc.select_pairs([], 0).shape == (0, 2)
    with pytest.raises(ValueError, match="group 1"):
        rc.select_pairs([[[1, 2]], [[1, 2, 3]]], 0)
    with pytest.raises(ValueError, match="group 0: non-finite"):
        rc.select_pairs([[[1, float("nan")]]], 0)


SOURCES = ["original_chosen", "original_rejected", "sampled", "sampled"]
# original pair (0 over 1) wins helpful but loses harmless: not RC.
G = [[0, 3], [1, 1], [2, 2], [1, 0]]


def test_strategies_hand_computed():
    kw = dict(enforce=[0], sources=SOURCES)
    assert selection.STRATEGIES["rcs"](G, 1, **kw) == (2, 3)  # RC pairs: (2,1) gap 1, (2,3) gap 2
    assert selection.STRATEGIES["target_only"](G, 1, **kw) == (0, 3)  # gap 3, ignoring harmless
    assert selection.STRATEGIES["original"](G, 1, **kw) == (0, 1)
    assert selection.STRATEGIES["filter_only"](G, 1, **kw) is None  # the original pair is not RC
    assert selection.STRATEGIES["filter_only"](G, 1, sources=SOURCES, enforce=[]) == (0, 1)
    assert selection.STRATEGIES["weighted"](G, 1, weights=[1.0, 1.0]) == (2, 3)  # sums 3,2,4,1
    assert selection.STRATEGIES["weighted"]([[1, 1], [1, 1]], 1) is None
    assert selection.STRATEGIES["original"](G, 1, sources=["sampled"] * 4) is None


def test_rc_random_draws_only_rc_pairs_and_is_seeded():
    admissible = {tuple(p) for p in np.argwhere(rc.rc_mask(G, 1, [0]))}
    draws = {selection.STRATEGIES["rc_random"](G, 1, enforce=[0], rng=np.random.default_rng(s)) for s in range(50)}
    assert draws == admissible
    again = selection.STRATEGIES["rc_random"](G, 1, enforce=[0], rng=np.random.default_rng(7))
    assert again == selection.STRATEGIES["rc_random"](G, 1, enforce=[0], rng=np.random.default_rng(7))


def test_strategy_registry_errors():
    assert set(selection.STRATEGIES) == {
        "rcs",
        "rc_random",
        "target_only",
        "weighted",
        "rs_dpo",
        "original",
        "filter_only",
    }
    with pytest.raises(ValueError, match="unknown selection strategy 'best'"):
        selection.get_strategy("best")
    with pytest.raises(ValueError, match="sources"):
        selection.STRATEGIES["original"](G, 1)
    with pytest.raises(ValueError, match="weights"):
        selection.STRATEGIES["weighted"](G, 1, weights=[1.0])
