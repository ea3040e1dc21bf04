"""Training the tiny world's models: the policy (pretrained on the world's generator) and the multi-head reward
model (regression on standardized fine-scale rule rewards). Called by :mod:`rcs_ray.tinyworld.build`."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Callable, List, Sequence

import numpy as np

from rcs_ray.config import TinyWorldConfig
from rcs_ray.tinyworld import world as W
from rcs_ray.tinyworld.generate import encode_examples, padded, save_tokenizer
from rcs_ray.tinyworld.rewards import OBJECTIVES, reward_names, score

MODEL_SHAPE = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)


def _model_config(tok, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **MODEL_SHAPE,
        **extra,
    )


def _train_loop(
    model, batches: Callable[[int], tuple], steps: int, lr: float, loss_fn, desc: str, progress: bool
) -> List[float]:
    """AdamW with linear warm-up and cosine decay to 10%; returns the per-step losses."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    )
    from tqdm.auto import tqdm

    bar = (
        tqdm(total=steps, desc=f"tinyworld {desc}", file=sys.stderr, mininterval=2.0 if sys.stderr.isatty() else 15.0)
        if progress
        else None
    )
    losses = []
    model.train()
    for step in range(steps):
        loss = loss_fn(model, *batches(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    return losses


def pretrain_policy(
    tok,
    cfg: TinyWorldConfig,
    prompts: Sequence[str],
    out_dir: str,
    progress: bool,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> dict:
    """Pretrain the policy on ``cfg.pretrain_examples`` generated prompt+response examples (loss on the response
    and its EOS only) and save it with the tokenizer to ``out_dir``."""
    import torch
    from transformers import LlamaForCausalLM

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1]))
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), size=cfg.pretrain_examples)]
    batch = W.sample_words(rng, [W.prompt_topic(p) for p in chosen], cfg.conflict)
    seqs, plen = encode_examples(tok, rng, chosen, batch.words)
    ids = torch.from_numpy(padded(seqs, tok.pad_token_id))
    target = _response_targets(ids, plen, tok.pad_token_id)
    lengths = torch.tensor([len(s) for s in seqs])
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(_model_config(tok))
    steps = max(1, cfg.pretrain_examples // batch_size)

    def batches(step):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        width = int(lengths[sl].max())
        return ids[sl, :width], target[sl, :width]

    def loss_fn(m, x, y):
        # Right padding + causal attention: no mask needed. The LM head runs on the scored positions only.
        hidden = m.model(input_ids=x).last_hidden_state
        keep = y != -100
        return torch.nn.functional.cross_entropy(m.lm_head(hidden[keep]), y[keep])

    losses = _train_loop(model, batches, steps, lr, loss_fn, "policy", progress)
    model.generation_config = _generation_config(tok)
    model.save_pretrained(out_dir)
    save_tokenizer(tok, out_dir)
    return {
        "examples": cfg.pretrain_examples,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "params": int(sum(p.numel() for p in model.parameters())),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
    }


def train_reward_model(
    tok,
    cfg: TinyWorldConfig,
    prompts: Sequence[str],
    policy_dir: str,
    out_dir: str,
    progress: bool,
    batch_size: int = 128,
    lr: float = 2e-3,
) -> dict:
    """Train the 3-head regression RM on standardized fine-scale rule rewards of generated responses.

    The backbone starts from the pretrained policy's. Half the texts end with EOS, half do not (decoded samples
    usually have none). Head j predicts ``(r_j - mean_j) / std_j``; mean and std are stored in world.json and
    ``reward_model/tinyworld_rm.json``.
    """
    import torch
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 2]))
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), size=cfg.rm_examples)]
    batch = W.sample_words(rng, [W.prompt_topic(p) for p in chosen], cfg.conflict)
    target = score(chosen, batch.texts(), reward_names("fine"))
    mean, std = target.mean(axis=0), target.std(axis=0)
    seqs, _ = encode_examples(tok, rng, chosen, batch.words, eos_prob=0.5)
    y = torch.tensor((target - mean) / std, dtype=torch.float32)
    ids = torch.from_numpy(padded(seqs, tok.pad_token_id))
    lengths = torch.tensor([len(s) for s in seqs])
    names = list(OBJECTIVES)
    config = _rm_config(tok, names)
    torch.manual_seed(cfg.seed + 1)
    model = LlamaForSequenceClassification(config)
    model.model.load_state_dict(LlamaForCausalLM.from_pretrained(policy_dir).model.state_dict())
    steps = max(1, cfg.rm_examples // batch_size)

    def batches(step):
        sl = slice(step * batch_size, (step + 1) * batch_size)
        return ids[sl, : int(lengths[sl].max())], y[sl]

    def loss_fn(m, x, t):  # pooled at the last non-pad token (right padding, causal: no mask needed)
        return torch.nn.functional.mse_loss(m(input_ids=x).logits, t)

    losses = _train_loop(model, batches, steps, lr, loss_fn, "reward model", progress)
    model.save_pretrained(out_dir)
    save_tokenizer(tok, out_dir)
    norm = _save_normalization(out_dir, names, mean, std)
    return {
        "examples": cfg.rm_examples,
        "steps": steps,
        "lr": lr,
        "final_mse": round(float(np.mean(losses[-20:])), 4),
        **norm,
    }


def _response_targets(ids, plen, pad_token_id: int):
    """LM targets of padded (B, T) example ids: ``target[t]`` = the token at t + 1 when it is part of the response
    (or its EOS), else -100 (prompt ``plen`` (B,) tokens long, and padding)."""
    import torch

    target = torch.full_like(ids, -100)
    target[:, :-1] = ids[:, 1:]
    target[torch.arange(ids.shape[1])[None, :] < torch.from_numpy(plen - 1)[:, None]] = -100
    target[target == pad_token_id] = -100
    return target


def _generation_config(tok):
    """The policy's sampling defaults: plain sampling (temperature 1, no top-p / top-k), up to 32 new tokens."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        max_new_tokens=32,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def _rm_config(tok, names: list):
    """The reward model's config: the policy's shape with one regression head per objective in ``names``."""
    return _model_config(
        tok,
        num_labels=len(names),
        problem_type="regression",
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )


def _save_normalization(out_dir: str, names: list, mean, std) -> dict:
    """Write ``tinyworld_rm.json`` (each head's objective, the fine-scale reward it predicts, and the mean and std
    its target was standardized with) into ``out_dir``; returns it."""
    norm = {
        "objectives": names,
        "target": reward_names("fine"),
        "mean": mean.round(6).tolist(),
        "std": std.round(6).tolist(),
    }
    with open(os.path.join(out_dir, "tinyworld_rm.json"), "w") as fh:
        json.dump(norm, fh, indent=1)
    return norm
