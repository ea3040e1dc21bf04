"""``benchmarks/workflow_sim.py``'s report: the timeline and the simulated models' logs split into windows (each
sampling round, each training step, each eval pass), each window's start-up, steady generation and drain, the
model loads per pool, then the whole run's totals measured and extrapolated to real time."""

from __future__ import annotations

ASSUMPTIONS = """\
- **Engine load, 90 s** (an 8B policy on vLLM, one GPU): reading ~16 GB of bf16 safetensors at 1-2 GB/s from local
  NVMe (10-20 s; much longer from network storage), CUDA context and NCCL init, the memory profiling run that sizes
  the KV cache, torch.compile (20-40 s when its cache is cold) and CUDA graph capture (10-30 s): 60-120 s is what
  vLLM's own start-up log lines add up to for a model of this size; 90 s is the middle. An estimate, not measured
  here (no GPU).
- **Reward-model load, 45 s** (a 7B sequence classifier, HF ``from_pretrained``): ~15 GB of weights at 1-2 GB/s
  (8-15 s), CUDA init and the copy to the GPU, no graph capture: 30-60 s. An estimate.
- **Generation, 5,000 tokens/s per engine** and **scoring, 25,000 tokens/s per reward model**: an 8B model decoding
  large batches on one H100 (vLLM's offline throughput is of this order or higher), a 7B model's forward pass at
  ~40% of an H100's bf16 peak (2 x 7e9 FLOP per token). Estimates: only the ratio to the load times matters here.
- Every simulated duration is the real figure times the time scale; the host's own work (actor processes, Ray Data,
  the driver, writing, the tiny policy's training) runs at its real speed on this host and is not scaled.
"""


def _in(t: float, w: dict) -> bool:
    return w["t0"] <= t < w["t1"]


def _overlap(rec: dict, t0: float, t1: float) -> float:
    return max(0.0, min(rec["t1"], t1) - max(rec["t0"], t0))


def _covered(recs: list, t0: float, t1: float) -> float:
    """Seconds of [t0, t1] during which at least one of ``recs`` (calls with ``t0``, ``t1``) ran."""
    total, end = 0.0, t0
    for a, b in sorted((max(r["t0"], t0), min(r["t1"], t1)) for r in recs):
        if b > max(a, end):
            total += b - max(a, end)
            end = b
    return total


def windows(raw: dict) -> list[dict]:
    """One window per sampling round (its start from the pipeline's per-round dataset, its length from the round's
    stats), training step and eval pass, in time order; each window starts where the one before ended (the run's
    start for the first), so set-up before a round or a pass (a model host started before its dataset) is its
    start-up and every load falls in a window."""
    out, t_start, t_end = [], raw["t0"], raw["t1"]
    for step in raw["steps"]:
        if step["kind"] == "sample":
            rounds = (step.get("stats") or {}).get("rounds", [])
            starts = [t for label, t in raw["rounds"] if label == step["label"]]
            t = step["t0"]
            for i, r in enumerate(rounds):
                t = starts[i] if len(starts) == len(rounds) else t
                out.append(
                    {
                        "kind": "round",
                        "name": f"{step['label']} round {r['round']} (n={r['n']})",
                        "stage": step["label"],
                        "t0": t,
                        "t1": t + r["seconds"],
                        "stats": r,
                    }
                )
                t += r["seconds"]
        else:
            name = step["label"] if step["kind"] == "eval" else f"{step['kind']} {step['label']}"
            out.append(
                {
                    "kind": step["kind"],
                    "name": name,
                    "stage": step["label"],
                    "t0": step["t0"],
                    "t1": step.get("t1", t_end),
                    "step": step,
                }
            )
    out.sort(key=lambda w: w["t0"])
    prev = t_start
    for w in out:
        w["t0"] = min(w["t0"], prev)
        prev = max(prev, w["t1"])
    return out


def window_figures(w: dict, logs: dict, scale: float) -> dict:
    """Loads per pool, start-up / steady generation / drain (from the engines' generate calls), scoring busy time,
    and their real-time estimates."""
    loads: dict = {}
    for rec in logs["loads"]:
        if _in(rec["t0"], w):
            p = loads.setdefault(rec["pool"], {"count": 0, "seconds": 0.0})
            p["count"] += 1
            p["seconds"] = round(p["seconds"] + rec["t1"] - rec["t0"], 3)
    wall = w["t1"] - w["t0"]
    f = {"name": w["name"], "kind": w["kind"], "wall": round(wall, 3), "loads": loads}
    gens = [g for g in logs["generate"] if _in(g["t0"], w)]
    if w["kind"] == "train" or not gens:
        return f
    first, last = min(g["t0"] for g in gens), max(g["t1"] for g in gens)
    engines = max(1, len({g["pid"] for g in gens}))
    busy = sum(g["busy"] for g in gens)
    scored = [s for s in logs["scores"] if _overlap(s, w["t0"], w["t1"]) > 0]
    tail_scoring = _covered(scored, last, w["t1"])  # some reward model busy after the last generate call
    eng_load = max(
        (rec["t1"] - rec["t0"] for rec in logs["loads"] if rec["pool"] == "generate" and _in(rec["t0"], w)), default=0.0
    )
    f.update(
        startup=round(first - w["t0"], 3),
        steady=round(last - first, 3),
        drain=round(w["t1"] - last, 3),
        tokens=sum(g["tokens"] for g in gens),
        engines=engines,
        scoring_busy={
            p: round(sum(s["t1"] - s["t0"] for s in scored if s["pool"] == p), 3)
            for p in sorted({s["pool"] for s in scored})
        },
    )
    f["real"] = {
        "startup": round(f["startup"] - eng_load + eng_load / scale, 1),
        "steady": round(busy / engines / scale, 1),
        "drain": round(f["drain"] - tail_scoring + tail_scoring / scale, 1),
    }
    return f


def _train_parts(step: dict, prev_end: float) -> dict:
    return {"hand_over_gap": round(step["t0"] - prev_end, 3), **(step.get("seconds_by_part") or {})}


def analyse(raw: dict) -> dict:
    """The report's data from the run's ``raw`` record (:func:`benchmarks.workflow_sim.raw_record`): settings,
    per-window figures, training parts and the totals (measured and real)."""
    settings, logs, t0, t1 = raw["settings"], raw["logs"], raw["t0"], raw["t1"]
    scale = settings["scale"]
    wins = windows(raw)
    figs, training, prev_end = [], [], t0
    for w in wins:
        f = window_figures(w, logs, scale)
        if w["kind"] == "train":
            f["parts"] = _train_parts(w["step"], prev_end)
            training.append(f)
        figs.append(f)
        prev_end = w["t1"]
    wall = t1 - t0
    sampled = [f for f in figs if "startup" in f]
    tot = {k: round(sum(f[k] for f in sampled), 3) for k in ("startup", "steady", "drain")}
    tot["training"] = round(sum(f["wall"] for f in training), 3)
    tot["writing"] = round(sum(raw["writer"].values()), 3)
    tot["other"] = round(wall - sum(tot[k] for k in ("startup", "steady", "drain", "training")), 3)
    real = {k: round(sum(f["real"][k] for f in sampled), 1) for k in ("startup", "steady", "drain")}
    real.update(training=tot["training"], other=tot["other"])
    pools: dict = {}
    for rec in logs["loads"]:
        p = pools.setdefault(rec["pool"], {"count": 0, "seconds": 0.0})
        p["count"] += 1
        p["seconds"] = round(p["seconds"] + rec["t1"] - rec["t0"], 3)
    return {
        "settings": settings,
        "wall": round(wall, 3),
        "totals": tot,
        "real": real,
        "startup_share": round(tot["startup"] / wall, 4),
        "startup_share_sampling_eval": round(tot["startup"] / max(1e-9, wall - tot["training"] - tot["other"]), 4),
        "real_wall": round(sum(real[k] for k in ("startup", "steady", "drain", "training", "other")), 1),
        "real_startup_share_sampling_eval": round(
            real["startup"] / max(1e-9, sum(real[k] for k in tot if k in ("startup", "steady", "drain"))), 4
        ),
        "loads_by_pool": pools,
        "loads": sum(p["count"] for p in pools.values()),
        "load_seconds": round(sum(p["seconds"] for p in pools.values()), 3),
        "writer_by_step": {k: round(v, 3) for k, v in raw["writer"].items()},
        "rounds_measured_from": "build_dataset" if raw["rounds"] else "round stats, laid end to end",
        "windows": figs,
    }


def summary_line(d: dict) -> str:
    return (
        f"workflow_sim {d['settings']['label']}: wall {d['wall']:.1f} s, start-up {d['totals']['startup']:.1f} s "
        f"({100 * d['startup_share']:.1f}% of the wall, {100 * d['startup_share_sampling_eval']:.1f}% of sampling + "
        f"eval), {d['loads']} model loads ({d['load_seconds']:.1f} s); real-time estimate: start-up "
        f"{d['real']['startup']:.0f} s = {100 * d['real_startup_share_sampling_eval']:.1f}% of sampling + eval"
    )


def _host(h: dict) -> str:
    return (
        f"Host: {h['cpus']} CPUs, 1-minute load average {h['load_avg_start']:.1f} at the start and "
        f"{h['load_avg_end']:.1f} at the end (other work shares this host: the host's own parts are noisy)."
    )


def _loads_cell(loads: dict) -> str:
    return ", ".join(f"{p} {v['count']}x ({v['seconds']:.1f} s)" for p, v in sorted(loads.items())) or "-"


def _objectives(k: int) -> str:
    """The run's objectives in words (reports made before ``--k`` existed ran K = 3)."""
    return f"K = {k} (objectives {', '.join('abc'[:k])}; one simulated reward model each)"


def _later(k: int) -> str:
    return "stages 2 and 3" if k == 3 else "stage 2"


def _header(d: dict) -> list[str]:
    s = d["settings"]
    return [
        f"# Workflow simulation: {s['label']}",
        "",
        f"{_objectives(s.get('k', 3))}, stage 1 trained on its data, {_later(s.get('k', 3))} "
        f"sampled with adaptive resampling (n = {s['n']} doubling to {s['n_max']}, rc.margin {s['margin']}), "
        f"{s['prompts']} prompts per stage, {s['engines']} generation engine(s); then eval of the base and "
        f"{'every stage' if s.get('eval_policies', 'all') == 'all' else 'the last stage'}'s policy "
        f"({s['eval_prompts']} prompts x {s['eval_n']}). Time scale {s['time_scale']} "
        f"({s['scale']:.4f}): engine load {s['engine_load_s']:g} s -> {s['engine_load_s'] * s['scale']:.2f} s, "
        f"reward-model load {s['rm_load_s']:g} s -> {s['rm_load_s'] * s['scale']:.2f} s.",
        "",
        *([f"Code: {s['note']}", ""] if s.get("note") else []),
        *([_host(s["host"]), ""] if s.get("host") else []),
        f"**{summary_line(d)}**",
        "",
    ]


def _totals(d: dict) -> list[str]:
    t, r, wall, rw = d["totals"], d["real"], d["wall"], d["real_wall"]
    lines = [
        "## Where the wall time goes",
        "",
        "| part | measured (s) | share | real-time estimate (s) | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for k, what in (
        ("startup", "start-up (window start to the first generate call)"),
        ("steady", "steady generation (first to last generate call)"),
        ("drain", "drain (last generate call to the window's end: scoring, RC, writing of the tail)"),
        ("training", "training steps (tiny policy, real; hand-over included)"),
        ("other", "other (workflow bookkeeping, sampling set-up and commit, eval set-up and plot)"),
    ):
        lines.append(f"| {what} | {t[k]:.1f} | {100 * t[k] / wall:.1f}% | {r[k]:.0f} | {100 * r[k] / rw:.1f}% |")
    return lines + [
        f"| **total** | {wall:.1f} | | {rw:.0f} | |",
        "",
        f"Writing (the driver's writer, inside the rounds and their commit): {t['writing']:.2f} s. Model loads: "
        f"{d['loads']} ({d['load_seconds']:.1f} GPU-seconds at the scale): {_loads_cell(d['loads_by_pool'])}.",
        "",
    ]


def _windows_table(d: dict) -> list[str]:
    lines = [
        "## Per window",
        "",
        "| window | wall (s) | start-up | steady | drain | tokens | loads per pool | real start-up / steady / drain |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in d["windows"]:
        if "startup" in f:
            rr = f["real"]
            lines.append(
                f"| {f['name']} | {f['wall']:.2f} | {f['startup']:.2f} | {f['steady']:.2f} | {f['drain']:.2f} | "
                f"{f['tokens']} | {_loads_cell(f['loads'])} | {rr['startup']:.0f} / {rr['steady']:.0f} / "
                f"{rr['drain']:.0f} |"
            )
        else:
            lines.append(f"| {f['name']} | {f['wall']:.2f} | | | | | {_loads_cell(f['loads'])} | |")
    return lines + [""]


def _training_table(d: dict) -> list[str]:
    lines = [
        "## Training and its hand-over",
        "",
        "| step | wall (s) | hand-over (s) | parts (s) |",
        "|---|---:|---:|---|",
    ]
    for f in d["windows"]:
        if "parts" in f:
            p = f["parts"]
            hand_over = sum(p.get(k, 0.0) for k in ("hand_over_gap", "read", "features"))
            parts = ", ".join(f"{k} {v:.1f}" for k, v in p.items())
            lines.append(f"| {f['name']} | {f['wall']:.1f} | {hand_over:.1f} | {parts} |")
    return lines + [
        "",
        "Hand-over: from the last sampling round's end to the first training step's start: `hand_over_gap` + `read` "
        "+ `features` (the tokenization; the reference log-probs are computed by the training workers inside `fit`, "
        "or, with a separate pass, in `features`, where real models load the reference policy once more). "
        "`hand_over_gap`: from the end of the window before (the last sampling round) to the training step's start "
        "(the sampling commit and the workflow's bookkeeping); `read` / `features` / `fit` / `export`: the trainer's "
        "own parts (pairs read, tokenization or reference pass, Ray Train, model export).",
        "",
    ]


def comparison(d: dict, other: dict) -> list[str]:
    """A section setting this run's start-up figures beside ``other``'s (another label's report data)."""
    a, b = other["settings"]["label"], d["settings"]["label"]
    rows = [
        ("wall (s)", other["wall"], d["wall"], "{:.1f}"),
        ("start-up (s)", other["totals"]["startup"], d["totals"]["startup"], "{:.1f}"),
        ("start-up share of the wall", 100 * other["startup_share"], 100 * d["startup_share"], "{:.1f}%"),
        (
            "start-up share of sampling + eval",
            100 * other["startup_share_sampling_eval"],
            100 * d["startup_share_sampling_eval"],
            "{:.1f}%",
        ),
        ("real-time estimate: start-up (s)", other["real"]["startup"], d["real"]["startup"], "{:.0f}"),
        (
            "real-time estimate: start-up share of sampling + eval",
            100 * other["real_startup_share_sampling_eval"],
            100 * d["real_startup_share_sampling_eval"],
            "{:.1f}%",
        ),
        ("model loads", other["loads"], d["loads"], "{}"),
    ]
    for pool in sorted(set(other["loads_by_pool"]) | set(d["loads_by_pool"])):
        count = [x["loads_by_pool"].get(pool, {}).get("count", 0) for x in (other, d)]
        rows.append((f"loads of {pool}", count[0], count[1], "{}"))
    lines = [f"## Against {a}", "", f"| figure | {a} | {b} |", "|---|---:|---:|"]
    lines += [f"| {name} | {fmt.format(x)} | {fmt.format(y)} |" for name, x, y, fmt in rows]
    return lines + [""]


def markdown(d: dict) -> str:
    notes = [
        "## Assumptions",
        "",
        ASSUMPTIONS,
        "Real-time estimate, per window: start-up with the engine's simulated load replaced by the real one (actor "
        "start-up at this host's speed kept); steady generation as the engines' busy time at the real rate (no host "
        "overhead); drain with its scoring at the real rate. Training and other parts as measured. Round windows "
        f"from: {d['rounds_measured_from']}.",
        "",
    ]
    against = comparison(d, d["against"]) if d.get("against") else []
    return "\n".join(_header(d) + against + _totals(d) + _windows_table(d) + _training_table(d) + notes)
