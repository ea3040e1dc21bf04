"""The operating-system side of :mod:`cluster.local_cluster`: free ports, the ``ray`` command, whether a process is
alive, signals, and finding a cluster's processes by what is on their command lines."""

from __future__ import annotations

import os
import socket
import sys
from typing import List


def free_ports(n: int) -> List[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def ray_cli() -> str:
    """The ``ray`` command of this interpreter's environment (else the one on PATH)."""
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return ray if os.path.exists(ray) else "ray"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a child of ours that exited is reaped here, not counted)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own zombie children
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def send_signal(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` (a negative pid: its process group), if it still exists."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def processes_marked(marks: List[str]) -> list:
    """Running (not zombie) processes, other than this one, with any of ``marks`` on their command line."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if any(m in cmd for m in marks):
            out.append(proc)
    return out
