"""The actors of :mod:`rcs_ray.sampling.hosts`: a host holds one loaded stage; a caller is the Ray Data stage of a
pass that hands each batch to its host.

The host classes' names carry the stage's (``GenerateStageHost``, ``ScoreStageHost``): ``ray list actors`` and the
process titles say which model a process holds.
"""

from __future__ import annotations

import gc
import os
import random
import uuid
from typing import Callable, Optional


class _ModelHost:
    """One loaded stage, of the model named ``key`` (:attr:`rcs_ray.sampling.hosts.HostPool.key`). A failure to load
    is kept and raised by :meth:`ready` (the driver waits for it), so the user's error (a missing model, random
    weights) reaches the CLI as itself, not as a dead actor."""

    def __init__(self, key: str, factory: Callable, kwargs: dict):
        self._token = None
        self._load(key, factory, kwargs)

    def _load(self, key: str, factory: Callable, kwargs: dict) -> None:
        self.stage, self.key, self.error = None, key, None
        try:
            self.stage = factory(**kwargs)
        except Exception as exc:  # noqa: BLE001 - raised by ready()
            self.error = exc

    def ready(self) -> int:
        if self.error is not None:
            raise self.error
        return os.getpid()

    def reload(self, key: str, factory: Callable, kwargs: dict) -> int:
        """Load another model's stage in this process (the next policy of an evaluation): the process, its imports
        and its place in the cluster are kept. The old stage is dropped first, so the two never sit in memory
        together; a failure to load is raised here and by :meth:`ready`."""
        self.stage = None
        gc.collect()
        self._load(key, factory, kwargs)
        return self.ready()

    def claim(self, token: str) -> bool:
        """True for the first caller of a pass (``token``) to ask: no two callers of a pass share a host."""
        if self._token == token:
            return False
        self._token = token
        return True

    async def call(self, batch, model: Optional[tuple] = None, **kwargs):
        """The stage's answer for ``batch``. ``model``: the (key, factory, kwargs) the caller expects; a host that
        Ray restarted after it had loaded another model in place comes back with its first one (Ray reruns the
        constructor) and loads the expected one again before it answers."""
        if model is not None and model[0] != self.key:
            self.reload(*model)
        return await self.stage.host_call(batch, **kwargs)


class GenerateStageHost(_ModelHost):
    """A generation engine's host (its class name shows in ``ray list actors`` and process titles)."""


class ScoreStageHost(_ModelHost):
    """A scorer model's host."""


class HostCall:
    """The Ray Data stage of a pass: hands each batch to one of its hosts and returns the host's answer; ``select``
    (RC filter arguments) applies the RC step to the last scorer's answer.

    A caller claims up to ``per`` hosts of the pass (``token``) that no other caller has claimed, and sends each batch
    to the one of them with the fewest batches in flight. A caller restarted mid-pass finds its hosts claimed and
    shares ``per`` of them at random. ``model`` (the pool's key, factory and kwargs) goes with every batch, so a
    restarted host that came back with an older model loads the pass's one first (:meth:`_ModelHost.call`)."""

    def __init__(
        self,
        hosts: list,
        token: str,
        kwargs: dict,
        select: Optional[dict] = None,
        per: int = 1,
        model: Optional[tuple] = None,
    ):
        import ray

        from rcs_ray.sampling.rc_step import RCFilterStage

        order = random.Random(os.getpid() ^ uuid.uuid4().int).sample(range(len(hosts)), len(hosts))
        mine = []
        for i in order:
            if len(mine) == per:
                break
            if ray.get(hosts[i].claim.remote(token)):
                mine.append(i)
        self.hosts = [hosts[i] for i in (mine or order[:per])]
        self.in_flight = [0] * len(self.hosts)
        self.kwargs = dict(kwargs, model=model) if model is not None else kwargs
        self.select = RCFilterStage(**select) if select else None

    async def __call__(self, batch):
        i = min(range(len(self.hosts)), key=self.in_flight.__getitem__)
        self.in_flight[i] += 1
        try:
            out = await self.hosts[i].call.remote(batch, **self.kwargs)
        finally:
            self.in_flight[i] -= 1
        return self.select(out) if self.select is not None else out


class GenerateCall(HostCall):
    """Calls a generation host."""


class ScoreCall(HostCall):
    """Calls a scorer host."""
