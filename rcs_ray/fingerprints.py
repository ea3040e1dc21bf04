"""What each workflow step's result depends on: a rerun redoes a step when, and only when, one of these changed.

**sample** (stage k): the policy it samples from (path + content fingerprint), the stage's data (file fingerprint +
its data config), the stage's objective and ``rc`` settings, the configs of the objectives it scores, the policy's
own settings, the sampling settings that change the samples (n, temperature, top_p, max_tokens, seed, engine,
adaptive, ...), ``train.max_length`` (what an implicit reward reads) and the tiny world.

**train** (stage k): the policy it starts from and the reference, its pairs (file fingerprint) or its data, the
stage's objective, data config and ``mix``, the objectives and the earlier stages' objectives (margins), the policy's
settings, the tiny world, and the stage's ``train`` settings except the ones below. The training *schedule*
(``train.max_steps``, ``train.num_epochs``) is kept apart under a constant learning rate: raising it extends a
finished or interrupted training step from its last checkpoint; lowering it trains again from the start. Under a
``linear`` / ``cosine`` schedule it is part of the identity (every step's learning rate depends on it).

**Never** in a fingerprint (changing them reruns nothing): how a run runs, not what it computes --
:data:`SAMPLING_RUN_ONLY` (the results are independent of batching and pool sizes: every sample has its own seed),
:data:`OBJECTIVE_RUN_ONLY`, :data:`TRAIN_RUN_ONLY`, and everything under ``eval``, ``ray``, ``output_dir``, ``name``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional, Tuple

from rcs_ray.config import RunConfig, aligned_before, stage_objectives, stage_train, to_dict

SAMPLING_RUN_ONLY = (
    "batch_size",
    "num_actors",
    "max_concurrent_batches",
    "num_gpus",
    "num_cpus",
    "resources",
    "placement_strategy",
)
OBJECTIVE_RUN_ONLY = ("batch_size", "num_actors", "num_gpus", "num_cpus", "resources")
TRAIN_RUN_ONLY = (
    "log_steps",
    "save_steps",
    "keep_checkpoints",
    "max_failures",
    "reference_pass",
    "ref_batch_size",
    "ref_num_actors",
    "resources_per_worker",
    "on_suspicious_data",
    "report_to",
    "gradient_checkpointing",
)
SCHEDULE = ("max_steps", "num_epochs")
# Settings added after runs already existed, with the value that does what rcs-ray did before the setting existed:
# at that value a setting is left out of the digest, so a run made before it keeps its finished steps (a new key
# enters the digest only when it changes a result; the new truncation default does: it re-selects a stage once).
ADDED_LATER = {
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "stop": [],
    "truncated": "keep",
    "system_prompt": None,
    "chat_template_kwargs": {},
    "config_name": None,
    "data_files": None,
    "rs_tau": 1.0,
    "rs_eta": 0.85,
}


def schedule_keys(train) -> Tuple[str, ...]:
    """The schedule settings a longer run may extend: :data:`SCHEDULE` under a constant learning rate; none under a
    decaying one (the total number of steps sets every step's learning rate, so it is part of the identity)."""
    return SCHEDULE if train.lr_scheduler == "constant" else ()


def digest(obj) -> str:
    """A short hash of ``obj`` (JSON, sorted keys), with :data:`ADDED_LATER` settings at their unused value left out."""
    return hashlib.sha256(json.dumps(_unset_dropped(obj), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _unset_dropped(obj):
    if isinstance(obj, dict):
        return {k: _unset_dropped(v) for k, v in obj.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}
    if isinstance(obj, list):
        return [_unset_dropped(v) for v in obj]
    return obj


def _without(d: dict, keys) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _objective(o) -> dict:
    return _without(to_dict(o), OBJECTIVE_RUN_ONLY)


def sample_inputs(cfg: RunConfig, k: int, models: dict) -> dict:
    """The sample step's inputs: ``models`` (policy / data paths and their fingerprints) plus a digest of every
    setting that changes the samples, their rewards or the selection."""
    d = to_dict(cfg)
    st = d["stages"][k]
    settings = {
        "stage": {key: st[key] for key in ("objective", "data", "rc")},
        "objectives": [_objective(o) for o in stage_objectives(cfg, k)],
        "sampling": _without(d["sampling"], SAMPLING_RUN_ONLY),
        "policy": _without(d["policy"], ("path",)),
        "max_length": cfg.train.max_length,
        "tinyworld": d["tinyworld"],
    }
    return {"settings": digest(settings), **models}


def train_inputs(cfg: RunConfig, k: int, models: dict) -> Tuple[dict, dict]:
    """``(identity, schedule)`` of the train step: what a checkpoint of it is only valid for, and how long it runs."""
    d = to_dict(cfg)
    st = d["stages"][k]
    t = stage_train(cfg, k)
    train, schedule = to_dict(t), schedule_keys(t)
    settings = {
        "stage": {key: st[key] for key in ("objective", "data", "mix", "sample")},
        "objectives": [_objective(o) for o in cfg.objectives],
        "earlier": aligned_before(cfg, k),
        "train": _without(train, TRAIN_RUN_ONLY + schedule),
        "policy": _without(d["policy"], ("path", "attn_implementation")),
        "tinyworld": d["tinyworld"],
    }
    return {"settings": digest(settings), **models}, {key: train[key] for key in schedule}


def schedule_shrank(old: Optional[dict], new: dict) -> bool:
    """Whether ``new`` asks for less training than ``old`` did (then a run cannot be extended: it starts over)."""
    if not old:
        return False
    for key in SCHEDULE:
        a, b = old.get(key), new.get(key)
        if a is not None and b is not None and b < a:
            return True
        if key == "max_steps" and a is None and b is not None:  # epochs-based -> a step cap: may be shorter
            return True
    return False
