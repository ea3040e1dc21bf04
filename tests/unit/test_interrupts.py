"""rcs_ray.interrupts: SIGINT and SIGTERM land in every phase, whatever the process inherited; a library that swallows
the exception, a process that does not stop, and a second signal are each handled (every case fails without it)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rcs_ray import interrupts
from rcs_ray.interrupts import Interrupted

pytestmark = pytest.mark.unit


def _signal_self(sig):
    os.kill(os.getpid(), sig)
    for _ in range(1000):  # the handler runs at the next bytecode boundary
        time.sleep(0.001)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_raises_naming_the_phase_it_landed_in_and_the_handlers_come_back(sig, code):
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    with interrupts.handling():
        with pytest.raises(Interrupted) as caught:
            with interrupts.phase("stage 2 (sampling)"), interrupts.phase("writing"):
                _signal_self(sig)
        assert interrupts.received() == sig
        with pytest.raises(Interrupted):  # remembered: the next phase boundary raises it again
            with interrupts.phase("export"):
                pass
    assert caught.value.where == "stage 2 (sampling) / writing" and caught.value.exit_code == code
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before


def test_sigint_ignored_at_start_is_handled_all_the_same_and_ignored_again_after():
    # A background job of a non-interactive shell starts with SIGINT ignored; Python then installs no handler.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts.handling():
            with pytest.raises(Interrupted):
                _signal_self(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_deferred_calls_the_stop_function_and_check_raises_after_the_wait():
    stopped = []
    with interrupts.handling():
        with interrupts.deferred(lambda signum: stopped.append(signum) or True):
            _signal_self(signal.SIGTERM)  # no exception here: the wait goes on until the work stops
        assert stopped == [signal.SIGTERM]
        with pytest.raises(Interrupted, match="SIGTERM"):
            interrupts.check()
        with interrupts.deferred(lambda signum: False):  # a stop function that cannot stop: raised as usual
            pass


class _SignalInFinalizer:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        sum(range(100000))  # the handler runs inside __del__, where Python swallows exceptions


def test_an_interrupt_swallowed_by_a_finalizer_is_delivered_again():
    with interrupts.handling():
        with pytest.raises(Interrupted):
            obj = _SignalInFinalizer()
            del obj
            for _ in range(1000):
                time.sleep(0.001)


SCRIPT = """
import os, signal, sys, time
from rcs_ray import interrupts
interrupts.DEADLINE_S = {deadline}
with interrupts.handling():
    interrupts.at_exit_now(lambda: open({marker!r}, "w").write("cleaned"))
    try:
        with interrupts.phase("training"):
            print("ready", flush=True)
            time.sleep(60)
    except interrupts.Interrupted:
        print("stopping slowly", flush=True)
        time.sleep(60)                             # a clean-up that hangs
"""


@pytest.mark.parametrize("second", [False, True])
def test_a_process_that_does_not_stop_is_stopped_at_the_deadline_or_by_a_second_signal(tmp_path, second):
    marker = tmp_path / "cleaned"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(deadline=30.0 if second else 1.0, marker=str(marker))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline().strip() == "stopping slowly"
    if second:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 143 and time.time() - t0 < 10
    assert "SIGTERM received during training" in err
    assert ("SIGINT again" if second else "not stopped 1 s after the signal") in err
    assert marker.read_text() == "cleaned"


def test_handling_entered_inside_an_open_phase_keeps_the_phases():
    # library use: the trainer opens phases, and launch() starts handling signals inside one of them
    with interrupts.phase("Ray Train"):
        with interrupts.handling():
            with pytest.raises(Interrupted) as caught:
                with interrupts.phase("steps"):
                    _signal_self(signal.SIGINT)
    assert caught.value.where == "Ray Train / steps" and interrupts.where() == ""


def test_the_deadline_ends_with_the_handling_block(monkeypatch):
    # library code goes on after a handled signal: the watchdog of that block must not stop the process later
    monkeypatch.setattr(interrupts, "DEADLINE_S", 0.5)
    with interrupts.handling():
        with pytest.raises(Interrupted):
            _signal_self(signal.SIGTERM)
    time.sleep(1.0)  # still alive: this test would never finish otherwise
    assert interrupts.received() is None


def test_a_signal_that_ray_turns_into_a_plain_keyboard_interrupt_still_names_its_phase_and_code(capsys):
    # Raised inside ray.wait / ray.get, our Interrupted is caught by Ray's signal check and a bare KeyboardInterrupt
    # raised in its place (seen: "interrupted during start-up", exit 130 for any signal).
    import argparse

    from rcs_ray.cli import _call

    def command(args):
        with interrupts.phase("stage 2 (sampling)"):
            try:
                _signal_self(signal.SIGTERM)
            except Interrupted:
                raise KeyboardInterrupt() from None  # what Ray raises

    with interrupts.handling():
        code = _call(argparse.Namespace(command="run", func=command))
    assert code == 143
    assert "interrupted during rcs-ray run / stage 2 (sampling):" in capsys.readouterr().err
