"""GPU acceptance check: the CUDA paths of rcs-ray in one command, each check in its own process and time limit.

    python benchmarks/gpu_check.py [--out DIR] [--budget-s 420] [--world DIR] [--prompts 2048] [--only a,b] [--plan]

Checks, cheapest and most informative first (bodies: ``benchmarks/gpu_check_tasks.py``):

1. ``environment`` -- torch.cuda, the device, versions of torch / vllm / deepspeed / transformers / flash_attn /
   bitsandbytes, a bf16 matmul on the GPU;
2. ``tiny_world`` -- the tiny world's policy and data, built once into ``--world`` (a tinyworld cache dir; the repo's
   ``.cache/tinyworld`` by default, so a world built elsewhere can travel with the tree);
3. ``vllm_engine`` -- rcs-ray's own vLLM engine (``make_engine``, engine vllm, bf16) on the tiny policy: n samples
   per prompt, token counts against finished flags, distinct seeded samples, the ``submit`` path, tokens/s;
4. ``zero2_bf16`` / 5. ``zero3_bf16_export`` -- ``rcs-ray train configs/tiny/k2.yaml --stage 1`` on one GPU, bf16,
   ZeRO-2 then ZeRO-3, 3 steps; the exported model loads with every weight finite and moved, and equals the
   checkpoint's fp32 master weights rounded to bf16 (export round trip); step time and, from nvidia-smi, peak GPU
   memory;
6. ``pytest_gpu`` -- ``python -m pytest -m gpu`` (QLoRA, flash-attention 2);
7. ``pipeline_vllm`` -- ``benchmarks/pipeline_throughput.py --engines vllm``: the pipeline's steady / raw ratio.

A check is skipped, with the reason, where it cannot run ("no CUDA", "vllm not installed", "budget exhausted"...).
Writes ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` (every check's output) to ``--out``; exits 0
when every check that ran passed. ``--plan`` prints the checks and loads every module and config they use (no
CUDA needed), exit 0 when all load (``benchmarks/gpu_check_plan.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))


def _beside(name: str):
    """``<name>.py`` beside this file (it imports the standard library only), without touching sys.path."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


T = _beside("gpu_check_tasks")  # each check's body, run in its own process
P = _beside("gpu_check_plan")  # --plan

ROOT = T.ROOT
OUT = os.path.join(ROOT, "benchmarks", "reports", "gpu_check")


@dataclass(frozen=True)
class Check:
    name: str
    timeout_s: int
    what: str
    modules: tuple = ()  # Python packages it needs
    any_of: tuple = ()  # at least one of these (else skipped)
    cuda: bool = True
    world: bool = False  # needs the tiny world
    imports: tuple = ()  # rcs_ray modules it uses (--plan imports them)
    min_s: int = 30  # skipped when less of the budget is left


BASE = ("torch", "transformers", "omegaconf")
CHECKS = (
    Check("environment", 90, "torch.cuda, device, package versions, a bf16 matmul", ("torch",), cuda=False, min_s=5),
    Check(
        "tiny_world",
        300,
        "the tiny world (policy, data): found in --world or built there",
        BASE,
        cuda=False,
        imports=("rcs_ray.tinyworld",),
        min_s=20,
    ),
    Check(
        "vllm_engine",
        240,
        "make_engine(engine=vllm) on the tiny policy: generate 256 prompts x n=8, check outputs",
        BASE + ("vllm",),
        world=True,
        imports=("rcs_ray.sampling.engines", "rcs_ray.sampling.job", "rcs_ray.sampling.pipeline", "rcs_ray.prompting"),
    ),
    Check(
        "zero2_bf16",
        240,
        "rcs-ray train --stage 1: bf16, ZeRO-2, 3 steps on 1 GPU; export loads, round trip",
        BASE + ("ray", "deepspeed"),
        world=True,
        imports=("rcs_ray.cli", "rcs_ray.train.trainer"),
    ),
    Check(
        "zero3_bf16_export",
        240,
        "the same with ZeRO-3 (sharded load, gathered export); vs the ZeRO-2 export",
        BASE + ("ray", "deepspeed"),
        world=True,
        imports=("rcs_ray.cli", "rcs_ray.train.trainer"),
    ),
    Check(
        "pytest_gpu",
        300,
        "python -m pytest -m gpu: QLoRA 4-bit, flash-attention 2 (Ray Train + DeepSpeed)",
        BASE + ("ray", "deepspeed", "pytest"),
        any_of=("bitsandbytes", "flash_attn"),
        imports=("rcs_ray.train",),
    ),
    Check(
        "pipeline_vllm",
        300,
        "benchmarks/pipeline_throughput.py --engines vllm --prompts N: steady / raw ratio",
        BASE + ("ray", "vllm"),
        world=True,
        imports=("rcs_ray.sampling.pipeline", "rcs_ray.ray_runtime"),
    ),
)
NAMES = tuple(c.name for c in CHECKS)


def skip_reason(c: Check, cuda: bool, allow_cpu: bool) -> str | None:
    reasons = (["no CUDA"] if c.cuda and not cuda and not allow_cpu else []) + P.missing(c)
    return "; ".join(reasons) or None


# ------------------------------------------------------------------------------------------------ one check
class GpuMemory(threading.Thread):
    """The device memory in use (nvidia-smi, MiB, all processes), polled twice a second; ``peak`` the largest."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = None, threading.Event()

    @staticmethod
    def used():
        if not shutil.which("nvidia-smi"):
            return None
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return sum(int(x) for x in out.split() if x.strip().isdigit()) or None
        except (OSError, subprocess.SubprocessError):
            return None

    def run(self):
        while not self.done.wait(0.5):
            now = self.used()
            if now is not None:
                self.peak = max(self.peak or 0, now)


def run_check(c: Check, timeout: float, args, work: str, log) -> dict:
    result_file = os.path.join(work, f"{c.name}.result.json")
    own_log = os.path.join(work, f"{c.name}.log")
    if os.path.exists(result_file):  # a --work dir used before
        os.remove(result_file)
    cmd = [
        sys.executable,
        os.path.join(HERE, "gpu_check_tasks.py"),
        c.name,
        "--result",
        result_file,
        "--world",
        args.world,
        "--work",
        work,
        "--mode",
        args.mode,
        "--prompts",
        str(args.prompts),
    ]
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
    )
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("RAY_AUTH_MODE", "disabled"),
    ):
        env.setdefault(key, value)
    if args.mode == "cpu":
        env.setdefault("DS_ACCELERATOR", "cpu")
    before, mem = GpuMemory.used(), GpuMemory()
    mem.start()
    start = time.time()
    with open(own_log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the check's whole process group (Ray, vLLM too)
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
    seconds = round(time.time() - start, 1)
    mem.done.set()
    mem.join()
    text = open(own_log, errors="replace").read()
    log.write(f"\n===== {c.name} ({seconds} s) =====\n{text}")
    log.flush()
    r = json.load(open(result_file)) if os.path.isfile(result_file) and not timed_out else {}
    status, reason = r.get("status", "failed"), r.get("reason")
    if timed_out:
        reason = f"timed out after {timeout:.0f} s"
    elif status != "failed" and rc != 0:
        status, reason = "failed", f"exit code {rc}"
    elif not r:
        reason = f"no result (exit code {rc})"
    out = {"name": c.name, "status": status, "reason": reason, "seconds": seconds, "numbers": r.get("numbers", {})}
    if mem.peak is not None:
        out["numbers"]["gpu_mem_peak_mib"], out["numbers"]["gpu_mem_before_mib"] = mem.peak, before
        out["numbers"]["gpu_mem_after_mib"] = GpuMemory.used()
    if status == "failed":
        out["tail"] = text[-4000:]
    return out


# ------------------------------------------------------------------------------------------------ the report
def headline(r: dict) -> str:
    n = r["numbers"]
    keys = {
        "environment": ("device", "torch", "bf16_matmul_tflops"),
        "tiny_world": ("cached", "seconds"),
        "vllm_engine": ("tokens_per_s", "engine_start_s", "finished_fraction"),
        "zero2_bf16": ("step_s", "gpu_mem_peak_mib", "export_round_trip"),
        "zero3_bf16_export": ("step_s", "gpu_mem_peak_mib", "export_round_trip", "zero3_vs_zero2"),
        "pytest_gpu": ("counts",),
        "pipeline_vllm": ("steady_over_best_raw", "end_to_end_over_best_raw", "raw_one_call_tokens_per_s"),
    }
    return ", ".join(f"{k}={json.dumps(n[k])}" for k in keys.get(r["name"], ()) if k in n)


def write_report(out: str, report: dict) -> None:
    with open(os.path.join(out, "gpu_check.json"), "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    lines = [
        f"GPU check: {report['verdict']} in {report['seconds']:.0f} s (budget {report['budget_s']} s, "
        f"mode {report['mode']}).",
        "",
        "| # | check | status | s | key numbers | reason |",
        "|---|---|---|---:|---|---|",
    ]
    for i, r in enumerate(report["checks"], 1):
        reason = (r["reason"] or "").replace("|", "/").replace("\n", " ")[:300]
        lines.append(f"| {i} | {r['name']} | {r['status']} | {r['seconds']} | {headline(r)} | {reason} |")
    with open(os.path.join(out, "gpu_check.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


def run_all(checks: list, args) -> int:
    os.makedirs(args.out, exist_ok=True)
    work = args.work or tempfile.mkdtemp(prefix="rcs-gpu-check-")
    os.makedirs(work, exist_ok=True)
    start, cuda, world_ok = time.time(), False, True
    report = {"argv": sys.argv[1:], "mode": args.mode, "budget_s": args.budget_s, "work": work, "checks": []}
    with open(os.path.join(args.out, "gpu_check.log"), "w") as log:
        for i, c in enumerate(checks):
            reason = skip_reason(c, cuda, args.mode == "cpu")
            if reason is None and c.world and not world_ok:
                reason = "the tiny world is not available"
            if reason is None and c.name == "tiny_world":
                users = [u for u in checks[i + 1 :] if u.world and skip_reason(u, cuda, args.mode == "cpu") is None]
                reason = None if users else "not needed: every check that uses it is skipped"
            left = args.budget_s - (time.time() - start)
            if reason is None and left < c.min_s:
                reason = f"budget exhausted ({left:.0f} s left)"
            if reason is not None:
                r = {"name": c.name, "status": "skipped", "reason": reason, "seconds": 0.0, "numbers": {}}
            else:
                print(f"[gpu-check] {c.name}: up to {min(c.timeout_s, left):.0f} s ...", flush=True)
                r = run_check(c, min(c.timeout_s, left), args, work, log)
            if c.name == "environment":
                cuda = bool(r["numbers"].get("cuda_available"))
            if c.name == "tiny_world":
                world_ok = r["status"] != "failed"
            report["checks"].append(r)
            print(
                f"[gpu-check] {c.name}: {r['status']} ({r['seconds']} s) {r['reason'] or ''} {headline(r)}", flush=True
            )
            failed = [x["name"] for x in report["checks"] if x["status"] == "failed"]
            counts = {s: sum(x["status"] == s for x in report["checks"]) for s in ("passed", "failed", "skipped")}
            report.update(
                seconds=round(time.time() - start, 1),
                failed=failed,
                counts=counts,
                verdict=("FAILED: " + ", ".join(failed) if failed else "passed (every check that ran)")
                + f" [{', '.join(f'{v} {k}' for k, v in counts.items())}]",
            )
            write_report(args.out, report)  # after every check: a killed run keeps its report
    if not args.work:  # its models and logs are in the report and its log
        shutil.rmtree(work, ignore_errors=True)
    print(open(os.path.join(args.out, "gpu_check.md")).read() + f"-> {args.out}/gpu_check.json, .md, .log")
    return 1 if report["failed"] else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT, help=f"report dir (default {os.path.relpath(OUT, ROOT)})")
    ap.add_argument("--budget-s", type=float, default=420, help="all checks together (each also has its own limit)")
    ap.add_argument("--world", default=os.path.join(ROOT, ".cache", "tinyworld"), help="tiny-world cache dir")
    ap.add_argument("--work", help="scratch dir (default: a new temporary dir)")
    ap.add_argument("--prompts", type=int, default=2048, help="pipeline_vllm: prompts (x n=8 samples)")
    ap.add_argument("--only", help="comma-separated check names (environment always runs)")
    ap.add_argument("--skip", default="", help="comma-separated check names")
    ap.add_argument("--plan", action="store_true", help="print the plan, load what it uses, run nothing")
    ap.add_argument(
        "--allow-cpu",
        dest="mode",
        action="store_const",
        const="cpu",
        default="cuda",
        help="run the CUDA checks on the CPU with CPU settings (fp32): to try this script",
    )
    args = ap.parse_args(argv)
    args.world = os.path.abspath(args.world)
    picked = set(NAMES if not args.only else ["environment", *args.only.split(",")]) - set(args.skip.split(","))
    unknown = picked - set(NAMES)
    if unknown:
        ap.error(f"unknown checks {sorted(unknown)}; checks: {', '.join(NAMES)}")
    if any(c.world for c in CHECKS if c.name in picked) and "tiny_world" not in args.skip.split(","):
        picked.add("tiny_world")
    checks = [c for c in CHECKS if c.name in picked]
    return P.plan(checks, args, T) if args.plan else run_all(checks, args)


if __name__ == "__main__":
    sys.exit(main())
