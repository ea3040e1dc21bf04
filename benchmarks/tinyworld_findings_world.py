"""One seed of one tiny world for ``benchmarks/tinyworld_findings.py``: its stage policies, stored candidates, pair
sets, trainings and evaluations (:class:`World`), each cached under the world's root so a rerun resumes, and the pair
files built from a stage's original data (:func:`d2_parts`) with their RC statistics (:func:`pair_stats`)."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

MIXED = "configs/tiny/mixed.yaml"
# training setting name -> (learning rate, beta)
SETTINGS = {"lr5e-5_b0.1": ("5.0e-5", "0.1"), "lr1e-4_b0.1": ("1.0e-4", "0.1"), "lr5e-5_b0.3": ("5.0e-5", "0.3")}


def log(msg: str) -> None:
    print(f"[findings {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cached_json(path: str, make):
    """``make()`` once: its JSON result is kept at ``path`` (the findings resume from these)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    value = make()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)
    return value


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: str, limit=None) -> list:
    rows = []
    with open(path) as f:
        for line in f:
            if limit is not None and len(rows) >= limit:
                break
            rows.append(json.loads(line))
    return rows


def write_jsonl(path: str, rows) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def d2_parts(cfg, stage: int, limit: int, out_dir: str) -> dict:
    """The stage's first ``limit`` original pairs (``vanilla``) and their parts RC / non-RC on the first objective."""
    from rcs_ray.user_paths import resolve_path

    rows = read_jsonl(resolve_path(cfg.stages[stage].data.path, cfg.tinyworld), limit)
    k = len(cfg.objectives)
    target = cfg.stages[stage].objective
    pairs = [
        {
            "prompt_id": r["prompt_id"],
            "prompt": r["prompt"],
            "chosen": r["chosen"],
            "rejected": r["rejected"],
            "target": target,
            "chosen_rewards": [float(x) for x in r["chosen_scores"][:k]],
            "rejected_rewards": [float(x) for x in r["rejected_scores"][:k]],
        }
        for r in rows
    ]
    return {
        "vanilla": write_jsonl(os.path.join(out_dir, "vanilla.jsonl"), pairs),
        "nonrc": write_jsonl(
            os.path.join(out_dir, "nonrc.jsonl"),
            [p for p in pairs if p["chosen_rewards"][0] < p["rejected_rewards"][0]],
        ),
    }


def pair_stats(path: str, names: list) -> dict:
    """Pairs; per objective, the share of pairs whose chosen is at least as good (ties) / strictly better, mean gap."""
    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True)
    if not len(df):
        return {"pairs": 0}
    d = np.array(df["chosen_rewards"].tolist(), dtype=float) - np.array(df["rejected_rewards"].tolist(), dtype=float)
    out = {"pairs": int(len(df))}
    for j, n in enumerate(names):
        out[f"{n}_rc_ties"], out[f"{n}_rc_strict"] = float(np.mean(d[:, j] >= 0)), float(np.mean(d[:, j] > 0))
        out[f"{n}_gap"] = float(d[:, j].mean())
    return out


class World:
    """One seed of one world: its stage policies, stored candidates, pair sets, trainings and evaluations."""

    def __init__(self, config: str, root: str, overrides: list, limit: int):
        self.config, self.root, self.limit = config, root, limit
        self.base = [f"output_dir={root}", *overrides]
        self.cfg = self.load()
        self.names = self.cfg.objective_names
        self.info: dict = {}

    def load(self, *extra, config=None):
        """The world's config (or ``config``: mixed, implicit) with its overrides; every data stage limited (mixed:
        its one stage, D2's part; sequential configs: the sampled stages)."""
        from rcs_ray.config import load_config

        config = config or self.config
        stages = range(1) if config == MIXED else range(1, len(load_config(config, []).stages))
        return load_config(config, self.base + [f"stages.{k}.data.limit={self.limit}" for k in stages] + list(extra))

    def stage_policy(self, stage: int, pairs=None, policy=None, *extra) -> str:
        """Train stage ``stage`` (0-based) into the run layout (where SPO and implicit rewards look), once."""
        from rcs_ray import train
        from rcs_ray.run_layout import RunLayout

        model = RunLayout(self.root).stage(stage).train.model
        if not os.path.exists(os.path.join(model, "config.json")):
            t0 = time.time()
            train.run(self.load(*extra), stage=stage, pairs=pairs, policy=policy, reference=policy, progress=False)
            log(f"{self.root}: stage {stage + 1} trained in {time.time() - t0:.0f} s")
        return model

    def candidates(self, stage: int, policy: str, tag: str, *extra, config=None, chain=None) -> str:
        """Sample stage ``stage`` once from ``policy`` (RCS, candidates stored); the candidates.parquet."""
        from rcs_ray import sampling

        out = os.path.join(self.root, "sampling", tag)
        done = os.path.join(out, "stats.json")
        if not os.path.exists(done):
            t0 = time.time()
            res = sampling.run(
                self.load(*extra, config=config), stage=stage, policy=policy, out_dir=out, progress=False, chain=chain
            )
            log(
                f"{self.root}: sampled {tag} in {time.time() - t0:.0f} s: {res.stats['pairs']} pairs, "
                f"{res.stats['failed']} failed"
            )
        return os.path.join(out, "candidates.parquet")

    def select(self, name: str, candidates: str, strategy: str, margin: float, enforce=None) -> str:
        from rcs_ray.sampling.select import select

        out = os.path.join(self.root, "select", name)
        stats = cached_json(
            os.path.join(out, "select.json"),
            lambda: select(candidates, out, strategy=strategy, margin=margin, enforce=enforce),
        )
        self.info[name] = {"failed_prompts": stats["failed"], "failure_rate": stats["failure_rate"]}
        return os.path.join(out, "pairs.parquet")

    def train(self, name: str, stage: int, pairs: str, start: str, loss: str, setting: str, config=None) -> str:
        from rcs_ray import train

        lr, beta = SETTINGS[setting]
        out = os.path.join(self.root, "train", f"{name}-{loss}-{setting}")
        if not os.path.exists(os.path.join(out, "model", "config.json")):
            shutil.rmtree(out, ignore_errors=True)
            cfg = self.load(f"train.loss={loss}", f"train.learning_rate={lr}", f"train.beta={beta}", config=config)
            t0 = time.time()
            train.run(cfg, stage=stage, pairs=pairs, policy=start, reference=start, out_dir=out, progress=False)
            # (mixed: start None -> from policy.path, the base policy, as stage 1 starts)
            log(f"{self.root}: trained {name}/{loss} ({setting}) in {time.time() - t0:.0f} s")
        return os.path.join(out, "model")

    def iterative(self, name: str, start: str, loss: str, setting: str, *extra) -> str:
        """Stage 2 run by the workflow's iterative RCS (``stages.1.iterations``, :mod:`rcs_ray.iterations`) from
        ``start``, once per loss and setting (its pairs depend on what each iteration trained); its pair stats (the
        iterations' pairs together) and failures go to ``info[name]``. Returns the stage's policy."""
        import pandas as pd

        from rcs_ray.user_paths import resolve_model_dir

        lr, beta = SETTINGS[setting]
        out = os.path.join(self.root, "iterative", f"{name}-{loss}-{setting}")
        over = [f"output_dir={out}", f"train.loss={loss}", f"train.learning_rate={lr}", f"train.beta={beta}", *extra]
        cfg = self.load(*over)
        t0 = time.time()
        outcome = run_alone(cfg, 1, [resolve_model_dir(cfg.policy.path, "policy.path", cfg.tinyworld), start])
        log(f"{self.root}: {name}/{loss} ({setting}) iterations done in {time.time() - t0:.0f} s ({outcome.skipped})")
        both = os.path.join(out, "pairs_all_iterations.parquet")
        pd.concat([pd.read_parquet(it["pairs"]) for it in outcome.stats["iterations"]]).to_parquet(both)
        s = outcome.stats["sample"]
        self.info[name] = {"failed_prompts": s["failed"], "failure_rate": s["failure_rate"]}
        self.info[name].update(pair_stats(both, self.names))
        self.info[name]["iterations"] = [
            {k: outcome.stats[f"iter{i}/sample"][k] for k in ("prompts", "pairs", "failed")}
            for i in range(1, len(outcome.stats["iterations"]) + 1)
        ]
        return outcome.policy

    def evaluate(self, tag: str, policies: dict, reference: str, *extra) -> dict:
        from rcs_ray.evaluate import evaluate

        path = os.path.join(self.root, "eval", tag, "metrics.json")
        old = json.load(open(path)) if os.path.exists(path) else None
        if old is None or old["policies"] != policies:
            t0 = time.time()
            ev = evaluate(
                self.load(*extra), policies, reference=reference, out_dir=os.path.join(self.root, "eval", tag)
            )
            old = {"policies": policies, "metrics": ev.metrics}
            with open(path, "w") as f:
                json.dump(old, f, indent=1)
            log(f"{self.root}: evaluated {len(policies)} policies ({tag}) in {time.time() - t0:.0f} s")
        return old["metrics"]


def run_alone(cfg, k: int, chain: list):
    """Stage ``k`` of the workflow by itself, from the chain ``pi_0 .. pi_k`` of the stages before it (its own
    manifest under ``output_dir``, resumed as the workflow resumes): the workflow's steps, from a stage-1 policy the
    findings already have. Returns the stage's :class:`~rcs_ray.workflow.StageOutcome`."""
    from rcs_ray.run_layout import RunLayout
    from rcs_ray.workflow import StageOutcome, _Manifest, _stage_inputs, _stage_steps

    st = cfg.stages[k]
    manifest = _Manifest(RunLayout(cfg.output_dir).stage(k).manifest, k + 1, st.objective)
    outcome = StageOutcome(stage=k + 1, objective=st.objective, policy="", manifest=manifest.path)
    entry = _stage_steps(cfg, k, manifest, _stage_inputs(cfg, k, chain[-1]), outcome, list(chain), False)
    outcome.stats["train"] = entry["stats"]
    outcome.policy = entry["outputs"]["model"]
    return outcome
