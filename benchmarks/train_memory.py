"""Per-worker training memory and step time: 1, 2 and 4 Ray Train workers x ZeRO-2 / ZeRO-3 x full / LoRA.

A Llama of a few hundred MB (default: hidden 1024, 8 layers, MLP 2816: ~104M parameters, ~400 MB in fp32) is trained
for a few DPO steps by the real ``rcs_ray.train.run`` (Ray Train + DeepSpeed on the CPU; reference log-probs given
in the pairs file, so no reference stage runs). Every configuration runs in the same process one after the other, on
one local Ray. From the workers' own metrics (the largest over the workers):

- ``params_at_load_mb``: parameter bytes a worker materialised when the model was built (ZeRO-3: its shard only);
- ``model_state_mb``: parameters + ZeRO's flat copies + gradients + Adam moments the worker holds after a step;
- ``rss_peak_mb``: the worker process's peak resident memory (includes Python, torch, Ray: ~0.6 GB of it is not the
  model);
- ``step_s``: median seconds per optimizer step (steps after the first).

Ratios are printed against the 1-worker run of the same ZeRO stage and mode (the goal: ZeRO-3 model state ~ 1/N)
and LoRA against full fine-tuning. With 4 workers on a 2-core machine the workers share cores: step times there
measure contention, memory does not depend on it. Writes ``benchmarks/reports/train_memory/train_memory.{json,md}``.

    python benchmarks/train_memory.py [--workers 1,2,4] [--hidden 1024 --layers 8 --mlp 2816] [--steps 3]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "benchmarks", "reports", "train_memory")


def build_assets(root: str, args) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rcs_ray.tinyworld import world as W
    from rcs_ray.tinyworld.build import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    heads = args.hidden // 64
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=args.hidden,
            intermediate_size=args.mlp,
            num_hidden_layers=args.layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=256,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    policy = os.path.join(root, "policy")
    model.save_pretrained(policy)
    tok.save_pretrained(policy)
    params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    rows = [
        {
            "prompt": p,
            "chosen": " ".join(rng.choice(W.HELP_WORDS, 6)),
            "rejected": " ".join(rng.choice(W.HARM_WORDS, 6)),
            "target": "helpful",
            "chosen_rewards": [1.0, 2.0],
            "rejected_rewards": [0.0, 0.0],
            "ref_chosen_logps": -40.0,
            "ref_rejected_logps": -41.0,
        }
        for p in W.all_prompts()[:256]
    ]
    pairs = os.path.join(root, "pairs.parquet")
    pq.write_table(pa.Table.from_pylist(rows), pairs)
    return {"policy": policy, "pairs": pairs, "params": params, "params_mb": params * 4 / 2**20}


def one_run(assets: dict, root: str, workers: int, zero: int, lora: bool, steps: int) -> dict:
    from rcs_ray.config import load_config
    from rcs_ray.train import run

    name = f"w{workers}-z{zero}-{'lora' if lora else 'full'}"
    overrides = [
        f"policy.path={assets['policy']}",
        f"output_dir={os.path.join(root, name)}",
        "train.loss=dpo",
        f"train.num_workers={workers}",
        f"train.zero_stage={zero}",
        f"train.max_steps={steps}",
        "train.batch_size=2",
        "train.max_length=48",
        "train.learning_rate=1e-5",
        f"ray.num_cpus={max(2, workers)}",
    ]
    if lora:
        overrides += ["train.lora.r=16", "train.lora.alpha=32"]
    cfg = load_config(None, overrides)
    t0 = time.time()
    result = run(cfg, pairs=assets["pairs"], out_dir=os.path.join(root, name, "train"), progress=False)
    last = result.history[-1]
    step_s = [m["seconds"] for m in result.history[1:]] or [result.history[0]["seconds"]]
    return {
        "name": name,
        "workers": workers,
        "zero_stage": zero,
        "mode": "lora" if lora else "full",
        "params_at_load_mb": round(last["memory/params_at_load_mb"], 1),
        "model_state_mb": round(last["memory/model_state_mb"], 1),
        "rss_peak_mb": round(last["memory/rss_peak_mb"], 1),
        "trainable_params": int(last["memory/trainable_params"]),
        "step_s": round(statistics.median(step_s), 3),
        "seconds_total": round(time.time() - t0, 1),
    }


def add_ratios(rows: list) -> None:
    base = {(r["zero_stage"], r["mode"]): r for r in rows if r["workers"] == 1}
    full = {(r["workers"], r["zero_stage"]): r for r in rows if r["mode"] == "full"}
    for r in rows:
        one = base.get((r["zero_stage"], r["mode"]))
        if one:
            r["state_vs_1_worker"] = round(r["model_state_mb"] / one["model_state_mb"], 3)
            r["load_vs_1_worker"] = round(r["params_at_load_mb"] / one["params_at_load_mb"], 3)
        f = full.get((r["workers"], r["zero_stage"]))
        if f and r["mode"] == "lora":
            r["state_vs_full"] = round(r["model_state_mb"] / f["model_state_mb"], 3)
            r["rss_vs_full"] = round(r["rss_peak_mb"] / f["rss_peak_mb"], 3)


def markdown(rows: list, meta: dict) -> str:
    lines = [
        f"Model: {meta['params'] / 1e6:.0f}M parameters ({meta['params_mb']:.0f} MB fp32), "
        f"{meta['steps']} DPO steps, batch 2 x 48 tokens per worker, CPU ({meta['cpus']} cores). "
        "Per worker, the largest over the workers.",
        "",
        "| workers | ZeRO | mode | params at load (MB) | model state (MB) | state / 1 worker | LoRA / full state "
        "| peak RSS (MB) | step (s) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r['state_vs_1_worker']:.2f}" if "state_vs_1_worker" in r else "-"
        lora = f"{r['state_vs_full']:.2f}" if "state_vs_full" in r else "-"
        lines.append(
            f"| {r['workers']} | {r['zero_stage']} | {r['mode']} | {r['params_at_load_mb']:.0f} | "
            f"{r['model_state_mb']:.0f} | {ratio} | {lora} | {r['rss_peak_mb']:.0f} | {r['step_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--zero", default="2,3")
    ap.add_argument("--modes", default="full,lora")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--mlp", type=int, default=2816)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    import ray

    rows = []
    with tempfile.TemporaryDirectory(prefix="rcs-train-memory-") as root:
        assets = build_assets(root, args)
        print(f"model: {assets['params'] / 1e6:.1f}M parameters, {assets['params_mb']:.0f} MB fp32", flush=True)
        for workers in map(int, args.workers.split(",")):
            ray.shutdown()  # ray.num_cpus follows the number of workers
            for zero in map(int, args.zero.split(",")):
                for mode in args.modes.split(","):
                    r = one_run(assets, root, workers, zero, mode == "lora", args.steps)
                    rows.append(r)
                    print(json.dumps(r), flush=True)
        ray.shutdown()
    add_ratios(rows)
    meta = {
        "params": assets["params"],
        "params_mb": assets["params_mb"],
        "steps": args.steps,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "hidden": args.hidden,
        "layers": args.layers,
        "mlp": args.mlp,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train_memory.json"), "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    md = markdown(rows, meta)
    with open(os.path.join(args.out, "train_memory.md"), "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()
