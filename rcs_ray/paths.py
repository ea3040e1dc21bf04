"""User paths: ``tinyworld:`` assets (built on first use), data paths and model directories that must exist, Hugging Face
Hub IDs (``org/name[@revision]``, resolved through the HF cache: :mod:`rcs_ray.storage.hub`).

Paths may be URIs (``s3://``, ``gs://``, ``file://``; see :mod:`rcs_ray.storage`). A model URI stays a URI here (so
manifests and fingerprints name it, and every node can fetch it): the code that loads the model calls
:func:`rcs_ray.storage.local_copy` where it runs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from rcs_ray import storage
from rcs_ray.storage import hub
from rcs_ray.config import DataConfig, TinyWorldConfig
from rcs_ray.errors import RcsInputError


def resolve_path(path: str, tinyworld: Optional[TinyWorldConfig] = None) -> str:
    """``tinyworld:<name>`` -> the built asset's path; any other path as it is."""
    if path.startswith("tinyworld:"):
        from rcs_ray.tinyworld import resolve

        return resolve(path, tinyworld or TinyWorldConfig())
    return path


def resolve_data(data: DataConfig, tinyworld: Optional[TinyWorldConfig] = None,
                 key: Optional[str] = None) -> DataConfig:
    """``data`` with its path resolved (unchanged when it has none).

    ``key`` (e.g. ``stages.1.data.path``): a URI is checked here, so a missing one or an unusable scheme is reported
    with the config key (local paths are checked by the reader).
    """
    if data.path and key and storage.is_uri(data.path):
        storage.require(data.path, key)
    if data.path and hub.is_hub_id(data.path):
        return dataclasses.replace(data, path=hub.snapshot(data.path, "dataset", key))
    return dataclasses.replace(data, path=resolve_path(data.path, tinyworld)) if data.path else data


def resolve_model_dir(path: Optional[str], key: str, tinyworld: Optional[TinyWorldConfig] = None) -> str:
    """The directory of an HF-format model named by config key ``key``: a local directory (made absolute), a URI
    (checked, returned as a URI) or a Hub ID (its snapshot in the HF cache, :func:`rcs_ray.storage.hub.snapshot`).

    Raises:
        RcsInputError: one line naming ``key``: no path, a missing directory, a Hub ID that cannot be resolved.
    """
    if not path:
        raise RcsInputError(f"{key}: a model path is required")
    path = resolve_path(path, tinyworld)
    if storage.is_uri(path):
        return storage.require(path, key, "model directory", kind="dir")
    if hub.is_hub_id(path):
        return hub.snapshot(path, "model", key)
    if not os.path.isdir(path):
        raise RcsInputError(f"{key}: model directory not found: {path} (not a Hub ID either: org/name[@revision])")
    return os.path.abspath(path)
