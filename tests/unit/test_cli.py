"""The rcs-ray command: analyze end to end, config printing, and bad input -> one line, exit 2, no traceback."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests.fixtures_data import pku_rows, plain_pairs, write_jsonl, write_parquet

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rcs(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "rcs_ray", *args], capture_output=True, text=True, cwd=cwd)


def assert_input_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_analyze_pku_schema(tmp_path):
    # 6 helpful pairs: in 4 the more helpful response is also the safer one.
    rows = pku_rows() + [
        {
            "prompt": f"q{i}",
            "response_0": f"a{i}",
            "response_1": f"b{i}",
            "better_response_id": i % 2,
            "safer_response_id": 0,
            "is_response_0_safe": True,
            "is_response_1_safe": False,
        }
        for i in range(3)
    ]
    data = write_parquet(tmp_path / "pku.parquet", rows)
    out = tmp_path / "report"
    proc = rcs("analyze", str(data), "--preset", "pku_saferlhf", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # pairs where the better response is also the safer: rows 2, 4 (i=0), 6 (i=2) -> 3 of 6
    assert "RC rate (strict on helpful, harmless): 50.0%" in proc.stdout
    assert "not RC on harmless: 50.0%" in proc.stdout
    result = json.loads((out / "rc_analysis.json").read_text())
    assert result["num_pairs"] == 6 and result["target"] == "helpful"
    assert math.isclose(result["conflict"][0][1], 0.5)
    assert (out / "rc_report.md").exists() and (out / "rc_analysis.png").stat().st_size > 1000


def test_analyze_generic_scores_with_target(tmp_path):
    data = write_jsonl(tmp_path / "pairs.jsonl", plain_pairs())
    proc = rcs("analyze", str(data), "--score-names", "safe,useful", "--target", "useful", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    # d = (+1,+.25) (+.25,+1) (+1,0): strict RC 2/3, not RC on safe: 0/3
    assert "RC rate (strict on safe, useful): 66.7%" in proc.stdout
    assert "not RC on safe: 0.0%" in proc.stdout


def test_config_command_prints_merged_config():
    proc = rcs("config", "configs/tiny/k2.yaml", "sampling.n=12")
    assert proc.returncode == 0, proc.stderr
    assert "'n': 12" in proc.stdout and "name: tiny-k2" in proc.stdout


@pytest.mark.parametrize(
    "case",
    [
        "malformed",
        "missing_column",
        "empty_prompt",
        "nan",
        "wrong_k",
        "preset",
        "missing_file",
        "no_scores",
        "unknown_target",
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    path = tmp_path / "d.jsonl"
    args = ["--score-names", "a,b"]
    good = {"prompt": "p", "chosen": "x", "rejected": "y", "chosen_scores": [1, 2], "rejected_scores": [0, 1]}
    if case == "malformed":
        path.write_text(json.dumps(good) + "\n" + '{"prompt": "p", "chosen": \n')
        needles = ["d.jsonl:2", "invalid JSON"]
    elif case == "missing_column":
        write_jsonl(path, [{"prompt": "p", "chosen": "x"}])
        needles = ["d.jsonl", "missing column 'rejected'"]
    elif case == "empty_prompt":
        write_jsonl(path, [good, dict(good, prompt="  ")])
        needles = ["d.jsonl:2", "prompt"]
    elif case == "nan":
        path.write_text(json.dumps(good) + "\n" + json.dumps(dict(good, chosen_scores=[1, float("nan")])) + "\n")
        needles = ["d.jsonl:2", "chosen_scores"]
    elif case == "wrong_k":
        write_jsonl(path, [good, dict(good, chosen_scores=[1, 2, 3])])
        needles = ["d.jsonl:2", "chosen_scores"]
    elif case == "preset":
        write_jsonl(path, [good])
        args = ["--preset", "hh_rlhf"]
        needles = ["hh_rlhf"]
    elif case == "missing_file":
        path = tmp_path / "nope.jsonl"
        needles = ["nope.jsonl"]
    elif case == "no_scores":
        write_jsonl(path, [{"prompt": "p", "chosen": "x", "rejected": "y"}])
        args = []
        needles = ["no per-objective scores"]
    else:
        write_jsonl(path, [good])
        args += ["--target", "c"]
        needles = ["target 'c'"]
    proc = rcs("analyze", str(path), *args, "--out", str(tmp_path / "out"))
    assert_input_error(proc, *needles)


def test_bad_config_exits_2():
    assert_input_error(rcs("config", "configs/tiny/k2.yaml", "train.lrr=3"), "train.lrr")
    assert_input_error(rcs("config", "configs/nope.yaml"), "config file not found")


def test_skip_mode_reports_counts(tmp_path):
    good = {"prompt": "p", "chosen": "x", "rejected": "y", "chosen_scores": [1, 2], "rejected_scores": [0, 1]}
    path = write_jsonl(tmp_path / "d.jsonl", [good, dict(good, prompt=""), dict(good, prompt="q")])
    proc = rcs("analyze", str(path), "--score-names", "a,b", "--on-bad-row", "skip", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "skipped rows: empty_prompt=1" in proc.stdout and "2 pairs" in proc.stdout


def test_sample_with_missing_model_path_exits_2(tmp_path):
    proc = rcs("sample", "configs/tiny/k2.yaml", f"policy.path={tmp_path / 'no-model'}", f"output_dir={tmp_path}")
    assert_input_error(proc, "policy.path", "no-model")
    proc = rcs("sample", "configs/tiny/k2.yaml", "--stage", "7")
    assert_input_error(proc, "--stage 7")


def test_overrides_go_anywhere_on_the_line():
    # an override after an option: parsed (the stage is then out of range, a one-line input error, not argparse's)
    proc = rcs("train", "configs/tiny/k2.yaml", "--stage", "9", "train.loss=modpo")
    assert_input_error(proc, "--stage 9 out of range")
    assert "unrecognized arguments" not in proc.stderr
    for argv in (
        ["configs/tiny/k2.yaml", "-v", "sampling.n=12", "train.loss=spo"],
        ["configs/tiny/k2.yaml", "sampling.n=12", "-v", "train.loss=spo"],
    ):
        proc = rcs("config", *argv)
        assert proc.returncode == 0, proc.stderr
        assert "'n': 12" in proc.stdout and "loss: spo" in proc.stdout
    proc = rcs("train", "configs/tiny/k2.yaml", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr
    proc = rcs("analyze", "x.jsonl", "a=b")  # a command without a config takes no overrides
    assert proc.returncode == 2 and "unrecognized arguments: a=b" in proc.stderr
