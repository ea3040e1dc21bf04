"""User paths: ``tinyworld:`` assets (built on first use), data paths and model directories that must exist, Hugging
Face Hub repositories (resolved through the HF cache: :mod:`rcs_ray.storage.hub`).

One rule says which is meant (see :mod:`rcs_ray.storage.hub`): ``hf://org/name[@revision]`` is the Hub; ``./``,
``../``, ``/`` and ``~`` paths are local; a bare ``org/name[@revision]`` is local when it exists, else the Hub, and
when it is neither, one line names both readings.

Paths may be URIs (``s3://``, ``gs://``, ``file://``; see :mod:`rcs_ray.storage`). A model URI stays a URI here (so
manifests and fingerprints name it, and every node can fetch it): the code that loads the model calls
:func:`rcs_ray.storage.local_copy` where it runs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from rcs_ray import storage
from rcs_ray.config import DataConfig, TinyWorldConfig
from rcs_ray.errors import RcsInputError
from rcs_ray.storage import hub


def resolve_path(path: str, tinyworld: Optional[TinyWorldConfig] = None) -> str:
    """``tinyworld:<name>`` -> the built asset's path; any other path as it is."""
    if path.startswith("tinyworld:"):
        from rcs_ray.tinyworld import resolve

        return resolve(path, tinyworld or TinyWorldConfig())
    return path


def resolve_data(
    data: DataConfig, tinyworld: Optional[TinyWorldConfig] = None, key: Optional[str] = None
) -> DataConfig:
    """``data`` with its path resolved (unchanged when it has none): a Hub dataset becomes its snapshot directory in
    the HF cache (read with ``datasets.load_dataset``: :mod:`rcs_ray.data.hub_tables`); ``~`` is expanded.

    ``key`` (e.g. ``stages.1.data.path``): a URI is checked here, so a missing one or an unusable scheme is reported
    with the config key; so is a missing local path (without ``key``, local paths are checked by the reader).

    Raises:
        RcsInputError: one line naming ``key``: a missing path, a Hub dataset that cannot be resolved, a bare
            ``org/name`` that is neither.
    """
    if not data.path:
        return data
    where = f"{key}: " if key else ""
    if hub.is_hf(data.path):
        snap = hub.snapshot(hub.hf_id(data.path, key), "dataset", key, shown=data.path)
        return dataclasses.replace(data, path=snap)
    if storage.is_uri(data.path):
        if key:
            storage.require(data.path, key)
        return data
    path = resolve_path(data.path, tinyworld)
    if hub.is_hub_id(path):
        return dataclasses.replace(data, path=hub.snapshot(path, "dataset", key, local=os.path.abspath(path)))
    path = os.path.expanduser(path)
    if (key or hub.is_local(data.path)) and not os.path.exists(path):
        raise RcsInputError(f"{where}data not found: {os.path.abspath(path)}")
    return dataclasses.replace(data, path=path)


def resolve_model_dir(path: Optional[str], key: str, tinyworld: Optional[TinyWorldConfig] = None) -> str:
    """The directory of an HF-format model named by config key ``key``: a local directory (made absolute), a URI
    (checked, returned as a URI) or a Hub repository (its snapshot in the HF cache,
    :func:`rcs_ray.storage.hub.snapshot`), by the rule of the module docstring.

    Raises:
        RcsInputError: one line naming ``key``: no path, a missing directory, a Hub repository that cannot be
            resolved, a bare ``org/name`` that is neither.
    """
    if not path:
        raise RcsInputError(f"{key}: a model path is required")
    path = resolve_path(path, tinyworld)
    if hub.is_hf(path):
        return hub.snapshot(hub.hf_id(path, key), "model", key, shown=path)
    if storage.is_uri(path):
        return storage.require(path, key, "model directory", kind="dir")
    local = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(local):
        return local
    if hub.is_hub_id(path):
        return hub.snapshot(path, "model", key, local=local)
    raise RcsInputError(f"{key}: model directory not found: {local}")
