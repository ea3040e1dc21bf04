"""A training stage with its reference log-probs computed by the training workers (``train.reference_pass: auto``)
against the same stage with a separate Ray Data pass (``separate``), side by side on one local Ray.

Each repeat trains the tiny world's stage 1 (``configs/tiny/k2.yaml``: DPO against the policy it starts from) once per
mode, alternating which mode goes first, through the real ``rcs_ray.train.run`` (tokenization, the reference
log-probs, Ray Train + DeepSpeed, the export), each into a fresh output dir so nothing is reused. Ray starts once,
before the first run, and is not counted. Reported per mode: the median wall time of a stage and its parts (the
driver's ``features`` step, the ``fit``), the ratio auto / separate, and step 1's loss (DPO against its own starting
policy: ln 2). The two modes' reference log-probs are compared pair by pair (the largest absolute difference): the
workers' engine and the separate pass's model must give the same values.

What this host cannot show: on a GPU node the separate pass loads the reference model once more per actor (minutes
for an 8B model); the tiny world's 0.4M-parameter policy loads in milliseconds, so the saving here is the pass's
actor start-up and its imports.

    python benchmarks/reference_pass.py [--repeats 3] [--pairs 256] [--steps 2] [--workers 1] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.path.join(ROOT, "benchmarks", "reports", "reference_pass")
MODES = ("auto", "separate")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pairs", type=int, default=256, help="stage-1 pairs (the dataset's first N)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", default=OUT)
    p.add_argument("--work", default=None, help="work dir (default: a temporary one)")
    p.add_argument("--tinyworld", default=os.path.join(ROOT, ".cache", "tinyworld"), help="tiny world cache dir")
    return p.parse_args(argv)


def config(args, mode: str, out: str):
    from rcs_ray.config import load_config

    return load_config(
        os.path.join(ROOT, "configs", "tiny", "k2.yaml"),
        [
            f"output_dir={out}",
            f"tinyworld.cache_dir={args.tinyworld}",
            f"stages.0.data.limit={args.pairs}",
            f"stages.0.train.max_steps={args.steps}",
            f"train.batch_size={args.batch}",
            f"train.num_workers={args.workers}",
            f"train.reference_pass={mode}",
        ],
    )


def one_stage(args, mode: str, out: str) -> dict:
    import pyarrow.parquet as pq

    from rcs_ray.train import run

    t0 = time.perf_counter()
    result = run(config(args, mode, out), stage=0, progress=False)
    wall = time.perf_counter() - t0
    features = pq.read_table(os.path.join(result.out_dir, "features.parquet")).sort_by("index")
    return {
        "mode": mode,
        "how": result.summary["reference_pass"],
        "seconds": round(wall, 2),
        "parts": result.summary["seconds_by_part"],
        "step1_loss": result.history[0]["loss"],
        "ref": [features.column(c).to_pylist() for c in ("ref_chosen_logps", "ref_rejected_logps")],
    }


def summarize(runs: list, args) -> dict:
    out = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "work", "tinyworld")}}
    out["host"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        out[mode] = {
            "how": sorted({r["how"] for r in mine}),
            "seconds": [r["seconds"] for r in mine],
            "median_s": statistics.median(r["seconds"] for r in mine),
            "median_features_s": statistics.median(r["parts"].get("features", 0.0) for r in mine),
            "median_fit_s": statistics.median(r["parts"].get("fit", 0.0) for r in mine),
            "step1_loss": [r["step1_loss"] for r in mine],
        }
    out["ratio_auto_over_separate"] = round(out["auto"]["median_s"] / out["separate"]["median_s"], 3)
    auto, sep = (next(r["ref"] for r in runs if r["mode"] == m) for m in MODES)
    out["max_abs_ref_diff"] = max(abs(a - b) for side in range(2) for a, b in zip(auto[side], sep[side]))
    out["ln2"] = math.log(2)
    return out


def markdown(s: dict) -> str:
    rows = [
        f"| {m} | {', '.join(s[m]['how'])} | {s[m]['median_s']:.1f} | {s[m]['median_features_s']:.1f} | "
        f"{s[m]['median_fit_s']:.1f} | {', '.join(f'{x:.1f}' for x in s[m]['seconds'])} | "
        f"{', '.join(f'{x:.6f}' for x in s[m]['step1_loss'])} |"
        for m in MODES
    ]
    return "\n".join(
        [
            "# Reference log-probs in the training workers against a separate pass",
            "",
            f"Settings: {json.dumps(s['settings'])}; host: {json.dumps(s['host'])}. Ray started once, not counted.",
            "",
            "| mode | reference pass | median s | features s | fit s | every run s | step-1 loss |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Ratio auto / separate (median wall of a stage): **{s['ratio_auto_over_separate']:.3f}**. "
            f"Largest difference between the two modes' reference log-probs: {s['max_abs_ref_diff']:.2e} "
            f"(ln 2 = {s['ln2']:.6f}).",
            "",
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from rcs_ray.config import load_config
    from rcs_ray.ray_runtime import init_ray

    init_ray(load_config(os.path.join(ROOT, "configs", "tiny", "k2.yaml")).ray)
    runs = []
    with tempfile.TemporaryDirectory(prefix="rcs-refpass-") as tmp:
        work = args.work or tmp
        for r in range(args.repeats):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                runs.append(one_stage(args, mode, os.path.join(work, f"{mode}-{r}")))
                print(f"repeat {r + 1}/{args.repeats} {mode}: {runs[-1]['seconds']:.1f} s", flush=True)
    summary = summarize(runs, args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "reference_pass.json"), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=1)
    with open(os.path.join(args.out, "reference_pass.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown(summary))
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
