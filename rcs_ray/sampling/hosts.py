"""Model hosts: the generation engines and scorer models, loaded once and kept while they are used.

A host is a Ray actor that holds one loaded stage (:class:`~rcs_ray.sampling.stages.GenerateStage` or
:class:`~rcs_ray.sampling.stages.ScoreStage`). The Ray Data stages of a pass are light callers
(:class:`~rcs_ray.sampling.host_actors.HostCall`, no CPU of their own, one per up to
:data:`~rcs_ray.sampling.passes.HOSTS_PER_CALLER` hosts) that hand each batch to their least busy host and return
its answer, so a host outlives the dataset: the engines of a stage serve every adaptive round, and a reward model
that scores several stages, or the evaluation of several policies, is loaded once. Ray Data still batches, streams,
keeps order and restarts a dead caller; a dead host is restarted by Ray (``max_restarts=-1``) and the call that was
in it retried (``max_task_retries=-1``), as Ray Data did for its own actors.

Lifetime (:func:`scope`): hosts live until the outermost scope ends (a workflow, an evaluation, the demo; a pass
outside any scope opens its own). Generation hosts are released at the end of their sampling pass (training comes
next, and then a stage that samples from another policy). An evaluation keeps them from one policy to the next when
the engine can load the next policy in its running host (``loads_in_place``: the HF engine), so each further policy
costs its weights, not a new process and its imports. Before training, :func:`make_room` releases every host if
the trainer's workers would not fit beside them: on a GPU node, reward models kept through training must not hold
the trainer's GPUs. With ``ray.keep_models: false`` every pass starts and releases its own hosts (the behaviour
before hosts existed). What fits where is :mod:`rcs_ray.sampling.room`.

Samples depend only on their per-sample seeds, so a kept host gives the same outputs as a fresh one (tested).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from rcs_ray.sampling.room import need, short

log = logging.getLogger(__name__)

_LOCK = threading.RLock()


@dataclass
class _Pool:
    kind: str
    handles: list
    groups: list = field(default_factory=list)  # placement groups the hosts run in (tensor parallelism)
    family: Optional[str] = None  # HostPool.family
    loading: list = field(default_factory=list)  # the hosts' reload calls, until ready() has waited for them


@dataclass
class _Registry:
    session: Optional[str] = None
    pools: Dict[str, _Pool] = field(default_factory=dict)
    depth: int = 0
    keep: bool = True
    started: Dict[str, int] = field(default_factory=dict)  # hosts started, by kind, since the process began
    reloaded: Dict[str, int] = field(default_factory=dict)  # hosts that loaded another model in place, by kind


_REG = _Registry()


def stamp(*paths: Optional[str]) -> list:
    """What identifies the weights at ``paths`` beyond their names: for a local directory the newest modification
    time and total size of its files (a model rewritten in place is loaded again); other paths as they are."""
    out = []
    for path in paths:
        if path and os.path.isdir(path):
            stats = [e.stat() for e in os.scandir(path) if e.is_file()]
            out.append((path, max((x.st_mtime_ns for x in stats), default=0), sum(x.st_size for x in stats)))
        else:
            out.append(path)
    return out


def _session() -> Optional[str]:
    import ray

    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    return f"{ctx.get_node_id()}:{ctx.get_job_id()}"  # a restarted Ray reuses job ids, never node ids


def _check_session() -> None:
    """Forget the hosts of a Ray session that is gone (a test or a command that restarted Ray)."""
    now = _session()
    if _REG.session != now:
        _REG.pools.clear()
        _REG.session = now


@contextlib.contextmanager
def scope(keep: bool = True):
    """Hosts started inside live until the outermost scope ends (then every one is released). ``keep=False`` (the
    ``ray.keep_models`` setting) releases each pass's hosts at its end instead."""
    with _LOCK:
        _REG.depth += 1
        if _REG.depth == 1:
            _REG.keep = keep
    try:
        yield
    finally:
        with _LOCK:
            _REG.depth -= 1
            last = _REG.depth == 0
        if last:
            release()


def keeping() -> bool:
    """Whether hosts outlive the pass that started them (inside a scope that keeps)."""
    return _REG.depth > 0 and _REG.keep


@dataclass
class HostPool:
    """The hosts a pass wants for one model: ``count`` actors of ``cls`` loading ``factory(**kwargs)``, placed by
    ``place()`` (actor options; a placement group under ``"_group"``), each holding ``demand`` (Ray resources).

    ``family``: kept hosts of another model with the same family load this one in place (:meth:`reload
    <rcs_ray.sampling.host_actors._ModelHost.reload>`: same process, same place) instead of new hosts starting;
    ``None``: never."""

    kind: str
    key: str
    cls: type
    factory: Callable
    kwargs: dict
    count: int
    place: Callable[[], dict]
    demand: Dict[str, float]
    family: Optional[str] = None


def hosts(want: HostPool) -> list:
    """The hosts of ``want``: kept ones, or new ones started. Returns at once: :func:`ready` waits for them to
    load."""
    import ray

    with _LOCK:
        _check_session()
        if _kept(want):
            return _REG.pools[want.key].handles
        if want.key in _REG.pools:
            _release_pool(want.key)
        reused = _reload(want)
        if reused is not None:
            return reused
        remote = ray.remote(max_restarts=-1, max_task_retries=-1)(want.cls)
        pool = _REG.pools[want.key] = _Pool(want.kind, [], family=want.family)
        for _ in range(want.count):
            options = want.place()
            group = options.pop("_group", None)
            if group is not None:
                pool.groups.append(group)
            pool.handles.append(remote.options(**options).remote(want.key, want.factory, want.kwargs))
        _REG.started[want.kind] = _REG.started.get(want.kind, 0) + want.count
        log.info("started %d %s host(s)", want.count, want.kind)
        return pool.handles


def _reload(want: HostPool) -> Optional[list]:
    """Kept hosts of ``want``'s family and size, told to load ``want``'s model in place (their pool now under
    ``want.key``); ``None`` when there are none."""
    key = _family_pool(want)
    if key is None:
        return None
    pool = _REG.pools[want.key] = _REG.pools.pop(key)
    pool.loading = [h.reload.remote(want.key, want.factory, want.kwargs) for h in pool.handles]
    _REG.reloaded[want.kind] = _REG.reloaded.get(want.kind, 0) + want.count
    log.info("%d kept %s host(s) load the next model in place", want.count, want.kind)
    return pool.handles


def fit(wanted: List[HostPool]) -> None:
    """Make room for the hosts of one phase of a pass (``wanted``): kept hosts the phase does not use are released
    when the new ones need their room.

    Raises:
        RcsInputError: the phase needs more than a local Ray this process started has (fixed size). On a joined
            cluster an autoscaler may add nodes: a warning, and the hosts wait.
    """
    import ray

    from rcs_ray.errors import RcsInputError
    from rcs_ray.ray_runtime import started_ray

    with _LOCK:
        _check_session()
        lack = short(need(wanted), ray.cluster_resources())
        if lack:
            msg = (
                f"{', '.join(w.kind for w in wanted)}: {sum(w.count for w in wanted)} model host(s) need {lack}; "
                "lower sampling.num_actors, sampling.num_cpus / num_gpus or the objective's num_actors / num_cpus / "
                "num_gpus"
            )
            if started_ray():
                raise RcsInputError(msg)
            log.warning("%s; waiting for the cluster to grow", msg)
        in_place = {w.key: _family_pool(w) for w in wanted}  # kept hosts that will load these models in place
        keys = {w.key for w in wanted} | {k for k in in_place.values() if k}
        if short(need([w for w in wanted if not _kept(w) and not in_place[w.key]]), ray.available_resources()):
            for key in [k for k in _REG.pools if k not in keys]:
                _release_pool(key)


def _kept(want: HostPool) -> bool:
    pool = _REG.pools.get(want.key)
    return pool is not None and len(pool.handles) == want.count


def _family_pool(want: HostPool) -> Optional[str]:
    """The key of kept hosts of another model that can load ``want``'s in place (its family, its size)."""
    if want.family is None or _kept(want):
        return None
    return next((k for k, p in _REG.pools.items() if p.family == want.family and len(p.handles) == want.count), None)


def ready(*handle_lists: list) -> None:
    """Wait until every host of ``handle_lists`` has loaded its model (they load side by side; Ctrl-C is seen within
    half a second). A host that failed to load raises its error here, and its pool is released."""
    refs = []
    with _LOCK:
        for handles in handle_lists:
            pool = next((p for p in _REG.pools.values() if p.handles is handles), None)
            if pool is not None and pool.loading:  # hosts loading another model in place: wait for that
                refs += pool.loading
                pool.loading = []
            else:
                refs += [h.ready.remote() for h in handles]
    try:
        _wait(refs)
    except BaseException:
        with _LOCK:
            ids = {id(h) for handles in handle_lists for h in handles}
            for key in [k for k, p in _REG.pools.items() if any(id(h) in ids for h in p.handles)]:
                _release_pool(key)
        raise


def _wait(refs: list) -> None:
    """``ray.get(refs)``, checking for Ctrl-C between short waits."""
    import ray

    from rcs_ray import interrupts
    from rcs_ray.errors import input_error_in

    pending = list(refs)
    while pending:
        interrupts.check()
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
        try:
            ray.get(done)
        except ray.exceptions.RayTaskError as err:
            wrong = input_error_in(err)
            if wrong is not None:
                raise wrong from None  # the user's one line, not the host's traceback around it
            raise


def started() -> Dict[str, int]:
    """Hosts started so far in this process, by kind (``generate``, ``score:<label>``)."""
    return dict(_REG.started)


def reloaded() -> Dict[str, int]:
    """Hosts that loaded another model in place so far in this process, by kind."""
    return dict(_REG.reloaded)


def release(kind: Optional[str] = None, key: Optional[str] = None) -> None:
    """Release hosts: one pool (``key``), every pool of a kind prefix (``kind``), or all; their actors are killed
    and their placement groups removed, freeing their CPUs and GPUs at once."""
    with _LOCK:
        names = [k for k, p in _REG.pools.items() if (key is None or k == key) and (kind is None or p.kind == kind)]
        for name in names:
            _release_pool(name)


def _release_pool(key: str) -> None:
    import ray
    from ray.util import remove_placement_group

    from rcs_ray import interrupts

    pool = _REG.pools.pop(key)
    if interrupts.received() is not None or not ray.is_initialized() or _REG.session != _session():
        return  # stopping: the actors end with the driver (or the local Ray); no call that could wait on Ray
    for h in pool.handles:
        with contextlib.suppress(Exception):
            ray.kill(h, no_restart=True)
    for g in pool.groups:
        with contextlib.suppress(Exception):
            remove_placement_group(g)


def policy_done() -> None:
    """The end of one policy's evaluation: in a keeping scope, engines that can load the next policy in place stay
    for it (:func:`generation_done` at the evaluation's end releases them) and the others go; outside one, every
    host of the pass goes."""
    with _LOCK:
        if not keeping():
            release()
            return
        for key in [k for k, p in _REG.pools.items() if p.kind == "generate" and p.family is None]:
            _release_pool(key)


def generation_done() -> None:
    """The end of a sampling pass or of an evaluation: its engines are released (what comes next trains, or samples
    from another policy); outside a keeping scope every host of the pass goes."""
    release(kind="generate" if keeping() else None)


def make_room(demand: Dict[str, float]) -> bool:
    """Release every host if ``demand`` (Ray resources, e.g. the trainer's workers) does not fit beside them in the
    cluster's free resources; returns whether hosts were released."""
    import ray

    with _LOCK:
        if not _REG.pools or not ray.is_initialized():
            return False
        free = ray.available_resources()
        if all(free.get(k, 0.0) + 1e-9 >= v for k, v in demand.items() if v):
            return False
        log.info("releasing the kept model hosts: the trainer needs %s, %s free", demand, free)
        release()
        return True


def kept() -> List[str]:
    """The kinds of the hosts alive now (for logs and tests)."""
    return [p.kind for p in _REG.pools.values()]
