"""DPO step time: our step (DeepSpeed engine, the loop's forward / loss) vs TRL's ``DPOTrainer`` and a plain PyTorch
step.

Same tiny Llama (the tiny world's shape: hidden 128, 2 layers), same tokenized pairs, same batches, same AdamW
(no weight decay, constant LR) and clipping at 1.0, fp32 on the CPU. Variants:

- ``plain``: one process, ``torch.optim.AdamW``, concatenated chosen + rejected forward, hand-written DPO loss;
- ``ours_zero0`` / ``ours_zero2``: :mod:`rcs_ray.train.batches`' ``pair_logps`` + ``preference_loss`` under a DeepSpeed
  engine built by ``build_ds_config`` (world size 1, in this process);
- ``trl``: ``trl.DPOTrainer.train()`` on the same model / pairs / batches, reference log-probs precomputed by TRL
  (``precompute_ref_log_probs=True``) -- like for like; ``trl_ref_in_step``: TRL's default, a reference-model forward
  in every step. Step time from a ``TrainerCallback`` (``on_step_begin`` -> ``on_step_end``), see ``dpo_step_trl.py``.
  Needs the benchmark-only extra ``pip install '.[bench]'``; without TRL these rows are left out, with a note;
- ``ray_train_2w`` (``--ray``): the full ``rcs_ray.train.run`` on 2 Ray Train workers; its per-step seconds come from
  the workers' metrics (global batch = 2 x batch), start-up costs reported apart.

plain / ours / trl use precomputed reference log-probs (computed before timing, as the trainer's reference stage
does). The in-process variants take turns on every batch (TRL's ``train()`` runs in a thread held in lock-step), and
the first 3 steps of each are not timed. Prints median ms per step, tokens/s (non-padding tokens of chosen + rejected
per second), and each variant's step time per pair divided by ``plain``'s and by ``trl``'s (``ours / TRL``);
writes JSON to ``benchmarks/results/dpo_step.json``.

    python benchmarks/dpo_step.py [--pairs 256] [--batch 16] [--steps 40] [--max-length 64] [--ray] [--no-trl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

# benchmarks/ is on sys.path as a script
from dpo_step_variants import BETA, LR, batches, build_assets, ours_step_fn, plain_step_fn, reference_logps

NOTES = {
    "plain": "one process: policy forward of chosen+rejected concatenated, log-softmax gather, DPO loss, backward, "
    "clip, torch AdamW; precomputed reference log-probs; batch already collated.",
    "ours_zero0": "rcs_ray.train.batches pair_logps + preference_loss('dpo') under a DeepSpeed engine (ZeRO-0, "
    "world 1): engine.backward + engine.step (clip, torch AdamW); precomputed reference log-probs; batch already "
    "collated.",
    "ours_zero2": "the same under ZeRO-2.",
    "ray_train_2w": "rcs_ray.train.run on 2 Ray Train workers (ZeRO-2), per-step seconds from the workers' metrics; "
    "includes the gradient all-reduce and the loop's own collation; start-up in seconds_by_part.",
}


WARMUP = 3  # steps of each variant that are not timed


def measure(steps: dict, data, warmup: int = WARMUP) -> dict:
    """Median step time of each variant; the variants take turns on every batch (rotating order), so load from
    other processes on a shared machine falls on all of them alike."""
    names = list(steps)
    times = {n: [] for n in names}
    losses = {n: [] for n in names}
    for i, b in enumerate(data):
        for n in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            losses[n].append(steps[n](b))
            if i >= warmup:
                times[n].append(time.perf_counter() - t0)
    out = {}
    for n in names:
        # A variant that times its own step (TRL: callback) and counts its own tokens is reported from those; the
        # benchmark's timing of its whole turn is kept as ms_per_call.
        own = getattr(steps[n], "step_seconds", None)
        med = statistics.median(own[warmup:] if own else times[n])
        tokens = statistics.mean(getattr(steps[n], "tokens", None) or [b["tokens"] for b in data])
        out[n] = {
            "ms_per_step": round(1000 * med, 3),
            "tokens_per_second": round(tokens / med, 1),
            "first_loss": round(losses[n][0], 5),
            "last_loss": round(losses[n][-1], 5),
            "steps_timed": len(times[n]),
        }
        if own:
            out[n]["ms_per_call"] = round(1000 * statistics.median(times[n]), 3)
    return out


def ray_train(root: str, policy: str, rows, batch: int, steps: int, max_length: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rcs_ray.config import load_config
    from rcs_ray.train import run

    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    pairs = os.path.join(root, "pairs.parquet")
    pq.write_table(pa.Table.from_pylist(rows), pairs)
    cfg = load_config(
        None,
        [
            f"output_dir={root}/out",
            f"policy.path={policy}",
            f"train.batch_size={batch}",
            f"train.max_steps={steps}",
            f"train.learning_rate={LR}",
            f"train.beta={BETA}",
            f"train.max_length={max_length}",
            "train.zero_stage=2",
            "train.num_workers=2",
            "ray.num_cpus=2",
            "ray.object_store_memory_mb=256",
        ],
    )
    t0 = time.time()
    result = run(cfg, pairs=pairs, progress=False)
    wall = time.time() - t0
    import ray

    ray.shutdown()
    timed = [m for m in result.history[3:]]
    med = statistics.median(m["seconds"] for m in timed)
    return {
        "ms_per_step": round(1000 * med, 3),
        "global_batch": 2 * batch,
        "tokens_per_second": round(statistics.median(m["tokens_per_second"] for m in timed), 1),
        "first_loss": round(result.history[0]["loss"], 5),
        "last_loss": round(result.history[-1]["loss"], 5),
        "wall_seconds": round(wall, 1),
        "seconds_by_part": result.summary["seconds_by_part"],
    }


def trl_variants(root, policy, tok, rows, feats, ref, args):
    """``(steps, info)``: the TRL step functions (started, parked before their first step) and what to report about
    them; no steps and a note when TRL is not importable (or ``--no-trl``)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dpo_step_trl as T

    version = T.trl_version()
    if args.no_trl or version is None:
        return {}, {"available": False, "note": "skipped (--no-trl)" if args.no_trl else T.TRL_MISSING}
    steps, info = {}, {"available": True, "version": version, "notes": T.NOTES, "setup_seconds": {}, "checks": {}}
    for name, precompute in (("trl", True), ("trl_ref_in_step", False)):
        fn = T.LockstepTRL(root, name, policy, tok, rows, args.batch, args.steps, args.max_length, LR, BETA, precompute)
        info["setup_seconds"][name] = round(fn.setup_seconds, 2)
        info["checks"][name] = fn.check(feats, ref if precompute else None)
        fn.start()
        steps[name] = fn
    return steps, info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--ray", action="store_true", help="also time the full Ray Train run on 2 workers")
    ap.add_argument("--no-trl", action="store_true", help="leave out the TRL DPOTrainer variants")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "dpo_step.json"))
    args = ap.parse_args(argv)
    if args.steps <= WARMUP:
        ap.error(f"--steps must exceed the {WARMUP} untimed warm-up steps, got {args.steps}")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as root:
        tok, policy, rows, feats = build_assets(root, args.pairs, args.max_length)
        ref = reference_logps(policy, feats, tok.pad_token_id)
        data = batches(feats, ref, args.batch, args.steps, tok.pad_token_id)
        # TRL first: its Accelerator is set up before the DeepSpeed variants export RANK / WORLD_SIZE.
        trl_steps, trl = trl_variants(root, policy, tok, rows, feats, ref, args)
        steps = {"plain": plain_step_fn(policy)}
        for stage in (0, 2):
            steps[f"ours_zero{stage}"] = ours_step_fn(policy, stage, args.batch)
        try:
            results = measure({**steps, **trl_steps}, data)
        finally:
            for fn in trl_steps.values():
                fn.close()
        if args.ray:
            results["ray_train_2w"] = ray_train(root, policy, rows, args.batch, args.steps, args.max_length)
    per_pair = {n: r["ms_per_step"] / r.get("global_batch", args.batch) for n, r in results.items()}
    for name, r in results.items():
        r["ratio_to_plain"] = round(per_pair[name] / per_pair["plain"], 3)
        if "trl" in results:
            r["ratio_to_trl"] = round(per_pair[name] / per_pair["trl"], 3)
    if "trl" in results:  # the number: our step time / TRL's, per pair
        trl["ours_div_trl"] = {
            f"{o} / {t}": round(per_pair[o] / per_pair[t], 3)
            for o in ("ours_zero0", "ours_zero2", "ray_train_2w")
            if o in results
            for t in ("trl", "trl_ref_in_step")
        }
    notes = {**NOTES, **trl.get("notes", {})}
    report = {
        "benchmark": "dpo_step",
        "pairs": args.pairs,
        "batch": args.batch,
        "steps": args.steps,
        "max_length": args.max_length,
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "results": results,
        "trl": trl,
        "notes": {n: notes[n] for n in results},
    }
    print(
        f"{'variant':<17}{'ms/step':>9}{'tokens/s':>10}{'/plain':>8}{'/trl':>8}{'last loss':>11}"
        "  (ratios: step time per pair)"
    )
    for name, r in results.items():
        print(
            f"{name:<17}{r['ms_per_step']:>9.1f}{r['tokens_per_second']:>10.0f}{r['ratio_to_plain']:>8.2f}"
            + (f"{r['ratio_to_trl']:>8.2f}" if "ratio_to_trl" in r else f"{'-':>8}")
            + f"{r['last_loss']:>11.5f}"
        )
    if trl["available"]:
        print("ours / TRL DPOTrainer: " + ", ".join(f"{k} = {v:.2f}" for k, v in trl["ours_div_trl"].items()))
        print(f"TRL {trl['version']}: checks {trl['checks']}, set-up seconds {trl['setup_seconds']}")
    else:
        print(trl["note"])
    for name in results:
        print(f"- {name}: {notes[name]}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
