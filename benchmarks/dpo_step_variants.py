"""The in-process variants of ``benchmarks/dpo_step.py``: the shared assets (a tiny Llama of the tiny world's shape
and its tokenized pairs, :func:`build_assets`), the batches every variant takes in turn (:func:`batches`), the
precomputed reference log-probs (:func:`reference_logps`), and the step functions of ``plain``
(:func:`plain_step_fn`) and ``ours`` (:func:`ours_step_fn`: the loop's forward and loss under a DeepSpeed engine)."""

from __future__ import annotations

import os

import numpy as np

BETA, LR = 0.1, 1e-4  # every variant's DPO beta and AdamW learning rate


def build_assets(root: str, n_pairs: int, max_length: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rcs_ray.modeling.logprobs import build_pair_features
    from rcs_ray.tinyworld import world as W
    from rcs_ray.tinyworld.build import MODEL_SHAPE, build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **MODEL_SHAPE,
    )
    policy = os.path.join(root, "policy")
    LlamaForCausalLM(config).save_pretrained(policy)
    tok.save_pretrained(policy)
    rng = np.random.default_rng(0)
    rows = []
    for p in W.all_prompts()[:n_pairs]:
        k = int(rng.integers(4, 12))
        rows.append(
            {
                "prompt": p,
                "chosen": " ".join(rng.choice(W.HELP_WORDS, k)),
                "rejected": " ".join(rng.choice(W.HARM_WORDS, k)),
            }
        )
    feats = [
        build_pair_features(tok, [{"role": "user", "content": r["prompt"]}], r["chosen"], r["rejected"], max_length)
        for r in rows
    ]
    return tok, policy, rows, feats


def batches(feats, ref, batch: int, steps: int, pad: int):
    from rcs_ray.modeling.logprobs import collate_pairs

    out = []
    for s in range(steps):
        idx = [(s * batch + i) % len(feats) for i in range(batch)]
        b = collate_pairs(
            [{**feats[i], "ref_chosen_logps": ref[0][i], "ref_rejected_logps": ref[1][i]} for i in idx],
            pad,
            extra_keys=("ref_chosen_logps", "ref_rejected_logps"),
        )
        b["tokens"] = int(b["chosen_attention_mask"].sum() + b["rejected_attention_mask"].sum())
        out.append(b)
    return out


def reference_logps(policy: str, feats, pad: int):
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.modeling.logprobs import collate_pairs
    from rcs_ray.train.batches import pair_logps

    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    chosen, rejected = [], []
    with torch.no_grad():
        for i in range(0, len(feats), 32):
            c, r = pair_logps(model, collate_pairs(feats[i : i + 32], pad))
            chosen += c.tolist()
            rejected += r.tolist()
    return chosen, rejected


def plain_step_fn(policy: str):
    """A textbook single-process DPO step (what a hand-rolled script does)."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(policy).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)

    def logps(logits, labels):
        labels = labels[:, 1:]
        mask = labels != -100
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (lp * mask).sum(-1)

    def step(b):
        ids = torch.cat([b["chosen_input_ids"], b["rejected_input_ids"]])
        mask = torch.cat([b["chosen_attention_mask"], b["rejected_attention_mask"]])
        labels = torch.cat([b["chosen_labels"], b["rejected_labels"]])
        lp = logps(model(input_ids=ids, attention_mask=mask).logits, labels)
        n = b["chosen_input_ids"].shape[0]
        logits = BETA * ((lp[:n] - b["ref_chosen_logps"]) - (lp[n:] - b["ref_rejected_logps"]))
        loss = -F.logsigmoid(logits).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    return step


def ours_step_fn(policy: str, zero_stage: int, batch: int):
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM

    from rcs_ray.config import TrainConfig
    from rcs_ray.train.batches import pair_logps, preference_loss
    from rcs_ray.train.deepspeed_engine import build_ds_config

    for k, v in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29533",
    }.items():
        os.environ.setdefault(k, v)
    if not torch.cuda.is_available():
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    train = TrainConfig(batch_size=batch, zero_stage=zero_stage, learning_rate=LR, beta=BETA)
    model = AutoModelForCausalLM.from_pretrained(policy)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=build_ds_config(train, 1))
    engine.train()

    def step(b):
        b = {k: (v.to(engine.device) if hasattr(v, "to") else v) for k, v in b.items()}
        chosen, rejected = pair_logps(engine, b)
        loss, _ = preference_loss("dpo", chosen, rejected, b, BETA)
        engine.backward(loss)
        engine.step()
        return float(loss.detach())

    return step
