"""How long a model was busy, when several batches are in it at once (an async engine's continuous batch).

Summing each batch's own wall time counts an overlap once per batch in it: with 4 batches in flight the sum is about
4x the time the engine worked. :class:`BusyClock` counts the union of the calls' intervals instead, and hands the time
accrued since the last call ended to the call that ends now; so the shares of all calls add up to the busy time, and a
blocking model (one call at a time) gets exactly each call's own wall time.
"""

from __future__ import annotations

import time


class BusyClock:
    """Wall time with at least one call running, shared out to the calls as they end (:meth:`leave`)."""

    def __init__(self, clock=time.perf_counter):
        self._clock = clock
        self._running = 0
        self._mark = 0.0
        self._accrued = 0.0

    def _advance(self) -> None:
        now = self._clock()
        if self._running:
            self._accrued += now - self._mark
        self._mark = now

    def enter(self) -> None:
        """A call starts."""
        self._advance()
        self._running += 1

    def leave(self) -> float:
        """A call ends: the busy seconds since the previous call ended (this call's share)."""
        self._advance()
        self._running -= 1
        share, self._accrued = self._accrued, 0.0
        return share
