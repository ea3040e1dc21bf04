"""The training checks of ``benchmarks/gpu_check.py`` (``zero2_bf16``, ``zero3_bf16_export``): one
``rcs-ray train`` run and what its export must be (:func:`train_check`), run by ``gpu_check_tasks.py`` in the check's
own process."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _weights(model_dir: str) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        out.update(load_file(f))
    return out


def train_check(args, numbers: dict, problems: list, zero: int, config: str, ov: list) -> None:
    """``rcs-ray train <config> --stage 1`` with ZeRO-``zero`` and the overrides ``ov``: the steps and finite losses,
    step time and memory, the export (loads, finite, moved, equal to the checkpoint's master weights rounded to its
    dtype) and, for ZeRO-3, its distance from the ZeRO-2 run's weights. Fills ``numbers`` and ``problems``."""
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.config import load_config
    from rcs_ray.run_layout import TrainFiles
    from rcs_ray.tinyworld import resolve
    from rcs_ray.train.loop import DS_TAG

    name = "zero2_bf16" if zero == 2 else "zero3_bf16_export"
    out = os.path.join(args.work, name)
    shutil.rmtree(out, ignore_errors=True)  # a --work dir used before: train afresh, not resume
    t = time.perf_counter()
    rc = subprocess.call(
        [sys.executable, "-m", "rcs_ray", "train", config, "--stage", "1", "--out", out, *ov], cwd=ROOT
    )
    numbers["train_command_s"] = round(time.perf_counter() - t, 1)
    if rc != 0:
        raise RuntimeError(f"rcs-ray train exited {rc}")
    files = TrainFiles(out)
    summary = json.load(open(files.summary))
    history = [json.loads(line) for line in open(files.metrics) if line.strip()]
    steps = [m["seconds"] for m in history[1:]] or [history[0]["seconds"]]
    numbers.update(
        steps=summary["steps"],
        zero_stage=summary["zero_stage"],
        precision=summary["precision"],
        first_loss=round(history[0]["loss"], 4),
        last_loss=round(history[-1]["loss"], 4),
        step_s=round(statistics.median(steps), 3),
        tokens_per_s=round(history[-1]["tokens_per_second"]),
        memory_mb=summary["memory_mb"],
        seconds_by_part=summary["seconds_by_part"],
    )
    want = int(load_config(config, ov).stages[0].train.max_steps)
    if summary["steps"] != want or not all(map(lambda m: m["loss"] == m["loss"], history)):
        problems.append(f"expected {want} steps with finite losses, got {[m['loss'] for m in history]}")
    # the workers computed the reference log-probs (NCCL all-gather) with the engine that trains: DPO's step 1 then
    # compares the policy with itself, ln 2 up to bf16 rounding of differently padded batches
    numbers["reference_pass"] = summary.get("reference_pass")
    if summary.get("reference_pass") == "training workers" and summary["loss"] == "dpo":
        if abs(history[0]["loss"] - math.log(2)) > 1e-2:
            problems.append(f"step 1's DPO loss {history[0]['loss']} is not ln 2 (the workers' reference)")
    model, info = AutoModelForCausalLM.from_pretrained(files.model, output_loading_info=True, dtype="auto")
    numbers["export_dtype"] = str(next(model.parameters()).dtype)
    if info["missing_keys"] or info["unexpected_keys"]:
        problems.append(f"the export loads with missing {info['missing_keys']} / unexpected {info['unexpected_keys']}")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        problems.append("the exported weights are not all finite")
    exported = _weights(files.model)
    start = _weights(resolve("tinyworld:policy", load_config(config, ov).tinyworld, progress=False))
    changed = sum(int((exported[k] != start[k].to(exported[k].dtype)).sum()) for k in exported if k in start)
    numbers["changed_fraction"] = round(changed / sum(v.numel() for v in exported.values()), 4)
    if changed == 0:
        problems.append("training changed no exported weight")
    # round trip: the fp32 master weights in the DeepSpeed checkpoint, rounded to the export's dtype, are the export
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    master = {
        k: v.detach() for k, v in get_fp32_state_dict_from_zero_checkpoint(summary["checkpoint"], tag=DS_TAG).items()
    }
    common = [k for k in exported if k in master]
    gaps = {k: (master[k].to(exported[k].dtype).float() - exported[k].float()).abs() for k in common}
    far = sum(int((gaps[k] > torch.finfo(exported[k].dtype).eps * master[k].abs()).sum()) for k in common)
    diff = max(float(g.max()) for g in gaps.values())
    numbers["export_round_trip"] = {
        "tensors": len(common),
        "of": len(exported),
        "max_abs_diff": diff,
        "equal": diff == 0.0,
        "beyond_one_rounding_step": far,
    }
    if len(common) < len(exported) - 1 or far:  # -1: a tied head may be stored once
        problems.append(f"the export differs from the checkpoint's master weights: {numbers['export_round_trip']}")
    other = os.path.join(args.work, "zero2_bf16", "model")
    if zero == 3 and os.path.isdir(other):  # same data, seed and steps: about the same weights
        z2 = _weights(other)
        upd = sum(float((z2[k].float() - start[k].float()).norm() ** 2) for k in z2 if k in start) ** 0.5
        gap = sum(float((z2[k].float() - exported[k].float()).norm() ** 2) for k in z2 if k in exported) ** 0.5
        numbers["zero3_vs_zero2"] = {"update_norm": round(upd, 5), "difference_norm": round(gap, 5)}
