"""Scale by simulation: the real sampling pipeline with 1..64 simulated generation engines on logical GPUs.

Every point is a real run of ``rcs_ray.sampling.pipeline.run`` (the code path of ``rcs-ray sample``: generate ->
score -> RC filter -> driver-side writer) with ``sampling.engine=benchmarks.sim:SimEngine`` (sleeps generated
tokens / engine tokens/s; one engine per actor, each asking ``num_gpus=1`` of a Ray started with as many logical
GPUs) and the simulated rule rewards of ``benchmarks/sim.py`` (sleep (prompt + response tokens) / scorer
tokens/s). Prompts scale with the actors (``--batches-per-actor`` batches each). Per point it reports

- efficiency = achieved / ideal candidates/s, ideal = actors x engine tokens/s / mean tokens per candidate, from the
  first generate call to the last row written (``e2e``: over the whole run, actor start-up in);
- where the time went: the generation phase and the drain after it, split by stage (how long the scorer pool, the RC
  actor and the driver ran on after the stage before them finished, from Ray Data's per-operator stats); the
  prompts/s each later stage delivered while active vs the prompts/s the ideal rate needs; the engines' own call
  logs (busy / start ramp / gaps between calls / tail); Ray Data back-pressure and spilling; the driver loop's and
  the writer's time; the host's CPU use (this host runs every actor).

Writes ``scale_sim.json``, ``scale_sim.csv`` and ``scale_sim.png`` under ``--out``.

    python benchmarks/scale_sim.py [--actors 1,2,4,8,16,32,64] [--batches-per-actor 3] [--tokens-per-s 2000]
    python benchmarks/scale_sim.py --actors 16 --gen-per-scorer 16        # an undersized scorer pool: it stalls
    python benchmarks/scale_sim.py --from-json benchmarks/results/scale_sim/scale_sim.json   # re-render only
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass

# benchmarks/ is on sys.path when run as a script
from scale_sim_probe import Probe, cpu_times, engine_timeline
from scale_sim_report import STAGES, report, verdict

SIM_ENGINE = "benchmarks.sim:SimEngine"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_inputs(work: str, prompts: int, prompt_tokens: int) -> str:
    """A jsonl of ``prompts`` synthetic prompts of ``prompt_tokens`` words, each with an original pair."""
    path = os.path.join(work, "prompts.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(prompts):
            words = " ".join(f"w{(i * 7 + j) % 997}" for j in range(prompt_tokens - 1))
            fh.write(
                json.dumps(
                    {"prompt": f"q{i} {words}", "chosen": f"chosen answer {i}", "rejected": f"rejected answer {i}"}
                )
                + "\n"
            )
    return path


def make_config(work: str, data: str, args, actors: int, scorers: int, overrides=()):
    """The run config: two conflicting simulated rule objectives, stage 2 samples and RC-selects on them."""
    from rcs_ray.config import load_config

    os.makedirs(os.path.join(work, "policy"), exist_ok=True)  # the sim engine loads nothing from it
    path = os.path.join(work, "config.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"""name: scale-sim
output_dir: {work}/out
policy: {{path: {work}/policy}}
objectives:
  - {{name: a, kind: rule, function: "benchmarks.sim:reward_a", num_actors: {scorers}}}
  - {{name: b, kind: rule, function: "benchmarks.sim:reward_b"}}
stages:
  - {{objective: a, sample: false, data: {{path: {data}}}}}
  - {{objective: b, data: {{path: {data}}}, rc: {{strategy: rcs, margin: 0.0}}}}
sampling: {{n: {args.n}, max_tokens: {args.max_tokens}, batch_size: {args.batch_size}, num_actors: {actors},
           num_gpus: 1, num_cpus: 1}}
""")
    return load_config(path, [f"sampling.engine={SIM_ENGINE}", *overrides])


def start_ray(args, actors: int, scorers: int, env: dict) -> None:
    """A fresh local Ray per point: logical resources as on a cluster (a GPU and a CPU per engine; rule scorers ask
    a quarter CPU) and the simulation's knobs in every worker's environment."""
    import ray

    from rcs_ray.ray_runtime import worker_env

    ray.shutdown()
    ray.init(
        address="local",
        num_cpus=actors + scorers + 2,
        num_gpus=actors,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        object_store_memory=args.object_store_mb << 20,
        runtime_env={
            "env_vars": {
                **worker_env(True),
                **env,  # workers import benchmarks.sim
                "PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
            }
        },
    )


def one_run(args, actors: int, overrides=()) -> dict:
    """One point: ``actors`` simulated engines on a fresh Ray, the pipeline run over their prompts, measured."""
    scorers = max(1, math.ceil(actors / args.gen_per_scorer))
    prompts = actors * args.batches_per_actor * args.batch_size
    m = measure(args, actors, scorers, prompts, overrides)
    return point_row(args, actors, scorers, prompts, m)


@dataclass
class Measured:
    """What one run measured: the pipeline's stats, Ray Data's operators and the engines' timeline (times on the
    driver's ``perf_counter``), the probe's driver loop and writer seconds, and the host's CPU and the driver's
    rusage before and after the run."""

    stats: dict
    ops: dict
    timeline: dict
    t0: float
    t1: float
    t_end: float
    cpu0: tuple
    cpu1: tuple
    ru0: object
    ru1: object
    driver_s: float
    writer_s: float


def measure(args, actors: int, scorers: int, prompts: int, overrides=()) -> Measured:
    """Run the real sampling pipeline once in a temporary work dir on a fresh Ray, with the probe around it."""
    import ray

    from rcs_ray.sampling.pipeline import run

    work = tempfile.mkdtemp(prefix=f"scale_sim_{actors}_")
    try:
        log_dir = os.path.join(work, "engine_logs")
        os.makedirs(log_dir)
        env = {
            "RCS_SIM_TOKENS_PER_S": str(args.tokens_per_s),
            "RCS_SIM_LOAD_S": str(args.load_s),
            "RCS_SIM_SCORE_TOKENS_PER_S": str(args.score_speedup * args.tokens_per_s),
            "RCS_SIM_LOG_DIR": log_dir,
            "RCS_SIM_START_BARRIER": str(0 if args.no_barrier else actors),
        }
        start_ray(args, actors, scorers, env)
        cfg = make_config(work, write_inputs(work, prompts, args.prompt_tokens), args, actors, scorers, overrides)
        cpu0, ru0, t0 = cpu_times(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with Probe() as probe:
            stats = run(cfg, stage=1, out_dir=os.path.join(work, "out"), progress=False).stats
        t1, cpu1, ru1 = time.perf_counter(), cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
        offset = time.time() - time.perf_counter()
        ops = probe.operators()
        t_end = probe.t_end or t1
        tl = engine_timeline(log_dir, t_end, offset)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Measured(
        stats=stats,
        ops=ops,
        timeline=tl,
        t0=t0,
        t1=t1,
        t_end=t_end,
        cpu0=cpu0,
        cpu1=cpu1,
        ru0=ru0,
        ru1=ru1,
        driver_s=probe.driver,
        writer_s=probe.writer_s,
    )


def point_row(args, actors: int, scorers: int, prompts: int, m: Measured) -> dict:
    """One point's row: efficiency against the ideal rate, where the generation actors' time went, the drain and
    the host's load; then each later stage's figures (:func:`add_stage_figures`)."""
    stats, tl, t0, t_end = m.stats, m.timeline, m.t0, m.t_end
    cands, tokens = stats["candidates_sampled"], stats["tokens_generated"]
    mean_tokens = tokens / max(cands, 1)
    ideal = actors * args.tokens_per_s / mean_tokens
    t_first = tl.get("t_first_call", t0)
    window = t_end - t_first
    cap = actors * window
    o = m.ops["operators"]
    ends = {
        "generate": tl.get("t_last_call", t_first),
        **{k: o.get(name, {}).get("end", t_first) for k, name in STAGES},
        "driver": t_end,
    }
    row = {
        "actors": actors,
        "scorer_actors": scorers,
        "prompts": prompts,
        "candidates": cands,
        "mean_tokens_per_candidate": round(mean_tokens, 1),
        "pairs": stats["pairs"],
        "failed": stats["failed"],
        "wall_s": stats["seconds"],
        "startup_s": round(t_first - t0, 2),
        "window_s": round(window, 2),
        "generation_s": round(ends["generate"] - t_first, 2),
        "drain_s": round(t_end - ends["generate"], 2),
        "ideal_cands_per_s": round(ideal, 1),
        "achieved_cands_per_s": round(cands / window, 1),
        "efficiency": round(cands / window / ideal, 3),  # first generate call -> last row written
        "efficiency_e2e": round(cands / stats["seconds"] / ideal, 3),  # the whole run, actor start-up in
        # generation actor-seconds in the window, as fractions of actors x window (they sum to 1)
        "gen_busy": round(tl.get("busy_s", 0.0) / cap, 3),
        "gen_ramp": round(tl.get("ramp_s", 0.0) / cap, 3),
        "gen_gaps": round(tl.get("gaps_s", 0.0) / cap, 3),
        "gen_tail": round(tl.get("tail_s", 0.0) / cap, 3),
        "engine_start_spread_s": round(tl.get("engine_start_spread_s", 0.0), 2),
        "engines_used": tl.get("engines_used"),  # engines that got any batch (the four gen_* shares sum to used/actors)
        "driver_cpu_s": round(m.ru1.ru_utime + m.ru1.ru_stime - m.ru0.ru_utime - m.ru0.ru_stime, 2),
        "writer_s": round(m.writer_s, 3),
        "driver_loop_s": round(m.driver_s, 3),
        "host_cpu_util": round((m.cpu1[0] - m.cpu0[0]) / max(m.cpu1[1] - m.cpu0[1], 1e-9), 3),
        "host_load_1min": round(os.getloadavg()[0], 1),
        "gen_submission_backpressure_s": round(o.get("GenerateCall", {}).get("submission_backpressure_s", 0.0), 2),
        "bytes_spilled": m.ops["bytes_spilled"],
    }
    add_stage_figures(row, o, ends, ideal / max(cands / prompts, 1e-9), scorers, prompts, m.driver_s)
    row["stalls_at"] = verdict(row)
    row["operators"] = {
        k: {kk: (round(vv - t_first, 3) if kk in ("start", "end") else round(vv, 3)) for kk, vv in v.items()}
        for k, v in o.items()
    }
    row["actor_seconds_by_stage"] = stats["actor_seconds_by_stage"]
    # the pipeline's own sizing of the scorer pool from its measured rates (rcs_ray.sampling.sizing)
    pools = stats.get("pools") or [{}]
    row["scorer_hosts_to_keep_up"] = max((p.get("hosts_to_keep_up") or 0) for p in pools) or None
    row["scorer_seconds_per_engine_second"] = pools[0].get("scorer_seconds_per_engine_second")
    return row


def add_stage_figures(
    row: dict, o: dict, ends: dict, ideal_rows: float, scorers: int, prompts: int, driver_s: float
) -> None:
    """Each later stage's lag after the one before it, its per-prompt cost, capacity and load at the ideal rate
    ``ideal_rows`` (prompts/s the later stages must take), and the prompts/s it delivered while active."""
    chain = ["generate", "score", "rc", "driver"]
    # how long each stage kept going after the one before it finished (the drain, stage by stage)
    for i, stage in enumerate(chain[1:], 1):
        row[f"lag_{stage}_s"] = round(max(0.0, ends[stage] - max(ends[p] for p in chain[:i])), 2)
    # per-row cost of each later stage (Ray Data task wall time; the driver's own loop) and its load at the ideal
    # rate: > 1 means it cannot keep up with the engines however long the run
    pools = {"score": scorers, "rc": 1, "driver": 1}
    costs = {k: o.get(name, {}).get("task_wall_s", 0.0) / max(prompts, 1) for k, name in STAGES}
    costs["driver"] = driver_s / max(prompts, 1)
    row["ideal_prompts_per_s"] = round(ideal_rows, 1)
    for k, c in costs.items():
        row[f"{k}_ms_per_prompt"] = round(1000 * c, 3)
        row[f"{k}_capacity_prompts_per_s"] = round(pools[k] / c, 1) if c else None
        row[f"{k}_load"] = round(ideal_rows * c / pools[k], 3)
    for k, name in STAGES:  # what the stage delivered while it was active (its capacity, when backlogged)
        wall = o.get(name, {}).get("wall_s", 0.0)
        row[f"{k}_observed_prompts_per_s"] = round(o.get(name, {}).get("rows", 0) / wall, 1) if wall else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", default="1,2,4,8,16,32,64", help="generation actor counts (one logical GPU each)")
    ap.add_argument("--batches-per-actor", type=int, default=3, help="prompts = actors x this x --batch-size")
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per batch (sampling.batch_size)")
    ap.add_argument("--n", type=int, default=8, help="samples per prompt (sampling.n)")
    ap.add_argument(
        "--max-tokens", type=int, default=128, help="sampling.max_tokens; simulated candidates are 3/8 to 1 of it long"
    )
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--tokens-per-s", type=float, default=2000.0, help="generated tokens/s of one engine")
    ap.add_argument(
        "--score-speedup",
        type=float,
        default=20.0,
        help="scorer tokens/s per objective = this x --tokens-per-s (a forward pass vs decoding)",
    )
    ap.add_argument("--gen-per-scorer", type=float, default=3.0, help="scorer actors = ceil(actors / this)")
    ap.add_argument("--load-s", type=float, default=0.0, help="simulated model-load seconds per engine")
    ap.add_argument(
        "--no-barrier",
        action="store_true",
        help="engines start when their actor does (on this host: one after another) instead of together",
    )
    ap.add_argument("--object-store-mb", type=int, default=2048)
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "scale_sim"))
    ap.add_argument("--from-json", help="re-render the table, CSV and plot of an earlier scale_sim.json (no runs)")
    ap.epilog = "key=value config overrides (for every run) go anywhere on the line"
    from rcs_ray.cli import parse_with_overrides

    args = parse_with_overrides(ap, argv)
    counts = [int(x) for x in args.actors.split(",")]
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    if args.from_json:
        with open(args.from_json) as fh:
            saved = json.load(fh)
        for r in saved["runs"]:
            r["stalls_at"] = verdict(r)
        return report(saved["settings"], saved["runs"], saved.get("seconds"), args.out)
    rows = []
    print(
        f"engine {args.tokens_per_s:.0f} tok/s, n={args.n}, max_tokens {args.max_tokens}, batch {args.batch_size} "
        f"prompts, {args.batches_per_actor} batches/actor, scorer {args.score_speedup:g}x the engine's tokens/s per "
        f"objective (2 objectives), 1 scorer actor per {args.gen_per_scorer:g} engines",
        flush=True,
    )
    started = time.time()
    for a in counts:
        rows.append(one_run(args, a, args.overrides))
        r = rows[-1]
        print(
            f"A={a:3d}: eff {r['efficiency']:.2f} (e2e {r['efficiency_e2e']:.2f}), {r['achieved_cands_per_s']:.0f}/"
            f"{r['ideal_cands_per_s']:.0f} candidates/s, generation {r['generation_s']:.0f}s + drain "
            f"{r['drain_s']:.0f}s, start-up {r['startup_s']:.0f}s; stalls at: {r['stalls_at']}",
            flush=True,
        )
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "from_json")}
    return report(settings, rows, round(time.time() - started, 1), args.out)


if __name__ == "__main__":
    main()
