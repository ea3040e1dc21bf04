"""The lazy Ray Dataset of one pass over prompt groups: generate -> score (-> RC filter), every model in a
:mod:`~rcs_ray.sampling.hosts` host and each Ray Data stage a light caller of it.

:func:`score_samples` is what the sampling rounds (:mod:`rcs_ray.sampling.pipeline`, with the RC step) and the
evaluation (without) both run; :func:`generation_hosts` and :func:`scorer_hosts` give a pass its hosts, kept from an
earlier pass when the same model with the same settings is still loaded.
"""

from __future__ import annotations

from typing import Optional, Tuple

from rcs_ray import registry
from rcs_ray.config import SamplingConfig
from rcs_ray.sampling.job import SamplingJob


def _blocks(table, rows_per_block: int) -> list:
    return [table.slice(i, rows_per_block) for i in range(0, table.num_rows, rows_per_block)] or [table]


BLOCKING_IN_FLIGHT = 2  # batches in flight per host of a blocking model: one runs, the next waits at the host
HOSTS_PER_CALLER = 8  # a caller forwards to up to this many hosts: 64 engines need 8 callers, not 64


def generation_stage(s: SamplingConfig) -> Tuple[type, int]:
    """The generation stage class and the batches in flight per host: for an engine with ``submit`` (vLLM)
    :class:`~rcs_ray.sampling.stages.AsyncGenerateStage` with ``max_concurrent_batches``; else the blocking stage
    with :data:`BLOCKING_IN_FLIGHT`. With 1, each batch reached the host only after the previous one had gone back
    to Ray Data (measured with HF on 2 cores: the engine idle 10% of the time between batches; ``docs/cluster.md``).
    More only queue in front of a blocking engine and lengthen the last wave (``benchmarks/scale_sim.py``: 4 in
    flight measured 0.54 against 0.80 at 16 engines)."""
    from rcs_ray.sampling.stages import AsyncGenerateStage, GenerateStage

    cls = _engine_class(s)
    c = int(s.max_concurrent_batches)
    if c > 1 and callable(getattr(cls, "submit", None)):
        return AsyncGenerateStage, c
    return GenerateStage, BLOCKING_IN_FLIGHT


def _engine_class(s: SamplingConfig) -> Optional[type]:
    try:
        return registry.resolve(registry.ENGINES.get(s.engine, s.engine), "sampling.engine")
    except Exception:  # noqa: BLE001 - the host reports a bad engine name in one line
        return None


def callers_for(hosts: int) -> Tuple[int, int]:
    """How many callers serve ``hosts`` hosts, and how many hosts each forwards to (the last may have fewer)."""
    size = -(-hosts // HOSTS_PER_CALLER)
    return size, -(-hosts // size)


def _calls(ds, caller: type, handles: list, kwargs: dict, batch_size: int, in_flight: int, select=None, model=None):
    """``ds`` mapped through ``caller`` (:class:`~rcs_ray.sampling.host_actors.HostCall`): callers with no CPU of
    their own (the hosts hold the models and their resources), each forwarding to up to :data:`HOSTS_PER_CALLER`
    hosts with ``in_flight`` batches in flight per host."""
    import uuid

    import ray

    size, per = callers_for(len(handles))
    return ds.map_batches(
        caller,
        fn_constructor_kwargs=dict(
            hosts=handles, token=uuid.uuid4().hex, kwargs=kwargs, select=select, per=per, model=model
        ),
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(
            size=size, max_tasks_in_flight_per_actor=per * in_flight, max_concurrent_calls_per_actor=per * in_flight
        ),
        num_cpus=0,
    )


def score_samples(job: SamplingJob, table, n_target: int, include_original: bool = True, select: Optional[dict] = None):
    """The lazy Ray Dataset that generates up to ``n_target`` samples per group and scores every candidate; with
    ``select`` (:class:`~rcs_ray.sampling.rc_step.RCFilterStage` arguments) the last scorer also RC-selects.

    The models run in :mod:`~rcs_ray.sampling.hosts` hosts, started here unless kept from an earlier pass (waits
    until every one has loaded)."""
    import ray

    from rcs_ray.sampling import host_actors, hosts, room
    from rcs_ray.sampling.rc_step import rc_filter_batch
    from rcs_ray.sampling.scorers import plan_scorers

    s = job.sampling
    stage, in_flight = generation_stage(s)
    specs = plan_scorers(job.objectives)
    wanted = [generation_pool(job, stage)] + [scorer_pool(job, spec) for spec in specs]
    calls = [(host_actors.GenerateCall, dict(n_target=n_target, include_original=include_original), in_flight, None)]
    calls += [
        (host_actors.ScoreCall, {}, BLOCKING_IN_FLIGHT, select if i == len(specs) - 1 else None)
        for i in range(len(specs))
    ]
    ds = ray.data.from_blocks(_blocks(table, s.batch_size))  # metadata read here: no task needs a CPU the hosts hold
    steps, at = list(zip(wanted, calls)), 0
    for size in room.phases(wanted):  # one phase when all fit side by side, else as many as it takes
        part, at = steps[at : at + size], at + size
        hosts.fit([w for w, _ in part])  # kept models not used here give way when these need their room
        handles = [hosts.hosts(w) for w, _ in part]
        hosts.ready(*handles)  # they load side by side
        for (w, (caller, kwargs, in_flight, last)), h in zip(part, handles):
            model = (w.key, w.factory, w.kwargs) if w.family is not None else None  # hosts may have loaded it in place
            ds = _calls(ds, caller, h, kwargs, s.batch_size, in_flight, select=last, model=model)
        if at < len(steps):  # the phase's work is done: its room goes to the next models
            ds = ds.materialize()
            for w, _ in part:
                hosts.release(key=w.key)
    if select is not None and not specs:
        ds = ds.map_batches(
            rc_filter_batch, fn_kwargs=select, batch_size=s.batch_size, batch_format="pyarrow", num_cpus=0.25
        )
    return ds


def generation_pool(job: SamplingJob, stage: type):
    """The generation hosts of ``job``'s policy and sampling settings (kept, or started by the pass)."""
    from rcs_ray.sampling import host_actors, hosts
    from rcs_ray.sampling.placement import demand, generation_host_options, generation_remote_args

    s = job.sampling
    per_host = demand(generation_remote_args(s))
    per_host["GPU"] = float(s.num_gpus) * max(1, s.tensor_parallel_size)  # a TP group's GPUs are the host's
    in_place = getattr(_engine_class(s), "loads_in_place", False)  # the next policy in the same host process
    return hosts.HostPool(
        kind="generate",
        key=repr(("generate", stage.__name__, job.policy, s, hosts.stamp(job.policy.path, job.policy.tokenizer))),
        cls=host_actors.GenerateStageHost,
        factory=stage,
        kwargs=dict(model=job.policy, sampling=s),
        count=s.num_actors,
        place=generation_host_options(s),
        demand=per_host,
        family=repr(("generate", stage.__name__, s)) if in_place else None,
    )


def scorer_pool(job: SamplingJob, spec):
    """The hosts of one scorer (kept, or started by the pass): a reward model shared by several stages or policies
    loads once."""
    from rcs_ray.sampling import host_actors, hosts
    from rcs_ray.sampling.placement import demand, scorer_host_options, scorer_remote_args
    from rcs_ray.sampling.sizing import scorer_kind
    from rcs_ray.sampling.stages import ScoreStage

    first, settings = spec.objectives[0], job.settings(spec.objectives[0])
    paths = [getattr(o, name, None) for o in spec.objectives for name in ("model", "reference", "tokenizer")]
    return hosts.HostPool(
        kind=scorer_kind(spec.label),
        key=repr(("score", spec, settings, hosts.stamp(*paths))),
        cls=host_actors.ScoreStageHost,
        factory=ScoreStage,
        kwargs=dict(spec=spec, settings=settings),
        count=first.num_actors,
        place=scorer_host_options(first, spec.source),
        demand=demand(scorer_remote_args(first, spec.source)),
    )
