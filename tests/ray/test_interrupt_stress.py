"""The interrupt stress check's short version (benchmarks/interrupt_stress.py --smoke): a signal at a random offset
in the first 20 s of a two-stage `rcs-ray run` exits 130 / 143 within 15 s naming its phase, leaves no Ray process,
and the rerun finishes. The full check (signals with and without a CPU hog) is reported in docs/operations.md."""

import json

import pytest

from benchmarks import interrupt_stress

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_the_stress_check_smoke_run(tiny_world, tmp_path):
    code = interrupt_stress.main(["--smoke", "--seed", "1", "--out", str(tmp_path), "--work", str(tmp_path)])
    report = json.loads((tmp_path / "interrupt_stress.json").read_text())
    (row,) = report["trials"]
    assert code == 0 and row["ok"], row.get("tail")
    assert row["exit"] == {"SIGINT": 130, "SIGTERM": 143}[row["signal"]] and row["rerun_exit"] == 0
    assert (tmp_path / "interrupt_stress.md").read_text().startswith("# Interrupt stress check")
