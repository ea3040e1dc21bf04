"""Local mirrors of URIs (see :mod:`rcs_ray.storage`): the per-node cache of local copies (models, HF dataset
directories) and staged output directories published to their URI home."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from typing import List, Optional

from rcs_ray.storage.atomic import atomic_path, remove_local as _remove_local
from rcs_ray.storage.files import (
    Listing,
    _delete,
    _norm,
    _split_query,
    download,
    exists,
    is_uri,
    join,
    list_files,
    path_kind,
    resolve,
    upload,
    write_text,
)

CACHE_ENV = "RCS_RAY_CACHE"
DEFAULT_CACHE = os.path.join("~", ".cache", "rcs_ray")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt")


def cache_root() -> str:
    """``$RCS_RAY_CACHE``, default ``~/.cache/rcs_ray``: local copies and staging mirrors of URIs."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE))


def _slug(uri: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", _split_query(_norm(uri))[0].rsplit("/", 1)[-1])[:48] or "root"
    return f"{hashlib.sha256(_norm(uri).encode()).hexdigest()[:16]}-{name}"


def remove(path: str) -> None:
    """Delete a file or directory (missing: nothing to do); for a URI, its local staging mirror too."""
    if not is_uri(path):
        _remove_local(path)
        return
    fs, p = resolve(path)
    _delete(fs, p)
    shutil.rmtree(staging_dir(path), ignore_errors=True)


# ----------------------------------------------------------------------------------------------- local copies
@contextlib.contextmanager
def _locked(path: str):
    """An exclusive lock on ``path`` (one download per cache entry, across processes on this node)."""
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wanted(rel: str, weights: bool) -> bool:
    return weights or not rel.lower().endswith(WEIGHT_SUFFIXES)


def local_copy(path: Optional[str], key: Optional[str] = None, weights: bool = True) -> Optional[str]:
    """A local path for ``path``: itself when local; for a URI its copy in the cache, downloaded if the remote listing
    (names, sizes, mtimes) differs from the copy's; for an HF cache snapshot another node resolved, the same commit
    from this node's HF cache (:func:`rcs_ray.storage.hub.ensure_local`).

    Args:
        path: a local path or a URI of a file or directory (None passes through); ``hf://org/name[@revision]``:
            that model's snapshot in this node's HF cache (pyarrow has no ``hf://`` filesystem).
        key: the config key, for messages.
        weights: False copies a directory without its weight files (``*.safetensors``, ``*.bin``, ...): enough for
            a tokenizer or a config, in a cache entry of its own.
    """
    from rcs_ray.storage import hub

    if hub.is_hf(path):
        return hub.snapshot(hub.hf_id(path, key), "model", key, shown=path)
    if not is_uri(path):
        if path is None or os.path.exists(path):
            return path
        return hub.ensure_local(path)
    listing = list_files(path, key)
    kind = path_kind(path, key)
    entry = os.path.join(cache_root(), "remote", _slug(path) + ("" if weights else "-meta"))
    wanted = [f for f in listing if _wanted(f[0], weights)]
    stamp = {"uri": _norm(path), "kind": kind, "files": [list(f) for f in wanted]}
    target = os.path.join(entry, listing[0][0]) if kind == "file" else entry
    with _locked(entry + ".lock"):
        if _read_json(entry + ".json") == stamp and os.path.exists(target):
            return target
        _remove_local(entry + ".json")
        if kind == "file" or weights:
            download(path, target)
        else:
            _download_some(path, entry, [f[0] for f in wanted])
        _write_json(entry + ".json", stamp)
    return target


def _download_some(uri: str, entry: str, names: List[str]) -> None:
    import pyarrow.fs as pafs

    fs, p = resolve(uri)
    with atomic_path(entry) as tmp:
        os.makedirs(tmp, exist_ok=True)
        for rel in names:
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            pafs.copy_files(
                f"{p.rstrip('/')}/{rel}",
                os.path.join(tmp, rel),
                source_filesystem=fs,
                destination_filesystem=pafs.LocalFileSystem(),
            )


def seed_cache(local_dir: str, uri: str) -> None:
    """Record ``local_dir`` (just uploaded to ``uri``) as the cached copy of ``uri``: hard links, no download."""
    listing = list_files(uri)
    entry = os.path.join(cache_root(), "remote", _slug(uri))
    with _locked(entry + ".lock"):
        _remove_local(entry + ".json")
        with atomic_path(entry) as tmp:
            shutil.copytree(local_dir, tmp, copy_function=_link_or_copy)
        _write_json(entry + ".json", {"uri": _norm(uri), "kind": "dir", "files": [list(f) for f in listing]})


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _write_json(path: str, data) -> None:
    write_text(path, json.dumps(data))


# ----------------------------------------------------------------------------------------------- staged outputs
def staging_dir(home: str) -> str:
    """The local mirror of the output directory ``home`` (a URI)."""
    return os.path.join(cache_root(), "staging", _slug(home))


class StagedDir:
    """An output directory whose home may be a URI: work happens in :attr:`local`, outputs are published by name.

    For a local ``home``, :attr:`local` is ``home`` and :meth:`pull` / :meth:`push` do nothing. For a URI, ``local``
    is a mirror under the cache root that persists between runs on this machine; a small state file there records
    what was last pulled or pushed, so an unchanged name is neither downloaded nor uploaded again.

    Args:
        home: where the outputs belong (a local directory or a URI).
        key: the config key or option that named ``home``, for messages.
    """

    STATE = ".rcs_ray_staged.json"

    def __init__(self, home: str, key: Optional[str] = None):
        self.remote = is_uri(home)
        self.home = _norm(home) if self.remote else home
        self.local = staging_dir(self.home) if self.remote else home
        if self.remote:
            resolve(self.home, key)  # an unusable scheme stops here, before any work

    def path(self, *parts: str) -> str:
        """Where ``parts`` live at the home (a URI, or the local path)."""
        return join(self.home, *parts)

    def pull(self, *names: str) -> None:
        """Make the local copies of ``names`` what the home holds (a name missing at the home is removed locally)."""
        if not self.remote:
            return
        os.makedirs(self.local, exist_ok=True)
        state = _read_json(os.path.join(self.local, self.STATE)) or {}
        for name in names:
            local, uri = os.path.join(self.local, name), self.path(name)
            remote = list_files(uri) if exists(uri) else None
            if remote is None:
                _remove_local(local)
                state.pop(name, None)
                continue
            if state.get(name) == [_local_listing(local), _as_lists(remote)] and os.path.exists(local):
                continue
            download(uri, local)
            state[name] = [_local_listing(local), _as_lists(remote)]
        _write_json(os.path.join(self.local, self.STATE), state)

    def push(self, *names: str, cache: bool = False) -> None:
        """Upload ``names`` (files or directories under :attr:`local`) to the home, in order, each replacing what is
        there; unchanged since the last pull / push, or missing locally: skipped. ``cache``: also seed the local-copy
        cache with the directories."""
        if not self.remote:
            return
        state = _read_json(os.path.join(self.local, self.STATE)) or {}
        for name in names:
            local, uri = os.path.join(self.local, name), self.path(name)
            mine = _local_listing(local)
            if mine is None:
                continue
            remote = _as_lists(list_files(uri)) if exists(uri) else None
            if state.get(name) != [mine, remote]:
                upload(local, uri)
                remote = _as_lists(list_files(uri))
            state[name] = [mine, remote]
            if cache and os.path.isdir(local):
                seed_cache(local, uri)
        _write_json(os.path.join(self.local, self.STATE), state)


def _local_listing(path: str) -> Optional[list]:
    return _as_lists(list_files(path)) if os.path.exists(path) else None


def _as_lists(listing: Listing) -> list:
    return [list(f) for f in listing]
