"""Signals that always land: SIGINT (Ctrl-C) and SIGTERM (``ray job stop``, Kubernetes, schedulers) stop any
rcs-ray command cleanly, in any phase, and the message names the phase the signal landed in.

Why rcs-ray handles them itself: Python installs its Ctrl-C handler only when the process starts with SIGINT at its
default. A command started as a background job of a non-interactive shell (``cmd &`` in a script, ``nohup cmd &``,
CI runners, many schedulers) starts with SIGINT *ignored*, and Python leaves it ignored. Ray Train installs its own
SIGINT handler inside ``fit``, so training could be interrupted while sampling could not, and a SIGINT during
stage-2 sampling was silently lost (the run went on and exited 0). ``ray.init`` replaces the SIGTERM handler with
one that exits 15 from wherever the main thread is.

:func:`handling` (the CLI wraps every command in it) installs one handler for both signals whatever the inherited
disposition, and puts the previous ones back at the end:

- the first signal raises :class:`Interrupted` (a ``KeyboardInterrupt``; exit code 128 + the signal number) in the
  main thread, and remembers the signal and the phase (:func:`phase`) it landed in;
- inside :func:`deferred` (the driver waits in ``ray.get`` while Ray Train trains) the handler calls the given stop
  function (abort the training run) instead of raising; :func:`check` raises once the wait ends;
- an ``Interrupted`` swallowed by a library (raised inside a ``__del__`` or a finalizer, which Python only prints)
  is delivered again, and :func:`check` at phase boundaries raises it too;
- a process that has not ended :data:`DEADLINE_S` seconds after the signal, or a second signal, stops at once: the
  cleanups registered with :func:`on_exit_now` run (remove the run lock, kill the local Ray this process started)
  and the process exits with the signal's code. Finished steps are on disk already; a rerun resumes.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator, List, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEADLINE_S = 10.0  # from the first signal to a forced exit (a graceful stop takes 1-5 s on 2 cores)


class Interrupted(KeyboardInterrupt):
    """A signal stopped the command. ``exit_code``: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        super().__init__(f"{signal.Signals(signum).name} during {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    def __init__(self):
        self.signum: Optional[int] = None  # the first signal received
        self.where: str = ""  # the phase it landed in
        self.at = 0.0
        self.phases: List[str] = []
        self.stop: Optional[Callable[[int], bool]] = None  # inside deferred(): called instead of raising
        self.cleanups: List[Callable[[], None]] = []
        self.previous: dict = {}
        self.redeliver = False
        self.swallowed = threading.Event()
        self.epoch = 0  # counts handling() entries and exits (the watchdog's scope)


_STATE = _State()


# ----------------------------------------------------------------------------------------------- phases
@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Name what the command is doing now (nested phases join with `` / ``); checks for a pending signal on entry."""
    check()
    _STATE.phases.append(name)
    try:
        yield
    finally:
        _STATE.phases.pop()


def where() -> str:
    """The phase running now (``""`` outside any)."""
    return " / ".join(_STATE.phases)


# ----------------------------------------------------------------------------------------------- the handler
def received() -> Optional[int]:
    """The signal number received since :func:`handling` began, or None."""
    return _STATE.signum


def pending() -> Interrupted:
    """The :class:`Interrupted` for the signal received (call only when :func:`received`)."""
    return Interrupted(_STATE.signum, _STATE.where or "start-up")


def check() -> None:
    """Raise :class:`Interrupted` if a signal was received (and not yet raised past this point)."""
    if _STATE.signum is not None:
        raise pending()


def _on_signal(signum, frame) -> None:
    s = _STATE
    if s.redeliver:  # the first one again, after a library swallowed it
        s.redeliver = False
        raise pending()
    if s.signum is not None:
        _exit_now(f"{signal.Signals(signum).name} again")
    s.signum, s.where, s.at = signum, where() or "start-up", time.monotonic()
    _say(f"\n{signal.Signals(signum).name} received during {s.where}: stopping (send it again to stop at once)")
    threading.Thread(target=_watchdog, args=(s.epoch,), name="rcs-ray-interrupt-deadline", daemon=True).start()
    if s.stop is not None and s.stop(signum):
        return
    raise pending()


def _unraisable(hook):
    def on_unraisable(unraisable) -> None:
        if isinstance(unraisable.exc_value, Interrupted) and _STATE.signum is not None:
            _STATE.redeliver = True  # raised inside a finalizer, which swallows it: the
            _STATE.swallowed.set()  # watchdog delivers it again once the hook has returned
            return
        hook(unraisable)

    return on_unraisable


def _watchdog(epoch: int) -> None:
    """Deliver a swallowed signal again; stop the process at once when the deadline passes (unless the
    :func:`handling` block that received the signal has ended: the command is over, or library code goes on)."""
    s = _STATE
    deadline = s.at + DEADLINE_S
    while (left := deadline - time.monotonic()) > 0:
        if s.epoch != epoch:
            return
        if s.swallowed.wait(min(left, 0.2)):
            s.swallowed.clear()
            _thread.interrupt_main(s.signum)
    if s.epoch == epoch:
        _exit_now(f"not stopped {DEADLINE_S:g} s after the signal")


def _exit_now(why: str) -> None:
    s = _STATE
    code = 128 + (s.signum or signal.SIGINT)
    _say(
        f"interrupted during {s.where or where() or 'start-up'} ({why}): stopping at once; finished steps are kept; "
        f"run the same command again to resume"
    )
    for cleanup in reversed(s.cleanups):
        try:
            cleanup()
        except Exception:  # noqa: BLE001 - best effort: the process ends next
            pass
    os._exit(code)


def _say(line: str) -> None:
    """One line to stderr, unbuffered: a handler may run while the main thread is inside a buffered write."""
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass


# ----------------------------------------------------------------------------------------------- scopes
def _install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _on_signal)


def reinstall() -> None:
    """Put rcs-ray's handler back where a library replaced it (``ray.init`` sets its own SIGTERM handler)."""
    if _STATE.previous and threading.current_thread() is threading.main_thread():
        _install()


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as the module docstring says, for the duration of the block (main thread only;
    nested blocks share the outer one). The previous handlers are put back at the end."""
    s = _STATE
    if s.previous or threading.current_thread() is not threading.main_thread():
        yield
        return
    s.signum, s.where, s.redeliver, s.swallowed = None, "", False, threading.Event()  # phases already open stay
    s.epoch += 1
    s.previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    hook = sys.unraisablehook
    sys.unraisablehook = _unraisable(hook)
    _install()
    try:
        yield
    finally:
        for sig, handler in s.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        sys.unraisablehook = hook
        s.previous, s.signum, s.where = {}, None, ""  # outside handling() no signal is pending
        s.epoch += 1


@contextlib.contextmanager
def deferred(stop: Callable[[int], bool]) -> Iterator[None]:
    """While the main thread waits on work elsewhere (Ray Train), a signal calls ``stop(signum)`` instead of raising;
    ``stop`` returns whether it will end the wait (False: raise as usual). It must not block (start a thread).
    :func:`check` after the wait raises the signal."""
    before, _STATE.stop = _STATE.stop, stop
    try:
        yield
    finally:
        _STATE.stop = before


def at_exit_now(cleanup: Callable[[], None]) -> None:
    """Run ``cleanup`` if the process has to stop at once (a second signal, or the deadline); last added runs first."""
    _STATE.cleanups.append(cleanup)


def cancel_exit_now(cleanup: Callable[[], None]) -> None:
    """Forget a cleanup of :func:`at_exit_now` (its resource was released the normal way)."""
    if cleanup in _STATE.cleanups:
        _STATE.cleanups.remove(cleanup)


def exit_code(code: int) -> int:
    """``code``, or the signal's exit code when a signal was received (it landed during the final clean-up)."""
    return 128 + _STATE.signum if _STATE.signum is not None else code
