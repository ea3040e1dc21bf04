"""benchmarks/gpu_check.py, the GPU acceptance check, is ready to run where a GPU is lent: it imports, ``--plan``
lists every check and loads what they use without CUDA, and a real run on a machine without CUDA skips the CUDA
checks with the reason "no CUDA" (not failed) and writes a valid report."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")
CHECKS = ["environment", "tiny_world", "vllm_engine", "zero2_bf16", "zero3_bf16_export", "pytest_gpu", "pipeline_vllm"]


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod  # its dataclass needs the module registered
    spec.loader.exec_module(mod)
    return mod


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def test_the_script_imports_and_names_its_checks_in_order():
    mod = load()
    assert list(mod.NAMES) == CHECKS
    assert all(c.timeout_s > 0 and c.what for c in mod.CHECKS)
    # the config overrides every check uses name real keys (the config loads with them, on any machine)
    from rcs_ray.config import load_config

    tasks = sys.modules["gpu_check_tasks"]
    for name in CHECKS:
        cfg = load_config(os.path.join(REPO, tasks.CONFIG), tasks.overrides(name, "cuda", "/tmp/w", "/tmp/x"))
        assert cfg.tinyworld.cache_dir == "/tmp/w"
    cfg = load_config(os.path.join(REPO, tasks.CONFIG), tasks.overrides("zero3_bf16_export", "cuda", "/w", "/x"))
    assert (cfg.train.zero_stage, cfg.train.precision, cfg.train.use_gpu) == (3, "bf16", True)
    assert cfg.stages[0].train.max_steps == 3


def test_skip_reasons_name_what_is_missing():
    mod = load()
    check = mod.Check("x", 10, "x", modules=("surely_not_a_module_rcs",), cuda=True)
    assert mod.skip_reason(check, cuda=False, allow_cpu=False) == "no CUDA; surely_not_a_module_rcs not installed"
    assert mod.skip_reason(mod.Check("y", 10, "y", cuda=True), cuda=True, allow_cpu=False) is None


def test_plan_lists_every_check_and_loads_what_they_use():
    proc = subprocess.run([sys.executable, SCRIPT, "--plan"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    positions = [out.index(f". {name}") for name in CHECKS]
    assert positions == sorted(positions), out
    assert "plan: ok" in out and "PROBLEM" not in out
    assert "test_large_policies.py::test_cuda_only_paths_train_on_a_gpu" in out


@pytest.mark.skipif(has_cuda(), reason="this machine has CUDA: the checks would run for real")
def test_a_run_without_cuda_skips_the_cuda_checks_and_writes_a_report(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--out", str(out), "--budget-s", "120"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert list(checks) == CHECKS
    env = checks["environment"]
    assert env["status"] == "passed" and env["numbers"]["cuda_available"] is False
    assert "torch" in env["numbers"]["versions"]
    for name in ("vllm_engine", "zero2_bf16", "zero3_bf16_export", "pytest_gpu", "pipeline_vllm"):
        assert checks[name]["status"] == "skipped" and "no CUDA" in checks[name]["reason"], checks[name]
    assert checks["tiny_world"]["status"] == "skipped"  # nothing that runs needs it
    assert report["failed"] == [] and report["verdict"].startswith("passed")
    md = (out / "gpu_check.md").read_text()
    assert all(f"| {name} |" in md for name in CHECKS)
    assert (out / "gpu_check.log").exists()
