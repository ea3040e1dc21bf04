"""How ``benchmarks/scale_sim.py`` measures one pipeline run without changing it: the :class:`Probe` around the
pipeline (Ray Data's per-operator stats, the driver's blocked and own time, the writer's time), the host's CPU
(:func:`cpu_times`) and the simulated engines' call logs (:func:`engine_timeline`)."""

from __future__ import annotations

import json
import math
import os
import time


class Probe:
    """Instruments one pipeline run without changing it: the datasets it builds (for Ray Data's stats), the time
    the driver spends blocked in ``iter_batches`` vs in its own loop, and the writer's own time."""

    def __init__(self):
        import rcs_ray.sampling.pipeline as pipeline
        import rcs_ray.sampling.writer as writer

        self.pipeline, self.writer = pipeline, writer
        self.datasets, self.blocked, self.driver, self.writer_s, self.t_end = [], 0.0, 0.0, 0.0, None

    def __enter__(self):
        probe = self
        self.orig_build, self.orig_writer = self.pipeline.build_dataset, self.writer.OutputWriter

        def build_dataset(*a, **k):
            ds = probe.orig_build(*a, **k)
            probe.datasets.append(ds)
            inner = ds.iter_batches

            def iter_batches(*ia, **ik):
                it = iter(inner(*ia, **ik))
                while True:
                    t0 = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        probe.blocked += time.perf_counter() - t0
                        probe.t_end = time.perf_counter()
                        return
                    t1 = time.perf_counter()
                    probe.blocked += t1 - t0
                    yield batch
                    probe.driver += time.perf_counter() - t1

            ds.iter_batches = iter_batches
            return ds

        def timed(method):
            def wrapper(*a, **kw):  # write(batch, round, resample=...): keywords pass through
                t0 = time.perf_counter()
                try:
                    return method(*a, **kw)
                finally:
                    probe.writer_s += time.perf_counter() - t0

            return wrapper

        TimedWriter = type(
            "TimedWriter", (self.orig_writer,), {name: timed(getattr(self.orig_writer, name)) for name in ("write",)}
        )
        self.pipeline.build_dataset, self.writer.OutputWriter = build_dataset, TimedWriter
        return self

    def __exit__(self, *exc):
        self.pipeline.build_dataset, self.writer.OutputWriter = self.orig_build, self.orig_writer

    def operators(self) -> dict:
        """Ray Data's per-operator stats, summed over the run's datasets (rounds); times on ``perf_counter``."""
        ops: dict = {}

        def walk(summary):
            for parent in summary.parents:
                walk(parent)
            m = summary.extra_metrics or {}
            for op in summary.operators_stats:
                name = op.operator_name.replace("MapBatches(", "").rstrip(")")
                d = ops.setdefault(
                    name,
                    {
                        "wall_s": 0.0,
                        "task_wall_s": 0.0,
                        "task_cpu_s": 0.0,
                        "rows": 0,
                        "submission_backpressure_s": 0.0,
                        "task_scheduling_s": 0.0,
                        "start": math.inf,
                        "end": -math.inf,
                    },
                )
                d["wall_s"] += op.time_total_s or 0.0
                d["task_wall_s"] += op.wall_time.sum if op.wall_time else 0.0
                d["task_cpu_s"] += op.cpu_time.sum if op.cpu_time else 0.0
                d["rows"] += op.output_num_rows.sum if op.output_num_rows else 0
                d["start"] = min(d["start"], op.earliest_start_time or math.inf)
                d["end"] = max(d["end"], op.latest_end_time or -math.inf)
                if len(summary.operators_stats) == 1:
                    d["submission_backpressure_s"] += m.get("task_submission_backpressure_time", 0.0) or 0.0
                    d["task_scheduling_s"] += m.get("task_scheduling_time_s", 0.0) or 0.0

        spilled = 0
        for ds in self.datasets:
            summary = ds.get_stats_summary()
            walk(summary)
            spilled = max(spilled, summary.global_bytes_spilled or 0)
        return {"operators": ops, "bytes_spilled": spilled}


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the host from /proc/stat (zeros where it does not exist)."""
    try:
        with open("/proc/stat") as fh:
            vals = [float(x) for x in fh.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle, sum(vals)


def engine_timeline(log_dir: str, t_end: float, offset: float) -> dict:
    """Generation actors' time from the engines' call logs (``time.time() - offset`` puts them on the driver's
    ``perf_counter``), in the window [first generate call, t_end]."""
    calls: dict = {}
    ready = []
    for name in os.listdir(log_dir):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(log_dir, name)) as fh:
            for line in fh:
                rec = json.loads(line)
                rec["t0"], rec["t1"] = rec["t0"] - offset, rec["t1"] - offset
                if rec["event"] == "ready":
                    ready.append(rec)
                else:
                    calls.setdefault(rec["pid"], []).append(rec)
    if not calls:
        return {}
    t0 = min(c["t0"] for cs in calls.values() for c in cs)
    last = max(c["t1"] for cs in calls.values() for c in cs)
    out = {
        "t_first_call": t0,
        "t_last_call": last,
        "busy_s": 0.0,
        "ramp_s": 0.0,
        "gaps_s": 0.0,
        "tail_s": 0.0,
        "calls": 0,
        "engines_used": len(calls),
        "engine_start_spread_s": (max(r["t1"] for r in ready) - min(r["t1"] for r in ready)) if ready else 0.0,
    }
    for cs in calls.values():
        cs.sort(key=lambda c: c["t0"])
        busy = sum(c["busy"] for c in cs)
        out["busy_s"] += busy
        out["ramp_s"] += cs[0]["t0"] - t0
        out["gaps_s"] += (cs[-1]["t1"] - cs[0]["t0"]) - busy
        out["tail_s"] += t_end - cs[-1]["t1"]
        out["calls"] += len(cs)
    return out
