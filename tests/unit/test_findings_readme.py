"""The findings page's tables (docs/findings.md) and the numbers its sentences and the README's summary quote,
regenerated from the committed findings.json: an edit or a new findings run that disagree fail here."""

import json
import os

import numpy as np
import pytest

from tests.bench_scripts import import_scripts

pytestmark = pytest.mark.unit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FINDINGS = os.path.join(REPO, "benchmarks", "reports", "tinyworld_findings")


@pytest.fixture(scope="module")
def report():
    (module,) = import_scripts("tinyworld_findings_report")
    return module


def load(name):
    with open(os.path.join(FINDINGS, name), encoding="utf-8") as fh:
        return json.load(fh)


def page(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as fh:
        return " ".join(fh.read().split())  # sentences wrap: compare with single spaces


@pytest.fixture(scope="module")
def readme():
    """The findings page (the tests below read its sentences)."""
    return page("docs/findings.md")


def flat(text):
    return " ".join(text.split())


def seeds(data, method, loss, key):
    return [
        r[key] for r in data["per_seed_rows"] if r["world"] == "c0.9" and r["method"] == method and r["loss"] == loss
    ]


def test_the_readme_tables_are_the_committed_findings(report, readme):
    data = load("v3/findings.json")
    assert flat(report.readme_table(data)) in readme
    assert flat(report.readme_sweep_table(data)) in readme


def test_the_numbers_the_findings_sentences_quote(readme):
    data = load("v3/findings.json")
    strict, rcs = seeds(data, "rcs_strict", "dpo", "mean_helpful"), seeds(data, "rcs", "dpo", "mean_helpful")
    diffs = [f"{d:+.2f}".replace("-", "−") for d in np.subtract(strict, rcs)]
    assert f"strict minus RCS mean helpful is {diffs[0]}, {diffs[1]} and {diffs[2]} (DPO)" in readme
    w, r = seeds(data, "rsdpo_w", "modpo", "headline"), seeds(data, "rcs", "modpo", "headline")
    assert all(a > b for a, b in zip(w, r))  # "on every seed"
    assert (
        f"(headline {' / '.join(f'{100 * x:.1f}' for x in w)}% against {' / '.join(f'{100 * x:.1f}' for x in r)}%)"
    ) in readme
    modpo_helpful = {m: np.mean(seeds(data, m, "modpo", "mean_helpful")) for m in data["methods"]}
    assert max(modpo_helpful, key=modpo_helpful.get) == "rsdpo_w"
    assert f"highest mean helpful of any MODPO row ({modpo_helpful['rsdpo_w']:.2f})" in readme
    assert f"Under SPO strict RC reaches only {np.mean(seeds(data, 'rcs_strict', 'spo', 'mean_helpful')):.2f}" in readme
    for loss in data["losses"]:  # "the best headline with all three losses"
        heads = {m: np.mean(seeds(data, m, loss, "headline")) for m in data["methods"]}
        assert max(heads, key=heads.get) == "rcs_strict", loss


def test_the_mixed_comparison_quotes_its_own_run(readme):
    v1 = load("findings_3seeds.json")
    mixed = [r for r in v1["per_seed_rows"] if r["policy"] == "mixed/dpo"]
    assert len(mixed) == 3
    rate = np.mean([r["harmless_rate"] for r in mixed])
    head = np.mean([(r["harmless_rate"] + r["win_helpful"]) / 2 for r in mixed])
    harmless = np.mean([r["harmless"] for r in mixed])
    assert f"harmless rate (60.9% vs {100 * rate:.1f}%)" in readme
    assert f"mean harmless (−0.45 vs {harmless:.2f})".replace("-", "−") in readme
    assert f"the headline (74.9% vs {100 * head:.1f}%" in readme


def test_reports_hold_no_machine_paths():
    for root, _, files in os.walk(os.path.dirname(FINDINGS)):
        for name in files:
            if name.endswith((".json", ".md")):
                with open(os.path.join(root, name), encoding="utf-8") as fh:
                    text = fh.read()
                assert '"/work/' not in text and "/home/" not in text and "/tmp/" not in text, name


def test_the_readme_summary():
    data = load("v3/findings.json")
    summary = page("README.md")
    rows = {(r["method"], r["loss"]): r for r in data["rows"] if r["world"] == "c0.9"}
    stage1, vanilla = rows[("stage1", "—")], rows[("vanilla", "dpo")]
    assert (
        f"the harmless rate falls from {100 * stage1['harmless_rate']:.1f}% after stage 1 to "
        f"{100 * vanilla['harmless_rate']:.1f}% (DPO, mean of 3 seeds)"
    ) in summary
    for loss in data["losses"]:  # "every RC method beats vanilla and RSDPO-style ... every seed"
        for m in ("rc", "nrcs", "rcs", "rcs_strict", "rcs_implicit"):
            for base in ("vanilla", "rsdpo"):
                assert all(a > b for a, b in zip(seeds(data, m, loss, "headline"), seeds(data, base, loss, "headline")))
    strict, rcs = rows[("rcs_strict", "dpo")], rows[("rcs", "dpo")]
    failed = np.mean([data["results"][f"c0.9/seed{s}"]["pairs"]["rcs_strict"]["failure_rate"] for s in data["seeds"]])
    assert (
        f"({100 * strict['headline']:.1f}% against vanilla's {100 * vanilla['headline']:.1f}% with DPO), at the "
        f"cost of {100 * failed:.1f}% failed prompts at n = 8"
    ) in summary
    assert f"reaches {100 * rcs['headline']:.1f}%" in summary


def test_the_lemma_section_quotes_the_committed_report():
    gc = read_report("gradient_conflict/gradient_conflict.json")
    sets = gc["results"]["D2 (original pairs)"]
    text = page("docs/findings.md")
    assert f"agree at cosine {gc['meta']['g1_cosine']:.2f}" in text
    for name, label in (
        ("RC", "RC (chosen more harmless)"),
        ("tie", "tie"),
        ("non-RC", "non-RC (chosen less harmless)"),
    ):
        e = sets[name]

        def num(x):
            return f"{1e3 * x:+.1f}".replace("-", "−")

        row = (
            f"| {label} | {e['pairs']} | {100 * e['pg']['share_nonneg']:.1f}% | {100 * e['d1']['share_nonneg']:.1f}% | "
            f"{num(e['pg']['mean_dot_dpo'])} / {num(e['pg']['mean_dot_modpo'])} |"
        )
        assert row in text, row
    ratio = sets["RC"]["pg"]["share_nonneg"] / sets["non-RC"]["pg"]["share_nonneg"]
    assert f"{ratio:.1f}× as often" in text
    own = {name: sets[name]["own_stage1"] for name in ("RC", "non-RC")}
    assert own["RC"]["share_nonpositive_dpo"] == own["RC"]["share_nonpositive_modpo"] == 1.0
    assert own["non-RC"]["share_nonpositive_dpo"] == own["non-RC"]["share_nonpositive_modpo"] == 0.0
    assert f"100% of the {own['RC']['pairs']} RC pairs and positive for 100% of the {own['non-RC']['pairs']}" in text


def read_report(name):
    with open(os.path.join(REPO, "benchmarks", "reports", name), encoding="utf-8") as fh:
        return json.load(fh)


def test_the_default_rule_section_quotes_its_run():
    data = load("v4/findings.json")
    text = page("docs/findings.md")
    rows = {(r["method"], r["loss"]): r for r in data["rows"] if r["world"] == "c0.9"}

    def failed(m):
        return np.mean([data["results"][f"c0.9/seed{s}"]["pairs"][m]["failed_prompts"] for s in data["seeds"]])

    for m in ("rcs", "rcs_strict", "rcs_strict_adaptive", "rs_dpo"):
        r = rows[(m, "dpo")]
        cells = (
            f"| {100 * r['headline']:.1f}% ± {100 * r['headline_std']:.1f} | {100 * r['harmless_rate']:.1f}% | "
            f"{r['mean_helpful']:.2f} | {round(r['pairs']):,} | {failed(m):.1f} |"
        )
        assert cells in text, (m, cells)
    strict, adaptive, tol = (seeds(data, m, "dpo", "headline") for m in ("rcs_strict", "rcs_strict_adaptive", "rcs"))
    assert max(abs(a - b) for a, b in zip(strict, adaptive)) <= 0.004
    gains = [100 * (a - b) for a, b in zip(adaptive, tol)]
    assert f"{min(gains):.1f}–{max(gains):.1f} points above tie-tolerant RCS" in text
    assert (
        f"({100 * failed('rcs_strict_adaptive') / 1024:.1f}% against {100 * failed('rcs_strict') / 1024:.1f}%)" in text
    )


def test_the_iterative_rcs_section_quotes_its_run():
    data = load("v5/findings.json")
    text, summary = page("docs/findings.md"), page("README.md")
    rows = {(r["method"], r["loss"]): r for r in data["rows"] if r["world"] == "c0.9"}

    def failed(m):
        return np.mean([data["results"][f"c0.9/seed{s}"]["pairs"][m]["failed_prompts"] for s in data["seeds"]])

    for m in ("rcs", "rcs_strict_adaptive", "rcs_iterative", "rcs_iterative3"):
        r, per_seed = rows[(m, "dpo")], seeds(data, m, "dpo", "headline")
        cells = (
            f"| {100 * r['headline']:.1f}% ± {100 * r['headline_std']:.1f} | "
            f"{' / '.join(f'{100 * h:.1f}' for h in per_seed)} | {100 * r['harmless_rate']:.1f}% | "
            f"{r['mean_helpful']:.2f} | {round(r['pairs']):,} | {failed(m):.1f} |"
        )
        assert cells in text, (m, cells)
    one_shot = seeds(data, "rcs_strict_adaptive", "dpo", "headline")
    for m, n in (("rcs_iterative", 2), ("rcs_iterative3", 3)):
        diffs = ", ".join(f"{100 * (a - b):+.1f}" for a, b in zip(seeds(data, m, "dpo", "headline"), one_shot))
        assert f"{n} iterations against one-shot, per seed: {diffs} points" in text
    iterations = [data["results"][f"c0.9/seed{s}"]["pairs"]["rcs_iterative"]["iterations"] for s in data["seeds"]]
    first, second = (", ".join(str(its[i]["failed"]) for its in iterations) for i in (0, 1))
    assert all(it["prompts"] == 512 for its in iterations for it in its)  # equal total prompts: 2 x 512
    assert f"its second iteration fails on {second} of 512 prompts against {first} in the first" in text
    gain = 100 * (rows[("rcs_iterative", "dpo")]["headline"] - rows[("rcs_strict_adaptive", "dpo")]["headline"])
    assert f"the same prompts and training steps) is within noise of one-shot ({gain:+.1f} points" in summary
