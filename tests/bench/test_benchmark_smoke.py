"""Benchmarks that cannot rot: every script under benchmarks/ runs here as a user runs it (``python benchmarks/X.py``,
a subprocess), at tiny sizes, and must finish and write its report. A script whose interface or code drifts from the
package fails here, not in front of the next person who runs it.

Covered elsewhere: ``interrupt_stress.py`` (tests/ray/test_interrupt_stress.py, its --smoke run) and ``gpu_check.py``
(tests/unit/test_gpu_check.py, its CPU run). Helper modules (sim, *_report, gpu_check_tasks, dpo_step_trl) run inside
the scripts that import them; test_every_script_is_covered keeps this list complete.
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.bench]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(REPO, "benchmarks")
HELPERS = {
    "sim",
    "scale_sim_report",
    "scale_sim_probe",
    "tinyworld_findings_report",
    "tinyworld_findings_world",
    "tinyworld_findings_methods",
    "gradient_conflict_gradients",
    "gradient_conflict_report",
    "gpu_check_tasks",
    "gpu_check_plan",
    "gpu_check_train",
    "gpu_check_vllm",
    "dpo_step_trl",
    "dpo_step_variants",
    "sim_rm",
    "workflow_sim_probe",
    "workflow_sim_report",
}
ELSEWHERE = {"interrupt_stress", "gpu_check"}
TINY = "tinyworld.cache_dir=" + os.path.join(REPO, ".cache", "tinyworld")


def smoke(script: str, *args: str, timeout: int = 420) -> str:
    env = dict(os.environ, PYTHONPATH=REPO, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), *args],
        cwd=REPO,
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout


def read(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# script -> (arguments, the report files it must write), with {tmp} and {policy} filled in
CASES = {
    "rc_select": (["--groups", "64", "--m", "4", "--k", "2", "--out", "{tmp}/rc_select.json"], ["rc_select.json"]),
    "dpo_step": (
        [
            "--pairs",
            "8",
            "--batch",
            "4",
            "--steps",
            "5",
            "--max-length",
            "32",
            "--no-trl",
            "--out",
            "{tmp}/dpo_step.json",
        ],
        ["dpo_step.json"],
    ),
    "gradient_conflict": (
        [
            "--policy",
            "{policy}",
            "--per-set",
            "4",
            "--pg-prompts",
            "4",
            "--pg-n",
            "2",
            "--d1-pairs",
            "8",
            "--out",
            "{tmp}",
            "--work",
            "{tmp}/work",
        ],
        ["gradient_conflict.json", "gradient_conflict.md", "gradient_conflict.png"],
    ),
    "pipeline_throughput": (
        [
            "--engines",
            "hf",
            "--prompts",
            "16",
            "--out",
            "{tmp}",
            TINY,
            "ray.num_cpus=2",
            "ray.object_store_memory_mb=256",
        ],
        ["pipeline_throughput.json", "pipeline_throughput.md"],
    ),
    "sampling_budget_sweep": (
        ["--ns", "4", "--adaptive-start", "2", "--ks", "2", "--rules", "strict", "--prompts", "8", "--out", "{tmp}"],
        ["sweep.json", "sweep.csv", "sweep.png"],
    ),
    "scale_sim": (
        [
            "--actors",
            "1,2",
            "--batches-per-actor",
            "1",
            "--batch-size",
            "4",
            "--n",
            "2",
            "--max-tokens",
            "8",
            "--object-store-mb",
            "256",
            "--out",
            "{tmp}",
        ],
        ["scale_sim.json", "scale_sim.csv", "scale_sim.png"],
    ),
    "train_memory": (
        [
            "--workers",
            "1",
            "--zero",
            "2",
            "--modes",
            "full",
            "--hidden",
            "64",
            "--layers",
            "1",
            "--mlp",
            "128",
            "--steps",
            "1",
            "--out",
            "{tmp}",
        ],
        ["train_memory.json", "train_memory.md"],
    ),
    "tinyworld_findings": (
        [
            "--seeds",
            "0",
            "--methods",
            "rs_dpo",
            "--losses",
            "dpo",
            "--limit",
            "16",
            "--eval-prompts",
            "8",
            "--eval-n",
            "1",
            "--out",
            "{tmp}",
            "--work",
            "{tmp}/work",
            TINY,
            "stages.0.train.max_steps=2",
            "train.max_steps=2",
            "train.batch_size=8",
            "train.num_workers=1",
            "sampling.n=4",
        ],
        ["findings.json", "findings.md"],
    ),
    "reference_pass": (
        ["--repeats", "1", "--pairs", "32", "--steps", "1", "--batch", "8", "--out", "{tmp}"],
        ["reference_pass.json", "reference_pass.md"],
    ),
    "workflow_sim": (
        ["--smoke", "--label", "smoke", "--out", "{tmp}"],
        ["workflow_sim_smoke.json", "workflow_sim_smoke.md"],
    ),
}
TIMEOUTS = {"workflow_sim": 600}  # two real training steps and a pool start-up per round: minutes on 2 cores


def test_every_script_is_covered():
    scripts = {f[:-3] for f in os.listdir(BENCH) if f.endswith(".py") and not f.startswith("_")}
    assert scripts - HELPERS - ELSEWHERE == set(CASES)


@pytest.mark.parametrize("script", sorted(CASES))
def test_the_script_runs_and_writes_its_report(script, tiny_world, tmp_path):
    args, files = CASES[script]
    args = [a.format(tmp=tmp_path, policy=tiny_world.policy) for a in args]
    out = smoke(f"{script}.py", *args, timeout=TIMEOUTS.get(script, 420))
    for name in files:
        assert (tmp_path / name).stat().st_size > 0, f"{script} wrote no {name}:\n{out[-2000:]}"
    if script == "gradient_conflict":  # Lemma 1 per pair: an RC pair's step never undoes its own
        sets = read(tmp_path / "gradient_conflict.json")["results"]["D2 (original pairs)"]  # stage-1 preference
        assert sets["RC"]["own_stage1"]["share_nonpositive_dpo"] == 1.0
        assert sets["non-RC"]["own_stage1"]["share_nonpositive_modpo"] == 0.0
        assert sets["tie"]["own_stage1"] == {}
    if script == "tinyworld_findings":  # the rows, and a report that re-renders from its json
        data = read(tmp_path / "findings.json")
        assert {r["method"] for r in data["rows"]} >= {"base", "stage1", "rs_dpo"}
        shutil.copy(tmp_path / "findings.md", tmp_path / "first.md")
        smoke("tinyworld_findings.py", "--report-only", "--out", str(tmp_path))
        assert (tmp_path / "findings.md").read_text() == (tmp_path / "first.md").read_text()
    if script == "reference_pass":  # both ways give the same reference: step 1 of DPO is ln 2 in each
        data = read(tmp_path / "reference_pass.json")
        assert data["auto"]["how"] == ["training workers"] and data["separate"]["how"] == ["separate"]
        assert data["max_abs_ref_diff"] < 1e-4
        for mode in ("auto", "separate"):
            assert data[mode]["step1_loss"][0] == pytest.approx(math.log(2), abs=1e-5)
    if script == "workflow_sim":  # every pool's loads counted, per round and eval pass; the report re-renders
        data = read(tmp_path / "workflow_sim_smoke.json")
        assert {"generate", "rm:rm_a", "rm:rm_b"} == set(data["loads_by_pool"])  # --smoke: K = 2
        rounds = [w for w in data["windows"] if w["kind"] == "round"]
        assert len(rounds) >= 2 and rounds[0]["loads"]["generate"]["count"] >= 1
        assert any(w["kind"] == "eval" for w in data["windows"]) and 0 < data["startup_share"] < 1
        shutil.copy(tmp_path / "workflow_sim_smoke.md", tmp_path / "first.md")
        smoke("workflow_sim.py", "--report-only", "--label", "smoke", "--out", str(tmp_path))
        assert (tmp_path / "workflow_sim_smoke.md").read_text() == (tmp_path / "first.md").read_text()
        smoke("workflow_sim.py", "--report-only", "--label", "smoke", "--against", "smoke", "--out", str(tmp_path))
        assert "## Against smoke" in (tmp_path / "workflow_sim_smoke.md").read_text()
