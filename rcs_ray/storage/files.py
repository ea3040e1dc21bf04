"""Files at local paths or URIs through pyarrow filesystems: names, existence, listings, reading, writing, uploads
and downloads (see :mod:`rcs_ray.storage`). Local paths go through ``os``; pyarrow is imported lazily."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
from typing import List, Optional, Tuple

from rcs_ray.errors import RcsInputError
from rcs_ray.storage.atomic import atomic_path

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_RENAMING = ("local", "hdfs")  # filesystems whose move() is a rename: write, then move into place

Listing = List[Tuple[str, int, int]]  # (relative path with '/', size in bytes, mtime in ns)


# ----------------------------------------------------------------------------------------------- names
def is_uri(path: Optional[str]) -> bool:
    """True for ``scheme://...`` (``tinyworld:`` names and local paths are not URIs)."""
    return bool(path) and _URI.match(path) is not None


def _split_query(uri: str) -> Tuple[str, str]:
    base, sep, query = uri.partition("?")
    return base, sep + query


def _norm(uri: str) -> str:
    """The URI without trailing slashes (``file:///`` stays)."""
    base, query = _split_query(uri)
    scheme, rest = base.split("://", 1)
    return (f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else base) + query


def join(base: str, *parts: str) -> str:
    """``os.path.join`` for local paths; ``base/part/...`` for URIs (a ``?query`` stays at the end)."""
    if not is_uri(base):
        return os.path.join(base, *parts)
    root, query = _split_query(base)
    tail = "/".join(p.strip("/") for p in parts if p)
    return (root.rstrip("/") + "/" + tail if tail else root) + query


def parent(path: str) -> str:
    """The directory holding ``path``."""
    if not is_uri(path):
        return os.path.dirname(os.path.abspath(path))
    root, query = _split_query(_norm(path))
    return root.rsplit("/", 1)[0] + query


def absolute(path: str) -> str:
    """``os.path.abspath`` for local paths; URIs as they are."""
    return path if is_uri(path) else os.path.abspath(path)


# ----------------------------------------------------------------------------------------------- filesystems
@functools.lru_cache(maxsize=256)
def _from_uri(uri: str):
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(uri)


def _where(key: Optional[str]) -> str:
    return f"{key}: " if key else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve(path: str, key: Optional[str] = None):
    """``(filesystem, path inside it)`` for a URI, ``(None, path)`` for a local path.

    Raises:
        RcsInputError: an unknown scheme, a pyarrow built without this filesystem, or a filesystem that cannot be
            reached (one line, prefixed with ``key``).
    """
    if not is_uri(path):
        return None, path
    uri = _norm(path)
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "hf":  # a Hub repository (rcs_ray.storage.hub), not a filesystem pyarrow knows
        raise RcsInputError(
            f"{_where(key)}{path}: hf:// names a Hugging Face Hub repository, usable as a model or "
            f"dataset path only; files here need a local path or a storage URI (s3://, gs://, ...)"
        )
    try:
        return _from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
        msg = _first_line(exc)
        if "Unrecognized filesystem type" in msg:
            raise RcsInputError(
                f"{_where(key)}unsupported storage scheme '{scheme}://' in {path}: pyarrow "
                f"filesystems know file://, s3://, gs:// (gcs://) and hdfs://"
            ) from None
        if type(exc).__name__ == "ArrowNotImplementedError" or re.search(r"(compiled|built) without", msg):
            raise RcsInputError(
                f"{_where(key)}{path}: this pyarrow was built without {scheme}:// support "
                f"({msg}); install a pyarrow built with it (the PyPI wheels have S3 and GCS)"
            ) from None
        raise RcsInputError(f"{_where(key)}{path}: cannot open the {scheme}:// filesystem: {msg}") from None


def _info(path: str, key: Optional[str] = None):
    fs, p = resolve(path, key)
    try:
        return fs.get_file_info(p)
    except Exception as exc:  # noqa: BLE001 - permission / network failures
        raise RcsInputError(f"{_where(key)}cannot access {path}: {_first_line(exc)}") from None


def path_kind(path: str, key: Optional[str] = None) -> Optional[str]:
    """``"file"``, ``"dir"`` or None (missing)."""
    if not is_uri(path):
        return "dir" if os.path.isdir(path) else "file" if os.path.exists(path) else None
    import pyarrow.fs as pafs

    t = _info(path, key).type
    return "file" if t == pafs.FileType.File else "dir" if t == pafs.FileType.Directory else None


def exists(path: str) -> bool:
    return path_kind(path) is not None


def isdir(path: str) -> bool:
    return path_kind(path) == "dir"


def isfile(path: str) -> bool:
    return path_kind(path) == "file"


def require(path: str, key: str, what: str = "input", kind: Optional[str] = None) -> str:
    """``path`` (a URI normalized: no trailing ``/``) if it exists (and is a ``kind``: ``file`` | ``dir``).

    Raises:
        RcsInputError: ``<key>: <what> not found: <path>`` (or the scheme problems of :func:`resolve`).
    """
    found = path_kind(path, key)
    if found is None or (kind is not None and found != kind):
        raise RcsInputError(f"{key}: {what} not found: {path}")
    return _norm(path) if is_uri(path) else path


def list_files(path: str, key: Optional[str] = None) -> Listing:
    """Every file under ``path`` (recursively; a file lists itself under its base name), sorted.

    Raises:
        RcsInputError: ``path`` does not exist.
    """
    kind = path_kind(path, key)
    if kind is None:
        raise RcsInputError(f"{_where(key)}not found: {path}")
    if not is_uri(path):
        if kind == "file":
            st = os.stat(path)
            return [(os.path.basename(path), st.st_size, st.st_mtime_ns)]
        out = []
        for d, _, names in os.walk(path):
            for n in names:
                st = os.stat(os.path.join(d, n))
                out.append((os.path.relpath(os.path.join(d, n), path).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
        return sorted(out)
    import pyarrow.fs as pafs

    fs, p = resolve(path, key)
    if kind == "file":
        i = fs.get_file_info(p)
        return [(i.base_name, i.size, i.mtime_ns or 0)]
    root = p.rstrip("/") + "/"
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    return sorted(
        (i.path[len(root) :] if i.path.startswith(root) else i.base_name, i.size, i.mtime_ns or 0)
        for i in infos
        if i.type == pafs.FileType.File
    )


def listing_hash(path: str, key: Optional[str] = None) -> str:
    """A short fingerprint of a URI from its listing: names, sizes and mtimes of its files (hidden names skipped)."""
    h = hashlib.sha256()
    for rel, size, mtime in list_files(path, key):
        if not any(part.startswith(".") for part in rel.split("/")):
            h.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- reading / writing
def open_binary(path: str):
    """A readable, seekable binary file."""
    if not is_uri(path):
        return open(path, "rb")
    fs, p = resolve(path)
    return fs.open_input_file(p)


def open_text(path: str):
    """A text file (UTF-8)."""
    if not is_uri(path):
        return open(path, encoding="utf-8")
    return io.TextIOWrapper(open_binary(path), encoding="utf-8")


def read_text(path: str) -> str:
    with open_text(path) as fh:
        return fh.read()


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a local path through :class:`AtomicPath`; object stores: one PUT)."""
    if not is_uri(path):
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
        return
    fs, p = resolve(path)
    data = text.encode("utf-8")
    _put(fs, p, lambda dst: _write_stream(fs, dst, data))


def _write_stream(fs, dst: str, data: bytes) -> None:
    with fs.open_output_stream(dst) as out:
        out.write(data)


def _put(fs, dst: str, write) -> None:
    """``write(target)`` then, where the filesystem renames, move the target into place at ``dst``."""
    if fs.type_name not in _RENAMING:
        write(dst)
        return
    fs.create_dir(dst.rsplit("/", 1)[0], recursive=True)
    tmp = f"{dst}.tmp-{os.getpid()}"
    write(tmp)
    if fs.type_name != "local":  # HDFS does not rename onto an existing path
        _delete(fs, dst)
    fs.move(tmp, dst)


def _delete(fs, p: str) -> None:
    import pyarrow.fs as pafs

    t = fs.get_file_info(p).type
    if t == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif t == pafs.FileType.File:
        fs.delete_file(p)


def upload(local: str, uri: str) -> None:
    """Copy a local file or directory to ``uri``, replacing what is there.

    A directory goes to ``<uri>.tmp-<pid>`` and is renamed into place where the filesystem renames; on object stores
    the old objects are deleted first and the new ones written in place (readers trust a manifest written after).
    """
    import pyarrow.fs as pafs

    fs, p = resolve(uri)
    if not os.path.isdir(local):
        _put(
            fs,
            p,
            lambda dst: pafs.copy_files(
                local, dst, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
            ),
        )
        return
    if fs.type_name in _RENAMING:
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        tmp = f"{p}.tmp-{os.getpid()}"
        _delete(fs, tmp)
        _copy_dir(local, pafs.LocalFileSystem(), tmp, fs)
        _delete(fs, p)
        fs.move(tmp, p)
    else:
        _delete(fs, p)
        _copy_dir(local, pafs.LocalFileSystem(), p, fs)


def _copy_dir(src: str, src_fs, dst: str, dst_fs) -> None:
    import pyarrow.fs as pafs

    dst_fs.create_dir(dst, recursive=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs, use_threads=True)


def download(uri: str, local: str) -> None:
    """Copy the file or directory at ``uri`` to the local path ``local`` (replaced; written under a temporary name)."""
    import pyarrow.fs as pafs

    fs, p = resolve(uri)
    kind = path_kind(uri)
    if kind is None:
        raise RcsInputError(f"not found: {uri}")
    with atomic_path(local) as tmp:
        if kind == "dir":
            _copy_dir(p, fs, tmp, pafs.LocalFileSystem())
        else:
            pafs.copy_files(p, tmp, source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
