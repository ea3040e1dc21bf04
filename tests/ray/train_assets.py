"""The tiny random Llama, its pairs and its config that the Ray Train tests share (tests/ray/conftest.py builds them
once per module as the ``assets`` fixture)."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rcs_ray.config import load_config

STEPS, SAVE = 6, 2
CONFIG = """
name: t
output_dir: {out}
policy: {{path: {policy}}}
objectives:
  - {{name: harmless, kind: rule, function: "rcs_ray.tinyworld.rewards:harmless"}}
  - {{name: helpful, kind: rule, function: "rcs_ray.tinyworld.rewards:helpful"}}
stages:
  - {{objective: harmless, sample: false, data: {{path: {stage1}}}}}
  - {{objective: helpful}}
train: {{loss: dpo, beta: 0.1, learning_rate: 1.0e-3, max_steps: {steps}, save_steps: {save}, batch_size: 8,
         zero_stage: 2, num_workers: 2, max_length: 32, keep_checkpoints: null}}
ray: {{num_cpus: 2, object_store_memory_mb: 256}}
"""


def save_model(tok, path, vocab_size=None, nan=False, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size or len(tok),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,
            max_position_embeddings=128,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    if nan:
        with torch.no_grad():
            model.lm_head.weight.fill_(float("nan"))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def pair_rows(n=64, seed=0):
    """Chosen: helpful words; rejected: harmful words; rewards (harmless, helpful) with a varying harmless gap."""
    from rcs_ray.tinyworld import world as W

    rng = np.random.default_rng(seed)
    rows = []
    for p in W.all_prompts()[:n]:
        h_c, h_r = (float(x) for x in rng.integers(0, 3, size=2))
        rows.append(
            {
                "prompt": p,
                "chosen": " ".join(rng.choice(W.HELP_WORDS, 4)),
                "rejected": " ".join(rng.choice(W.HARM_WORDS, 4)),
                "chosen_rewards": [h_c, 2.0],
                "rejected_rewards": [h_r, 0.0],
                "target": "helpful",
            }
        )
    return rows


def build_assets(root):
    """The tokenizer, a random policy, a pairs file and a stage-1 JSON-lines file under ``root``."""
    from rcs_ray.tinyworld.build import build_tokenizer

    tok = build_tokenizer()
    pairs = root / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(pair_rows()), pairs)
    stage1 = root / "stage1.jsonl"
    with open(stage1, "w") as fh:
        for r in pair_rows():
            fh.write(json.dumps({"prompt": r["prompt"], "chosen": r["rejected"], "rejected": r["chosen"]}) + "\n")
    return {
        "root": root,
        "tok": tok,
        "policy": save_model(tok, root / "policy"),
        "pairs": str(pairs),
        "stage1": str(stage1),
    }


def make_cfg(assets, out, *overrides):
    path = os.path.join(out, "config.yaml")
    os.makedirs(out, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(CONFIG.format(out=out, policy=assets["policy"], stage1=assets["stage1"], steps=STEPS, save=SAVE))
    return load_config(path, list(overrides))


def weights(model_dir):
    from safetensors.torch import load_file

    return load_file(os.path.join(model_dir, "model.safetensors"))
