"""Pipeline throughput vs the raw engine on the same prompts, in the same run.

(a) raw: the engine in this process generates n samples for every prompt (same seeds as the pipeline);
(b) pipeline: the Ray Data run (generate -> score -> RC filter -> write) over the same prompts.
Prints generated tokens/s of both and their ratio (pipeline / raw), writes JSON.

    python benchmarks/pipeline_throughput.py [--config configs/tiny/k2.yaml] [--engine hf|vllm] [--prompts 256]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from rcs_ray.config import load_config


def raw_engine(cfg, model, rows):
    """Generated tokens and seconds for the engine alone (model loading excluded)."""
    from rcs_ray.prompting import prompt_ids
    from rcs_ray.sampling.engines import make_engine
    from rcs_ray.sampling.stages import sample_seed

    engine = make_engine(model, cfg.sampling)
    texts = [prompt_ids(engine.tokenizer, r["prompt"], model.chat_template) for r in rows]
    seeds = [[sample_seed(cfg.sampling.seed, r["prompt_id"], i) for i in range(cfg.sampling.n)] for r in rows]
    bs = cfg.sampling.batch_size
    engine.generate(texts[:1], [seeds[0][:1]])                      # warm-up
    start, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), bs):
        for group in engine.generate(texts[i:i + bs], seeds[i:i + bs]):
            tokens += sum(c.num_tokens for c in group)
    return tokens, time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/tiny/k2.yaml")
    ap.add_argument("--engine", default=None, help="hf | vllm (default: the config's)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--stage", type=int, default=2, help="1-based stage whose prompts are sampled")
    ap.add_argument("--out", default=os.path.join("benchmarks", "results", "pipeline_throughput.json"))
    ap.epilog = "key=value config overrides go anywhere on the line"
    from rcs_ray.cli import parse_with_overrides

    args = parse_with_overrides(ap, argv)
    overrides = [f"stages.{args.stage - 1}.data.limit={args.prompts}", *args.overrides]
    if args.engine:
        overrides.append(f"sampling.engine={args.engine}")
    cfg = load_config(args.config, overrides)

    from rcs_ray.ray_runtime import init_ray, worker_env
    from rcs_ray.sampling.job import stage_job
    from rcs_ray.sampling.pipeline import read_groups, run

    for key, value in worker_env(cfg.sampling.num_gpus > 0).items():
        os.environ.setdefault(key, value)
    k = args.stage - 1
    model = stage_job(cfg, k).policy
    rows, _ = read_groups(cfg.stages[k].data, cfg.tinyworld)
    raw_tokens, raw_s = raw_engine(cfg, model, rows)
    init_ray(cfg.ray, use_gpu=cfg.sampling.num_gpus > 0)       # Ray start-up is not counted against the pipeline
    with tempfile.TemporaryDirectory() as out:
        stats = run(cfg, stage=args.stage - 1, out_dir=out, progress=False).stats
    pipe_tokens, pipe_s = stats["tokens_generated"], stats["seconds"]
    result = {
        "engine": cfg.sampling.engine, "prompts": len(rows), "n": cfg.sampling.n,
        "max_tokens": cfg.sampling.max_tokens, "raw": {"tokens": raw_tokens, "seconds": raw_s,
                                                       "tokens_per_s": raw_tokens / raw_s},
        "pipeline": {"tokens": pipe_tokens, "seconds": pipe_s, "tokens_per_s": pipe_tokens / pipe_s,
                     "actor_seconds_by_stage": stats["actor_seconds_by_stage"], "pairs": stats["pairs"],
                     "failed": stats["failed"]},
    }
    result["ratio_pipeline_over_raw"] = result["pipeline"]["tokens_per_s"] / result["raw"]["tokens_per_s"]
    result["same_tokens"] = raw_tokens == pipe_tokens
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"{cfg.sampling.engine}: {len(rows)} prompts x n={cfg.sampling.n}")
    print(f"  raw engine: {result['raw']['tokens_per_s']:,.0f} tok/s ({raw_tokens} tokens, {raw_s:.1f}s)")
    print(f"  pipeline:   {result['pipeline']['tokens_per_s']:,.0f} tok/s ({pipe_tokens} tokens, {pipe_s:.1f}s, "
          f"generation + scoring + RC + write, actor start-up included)")
    print(f"  ratio pipeline / raw = {result['ratio_pipeline_over_raw']:.2f}  (same samples: {result['same_tokens']})")
    print(f"  -> {args.out}")
    return result


if __name__ == "__main__":
    main()
