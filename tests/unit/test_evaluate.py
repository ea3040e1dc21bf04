"""Evaluation metrics by hand."""

import numpy as np
import pytest

from rcs_ray.evaluate import _markdown, summarize, win_rate

pytestmark = pytest.mark.unit


def test_win_rate_hand_computed():
    a = np.array([[1.0, 3.0]])            # one prompt, two samples
    b = np.array([[1.0, 2.0]])
    # pairs: (1,1) tie .5, (1,2) loss 0, (3,1) win 1, (3,2) win 1 -> 2.5 / 4
    assert win_rate(a, b) == pytest.approx(0.625)
    assert win_rate(b, a) == pytest.approx(0.375)
    assert win_rate(a, a) == pytest.approx(0.5 + 0.25 - 0.25)   # (1,1)=.5 (1,3)=0 (3,1)=1 (3,3)=.5 -> 2/4


def test_summarize_and_markdown():
    base = np.array([[[0.0, 1.0], [-1.0, 2.0]]])      # (P=1, n=2, K=2): harmless, helpful
    tuned = np.array([[[0.0, 3.0], [0.0, 2.0]]])
    m = summarize({"base": base, "tuned": tuned}, ["harmless", "helpful"], "base", {"harmless": 0.0})
    assert m["base"]["mean"] == {"harmless": -0.5, "helpful": 1.5}
    assert m["tuned"]["rate"] == {"harmless>=0": 1.0} and m["base"]["rate"] == {"harmless>=0": 0.5}
    # harmless: tuned (0,0) vs base (0,-1): (0,0)=.5 (0,-1)=1 twice -> 3/4
    assert m["tuned"]["win_rate_vs_base"]["harmless"] == pytest.approx(0.75)
    assert "win_rate_vs_base" not in m["base"]
    md = _markdown(m, ["harmless", "helpful"], "base", {"prompts": 1, "n": 2})
    assert "| tuned | 0.000 | 2.500 | 100.0% | 75.0% |" in md


def test_markdown_table_is_well_formed():
    m = summarize({"base": np.zeros((1, 2, 2)), "x": np.ones((1, 2, 2))}, ["a", "b"], "base", {"a": 0.0})
    lines = [ln for ln in _markdown(m, ["a", "b"], "base", {"prompts": 1, "n": 2}).splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in lines}) == 1 and set(lines[1]) <= set("|-")
