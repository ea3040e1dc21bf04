"""RC analysis against hand-computed numbers; report files."""

import json
import math

import pytest

from rcs_ray.analysis import analyze_pairs, analyze_rows
from rcs_ray.errors import RcsInputError
from rcs_ray.report import rc_markdown, write_rc_report

pytestmark = pytest.mark.unit

# Five helpfulness pairs (objectives: harmless, helpful); chosen always wins on helpful.
#   d = chosen - rejected:  (+1,+2) (-1,+1) (0,+3) (-2,+1) (+1,+1)
CHOSEN = [[1, 3], [0, 2], [1, 4], [0, 2], [2, 2]]
REJECTED = [[0, 1], [1, 1], [1, 1], [2, 1], [1, 1]]


def test_hand_computed_rates():
    a = analyze_pairs(CHOSEN, REJECTED, ["harmless", "helpful"], target="helpful")
    assert a.num_pairs == 5
    assert a.rc_rate == pytest.approx(2 / 5)  # pairs 1 and 5 win on both
    assert a.rc_rate_ties == pytest.approx(3 / 5)  # + pair 3 (tie on harmless)
    assert a.per_objective["harmless"] == pytest.approx({"win": 0.4, "tie": 0.2, "loss": 0.4})
    assert a.per_objective["helpful"] == pytest.approx({"win": 1.0, "tie": 0.0, "loss": 0.0})
    assert a.not_rc_on == {"harmless": pytest.approx({"strict": 0.6, "ties_allowed": 0.4})}
    # P(win helpful | win harmless) = 1; P(win harmless | win helpful) = 2/5
    assert a.rc_given[0][1] == pytest.approx(1.0)
    assert a.rc_given[1][0] == pytest.approx(0.4)
    assert a.rc_given[0][0] == a.rc_given[1][1] == 1.0
    assert a.conflict[0][1] == a.conflict[1][0] == pytest.approx(0.4)
    assert a.conflict[0][0] == 0.0


def test_enforce_subset_and_no_target():
    a = analyze_pairs(CHOSEN, REJECTED, ["harmless", "helpful"], enforce=["helpful"])
    assert a.rc_rate == 1.0
    assert a.not_rc_on == {}
    b = analyze_pairs(CHOSEN, REJECTED, ["harmless", "helpful"])
    # no target: ties allowed means no loss anywhere and a win somewhere -> pairs 1, 3, 5
    assert b.rc_rate_ties == pytest.approx(3 / 5)


def test_nan_conditional_when_never_preferred():
    a = analyze_pairs([[0, 1]], [[1, 0]], ["a", "b"])
    assert a.rc_given[1][0] == 0.0
    assert a.rc_given[0][0] is None and a.rc_given[0][1] is None  # no pair wins on a


def test_errors():
    with pytest.raises(RcsInputError, match="scores must be"):
        analyze_pairs([[1, 2]], [[1, 2, 3]], ["a", "b"])
    with pytest.raises(RcsInputError, match="non-finite score in pair 2"):
        analyze_pairs([[1, 2], [math.nan, 1]], [[0, 0], [0, 0]], ["a", "b"])
    with pytest.raises(RcsInputError, match="target 'c' is not an objective"):
        analyze_pairs(CHOSEN, REJECTED, ["a", "b"], target="c")
    with pytest.raises(RcsInputError, match="no per-objective scores"):
        analyze_rows([{"chosen": "x", "rejected": "y"}], [], source="f.jsonl")
    with pytest.raises(RcsInputError, match="no preference pairs"):
        analyze_rows([], ["a"], source="f.jsonl")


def test_report_files(tmp_path):
    a = analyze_pairs(CHOSEN, REJECTED, ["harmless", "helpful"], target="helpful")
    paths = write_rc_report(a, str(tmp_path / "rep"), title="t", source="x.jsonl")
    data = json.loads(open(paths.json).read())
    assert data["rc_rate"] == pytest.approx(0.4) and data["source"] == "x.jsonl"
    md = open(paths.markdown).read()
    assert "**RC rate**" in md and "**40.0%**" in md and "not RC on harmless**: 60.0%" in md
    with open(paths.plot, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert rc_markdown(a).count("| harmless |") == 5  # 3 table rows + 2 matrix headers
