"""Lemma 1 of arXiv 2504.11337, measured on the tiny world: do RC pairs give stage-2 gradients that agree with
the stage-1 objective, and non-RC pairs ones that oppose it?

At the start of stage 2 (the policy is the stage-1 policy pi_1, which is also stage 2's reference), for every pair
(x, y_w, y_l) of a stage-2 pair set:

- **dG2**, the update the pair adds at stage 2: minus the gradient of its stage-2 loss (``dpo`` or ``modpo``, the
  project's own loss functions), ``dG2 = -dL/d(log pi(y_w)) * g`` with ``g = grad[log pi(y_w|x) - log pi(y_l|x)]``;
- **G1**, the direction that improves the earlier objective (harmlessness), measured two independent ways:
  ``pg`` -- the policy gradient of the expected harmless reward, ``E_{x, y ~ pi_1}[(r_1(x, y) - b(x)) grad log
  pi_1(y|x)]`` from fresh samples (leave-one-out baseline); ``d1`` -- minus the gradient of stage 1's own DPO loss
  on a batch of D1 pairs (reference: the base policy, stage 1's beta).

The lemma says ``G1 . dG2 >= 0`` exactly when the pair is RC on the earlier objective. This script measures, per
pair set (RC / tie / non-RC on harmlessness, from the pairs' recorded rewards), the share of pairs with
``G1 . dG2 >= 0``, the cosine distribution, and the mean ``G1 . dG2`` (the first-order change in objective 1 per
unit learning rate of one step on that set). At a fixed policy the DPO and MODPO updates of a pair point the same
way (they differ by a positive scalar), so the *share* is loss-independent; the mean (how much each loss lets that
set pull harmlessness down or up) is not: MODPO's margin down-weights non-RC pairs.

    python benchmarks/gradient_conflict.py                         # trains stage 1 (Ray Train) then measures
    python benchmarks/gradient_conflict.py --policy outputs/tiny-k2/stage1/train/model
    python benchmarks/gradient_conflict.py --pairs rcs=outputs/x/pairs.parquet --pairs rsdpo=outputs/y/pairs.parquet

Writes ``gradient_conflict.json`` / ``.md`` / ``.png`` under ``--out`` (default
``benchmarks/results/gradient_conflict``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Sequence

import numpy as np
from gradient_conflict_report import markdown, plot           # benchmarks/ is on sys.path as a script
from tinyworld_findings_report import relative_paths

CONFIG = "configs/tiny/k2.yaml"
SETS = ("RC", "tie", "non-RC")


def log(msg: str) -> None:
    print(f"[gradient-conflict {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- data
def read_rows(path: str) -> List[dict]:
    """Rows of a jsonl (the tiny world's ``chosen_scores``) or a pairs.parquet (``chosen_rewards``)."""
    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_json(path, lines=True)
    return df.to_dict("records")


def as_text(x) -> str:
    """A prompt or response as the rules read it (conversational rows store one message)."""
    if isinstance(x, str):
        return x
    return list(x)[-1]["content"]


def split_by_rc(rows: Sequence[dict], harmless: int, per_set: int, seed: int) -> Dict[str, List[dict]]:
    """RC (chosen strictly more harmless), tie, non-RC (chosen strictly more harmful); ``per_set`` of each, seeded."""
    rng = np.random.default_rng(seed)
    out: Dict[str, List[dict]] = {s: [] for s in SETS}
    for r in rows:
        c = r.get("chosen_rewards", r.get("chosen_scores"))
        j = r.get("rejected_rewards", r.get("rejected_scores"))
        d = float(c[harmless]) - float(j[harmless])
        out["RC" if d > 0 else "tie" if d == 0 else "non-RC"].append(dict(r, harmless_gap=d))
    for s, rs in out.items():
        if len(rs) > per_set:
            out[s] = [rs[i] for i in sorted(rng.choice(len(rs), per_set, replace=False))]
    return out


# ----------------------------------------------------------------------------------------------- gradients
class Policy:
    """A causal LM with its prompt rule; flat gradients of sequence log-probs."""

    def __init__(self, path: str, max_length: int, use_chat_template=True):      # a bool or a PromptRule
        import torch

        from rcs_ray.modeling.loading import load_causal_lm, load_tokenizer

        self.tok = load_tokenizer(path)
        self.model = load_causal_lm(path).eval()       # eval: no dropout; gradients still flow
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.max_length, self.chat = max_length, use_chat_template
        self.torch = torch

    def logps(self, examples) -> "object":
        """(N,) summed response log-probs with the autograd graph (``examples`` from ``tokenize_example``)."""
        from rcs_ray.modeling.logprobs import pad_examples, sequence_logps

        batch = pad_examples(examples, self.tok.pad_token_id)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sequence_logps(logits, batch["labels"])

    def example(self, prompt, response):
        from rcs_ray.modeling.logprobs import tokenize_example

        return tokenize_example(self.tok, prompt, response, self.max_length, use_chat_template=self.chat)

    def flat_grad(self, scalar) -> np.ndarray:
        grads = self.torch.autograd.grad(scalar, self.params, allow_unused=True)
        return np.concatenate([(g if g is not None else self.torch.zeros_like(p)).detach().reshape(-1).double().numpy()
                               for g, p in zip(grads, self.params)])


def g1_policy_gradient(pol: Policy, prompts: Sequence[str], n: int, seed: int, batch: int = 32) -> np.ndarray:
    """``E[(r_1 - b) grad log pi(y|x)]`` from ``n`` fresh samples per prompt (leave-one-out baseline b)."""
    from rcs_ray.prompting import prompt_ids
    from rcs_ray.tinyworld.generate import generate_ids
    from rcs_ray.tinyworld.rewards import harmless

    ids = generate_ids(pol.model, pol.tok, prompts, n=n, max_new_tokens=24, temperature=1.0, seed=seed)
    examples, weights = [], []
    for p, group in zip(prompts, ids):
        rewards = np.array([harmless(p, pol.tok.decode(y, skip_special_tokens=True)) for y in group], dtype=float)
        base = (rewards.sum() - rewards) / max(1, n - 1)
        prompt = prompt_ids(pol.tok, p, pol.chat)
        for y, adv in zip(group, rewards - base):
            if not y:
                continue
            examples.append({"input_ids": prompt + list(y), "labels": [-100] * len(prompt) + list(y)})
            weights.append(adv)
    total = None
    w = np.asarray(weights) / len(weights)
    for start in range(0, len(examples), batch):
        lp = pol.logps(examples[start:start + batch])
        g = pol.flat_grad((lp * pol.torch.as_tensor(w[start:start + batch], dtype=lp.dtype)).sum())
        total = g if total is None else total + g
    return total


def g1_stage1_loss(pol: Policy, ref: Policy, rows: Sequence[dict], beta: float, batch: int = 32) -> np.ndarray:
    """Minus the gradient of stage 1's DPO loss (``rcs_ray.train.losses.dpo_loss``) on D1 pairs, reference the base."""
    from rcs_ray.train.losses import dpo_loss

    total = None
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        ex_c = [pol.example(r["prompt"], r["chosen"]) for r in part]
        ex_r = [pol.example(r["prompt"], r["rejected"]) for r in part]
        with ref.torch.no_grad():
            rc, rr = ref.logps(ex_c), ref.logps(ex_r)
        loss, _ = dpo_loss(pol.logps(ex_c), pol.logps(ex_r), rc, rr, beta=beta)
        g = -pol.flat_grad(loss * len(part) / len(rows))
        total = g if total is None else total + g
    return total


def loss_coefficients(loss: str, harmless_gap: float, beta: float, weights: Sequence[float]) -> float:
    """``-dL/d log pi(y_w)`` of one pair at the start of stage 2 (policy == reference), from the loss function itself.

    ``dG2 = coefficient * grad[log pi(y_w) - log pi(y_l)]``: the pair's update, up to the shared direction g.
    """
    import torch

    from rcs_ray.train.losses import dpo_loss, modpo_loss

    pc = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    pr = torch.zeros(1, dtype=torch.float64)
    ref = torch.zeros(1, dtype=torch.float64)
    if loss == "dpo":
        value, _ = dpo_loss(pc, pr, ref, ref, beta=beta)
    else:   # MODPO: weights = (trained objective's, harmless margin's); the margin is the pair's harmless gap
        value, _ = modpo_loss(pc, pr, ref, ref, torch.tensor([[harmless_gap]], dtype=torch.float64),
                              torch.zeros((1, 1), dtype=torch.float64), weights=list(weights), beta=beta)
    (grad,) = torch.autograd.grad(value, pc)
    return -float(grad)


def pair_directions(pol: Policy, rows: Sequence[dict]) -> List[np.ndarray]:
    """``g = grad[log pi(y_w|x) - log pi(y_l|x)]`` per pair (flat vectors)."""
    out = []
    for r in rows:
        lp = pol.logps([pol.example(r["prompt"], as_text(r["chosen"])), pol.example(r["prompt"], as_text(r["rejected"]))])
        out.append(pol.flat_grad(lp[0] - lp[1]))
    return out


def own_stage1_change(pol: Policy, ref: Policy, rows: Sequence[dict], dirs: List[np.ndarray], beta1: float,
                      beta2: float, weights: Sequence[float]) -> dict:
    """Lemma 1 as stated, pair by pair: the first-order change of the pair's *own* stage-1 loss (DPO on
    harmlessness: the more harmless side preferred, reference the base policy, stage 1's beta) under one step of the
    pair's stage-2 update, ``grad L1 . dG2`` per unit learning rate. <= 0: the step does not undo the pair's own
    stage-1 preference. A tie has no stage-1 preference and is left out.

    Both gradients lie along the pair's direction g (``grad L1 = dL1/dh * g`` with h the chosen-minus-rejected
    log-ratio against the base; ``dG2 = coefficient * g``), so the sign is the sign of ``dL1/dh``, measured through the
    project's own ``dpo_loss`` / ``modpo_loss``.
    """
    import torch

    from rcs_ray.train.losses import dpo_loss

    changes = {"dpo": [], "modpo": []}
    for r, g in zip(rows, dirs):
        side = float(np.sign(r["harmless_gap"]))
        if side == 0:
            continue
        pair = [pol.example(r["prompt"], as_text(r["chosen"])), pol.example(r["prompt"], as_text(r["rejected"]))]
        with torch.no_grad():
            lp, lr = pol.logps(pair), ref.logps(pair)
        h = torch.tensor([float((lp[0] - lr[0]) - (lp[1] - lr[1]))], dtype=torch.float64, requires_grad=True)
        zero = torch.zeros(1, dtype=torch.float64)
        value, _ = dpo_loss(side * h, zero, zero, zero, beta=beta1)          # the preferred side's margin: side * h
        (dl1_dh,) = torch.autograd.grad(value, h)
        for loss in changes:
            coef = loss_coefficients(loss, r["harmless_gap"], beta2, weights)
            changes[loss].append(float(dl1_dh) * coef * float(g @ g))
    if not changes["dpo"]:
        return {}
    return {"pairs": len(changes["dpo"]),
            **{f"share_nonpositive_{loss}": float(np.mean(np.array(v) <= 0)) for loss, v in changes.items()},
            **{f"mean_change_{loss}": float(np.mean(v)) for loss, v in changes.items()}}


# ----------------------------------------------------------------------------------------------- report
def measure(sets: Dict[str, List[dict]], dirs: Dict[str, List[np.ndarray]], g1: Dict[str, np.ndarray], beta: float,
            weights: Sequence[float]) -> dict:
    out = {}
    for name, rows in sets.items():
        if not rows:
            continue
        gaps = np.array([r["harmless_gap"] for r in rows])
        entry = {"pairs": len(rows), "mean_harmless_gap": float(gaps.mean())}
        for gname, G in g1.items():
            gn = np.linalg.norm(G)
            dots = np.array([G @ d for d in dirs[name]])
            cos = dots / (gn * np.maximum(np.array([np.linalg.norm(d) for d in dirs[name]]), 1e-30))
            e = {"share_nonneg": float(np.mean(dots >= 0)), "cosine_mean": float(cos.mean()),
                 "cosine_median": float(np.median(cos)), "cosines": [round(float(c), 5) for c in cos]}
            for loss in ("dpo", "modpo"):
                coef = np.array([loss_coefficients(loss, g, beta, weights) for g in gaps])
                e[f"mean_dot_{loss}"] = float(np.mean(coef * dots))      # first-order change of objective 1 per lr
            entry[gname] = e
        out[name] = entry
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", help="the stage-1 policy (default: train stage 1 of --config into --work)")
    ap.add_argument("--config", default=CONFIG)
    ap.add_argument("--per-set", type=int, default=256, help="pairs per RC / tie / non-RC set")
    ap.add_argument("--pairs", action="append", default=[], help="NAME=FILE: another stage-2 pair set (pairs.parquet)")
    ap.add_argument("--pg-prompts", type=int, default=256)
    ap.add_argument("--pg-n", type=int, default=8)
    ap.add_argument("--d1-pairs", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/gradient_conflict")
    ap.add_argument("--work", default="outputs/gradient-conflict")
    a = ap.parse_args(argv)

    import torch

    from rcs_ray.config import load_config
    from rcs_ray.config.stages import stage_train
    from rcs_ray.paths import resolve_path
    from rcs_ray.prompting import PromptRule

    torch.manual_seed(a.seed)
    start = time.time()
    cfg = load_config(a.config, [f"output_dir={a.work}", f"train.seed={a.seed}"])
    names = cfg.objective_names
    h = names.index("harmless")
    policy = a.policy
    if not policy:
        from rcs_ray import train

        log("training stage 1 (harmless, DPO on D1) ...")
        policy = train.run(cfg, stage=0, progress=False).model_dir
    base = resolve_path(cfg.policy.path, cfg.tinyworld)
    beta1, beta2 = stage_train(cfg, 0).beta, stage_train(cfg, 1).beta
    all_w = list(cfg.train.modpo_weights or [1.0 / len(names)] * len(names))
    weights = [all_w[names.index(cfg.stages[1].objective)], all_w[h]]       # (trained, margin) as modpo_loss takes
    rule = PromptRule.of(cfg.policy)              # chat template, system prompt, template variables
    pol = Policy(policy, cfg.train.max_length, rule)
    ref = Policy(base, cfg.train.max_length, rule)

    d1 = read_rows(resolve_path(cfg.stages[0].data.path, cfg.tinyworld))[:a.d1_pairs]
    d2 = read_rows(resolve_path(cfg.stages[1].data.path, cfg.tinyworld))
    eval_prompts = [r["prompt"] for r in read_rows(resolve_path(cfg.eval.prompts.path, cfg.tinyworld))][:a.pg_prompts]
    log(f"G1[pg] from {len(eval_prompts)} prompts x {a.pg_n} samples; G1[d1] from {len(d1)} D1 pairs")
    g1 = {"pg": g1_policy_gradient(pol, eval_prompts, a.pg_n, a.seed),
          "d1": g1_stage1_loss(pol, ref, d1, beta1)}
    g1_cos = float(g1["pg"] @ g1["d1"] / (np.linalg.norm(g1["pg"]) * np.linalg.norm(g1["d1"])))
    groups = {"D2 (original pairs)": split_by_rc(d2, h, a.per_set, a.seed)}
    for spec in a.pairs:
        name, _, path = spec.partition("=")
        groups[name] = split_by_rc(read_rows(path), h, a.per_set, a.seed)
    results = {}
    for group, sets in groups.items():
        log(f"{group}: per-pair gradients of " + ", ".join(f"{len(v)} {k}" for k, v in sets.items()))
        dirs = {s: pair_directions(pol, rows) for s, rows in sets.items()}
        results[group] = measure(sets, dirs, g1, beta2, weights)
        for s, rows in sets.items():
            if rows:
                results[group][s]["own_stage1"] = own_stage1_change(pol, ref, rows, dirs[s], beta1, beta2, weights)
    wall = round(time.time() - start, 1)
    meta = {"argv": sys.argv[1:] if argv is None else list(argv), "policy": policy, "pg_prompts": len(eval_prompts),
            "pg_n": a.pg_n, "d1_pairs": len(d1), "g1_cosine": g1_cos, "beta_stage1": beta1, "beta_stage2": beta2,
            "modpo_weights": weights, "wall_seconds": wall, "seed": a.seed,
            "parameters": int(sum(p.numel() for p in pol.params))}
    meta = relative_paths(meta, os.getcwd())
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gradient_conflict.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    md = markdown(results, meta)
    with open(os.path.join(a.out, "gradient_conflict.md"), "w") as f:
        f.write(md)
    plot(results, os.path.join(a.out, "gradient_conflict.png"))
    print(md)
    print(f"wall time {wall} s; wrote {a.out}/gradient_conflict.json, .md, .png")


if __name__ == "__main__":
    main()
