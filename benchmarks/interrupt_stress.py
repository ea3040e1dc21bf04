"""Signals at random offsets across a whole two-stage run: does every one land, cleanly, and does the run resume?

Each trial starts the command under test in a fresh directory, sends SIGINT or SIGTERM (alternating) at an offset
drawn over the length of an uninterrupted run (measured first; signal i of N lands uniformly within the
i-th of N equal slices of it, so the short early phases are hit too), and checks that the run

- exits 130 (SIGINT) or 143 (SIGTERM) within 15 s of the signal, naming the phase the signal landed in;
- leaves no process of the Ray session it started;
- finishes when the same command is run again (exit 0, its final report written).

Half the trials start the command as a background job of a non-interactive shell does (SIGINT ignored at start: the
cause of the Ctrl-C that used to be lost during sampling). ``--load hog`` runs one busy process per core beside each
trial; ``--load both`` runs every trial once without and once with it.

The command under test is the demo (world build, RC analysis, stage 1 tokenization, Ray Train start-up, the
workers' reference log-probs and training, stage 2 sampling, writing, training, evaluation) on a small tiny world
built afresh in each trial, so every phase is on the timeline. ``--smoke`` (the suite's short version) interrupts
`rcs-ray run` of the cached tiny world once, within its first 20 s, and reruns it.

    python benchmarks/interrupt_stress.py --signals 20 --load both
    python benchmarks/interrupt_stress.py --smoke --out /tmp/stress

Writes ``interrupt_stress.json`` and ``interrupt_stress.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "benchmarks", "reports", "interrupt_stress")
EXIT_WITHIN_S = 15.0
SMOKE_SPAN_S = 20.0  # --smoke: offsets over the first 20 s of `rcs-ray run` (no calibration run)
SMALL_WORLD = [
    "tinyworld.pretrain_examples=1024",
    "tinyworld.rm_examples=1024",
    "tinyworld.pairs_per_stage=128",
    "tinyworld.eval_prompts=64",
    "stages.0.train.max_steps=2",
    "stages.1.data.limit=64",
    "train.max_steps=2",
    "train.batch_size=8",
    "eval.prompts.limit=16",
    "eval.n=2",
]
SMOKE_RUN = [
    "stages.0.data.limit=128",
    "stages.0.train.max_steps=4",
    "stages.1.data.limit=128",
    "train.max_steps=4",
    "train.num_workers=2",
    "sampling.n=4",
    "ray.num_cpus=2",
    "ray.object_store_memory_mb=256",
]


def command(trial_dir: str, smoke: bool) -> tuple[list, str]:
    """The command of a trial and the file that exists once it finished."""
    out = os.path.join(trial_dir, "out")
    if smoke:
        return (
            ["run", os.path.join(REPO, "configs", "tiny", "k2.yaml"), f"output_dir={out}", "--no-progress", *SMOKE_RUN],
            os.path.join(out, "stage2", "train", "train_summary.json"),
        )
    return (
        ["demo", f"output_dir={out}", f"tinyworld.cache_dir={os.path.join(trial_dir, 'world')}", *SMALL_WORLD],
        os.path.join(out, "eval", "eval.json"),
    )


def ray_processes_of(pid: int) -> list:
    """Processes of the Ray session a driver with ``pid`` started (their command lines name its session dir)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    pattern = re.compile(rf"session_[\d_-]+_{pid}(?:[/\s]|$)")
    return [line for line in out if pattern.search(line)]


class Hog:
    """One busy process per core (``--load hog``), at ``nice`` (default 15, the niceness Ray starts its worker
    processes at: a hog at 0 would starve every Ray worker of the run, stretching it far past the calibrated
    timeline, so the offsets would all land early; at 15 it takes its fair share beside them)."""

    def __init__(self, on: bool, nice: int = 15):
        self.procs = (
            [multiprocessing.Process(target=_spin, args=(nice,), daemon=True) for _ in range(os.cpu_count() or 1)]
            if on
            else []
        )

    def __enter__(self):
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
            p.join()


def _spin(nice: int):
    os.nice(nice)
    while True:
        pass


def launch(args: list, background: bool) -> tuple[subprocess.Popen, list]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcs_ray", *args],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=ignore,
    )
    lines: list = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def calibrate(root: str, smoke: bool) -> float:
    """Seconds of an uninterrupted run (the range the offsets are drawn from)."""
    args, done = command(os.path.join(root, "calibration"), smoke)
    t0 = time.time()
    proc, lines = launch(args, background=False)
    code = proc.wait(timeout=3600)
    if code != 0 or not os.path.exists(done):
        raise SystemExit(f"the uninterrupted run failed (exit {code}):\n{''.join(lines[-40:])}")
    return time.time() - t0


def trial(root: str, i: int, offset: float, sig: int, background: bool, smoke: bool) -> dict:
    trial_dir = os.path.join(root, f"trial{i:02d}")
    args, done = command(trial_dir, smoke)
    proc, lines = launch(args, background)
    time.sleep(offset)
    sent = time.time()
    finished_first = proc.poll() is not None
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    seconds = time.time() - sent
    time.sleep(1.0)
    deadline = time.time() + 10
    while ray_processes_of(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    left = ray_processes_of(proc.pid)
    text = "".join(lines)
    phase = re.findall(r"SIG(?:INT|TERM) received during (.+?): stopping", text)
    t1 = time.time()
    again, again_lines = launch(args, background=False)
    rerun = again.wait(timeout=3600)
    row = {
        "trial": i,
        "signal": signal.Signals(sig).name,
        "background": background,
        "offset_s": round(offset, 2),
        "exit": code,
        "seconds_to_exit": round(seconds, 2),
        "phase": phase[0] if phase else None,
        "ray_processes_left": len(left),
        "rerun_exit": rerun,
        "rerun_seconds": round(time.time() - t1, 1),
        "rerun_finished": os.path.exists(done),
        "ended_before_signal": finished_first,
    }
    row["ok"] = bool(
        code == 128 + sig and seconds <= EXIT_WITHIN_S and phase and not left and rerun == 0 and row["rerun_finished"]
    )
    if not row["ok"]:
        row["tail"] = text[-3000:]
    return row


def run(
    signals: int,
    loads: list,
    seed: int,
    smoke: bool,
    root: str,
    out: str = None,
    span: float = None,
    hog_nice: int = 15,
) -> dict:
    rng = random.Random(seed)
    total = SMOKE_SPAN_S if smoke else span or calibrate(root, smoke)
    print(f"offsets drawn over {total:.1f} s", flush=True)
    rows = []
    for load in loads:
        with Hog(load == "hog", hog_nice):
            for i in range(signals):
                # stratified: signal i lands at a uniform offset within the i-th of `signals` equal slices of the
                # run, so every phase (the short early ones too) is on the timeline of some trial
                sig, offset = (signal.SIGINT, signal.SIGTERM)[i % 2], total * (i + rng.random()) / signals
                for attempt in range(4):  # a run faster than the calibration may end before the signal
                    row = trial(os.path.join(root, load, f"a{attempt}"), i, offset, sig, i % 4 < 2, smoke)
                    if not row["ended_before_signal"]:
                        break
                    offset = rng.uniform(0, offset)
                row["load"] = load
                rows.append(row)
                print(
                    f"[{load}] trial {i}: {row['signal']} at {row['offset_s']} s -> exit {row['exit']} in "
                    f"{row['seconds_to_exit']} s during {row['phase']!r}, rerun {row['rerun_exit']}"
                    + ("" if row["ok"] else "  FAILED"),
                    flush=True,
                )
                if out:  # the report so far: a long run that is cut keeps it
                    write(report(rows, loads, total, seed, smoke), out)
    return report(rows, loads, total, seed, smoke)


def report(rows: list, loads: list, total: float, seed: int, smoke: bool) -> dict:
    summary = {
        load: {
            "passed": sum(r["ok"] for r in rows if r["load"] == load),
            "of": sum(1 for r in rows if r["load"] == load),
            "max_seconds_to_exit": max((r["seconds_to_exit"] for r in rows if r["load"] == load), default=None),
            "phases": dict(Counter(_top(r["phase"]) for r in rows if r["load"] == load)),
        }
        for load in loads
    }
    return {"uninterrupted_seconds": round(total, 1), "seed": seed, "smoke": smoke, "summary": summary, "trials": rows}


def _top(phase) -> str:
    """The innermost phase, without the run's and stage's prefixes (for the per-phase count)."""
    return (phase or "none").split(" / ")[-1]


def markdown(report: dict) -> str:
    lines = [
        "# Interrupt stress check",
        "",
        f"Uninterrupted run: {report['uninterrupted_seconds']} s; offsets stratified over it (seed "
        f"{report['seed']}); SIGINT and SIGTERM alternate; half the trials start with SIGINT ignored.",
        "",
        "| load | passed | slowest exit (s) | phases hit |",
        "|---|---|---|---|",
    ]
    for load, s in report["summary"].items():
        phases = ", ".join(f"{k} ({v})" for k, v in sorted(s["phases"].items()))
        lines.append(f"| {load} | {s['passed']}/{s['of']} | {s['max_seconds_to_exit']} | {phases} |")
    lines += [
        "",
        "| load | trial | signal | background | offset (s) | exit | exit after (s) | phase | rerun |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["trials"]:
        lines.append(
            f"| {r['load']} | {r['trial']} | {r['signal']} | {r['background']} | {r['offset_s']} | "
            f"{r['exit']} | {r['seconds_to_exit']} | {r['phase']} | {r['rerun_exit']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--signals", type=int, default=20, help="signals per load setting")
    p.add_argument("--load", choices=["none", "hog", "both"], default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="the suite's short version: 1 signal, `rcs-ray run`")
    p.add_argument("--work", default=None, help="where the trials run (default: a temporary directory)")
    p.add_argument("--span", type=float, help="seconds of an uninterrupted run, measured before (skips calibrating)")
    p.add_argument("--hog-nice", type=int, default=15, help="niceness of the hog processes (Ray's workers run at 15)")
    p.add_argument("--out", default=OUT)
    a = p.parse_args(argv)
    import tempfile

    signals, loads = (1, ["none"]) if a.smoke else (a.signals, ["none", "hog"] if a.load == "both" else [a.load])
    with tempfile.TemporaryDirectory(dir=a.work) as root:
        result = run(signals, loads, a.seed, a.smoke, root, a.out, a.span, a.hog_nice)
    write(result, a.out)
    print(markdown(result))
    return 0 if all(s["passed"] == s["of"] for s in result["summary"].values()) else 1


def write(result: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "interrupt_stress.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.join(out, "interrupt_stress.md"), "w") as fh:
        fh.write(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
