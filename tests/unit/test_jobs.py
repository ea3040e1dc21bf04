"""jobs/*.py, the `ray job submit` entrypoints: --help works without Ray, and ray.address=auto is added by default."""

import glob
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JOBS = os.path.join(REPO, "jobs")
ENTRYPOINTS = sorted(p for p in glob.glob(os.path.join(JOBS, "*.py")) if not os.path.basename(p).startswith("_"))

sys.path.insert(0, JOBS)
import _common  # noqa: E402
import sweep  # noqa: E402


def test_the_entrypoints_exist():
    assert {os.path.basename(p) for p in ENTRYPOINTS} == {"sample.py", "train.py", "run.py", "sweep.py"}


@pytest.mark.parametrize("path", ENTRYPOINTS, ids=os.path.basename)
def test_help_works_in_a_subprocess(path, tmp_path):
    # From another directory: the job puts the repository on sys.path itself.
    proc = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path", [p for p in ENTRYPOINTS if not p.endswith("sweep.py")], ids=os.path.basename)
def test_missing_config_is_a_usage_error_not_a_ray_start(path, tmp_path):
    proc = subprocess.run([sys.executable, path], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "config" in proc.stderr


def test_with_cluster_address():
    assert _common.with_cluster_address([]) == ["ray.address=auto"]
    assert _common.with_cluster_address(["sampling.n=4"]) == ["sampling.n=4", "ray.address=auto"]
    assert _common.with_cluster_address(["ray.address=null"]) == ["ray.address=null"]
    assert _common.with_cluster_address([" ray.address =10.0.0.1:6379"]) == [" ray.address =10.0.0.1:6379"]
    # another ray.* key is not an address
    assert _common.with_cluster_address(["ray.num_cpus=4"]) == ["ray.num_cpus=4", "ray.address=auto"]


def test_cli_argv_adds_auto_and_keeps_the_users_order():
    assert _common.cli_argv("run", ["configs/tiny/k2.yaml", "sampling.n=4", "--no-progress"]) == [
        "run",
        "configs/tiny/k2.yaml",
        "sampling.n=4",
        "--no-progress",
        "ray.address=auto",
    ]
    # options before / between overrides, values of value-taking options stay with them
    assert _common.cli_argv("train", ["-v", "c.yaml", "--stage", "2", "a=1", "--out=o", "--policy", "p=q"]) == [
        "train",
        "-v",
        "c.yaml",
        "--stage",
        "2",
        "a=1",
        "--out=o",
        "--policy",
        "p=q",
        "ray.address=auto",
    ]
    # the user's ray.address wins
    assert _common.cli_argv("sample", ["c.yaml", "ray.address=null"]) == ["sample", "c.yaml", "ray.address=null"]
    # no config: nothing added, the CLI reports the usage error
    assert _common.cli_argv("run", []) == ["run"]
    assert _common.cli_argv("run", ["--help"]) == ["run", "--help"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--stage", "2", "configs/tiny/k2.yaml", "x=1"],
        ["configs/tiny/k2.yaml", "x=1", "--stage", "2"],
        ["configs/tiny/k2.yaml", "--stage", "2", "x=1"],
    ],
)
def test_cli_argv_parses_with_the_real_cli_parser(argv):
    from rcs_ray.cli import build_parser, parse_with_overrides

    args = parse_with_overrides(build_parser(), _common.cli_argv("sample", argv))
    assert (args.command, args.config, args.stage) == ("sample", "configs/tiny/k2.yaml", 2)
    assert args.overrides == ["x=1", "ray.address=auto"]


def test_the_override_loads_into_the_config():
    from rcs_ray.config import load_config

    cfg = load_config(os.path.join(REPO, "configs", "tiny", "k2.yaml"), _common.with_cluster_address([]))
    assert cfg.ray.address == "auto"


def test_sweep_argv():
    assert sweep.sweep_argv(["--ks", "2", "a=b", "--config", "c.yaml"]) == [
        "--ks",
        "2",
        "a=b",
        "--config",
        "c.yaml",
        "ray.address=auto",
    ]
    assert sweep.sweep_argv(["ray.address=null"]) == ["ray.address=null"]
    assert sweep.sweep_argv(["-h"]) == ["-h"]


def test_job_main_calls_the_cli_with_the_built_argv(monkeypatch):
    import rcs_ray.cli

    seen = []
    monkeypatch.setattr(rcs_ray.cli, "main", lambda argv: seen.append(argv) or 0)
    assert _common.main("run", ["configs/tiny/k2.yaml"]) == 0
    assert seen == [["run", "configs/tiny/k2.yaml", "ray.address=auto"]]


def test_sweep_passes_the_cluster_address_to_the_benchmark(monkeypatch):
    import types

    calls = []
    fake = types.SimpleNamespace(main=lambda argv: calls.append(argv))
    monkeypatch.setattr(sweep, "load_sweep", lambda: fake)
    assert sweep.main(["--ks", "2", "sampling.n=4"]) == 0
    assert calls == [["--ks", "2", "sampling.n=4", "ray.address=auto"]]


def test_sweep_module_loads():
    mod = sweep.load_sweep()
    assert callable(mod.main) and 2 in mod.K_CONFIGS
