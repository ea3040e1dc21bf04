"""User paths to local paths: ``tinyworld:`` assets (built on first use) and model directories that must exist."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from rcs_ray.config import DataConfig, TinyWorldConfig
from rcs_ray.errors import RcsInputError


def resolve_path(path: str, tinyworld: Optional[TinyWorldConfig] = None) -> str:
    """``tinyworld:<name>`` -> the built asset's path; any other path as it is."""
    if path.startswith("tinyworld:"):
        from rcs_ray.tinyworld import resolve

        return resolve(path, tinyworld or TinyWorldConfig())
    return path


def resolve_data(data: DataConfig, tinyworld: Optional[TinyWorldConfig] = None) -> DataConfig:
    """``data`` with its path resolved (unchanged when it has none)."""
    return dataclasses.replace(data, path=resolve_path(data.path, tinyworld)) if data.path else data


def resolve_model_dir(path: Optional[str], key: str, tinyworld: Optional[TinyWorldConfig] = None) -> str:
    """The absolute directory of a local HF-format model named by config key ``key``; RcsInputError if absent."""
    if not path:
        raise RcsInputError(f"{key}: a model path is required")
    path = resolve_path(path, tinyworld)
    if not os.path.isdir(path):
        raise RcsInputError(f"{key}: model directory not found: {path}")
    return os.path.abspath(path)
