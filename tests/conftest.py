"""Test-session set-up: offline, quiet, CPU; GPU tests skipped without a GPU; vLLM tests without vLLM."""

import importlib.util
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
if not os.environ.get("CUDA_VISIBLE_DEVICES", "x") or not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU backend where there is no GPU

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return False


# The tier of a test is its folder: tests/<tier>/... gets the <tier> marker (-m unit, -m ray, ... select by folder).
TIERS = ("unit", "ray", "vllm", "cluster", "bench")


def _tier_of(path: str) -> str:
    """The tier of a test file by its path from the repo root (``tests/<tier>/...``); ``other`` outside the tiers."""
    parts = path.replace(os.sep, "/").split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" and parts[1] in TIERS else "other"


def pytest_collection_modifyitems(config, items):
    has_vllm = importlib.util.find_spec("vllm") is not None
    has_gpu = any("gpu" in item.keywords for item in items) and _has_cuda()
    for item in items:
        tier = _tier_of(os.path.relpath(str(item.fspath), REPO_ROOT))
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="vLLM is not installed"))


_TIER_SECONDS: dict = {}


def pytest_runtest_logreport(report):
    """Each test's setup, call and teardown seconds, summed by tier (its folder)."""
    tier = _tier_of(report.nodeid.split("::", 1)[0])
    _TIER_SECONDS[tier] = _TIER_SECONDS.get(tier, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    """One line of seconds per tier: the figures docs/architecture.md quotes come from a CI log's line."""
    if _TIER_SECONDS:
        parts = ", ".join(f"{t} {s:.0f} s" for t, s in sorted(_TIER_SECONDS.items(), key=lambda kv: -kv[1]))
        terminalreporter.write_line(f"seconds per tier (setup + call + teardown): {parts}")


# Ray workers import test helpers (rule functions in tests/) by module path.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="session")
def tiny_world():
    """The default tiny world, built once into the repo's cache (the demo uses the same one)."""
    from rcs_ray.config import TinyWorldConfig
    from rcs_ray.tinyworld import ensure_world

    return ensure_world(TinyWorldConfig(cache_dir=os.path.join(REPO_ROOT, ".cache", "tinyworld")))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray for the whole test session (start-up costs seconds)."""
    import ray

    from rcs_ray.config import RayConfig
    from rcs_ray.ray_runtime import init_ray
    from rcs_ray.storage import CACHE_ENV

    # Local copies of URIs made by the driver and the workers of this session (not ~/.cache/rcs_ray).
    os.environ.setdefault(CACHE_ENV, str(tmp_path_factory.mktemp("rcs_ray_cache")))

    init_ray(RayConfig(num_cpus=2, object_store_memory_mb=256))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def replicas(tmp_path_factory):
    """Tiny random-weight replicas of real model families and public datasets (tests/replicas), built once."""
    from tests.replicas import build_all

    return build_all(str(tmp_path_factory.mktemp("replicas")))
