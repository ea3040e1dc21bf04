"""Rendering of ``benchmarks/scale_sim.py``'s results: where each run stalled, the table, the plot, and the JSON / CSV /
PNG files (also used by ``scale_sim.py --from-json`` to re-render without running)."""

from __future__ import annotations

import csv
import json
import os

STAGES = (("score", "ScoreCall"), ("rc", "RCFilterStage"))  # (row key, Ray Data operator) of the later stages

LABELS = {"score": "scorer pool", "rc": "RC stage", "driver": "driver/writer"}


def bottlenecks(r: dict) -> dict:
    """Later stages that could not keep up: delivered (while active) under 90% of the ideal rate's prompts/s."""
    need = r["ideal_prompts_per_s"]
    out = {
        k: r[f"{k}_observed_prompts_per_s"]
        for k, _ in STAGES
        if r.get(f"{k}_observed_prompts_per_s") and r[f"{k}_observed_prompts_per_s"] < 0.9 * need
    }
    if r["driver_load"] > 0.9:
        out["driver"] = r["driver_capacity_prompts_per_s"]
    return out


def verdict(r: dict) -> str:
    """Where the lost time went, in a few words."""
    slow = bottlenecks(r)
    if slow:
        k = min(slow, key=slow.get)
        said = (
            f"{LABELS[k]}: {slow[k]:.0f} prompts/s < {r['ideal_prompts_per_s']:.0f} needed; its backlog ran "
            f"{r[f'lag_{k}_s']:.0f}s past generation"
        )
        need = r.get("scorer_hosts_to_keep_up")
        if k == "score" and need and need <= r["scorer_actors"]:  # the models kept up: their calls did not
            said += (
                f", though its models kept up ({need} of its {r['scorer_actors']} hosts would, by the pipeline's "
                f"own sizing; host CPU {r['host_cpu_util']:.0%})"
            )
        return said
    if r["efficiency"] >= 0.9:
        return "none"
    drain = r["drain_s"] / r["window_s"]
    losses = {"ramp": r["gen_ramp"], "gaps": r["gen_gaps"], "drain": drain, "uneven": r["gen_tail"] - drain}
    worst = max(losses, key=losses.get)
    if worst == "drain":
        lags = {k: r[f"lag_{k}_s"] for k in LABELS}
        k = max(lags, key=lags.get)
        rate = r.get(f"{k}_observed_prompts_per_s")
        if rate and rate < 1.05 * r["ideal_prompts_per_s"]:
            return (
                f"{LABELS[k]} at its limit ({rate:.0f} of {r['ideal_prompts_per_s']:.0f} prompts/s needed): "
                f"{lags[k]:.0f}s of the {r['drain_s']:.0f}s drain"
            )
        return f"drain: the last batches through the {LABELS[k]} ({r['drain_s']:.0f}s; fixed, amortized in long runs)"
    if worst == "gaps":
        if r["bytes_spilled"]:
            return "object store (spilling) -> back-pressure"
        return "gaps between generate calls (back-pressure or per-batch overhead)"
    if worst == "ramp":
        return f"start ramp (engines ready over {r['engine_start_spread_s']:.1f}s)"
    return "uneven last batches"


COLUMNS = [
    ("actors", "A", "{}"),
    ("scorer_actors", "S", "{}"),
    ("scorer_needed", "S to keep up (measured)", "{}"),
    ("prompts", "prompts", "{}"),
    ("ideal_cands_per_s", "ideal c/s", "{:.0f}"),
    ("achieved_cands_per_s", "got c/s", "{:.0f}"),
    ("efficiency", "eff", "{:.2f}"),
    ("efficiency_e2e", "eff e2e", "{:.2f}"),
    ("generation_s", "gen s", "{:.1f}"),
    ("drain", "drain s (score/rc/driver)", "{}"),
    ("startup_s", "start-up s", "{:.0f}"),
    ("rates", "score / RC prompts/s (need)", "{}"),
    ("host_cpu_util", "host cpu", "{:.2f}"),
    ("stalls_at", "stalls at", "{}"),
]


def _cells(r: dict) -> dict:
    return {
        **r,
        "scorer_needed": r.get("scorer_hosts_to_keep_up") or "-",  # reports before the pools' sizing: none
        "drain": f"{r['drain_s']:.1f} ({r['lag_score_s']:.1f}/{r['lag_rc_s']:.1f}/{r['lag_driver_s']:.1f})",
        "rates": f"{r['score_observed_prompts_per_s'] or 0:.0f} / "
        + (f"{r['rc_observed_prompts_per_s']:.0f}" if r.get("rc_observed_prompts_per_s") else "in the last scorer")
        + f" ({r['ideal_prompts_per_s']:.0f})",
    }


def table(rows) -> str:
    head = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = _cells(r)
        lines.append("| " + " | ".join(f.format(cells[k]) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["actors"] for r in rows]
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(15, 3.9))
    ax.plot(xs, [r["efficiency"] for r in rows], "-o", label="first generate call -> last row")
    ax.plot(xs, [r["efficiency_e2e"] for r in rows], "--s", label="whole run (actor start-up in)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("achieved / ideal candidates/s")
    ax.set_title("pipeline efficiency")
    bottom = [0.0] * len(rows)
    drain = [r["drain_s"] / r["window_s"] for r in rows]
    parts = (
        ("generating", [r["gen_busy"] for r in rows]),
        ("start ramp", [r["gen_ramp"] for r in rows]),
        ("gaps between calls", [r["gen_gaps"] for r in rows]),
        ("uneven last batches", [max(0.0, r["gen_tail"] - d) for r, d in zip(rows, drain)]),
        ("drain after generation", drain),
    )
    for label, vals in parts:
        bx.bar([str(x) for x in xs], vals, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, vals)]
    bx.set_ylabel("share of generation actor-seconds")
    bx.set_title("where generation time goes")
    bx.legend(fontsize=7)
    for key, _name in STAGES:
        cx.plot(
            xs,
            [(r[f"{key}_observed_prompts_per_s"] or 0) / r["ideal_prompts_per_s"] for r in rows],
            "-o",
            label=LABELS[key],
        )
    cx.axhline(1.0, color="grey", lw=0.8, ls=":")
    cx.set_ylim(0, 3)
    cx.set_ylabel("prompts/s delivered / needed (< 1: stalls)")
    cx.set_title("later stages vs the engines")
    cx.legend(fontsize=7)
    for axis in (ax, cx):
        axis.set_xscale("log", base=2)
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.grid(alpha=0.3)
    for axis in (ax, bx, cx):
        axis.set_xlabel("generation actors (logical GPUs)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(settings: dict, rows: list, seconds, out: str) -> list:
    """Write scale_sim.json / .csv / .png under ``out`` and print the table."""
    with open(os.path.join(out, "scale_sim.json"), "w") as fh:
        json.dump({"settings": settings, "seconds": seconds, "runs": rows}, fh, indent=2)
    flat = [c for c in rows[0] if not isinstance(rows[0][c], dict)]
    with open(os.path.join(out, "scale_sim.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=flat, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(rows, os.path.join(out, "scale_sim.png"))
    print()
    print(table(rows))
    print(
        "\neff: achieved / ideal candidates/s from the first generate call to the last row written (e2e: over "
        "the whole run, actor start-up in); ideal = actors x engine tokens/s / mean tokens per candidate. drain: "
        "from the last generate call to the last row, and how long each later stage ran on after the one before. "
        "score / RC prompts/s: what the scorer pool and the RC stage delivered while active (first task start "
        "to last task end); the ideal rate needs the number in brackets. host cpu: this host's CPU use (every "
        "actor runs on it)."
    )
    if seconds is not None:
        print(f"{len(rows)} runs in {seconds:.0f}s")
    print(f"-> {out}/scale_sim.json, scale_sim.csv, scale_sim.png")
    return rows
