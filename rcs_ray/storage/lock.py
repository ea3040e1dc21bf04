"""One run per output directory: a lock file beside the manifests that names its holder.

``with RunLock(output_dir, "rcs-ray run"):`` claims ``<output_dir>/.rcs-ray.lock`` (a JSON record: host, pid, start
time, command, a heartbeat refreshed every :data:`HEARTBEAT_S` seconds). A second run on the same directory is refused
with one line naming the holder. A lock whose holder is gone is taken over with a message: on the same host when its
pid no longer runs, on another host when its heartbeat is older than :data:`STALE_S` seconds. Local directories are
claimed with an exclusive create; a URI output directory (``s3://``, ...) gets the lock object beside its manifests,
written and read back (object stores have no exclusive create: two runs started within the same moment on two
machines could both pass; the heartbeat still shows both).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional

from rcs_ray import interrupts
from rcs_ray.errors import RcsInputError
from rcs_ray.storage.files import exists, is_uri, join, read_text, write_text

log = logging.getLogger(__name__)

LOCK_FILE = ".rcs-ray.lock"
HEARTBEAT_S = 30.0
STALE_S = 180.0
UNREADABLE_TRIES = 10  # a lock that cannot be read for this many tries 0.2 s apart is damaged: set aside


def _alive(pid: int) -> bool:
    if pid <= 0:  # 0 / negative would signal a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(holder: dict) -> str:
    return (
        f"`{holder.get('command', 'rcs-ray')}` (host {holder.get('host')}, pid {holder.get('pid')}, since "
        f"{holder.get('since')})"
    )


class RunLock:
    """An exclusive claim on ``output_dir`` for this process (see the module docstring).

    Args:
        output_dir: the directory (local or URI) the run writes into.
        command: what holds it, shown to a run that is refused (e.g. ``rcs-ray run configs/tiny/k2.yaml``).
    """

    def __init__(self, output_dir: str, command: str):
        self.path = join(output_dir, LOCK_FILE)
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": command,
            "token": uuid.uuid4().hex,
        }
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------------------------- holder
    def _read(self) -> Optional[dict]:
        try:
            holder = json.loads(read_text(self.path))
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _stale(self, holder: dict) -> bool:
        try:
            if holder.get("host") == self.record["host"]:
                return not _alive(int(holder.get("pid") or 0))
            return time.time() - float(holder.get("heartbeat") or 0) > STALE_S
        except (TypeError, ValueError):  # a record with a damaged pid or heartbeat
            return True

    def _write(self) -> None:
        write_text(self.path, json.dumps({**self.record, "heartbeat": time.time()}))

    # ------------------------------------------------------------------------------------------- claim
    def acquire(self) -> "RunLock":
        """Claim the directory.

        Raises:
            RcsInputError: another live run holds it (naming the holder).
        """
        unreadable = 0
        for _ in range(3 + UNREADABLE_TRIES):
            if not is_uri(self.path):
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    pass
                else:
                    with os.fdopen(fd, "w", encoding="utf-8") as fh:
                        json.dump({**self.record, "heartbeat": time.time()}, fh)
                    break
            elif not exists(self.path):
                self._write()
                if (self._read() or {}).get("token") == self.record["token"]:
                    break
                continue
            holder = self._read()
            if holder is None and unreadable < UNREADABLE_TRIES:  # being written or removed this instant
                unreadable += 1
                time.sleep(0.2)
                continue
            if holder is None:  # unreadable for seconds: damaged (a full disk, an edit)
                from rcs_ray.storage.integrity import set_aside

                set_aside(self.path, "run lock", "this run claims the directory")
                continue
            if holder.get("token") == self.record["token"]:
                break
            if not self._stale(holder):
                raise RcsInputError(
                    f"{os.path.dirname(self.path) or '.'} is in use by {describe(holder)}: wait "
                    f"for it to finish or use another output_dir (if that run is gone, remove "
                    f"{self.path})"
                )
            log.warning("taking over the lock of a run that is gone: %s", describe(holder))
            print(f"note: taking over {self.path} from {describe(holder)}, which is no longer running")
            self._write()
            if (self._read() or {}).get("token") == self.record["token"]:
                break
        else:
            raise RcsInputError(f"{self.path}: could not claim the output directory (another run keeps claiming it)")
        self._thread = threading.Thread(target=self._beat, name="rcs-ray-lock", daemon=True)
        self._thread.start()
        interrupts.at_exit_now(self.release)
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if (self._read() or {}).get("token") == self.record["token"]:
                    self._write()
            except OSError:  # storage hiccup: the next beat tries again
                pass

    def release(self) -> None:
        """Give the directory back (the lock file goes, unless another run has taken it over meanwhile)."""
        self._stop.set()
        interrupts.cancel_exit_now(self.release)
        try:
            if (self._read() or {}).get("token") == self.record["token"]:
                from rcs_ray.storage.mirror import remove

                remove(self.path)
        except OSError:
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
