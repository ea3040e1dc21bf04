"""The pure core imports no Ray, vLLM or DeepSpeed (and no torch): checked in a fresh interpreter."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

HEAVY = ["ray", "vllm", "deepspeed", "torch"]


def _imported_after(modules):
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_modules_are_pure():
    core = [
        "rcs_ray.rc",
        "rcs_ray.config",
        "rcs_ray.data",
        "rcs_ray.data.readers",
        "rcs_ray.data.presets",
        "rcs_ray.data.pairs",
        "rcs_ray.analysis",
        "rcs_ray.errors",
        "rcs_ray.tinyworld.rewards",
        "rcs_ray.registry",
        "rcs_ray.prompting",
        "rcs_ray.run_layout",
        "rcs_ray.modeling",
    ]
    assert _imported_after(core) == []


def test_cli_starts_without_heavy_imports():
    assert _imported_after(["rcs_ray.cli", "rcs_ray.report"]) == []


def test_losses_and_package_entries_import_no_ray_vllm_deepspeed():
    mods = [
        "rcs_ray.train",
        "rcs_ray.train.losses",
        "rcs_ray.modeling.logprobs",
        "rcs_ray.sampling",
        "rcs_ray.sampling.job",
        "rcs_ray.train.margins",
        "rcs_ray.user_paths",
    ]
    assert [m for m in _imported_after(mods) if m != "torch"] == []
