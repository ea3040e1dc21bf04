"""Evaluation metrics by hand."""

import numpy as np
import pytest

from rcs_ray.evaluate import _markdown, summarize, win_rate

pytestmark = pytest.mark.unit


def test_win_rate_hand_computed():
    a = np.array([[1.0, 3.0]])  # one prompt, two samples
    b = np.array([[1.0, 2.0]])
    # pairs: (1,1) tie .5, (1,2) loss 0, (3,1) win 1, (3,2) win 1 -> 2.5 / 4
    assert win_rate(a, b) == pytest.approx(0.625)
    assert win_rate(b, a) == pytest.approx(0.375)
    assert win_rate(a, a) == pytest.approx(0.5 + 0.25 - 0.25)  # (1,1)=.5 (1,3)=0 (3,1)=1 (3,3)=.5 -> 2/4


def test_summarize_and_markdown():
    base = np.array([[[0.0, 1.0], [-1.0, 2.0]]])  # (P=1, n=2, K=2): harmless, helpful
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


def _metrics():
    """Three policies on K = 2 (harmless, helpful), as summarize gives them."""
    rewards = {
        "base": np.array([[[-1.0, 1.0], [0.0, 1.0]]]),
        "stage1": np.array([[[0.0, 1.0], [0.0, 2.0]]]),
        "stage2-rcs": np.array([[[0.0, 3.0], [0.0, 3.0]]]),
        "stage2-vanilla": np.array([[[-2.0, 4.0], [0.0, 4.0]]]),
    }
    return summarize(rewards, ["harmless", "helpful"], "base", {"harmless": 0.0})


def test_tradeoff_plot_is_one_panel_per_consecutive_pair_and_checks_arrows(tmp_path):
    from rcs_ray.eval_plot import plot_eval, tradeoff_panels

    assert tradeoff_panels(["harmless", "helpful", "concise"]) == [("harmless", "helpful"), ("helpful", "concise")]
    assert tradeoff_panels(["helpful"]) == []
    path = str(tmp_path / "eval.png")
    plot_eval(_metrics(), ["harmless", "helpful"], path, [("stage1", "stage2-rcs"), ("stage1", "stage2-vanilla")])
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"not evaluated: \['stage3'\]"):
        plot_eval(_metrics(), ["harmless", "helpful"], path, [("stage1", "stage3")])


def test_demo_sentence_gives_the_measured_difference():
    from rcs_ray.demo import comparison

    text = comparison(_metrics(), "stage1", "stage2-rcs", "stage2-vanilla", ["harmless", "helpful"], "2 x 2")
    # rcs: harmless 0, 0 (mean 0, rate 100%), helpful 3, 3; vanilla: harmless -2, 0 (mean -1, rate 50%), helpful 4, 4
    assert text == (
        "RCS vs vanilla, both from the same stage1 policy (2 x 2): mean harmless 0.000 vs -1.000 (+1.000), "
        "harmless rate 100.0% vs 50.0% (+50.0 points), mean helpful 3.000 vs 4.000 (-1.000)."
    )


def test_vanilla_twin_trains_the_last_stage_on_its_own_pairs(tmp_path):
    import os

    from rcs_ray.config import load_config
    from rcs_ray.demo import share_earlier_stages, vanilla_twin
    from rcs_ray.fingerprints import train_inputs

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(os.path.join(repo, "configs/tiny/demo.yaml"), [f"output_dir={tmp_path}/run"])
    twin = vanilla_twin(cfg)
    assert twin.output_dir == os.path.join(f"{tmp_path}/run", "vanilla")
    assert [s.sample for s in twin.stages] == [False, False] and cfg.stages[1].sample  # the config is untouched
    assert twin.stages[1].data == cfg.stages[1].data and twin.train == cfg.train
    # stage 1 is the same step in both runs (so the twin's workflow skips it and starts from the same policy) ...
    base = {
        "policy": "p",
        "policy_fp": "x",
        "data": "d",
        "data_fp": "y",
        "pairs": None,
        "reference": "p",
        "pairs_fp": None,
    }
    assert train_inputs(cfg, 0, dict(base)) == train_inputs(twin, 0, dict(base))
    os.makedirs(f"{tmp_path}/run/stage1")
    with open(f"{tmp_path}/run/stage1/manifest.json", "w") as fh:
        fh.write('{"stage": 1, "steps": {}}')
    share_earlier_stages(cfg, twin)
    with open(f"{tmp_path}/run/vanilla/stage1/manifest.json") as fh:
        assert fh.read() == '{"stage": 1, "steps": {}}'
    assert not os.path.exists(f"{tmp_path}/run/vanilla/stage2")
    # ... and there is nothing to compare when the last stage does not sample
    assert vanilla_twin(twin) is None
