"""What the sampling tests share: the tiny K = 2 config at a small size, reading outputs, the texts a rule scored."""

import functools
import os

import pyarrow.parquet as pq

from rcs_ray.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def texts(pair, side):
    """(prompt, response) of a pairs.parquet row as the rules scored them: a plain prompt that the policy read
    through its chat template is stored as one user message (TRL's conversational form), the response as one
    assistant message."""

    def text(x):
        return x if isinstance(x, str) else x[-1]["content"]

    return text(pair["prompt"]), text(pair[side])


def tiny_cfg(tmp_path, *overrides, limit=24):
    return load_config(
        os.path.join(REPO, "configs/tiny/k2.yaml"),
        [
            f"output_dir={tmp_path}",
            f"tinyworld.cache_dir={os.path.join(REPO, '.cache', 'tinyworld')}",
            f"stages.1.data.limit={limit}",
            "sampling.batch_size=8",
            *overrides,
        ],
    )


def read(path):
    return pq.read_table(path).to_pylist()


def input_ids(cfg):
    from rcs_ray.sampling.pipeline import read_groups

    return [r["prompt_id"] for r in read_groups(cfg.stages[1].data, cfg.tinyworld)[0]]


@functools.lru_cache(maxsize=4)
def _reward_model(path):
    """(tokenizer, model) of a sequence-classification RM, loaded once per path for the oracle below."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForSequenceClassification.from_pretrained(path).eval()


def rm_head(path, prompt, answer, head):
    """Output ``head`` of a sequence-classification RM for one (prompt, answer), read as HF documents for reward
    models: the whole conversation through the RM's chat template, one sequence (no padding)."""
    import torch

    tok, model = _reward_model(path)
    chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    text = tok.apply_chat_template(chat, tokenize=False)
    with torch.no_grad():
        return float(model(**tok(text, add_special_tokens=False, return_tensors="pt")).logits[0, head])
