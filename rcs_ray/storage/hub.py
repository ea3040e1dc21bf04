"""Hugging Face Hub repositories as model and data paths, resolved through the HF cache.

**One rule** for a path that could name a local directory or a Hub repository:

- ``hf://org/name`` or ``hf://org/name@revision`` is the Hub, always (never a local lookup);
- ``./dir``, ``../dir``, ``/abs/dir`` and ``~/dir`` are local paths, always (a missing one is a plain "not found"
  naming the absolute path; never a Hub lookup);
- a bare ``org/name[@revision]`` is local when it exists, else the Hub; when it is neither, one line names both
  readings and how to say which one is meant (:func:`snapshot` with ``local``).

A Hub repository is looked up with ``huggingface_hub`` in the HF cache (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``): ``snapshot_download`` returns the snapshot directory
(``.../models--org--name/snapshots/<commit>``), downloading it first when the machine is online. Offline mode is
honoured, not forced: with ``HF_HUB_OFFLINE=1`` only the cache is used, and a repository missing from it is a one-line
error naming the ID. Datasets resolve the same way (``repo_type="dataset"``); their snapshot is then read with
``datasets.load_dataset`` (:mod:`rcs_ray.data.hub_tables`), so the repository's own configs and splits apply.

A resolved snapshot path names its repository and commit, so a Ray worker on another node whose own cache lacks it
fetches exactly that commit (:func:`ensure_local`).
"""

from __future__ import annotations

import os
import re
from typing import Optional, Tuple

from rcs_ray.errors import RcsInputError

HF = "hf://"
HF_SHAPE = "not a Hub repository; write hf://org/name or hf://org/name@revision"
_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
_SNAPSHOT = re.compile(r"(?P<kind>models|datasets)--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})")
IGNORE = ["original/*", "*.pth", "*.msgpack", "*.h5", "*.onnx"]  # weights in formats transformers does not load
_LOCAL_WHAT = {"model": "directory", "dataset": "file or directory"}
_NOT_FOUND = {"model": "model directory not found", "dataset": "data not found"}  # as rcs_ray.user_paths says it


def cache_dir() -> Optional[str]:
    """The hub cache this process uses: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default (read
    at every call: the library reads its constants once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def datasets_cache() -> Optional[str]:
    """Where ``datasets`` keeps its prepared (Arrow) copies: ``HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else
    the library's default (read at every call, as :func:`cache_dir`)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "datasets")
    return None


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (read at every call, so a job's environment counts)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_hf(path: Optional[str]) -> bool:
    """Written as ``hf://...``: the Hub, always."""
    return bool(path) and path.startswith(HF)


def hf_repo(path: str) -> Optional[str]:
    """``org/name[@revision]`` of ``hf://org/name[@revision]``; None when the rest is not that shape."""
    rest = path[len(HF) :] if is_hf(path) else None
    return rest if rest is not None and _ID.match(rest) else None


def hf_id(path: str, key: Optional[str] = None) -> str:
    """:func:`hf_repo`, or a one-line error naming ``key``."""
    repo = hf_repo(path)
    if repo is None:
        where = f"{key}: " if key else ""
        raise RcsInputError(f"{where}{path}: {HF_SHAPE}")
    return repo


def is_local(path: Optional[str]) -> bool:
    """Written as a local path (``./``, ``../``, ``/``, ``~``): local, always."""
    return bool(path) and (path in (".", "..") or path.startswith(("./", "../", "/", "~")))


def is_bare_id(path: Optional[str]) -> bool:
    """``org/name[@revision]`` written without ``hf://`` or a local prefix: a local path or a Hub ID."""
    return bool(path) and "://" not in path and not path.startswith((".", "/", "~")) and _ID.match(path) is not None


def is_hub_id(path: Optional[str]) -> bool:
    """A bare ``org/name[@revision]`` (:func:`is_bare_id`) that is not an existing local path (a relative ``dir/sub``
    that exists is local): either reading is possible, the Hub is tried."""
    return is_bare_id(path) and not os.path.exists(path)


def split_id(path: str) -> Tuple[str, Optional[str]]:
    match = _ID.match(path)
    if match is None:
        raise ValueError(f"not a Hub ID: {path!r}")
    return match.group("repo"), match.group("rev")


def snapshot(
    path: str, kind: str = "model", key: Optional[str] = None, shown: Optional[str] = None, local: Optional[str] = None
) -> str:
    """The local snapshot directory of Hub ID ``path`` (``org/name[@revision]``; ``kind``: ``model`` | ``dataset``).

    Args:
        shown: the path as the config wrote it (``hf://org/name``), for messages; default ``path``.
        local: for a bare ID, the absolute local path it also names: a repository that cannot be found then gets
            one line naming both readings (see the module docstring).

    Raises:
        RcsInputError: one line naming the ID (and ``key``): not in the cache while offline, no such repository,
            a gated repository without a token, no network.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = split_id(path)
    where, shown = (f"{key}: " if key else ""), shown or path
    try:
        return snapshot_download(
            repo,
            revision=revision,
            repo_type=kind,
            local_files_only=offline(),
            cache_dir=cache_dir(),
            ignore_patterns=IGNORE if kind == "model" else None,
        )
    except LocalEntryNotFoundError:
        raise _not_downloaded(path, kind, where, shown, local) from None
    except GatedRepoError:
        raise RcsInputError(
            f"{where}Hub {kind} {shown!r} is gated: accept its terms on the Hub and set HF_TOKEN"
        ) from None
    except RevisionNotFoundError:
        raise RcsInputError(f"{where}Hub {kind} {shown!r}: revision {revision!r} not found") from None
    except RepositoryNotFoundError:
        if local is not None:
            raise _neither(
                path, kind, where, local, "on the Hugging Face Hub (no such repository; a private one needs HF_TOKEN)"
            ) from None
        raise RcsInputError(
            f"{where}Hub {kind} {shown!r}: no such repository on the Hub (or it is private: set HF_TOKEN)"
        ) from None
    except HFValidationError as exc:
        if local is not None:
            raise RcsInputError(f"{where}{_NOT_FOUND[kind]}: {local}") from None
        raise RcsInputError(f"{where}{shown}: not a valid Hub repository ID ({str(exc).splitlines()[0]})") from None


def _neither(path: str, kind: str, where: str, local: str, hub_reading: str) -> RcsInputError:
    """A bare ID that names neither a local path (``local``) nor a Hub repository (``hub_reading``: where it was
    looked for): one line naming both readings and how to choose."""
    return RcsInputError(
        f"{where}{path} is neither a local {_LOCAL_WHAT[kind]} (not found: {local}) nor a {kind} "
        f"{hub_reading}; write ./{path} or {HF}{path} to say which you mean"
    )


def _not_downloaded(path: str, kind: str, where: str, shown: str, local: Optional[str]) -> RcsInputError:
    """The error for a snapshot neither in the HF cache nor downloadable: offline, or no network."""
    from huggingface_hub.constants import HF_HUB_CACHE

    repo, _ = split_id(path)
    cache = cache_dir() or HF_HUB_CACHE
    if local is not None:
        return _neither(
            path,
            kind,
            where,
            local,
            "in the Hugging Face cache (HF_HUB_OFFLINE=1: not downloaded)"
            if offline()
            else "in the Hugging Face cache or on the Hub (could not be downloaded: no network?)",
        )
    if offline():
        return RcsInputError(
            f"{where}Hub {kind} {shown!r} is not in the HF cache ({cache}) and HF_HUB_OFFLINE=1: "
            f"download it first (hf download {'--repo-type dataset ' if kind == 'dataset' else ''}"
            f"{repo}) or unset HF_HUB_OFFLINE"
        )
    return RcsInputError(
        f"{where}Hub {kind} {shown!r} could not be downloaded (no network?) and is not in the HF cache ({cache})"
    )


def snapshot_of(path: str) -> Optional[Tuple[str, str, str]]:
    """``(repo, kind, commit)`` when ``path`` lies in an HF cache snapshot, else ``None``."""
    match = _SNAPSHOT.search(path.replace(os.sep, "/"))
    if match is None:
        return None
    return f"{match.group('org')}/{match.group('name')}", match.group("kind")[:-1], match.group("rev")


def is_snapshot_root(path: Optional[str], kind: str) -> bool:
    """``path`` is a snapshot directory itself (``.../<kind>s--org--name/snapshots/<commit>``), of ``kind``."""
    found = snapshot_of(path) if path else None
    return (
        found is not None
        and found[1] == kind
        and path.replace(os.sep, "/").rstrip("/").endswith(f"/snapshots/{found[2]}")
    )


def ensure_local(path: str) -> str:
    """``path`` itself when it exists here; a snapshot path from another node's cache is fetched into this one's
    (same repository, same commit)."""
    if os.path.exists(path):
        return path
    found = snapshot_of(path)
    if found is None:
        return path
    repo, kind, commit = found
    local = snapshot(f"{repo}@{commit}", kind)
    rest = path.replace(os.sep, "/").split(f"/snapshots/{commit}", 1)[1].lstrip("/")
    return os.path.join(local, rest) if rest else local
