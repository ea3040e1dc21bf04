"""Local writes that appear whole or not at all, and disk errors (full, read-only, not permitted) as one line.

- :class:`AtomicPath` -- a file or directory written under a temporary name beside its path and moved into place
  when complete. A directory is the way to commit several outputs as one set (a step's ``pairs.parquet``,
  ``failed.parquet``, ``candidates.parquet`` and ``stats.json``): the set appears with one rename, and entries of
  the old directory that the new one does not hold (a lock file, a user's own files) are carried over by hard links
  before the swap, so nothing of theirs is lost even if the process dies in between.
- :func:`writing` -- ``ENOSPC`` / ``EDQUOT`` / ``EROFS`` / ``EACCES`` / ``EPERM`` while writing become a
  :class:`DiskError`: one line naming the path and the bytes it tried to write. :class:`AtomicPath` applies it to
  everything written inside its block, and removes the partial temporary: what was there before stays intact.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from typing import Iterator, Optional

from rcs_ray.errors import RcsInputError

DISK_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskError(RcsInputError):
    """Writing an output failed on the disk (full, read-only, not permitted): what to free or fix, where."""


def _size(nbytes: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return ""


def disk_error(exc: BaseException, path: Optional[str], nbytes: Optional[int] = None) -> Optional[DiskError]:
    """The :class:`DiskError` for ``exc`` if it is a disk error (else None), naming ``path`` (``exc.filename`` when
    the OS named one) and the bytes that were being written."""
    code = getattr(exc, "errno", None)
    if not isinstance(exc, OSError) or code not in DISK_ERRORS:
        return None
    where = exc.filename or path or "an output"
    tried = f" (writing {_size(nbytes)})" if nbytes else ""
    remedy = "free space there" if code in _FULL else "make it writable or write the outputs elsewhere"
    return DiskError(
        f"{where}: {DISK_ERRORS[code]}{tried}: {remedy}, then run the same command again (finished steps are kept)"
    )


def disk_error_in(exc: BaseException, path: str) -> Optional[DiskError]:
    """A disk error anywhere in ``exc``'s chain, or in its text (a remote worker's error arrives as text: Ray Train's
    ``TrainingFailedError``), as a :class:`DiskError` naming ``path``; else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        err = disk_error(exc, path)
        if err is not None:
            return err
        found = [int(code) for code in re.findall(r"\[Errno (\d+)\]", str(exc)) if int(code) in DISK_ERRORS]
        if found:
            return disk_error(OSError(found[0], os.strerror(found[0])), path)
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def writing(path: str, nbytes: Optional[int] = None) -> Iterator[None]:
    """Turn a disk error inside the block into a :class:`DiskError` naming ``path`` (other errors pass through)."""
    try:
        yield
    except OSError as exc:
        err = disk_error(exc, path, nbytes)
        if err is None:
            raise
        raise err from None


def remove_local(path: str) -> None:
    """Delete a local file or directory tree (missing: nothing to do)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _tree_size(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path) if os.path.exists(path) else 0
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


class AtomicPath:
    """The one way a local file or directory is written: under a temporary name beside ``path``, moved into place
    only when complete, so a reader never sees half of it and an interrupted or failed write leaves what was there
    before (see the module docstring).

    As a context manager it yields the temporary path and moves it into place when the block ends without an
    exception (removes it otherwise); a writer that streams across calls uses :meth:`commit` / :meth:`abort`::

        with atomic_path("out/stats.json") as tmp:
            write(tmp)
    """

    def __init__(self, path: str):
        self.path = path
        self.tmp = f"{path.rstrip(os.sep)}.tmp-{os.getpid()}"
        with writing(path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        remove_local(self.tmp)

    def commit(self) -> None:
        with writing(self.path):
            _swap_into_place(self.tmp, self.path)

    def abort(self) -> None:
        remove_local(self.tmp)

    def __enter__(self) -> str:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
            return
        err = disk_error(exc, self.path, _tree_size(self.tmp) or None)
        self.abort()
        if err is not None:
            raise err from None


def atomic_path(path: str) -> AtomicPath:
    """See :class:`AtomicPath` (local paths; a URI output is written in a staged local mirror, then uploaded)."""
    return AtomicPath(path)


def _carry_over(old: str, new: str) -> None:
    """Hard-link (copy where links fail) every entry of directory ``old`` that ``new`` lacks into ``new``."""
    for name in os.listdir(old):
        src, dst = os.path.join(old, name), os.path.join(new, name)
        if os.path.lexists(dst):
            continue
        if os.path.isdir(src) and not os.path.islink(src):
            shutil.copytree(src, dst, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(src, dst)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _swap_into_place(tmp: str, dst: str) -> None:
    if os.path.isdir(dst) and not os.path.islink(dst):
        if os.path.isdir(tmp):
            _carry_over(dst, tmp)
        old = f"{dst}.old-{os.getpid()}"
        os.rename(dst, old)
        os.rename(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)


class OutputSet:
    """A step's outputs that live beside other files in one directory (a training step's ``model/``,
    ``adapter/``, ``metrics.jsonl`` and ``train_summary.json`` beside its checkpoints): written into :attr:`tmp`, then
    moved into place by :meth:`commit` with renames only (no space needed, so a full disk cannot stop it halfway),
    ``last`` (the step's summary, which readers require) removed first and moved last. A name the new set lacks is
    removed (a stale ``adapter/``)."""

    def __init__(self, dir: str, names, last: str):
        self.dir, self.names, self.last = dir, [n for n in names if n != last], last
        self.tmp = os.path.join(dir, f".outputs.tmp-{os.getpid()}")
        with writing(dir):
            os.makedirs(dir, exist_ok=True)
            for name in os.listdir(dir):
                if name.startswith(".outputs.tmp-"):
                    remove_local(os.path.join(dir, name))  # left by a killed run (one run per dir: the lock)
            os.makedirs(self.tmp)

    def commit(self) -> None:
        with writing(self.dir):
            remove_local(os.path.join(self.dir, self.last))
            for name in [*self.names, self.last]:
                src, dst = os.path.join(self.tmp, name), os.path.join(self.dir, name)
                if os.path.lexists(src):
                    _swap_into_place(src, dst)
                else:
                    remove_local(dst)
        remove_local(self.tmp)

    def abort(self) -> None:
        remove_local(self.tmp)
