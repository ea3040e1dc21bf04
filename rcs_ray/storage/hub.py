"""Hugging Face Hub IDs as model and data paths: ``org/name`` or ``org/name@revision``, resolved through the HF cache.

A path that is not a local file or directory and reads like a Hub ID is looked up with ``huggingface_hub`` in the
HF cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``): ``snapshot_download`` returns the snapshot
directory (``.../models--org--name/snapshots/<commit>``), downloading it first when the machine is online.
Offline mode is honoured, not forced: with ``HF_HUB_OFFLINE=1`` only the cache is used, and a repository missing
from it is a one-line error naming the ID. Datasets resolve the same way (``repo_type="dataset"``); their files are
then read as a directory of data files (:mod:`rcs_ray.data.tables`), so the presets apply.

A resolved snapshot path names its repository and commit, so a Ray worker on another node whose own cache lacks it
fetches exactly that commit (:func:`ensure_local`).
"""

from __future__ import annotations

import os
import re
from typing import Optional, Tuple

from rcs_ray.errors import RcsInputError

_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
_SNAPSHOT = re.compile(r"(?P<kind>models|datasets)--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<rev>[0-9a-f]{40})")
IGNORE = ["original/*", "*.pth", "*.msgpack", "*.h5", "*.onnx"]     # weights in formats transformers does not load


def cache_dir() -> Optional[str]:
    """The hub cache this process uses: ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else huggingface_hub's default (read
    at every call: the library reads its constants once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (read at every call, so a job's environment counts)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_hub_id(path: Optional[str]) -> bool:
    """``org/name[@revision]`` that is not an existing local path (a relative ``dir/sub`` that exists is local)."""
    if not path or "://" in path or path.startswith((".", "/", "~")) or os.path.exists(path):
        return False
    return _ID.match(path) is not None


def split_id(path: str) -> Tuple[str, Optional[str]]:
    match = _ID.match(path)
    if match is None:
        raise ValueError(f"not a Hub ID: {path!r}")
    return match.group("repo"), match.group("rev")


def snapshot(path: str, kind: str = "model", key: Optional[str] = None) -> str:
    """The local snapshot directory of Hub ID ``path`` (``kind``: ``model`` | ``dataset``).

    Raises:
        RcsInputError: one line naming the ID (and ``key``): not in the cache while offline, no such repository,
            a gated repository without a token, no network.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    repo, revision = split_id(path)
    where = f"{key}: " if key else ""
    try:
        return snapshot_download(repo, revision=revision, repo_type=kind, local_files_only=offline(),
                                 cache_dir=cache_dir(), ignore_patterns=IGNORE if kind == "model" else None)
    except LocalEntryNotFoundError:
        from huggingface_hub.constants import HF_HUB_CACHE

        cache = cache_dir() or HF_HUB_CACHE
        if offline():
            raise RcsInputError(f"{where}{kind} {path!r} is not in the HF cache ({cache}) and HF_HUB_OFFLINE=1: "
                                f"download it first (hf download {'--repo-type dataset ' if kind == 'dataset' else ''}"
                                f"{repo}) or unset HF_HUB_OFFLINE") from None
        raise RcsInputError(f"{where}{kind} {path!r} could not be downloaded (no network?) and is not in the HF "
                            f"cache ({cache})") from None
    except GatedRepoError:
        raise RcsInputError(f"{where}{kind} {path!r} is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise RcsInputError(f"{where}{kind} {path!r}: revision {revision!r} not found") from None
    except RepositoryNotFoundError:
        raise RcsInputError(f"{where}{kind} {path!r}: no such repository on the Hub (or it is private: set "
                            f"HF_TOKEN); a local path would have to exist") from None


def snapshot_of(path: str) -> Optional[Tuple[str, str, str]]:
    """``(repo, kind, commit)`` when ``path`` lies in an HF cache snapshot, else ``None``."""
    match = _SNAPSHOT.search(path.replace(os.sep, "/"))
    if match is None:
        return None
    return f"{match.group('org')}/{match.group('name')}", match.group("kind")[:-1], match.group("rev")


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
