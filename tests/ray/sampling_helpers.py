"""What the sampling tests share: the tiny K = 2 config at a small size, reading outputs, the texts a rule scored."""

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
