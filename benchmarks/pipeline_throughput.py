"""Pipeline throughput vs the engine's best raw figure, per engine, side by side in one run.

For each engine (``--engines hf,vllm``), on the same prompts and seeds:

(a) raw: the engine in this process generates n samples for every prompt, (a1) in **one call over all prompts** (the
    engine's best case: vLLM schedules everything at once) and (a2) batch by batch at the pipeline's batch size;
    the best of the two is the raw figure;
(b) pipeline: the Ray Data run (generate -> score -> RC-select -> write) over the same prompts, with its
    ``stats.json`` split into start-up (until the first batch reached an engine) and steady state.

Prints and writes (``--out``: ``pipeline_throughput.json`` and ``.md``) generated tokens/s of each and the ratios
steady-state pipeline / best raw and end-to-end pipeline / best raw. Goals (issue 14): steady >= 0.9, end to end
>= 0.8 at 2,048 prompts.

    python benchmarks/pipeline_throughput.py [--engines hf,vllm] [--prompts 2048] [--repeats 3] [key=value overrides]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager

from rcs_ray.config import load_config

GOALS = {"steady": 0.9, "end_to_end": 0.8}


def raw_engine(cfg, model, rows) -> dict:
    """Generated tokens/s of the engine alone (model loading and one warm-up call excluded), with the CPU threads
    the pipeline gives its generation actor (``sampling.num_cpus``: Ray sets OMP_NUM_THREADS to it)."""
    import torch

    from rcs_ray.prompting import PromptRule, prompt_ids
    from rcs_ray.sampling.engines import make_engine
    from rcs_ray.sampling.seeds import sample_seed

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.sampling.num_cpus)))
    engine = make_engine(model, cfg.sampling)
    ids = [prompt_ids(engine.tokenizer, r["prompt"], PromptRule.of(model)) for r in rows]
    seeds = [[sample_seed(cfg.sampling.seed, r["prompt_id"], i) for i in range(cfg.sampling.n)] for r in rows]
    engine.generate(ids[:1], [seeds[0][:1]])  # warm-up
    out = {}
    bs = cfg.sampling.batch_size
    for mode, chunks in (
        ("one_call", [(0, len(ids))]),
        ("batched", [(i, min(len(ids), i + bs)) for i in range(0, len(ids), bs)]),
    ):
        start, tokens = time.perf_counter(), 0
        for a, b in chunks:
            tokens += sum(c.num_tokens for group in engine.generate(ids[a:b], seeds[a:b]) for c in group)
        seconds = time.perf_counter() - start
        out[mode] = {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}
    del engine
    gc.collect()
    torch.set_num_threads(threads)
    return out


ENGINE_CORE = 0  # --pin: the engine's core; every other process runs on the rest


def _pin(pid: int, cores: set) -> None:
    """Every thread of ``pid`` onto ``cores`` (a thread's affinity is its own: setting the process's main thread
    alone would leave the engine's OpenMP and loop threads where they were)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cores)
        except OSError:  # the thread ended meanwhile
            pass


@contextmanager
def engine_core(pin: bool):
    """With ``pin``: this process (and so the Ray it starts: raylet, Ray Data, scorers) runs on every core but
    ``ENGINE_CORE``, and a watcher moves each generation host (``ray::GenerateStageHost``) onto ``ENGINE_CORE`` as
    it appears, so the engine has a core of its own as in the raw run. Linux only."""
    if not pin:
        yield
        return
    rest = set(range(os.cpu_count())) - {ENGINE_CORE}
    _pin(os.getpid(), rest)
    stop = threading.Event()

    def watch():
        while not stop.wait(0.1):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        title = fh.read(64)
                except OSError:
                    continue
                if title.startswith(b"ray::GenerateStageHost"):
                    _pin(int(pid), {ENGINE_CORE})

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


@contextmanager
def raw_core(pin: bool):
    """With ``pin``: the raw engine runs on ``ENGINE_CORE`` alone (nothing else runs meanwhile), as the pipeline's."""
    if not pin:
        yield
        return
    before = os.sched_getaffinity(0)
    _pin(os.getpid(), {ENGINE_CORE})
    try:
        yield
    finally:
        _pin(os.getpid(), before)


def one_engine(args, engine: str) -> dict:
    from rcs_ray.ray_runtime import init_ray
    from rcs_ray.sampling.job import stage_job
    from rcs_ray.sampling.pipeline import read_groups, run

    k = args.stage - 1
    cfg = load_config(
        args.config, [f"stages.{k}.data.limit={args.prompts}", f"sampling.engine={engine}", *args.overrides]
    )
    rows, _ = read_groups(cfg.stages[k].data, cfg.tinyworld)
    with raw_core(args.pin):
        raw = raw_engine(cfg, stage_job(cfg, k).policy, rows)
    best = max(raw.values(), key=lambda r: r["tokens_per_s"])
    with engine_core(args.pin), tempfile.TemporaryDirectory() as out:
        init_ray(cfg.ray, use_gpu=cfg.sampling.num_gpus > 0)  # Ray's own start-up is not the pipeline's
        stats = run(cfg, stage=k, out_dir=out, progress=False).stats
    pipe = {
        "tokens": stats["tokens_generated"],
        "seconds": stats["seconds"],
        "tokens_per_s": stats["tokens_per_second"],
        "startup_seconds": stats["startup_seconds"],
        "steady_seconds": stats["steady_state_seconds"],
        "steady_tokens_per_s": stats["steady_state_tokens_per_second"],
        "rc_select_seconds": stats["rc_select_seconds"],
        "rc_select_share_of_wall": stats["rc_select_share_of_wall"],
        "actor_seconds_by_stage": stats["actor_seconds_by_stage"],
        "pairs": stats["pairs"],
        "failed": stats["failed"],
    }
    return {
        "engine": engine,
        "prompts": len(rows),
        "n": cfg.sampling.n,
        "max_tokens": cfg.sampling.max_tokens,
        "batch_size": cfg.sampling.batch_size,
        "max_concurrent_batches": cfg.sampling.max_concurrent_batches,
        "pinned": bool(args.pin),
        "raw": raw,
        "best_raw": max(raw, key=lambda m: raw[m]["tokens_per_s"]),
        "pipeline": pipe,
        "steady_over_best_raw": round(pipe["steady_tokens_per_s"] / best["tokens_per_s"], 3),
        "end_to_end_over_best_raw": round(pipe["tokens_per_s"] / best["tokens_per_s"], 3),
        "same_tokens": raw["one_call"]["tokens"] == pipe["tokens"],
    }


def markdown(results: list, argv: list) -> str:
    lines = [
        f"Command: `python benchmarks/pipeline_throughput.py {' '.join(argv)}` on {os.cpu_count()} CPUs.",
        "",
        "| engine | prompts × n | raw one call tok/s | raw batched tok/s | pipeline steady tok/s | pipeline end "
        "to end tok/s | start-up s | steady ÷ best raw (goal 0.9) | end to end ÷ best raw (goal 0.8) | RC share "
        "of wall | same samples | steady ratio, every repeat |",
        "|---" * 12 + "|",
    ]
    for r in results:
        p = r["pipeline"]
        lines.append(
            f"| {r['engine']} | {r['prompts']} × {r['n']} | {r['raw']['one_call']['tokens_per_s']:,.0f} | "
            f"{r['raw']['batched']['tokens_per_s']:,.0f} | {p['steady_tokens_per_s']:,.0f} | "
            f"{p['tokens_per_s']:,.0f} | {p['startup_seconds']:.1f} | {r['steady_over_best_raw']:.2f} | "
            f"{r['end_to_end_over_best_raw']:.2f} | {100 * p['rc_select_share_of_wall']:.2f}% | "
            f"{r['same_tokens']} | {', '.join(f'{x:.2f}' for x in r['steady_ratios'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny/k2.yaml")
    ap.add_argument("--engines", default="hf,vllm", help="comma-separated: hf, vllm (or one)")
    ap.add_argument("--engine", default=None, help=argparse.SUPPRESS)  # the old single-engine spelling
    ap.add_argument("--prompts", type=int, default=2048)
    ap.add_argument("--stage", type=int, default=2, help="1-based stage whose prompts are sampled")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "pipeline_throughput"))
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="raw then pipeline this many times per engine, interleaved; the table shows the repeat with "
        "the median steady ratio and every repeat's ratios (this machine is noisy)",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help=f"give the engine core {ENGINE_CORE} alone, raw and in the pipeline (every other process on the rest): "
        "tells the pipeline's cost from the cores it shares (Linux)",
    )
    ap.epilog = "key=value config overrides go anywhere on the line"
    from rcs_ray.cli import parse_with_overrides
    from rcs_ray.ray_runtime import worker_env

    args = parse_with_overrides(ap, argv)
    engines = [args.engine] if args.engine else [e for e in args.engines.split(",") if e]
    cfg = load_config(args.config, args.overrides)
    for key, value in worker_env(use_gpu=cfg.sampling.num_gpus > 0).items():  # the CPU vLLM settings on CPU only
        os.environ.setdefault(key, value)
    results = []
    for engine in engines:
        runs = sorted(
            (one_engine(args, engine) for _ in range(max(1, args.repeats))), key=lambda x: x["steady_over_best_raw"]
        )
        r = dict(
            runs[len(runs) // 2],
            steady_ratios=[x["steady_over_best_raw"] for x in runs],
            end_to_end_ratios=sorted(x["end_to_end_over_best_raw"] for x in runs),
        )
        results.append(r)
        p = r["pipeline"]
        print(
            f"{engine}: {r['prompts']} prompts x n={r['n']}: raw one call {r['raw']['one_call']['tokens_per_s']:,.0f}"
            f" tok/s, batched {r['raw']['batched']['tokens_per_s']:,.0f}; pipeline steady "
            f"{p['steady_tokens_per_s']:,.0f}, end to end {p['tokens_per_s']:,.0f} (start-up {p['startup_seconds']}"
            f" s); steady / best raw = {r['steady_over_best_raw']:.2f} (goal {GOALS['steady']}), end to end / best"
            f" raw = {r['end_to_end_over_best_raw']:.2f} (goal {GOALS['end_to_end']}); same samples: "
            f"{r['same_tokens']}",
            flush=True,
        )
    os.makedirs(args.out, exist_ok=True)
    argv_list = list(argv) if argv is not None else __import__("sys").argv[1:]
    with open(os.path.join(args.out, "pipeline_throughput.json"), "w") as fh:
        json.dump({"argv": argv_list, "cpus": os.cpu_count(), "goals": GOALS, "results": results}, fh, indent=2)
    md = markdown(results, argv_list)
    with open(os.path.join(args.out, "pipeline_throughput.md"), "w") as fh:
        fh.write(md)
    print(md + f"-> {args.out}/pipeline_throughput.json, .md")
    return results


if __name__ == "__main__":
    main()
