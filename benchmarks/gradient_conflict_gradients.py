"""The gradients of ``benchmarks/gradient_conflict.py`` (Lemma 1 on the tiny world): the policy whose parameters are
differentiated (:class:`Policy`), the two measures of G1 (the policy gradient of the harmless reward,
:func:`g1_policy_gradient`; minus stage 1's own DPO loss gradient, :func:`g1_stage1_loss`), each pair's stage-2
update direction (:func:`pair_directions`, scaled per loss by :func:`loss_coefficients`) and what one step on a pair
set does to stage 1's own loss (:func:`own_stage1_change`)."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np


def as_text(x) -> str:
    """A prompt or response as the rules read it (conversational rows store one message)."""
    if isinstance(x, str):
        return x
    return list(x)[-1]["content"]


class Policy:
    """A causal LM with its prompt rule; flat gradients of sequence log-probs."""

    def __init__(self, path: str, max_length: int, use_chat_template=True):  # a bool or a PromptRule
        import torch

        from rcs_ray.modeling.loading import load_causal_lm, load_tokenizer

        self.tok = load_tokenizer(path)
        self.model = load_causal_lm(path).eval()  # eval: no dropout; gradients still flow
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
        return np.concatenate(
            [
                (g if g is not None else self.torch.zeros_like(p)).detach().reshape(-1).double().numpy()
                for g, p in zip(grads, self.params)
            ]
        )


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
        lp = pol.logps(examples[start : start + batch])
        g = pol.flat_grad((lp * pol.torch.as_tensor(w[start : start + batch], dtype=lp.dtype)).sum())
        total = g if total is None else total + g
    return total


def g1_stage1_loss(pol: Policy, ref: Policy, rows: Sequence[dict], beta: float, batch: int = 32) -> np.ndarray:
    """Minus the gradient of stage 1's DPO loss (``rcs_ray.train.losses.dpo_loss``) on D1 pairs, reference the base."""
    from rcs_ray.train.losses import dpo_loss

    total = None
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
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
    else:  # MODPO: weights = (trained objective's, harmless margin's); the margin is the pair's harmless gap
        value, _ = modpo_loss(
            pc,
            pr,
            ref,
            ref,
            torch.tensor([[harmless_gap]], dtype=torch.float64),
            torch.zeros((1, 1), dtype=torch.float64),
            weights=list(weights),
            beta=beta,
        )
    (grad,) = torch.autograd.grad(value, pc)
    return -float(grad)


def pair_directions(pol: Policy, rows: Sequence[dict]) -> List[np.ndarray]:
    """``g = grad[log pi(y_w|x) - log pi(y_l|x)]`` per pair (flat vectors)."""
    out = []
    for r in rows:
        lp = pol.logps(
            [pol.example(r["prompt"], as_text(r["chosen"])), pol.example(r["prompt"], as_text(r["rejected"]))]
        )
        out.append(pol.flat_grad(lp[0] - lp[1]))
    return out


def own_stage1_change(
    pol: Policy,
    ref: Policy,
    rows: Sequence[dict],
    dirs: List[np.ndarray],
    beta1: float,
    beta2: float,
    weights: Sequence[float],
) -> dict:
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
        value, _ = dpo_loss(side * h, zero, zero, zero, beta=beta1)  # the preferred side's margin: side * h
        (dl1_dh,) = torch.autograd.grad(value, h)
        for loss in changes:
            coef = loss_coefficients(loss, r["harmless_gap"], beta2, weights)
            changes[loss].append(float(dl1_dh) * coef * float(g @ g))
    if not changes["dpo"]:
        return {}
    return {
        "pairs": len(changes["dpo"]),
        **{f"share_nonpositive_{loss}": float(np.mean(np.array(v) <= 0)) for loss, v in changes.items()},
        **{f"mean_change_{loss}": float(np.mean(v)) for loss, v in changes.items()},
    }
