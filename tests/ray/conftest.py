"""Fixtures shared by the Ray tests."""

import pytest

from tests.ray.sampling_helpers import tiny_cfg
from tests.ray.train_assets import build_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny random Llama policy with its tokenizer, pairs and stage-1 data (tests/ray/train_assets.py)."""
    return build_assets(tmp_path_factory.mktemp("train_assets"))


@pytest.fixture(scope="session")
def default_run(tiny_world, ray_session, tmp_path_factory):
    """One sampling run of the tiny K = 2 config's stage 2 (24 prompts), shared by the sampling tests: (cfg, result)."""
    from rcs_ray.sampling import run

    cfg = tiny_cfg(tmp_path_factory.mktemp("default"))
    return cfg, run(cfg, progress=False)
