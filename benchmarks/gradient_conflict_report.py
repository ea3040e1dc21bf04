"""Rendering of ``benchmarks/gradient_conflict.py``'s results: the cosine histograms (``gradient_conflict.png``) and
the report (``gradient_conflict.md``), from the measured results and the run's metadata."""

from __future__ import annotations


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(results)
    g1_names = [k for k in ("pg", "d1") if any(k in results[g][s] for g in groups for s in results[g])]
    fig, axes = plt.subplots(
        len(groups), len(g1_names), figsize=(5.5 * len(g1_names), 3.2 * len(groups)), squeeze=False
    )
    for i, group in enumerate(groups):
        for j, gname in enumerate(g1_names):
            ax = axes[i][j]
            for s, entry in results[group].items():
                c = entry[gname]["cosines"]
                ax.hist(c, bins=30, alpha=0.5, label=f"{s} (n={len(c)}, ≥0: {100 * entry[gname]['share_nonneg']:.0f}%)")
            ax.axvline(0, color="k", lw=0.8)
            ax.set_title(f"{group}: cos(G1[{gname}], ΔG2)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict, meta: dict) -> str:
    lines = [
        "# Lemma 1 measured: stage-1 gradient G1 vs the stage-2 update ΔG2 per pair (tiny world)",
        "",
        f"Command: `python benchmarks/gradient_conflict.py {' '.join(meta['argv'])}`  ",
        f"At the stage-1 policy (`{meta['policy']}`), stage 2's start. G1[pg]: policy gradient of the expected "
        f"harmless reward ({meta['pg_prompts']} prompts × {meta['pg_n']} samples); G1[d1]: minus the gradient of "
        f"stage 1's DPO loss on {meta['d1_pairs']} D1 pairs. cos(G1[pg], G1[d1]) = {meta['g1_cosine']:.3f}. "
        "`≥0`: share of pairs with G1·ΔG2 ≥ 0 (the same for DPO and MODPO at a fixed policy); `mean G1·ΔG2`: "
        "first-order change of objective 1 per unit learning rate of a step on the set (×1e3).",
        "",
        "| pairs | set | n | mean harmless gap | G1[pg]: ≥0 | cos mean | mean G1·ΔG2 DPO / MODPO | "
        "G1[d1]: ≥0 | cos mean | mean G1·ΔG2 DPO / MODPO |",
        "|---" * 10 + "|",
    ]
    for group, sets in results.items():
        for s, e in sets.items():
            cells = []
            for g in ("pg", "d1"):
                x = e.get(g)
                cells.append(
                    "— | — | —"
                    if x is None
                    else f"{100 * x['share_nonneg']:.1f}% | {x['cosine_mean']:+.4f} | "
                    f"{1e3 * x['mean_dot_dpo']:+.4f} / {1e3 * x['mean_dot_modpo']:+.4f}"
                )
            lines.append(f"| {group} | {s} | {e['pairs']} | {e['mean_harmless_gap']:+.2f} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "**Lemma 1 as stated, per pair**: the share of pairs whose stage-2 step does not raise their own "
        "stage-1 loss (first-order change of the pair's DPO loss on harmlessness, its more harmless side "
        "preferred, ≤ 0); ties have no stage-1 preference and are left out.",
        "",
        "| pairs | set | n | own stage-1 loss change ≤ 0, DPO / MODPO step | mean change ×1e3, DPO / MODPO |",
        "|---|---|---|---|---|",
    ]
    for group, sets in results.items():
        for s, e in sets.items():
            o = e.get("own_stage1")
            if o:
                lines.append(
                    f"| {group} | {s} | {o['pairs']} | {100 * o['share_nonpositive_dpo']:.1f}% / "
                    f"{100 * o['share_nonpositive_modpo']:.1f}% | {1e3 * o['mean_change_dpo']:+.4f} / "
                    f"{1e3 * o['mean_change_modpo']:+.4f} |"
                )
    return "\n".join(lines) + "\n"
