"""Checking a model directory before anything loads it: readable files, and every weight the model needs.

transformers fills a weight that a checkpoint lacks with a fresh random initialisation and only logs it, so a reward
model read through the wrong class (a safe-rlhf score model as a sequence classifier: a random ``score`` head)
silently scores noise. Here the model is built on the meta device (no memory, no weights), its state-dict keys are
compared with the checkpoint's (safetensors headers; a ``.bin`` checkpoint is opened memory-mapped) the way
``from_pretrained`` matches them (the base-model prefix added or stripped, tied weights not needed), and what is
missing is named in one line, before any generation or training starts. The loaders check again on what they loaded
(``output_loading_info``).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Callable, Iterable, List, Optional, Set

from rcs_ray.errors import RcsInputError

WEIGHT_GLOBS = ("*.safetensors", "*.bin")


def weight_files(path: str) -> List[str]:
    """The checkpoint files of model directory ``path``: safetensors when there are any, else ``.bin``."""
    for pattern in WEIGHT_GLOBS:
        files = sorted(f for f in glob.glob(os.path.join(path, pattern)) if not os.path.basename(f).startswith("."))
        files = [f for f in files if not f.endswith(("training_args.bin", "optimizer.bin", "scheduler.bin"))]
        if files:
            return files
    return []


def checkpoint_keys(path: str, key: str = "model") -> Set[str]:
    """Every tensor name in the checkpoint of ``path``.

    Raises:
        RcsInputError: no weights at all, or a file that cannot be read (a truncated download), naming the file.
    """
    files = weight_files(path)
    if not files:
        raise RcsInputError(f"{key}: {path} holds no weights (*.safetensors or *.bin)")
    names: Set[str] = set()
    for f in files:
        try:
            if f.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(f, "pt") as fh:
                    names.update(fh.keys())
            else:
                import torch

                names.update(torch.load(f, map_location="meta", weights_only=True, mmap=True).keys())
        except Exception as exc:  # noqa: BLE001 - safetensors / torch raise several types for a broken file
            raise RcsInputError(
                f"{key}: {f} is not a readable checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); download it again"
            ) from None
    return names


def on_meta(factory: Callable[[], object]):
    """``factory()`` with every tensor on the meta device: the model's structure without memory or weights."""
    import torch

    with torch.device("meta"):
        return factory()


def needed_keys(model) -> Set[str]:
    """The state-dict keys a checkpoint must provide: all but the tied ones and those the class may miss."""
    keys = set(model.state_dict())
    tied = getattr(model, "all_tied_weights_keys", None)
    if tied is None and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        tied = getattr(model, "_tied_weights_keys", None) or {}
    keys -= set(tied or ())
    for pattern in getattr(model, "_keys_to_ignore_on_load_missing", None) or ():
        keys = {k for k in keys if not re.search(pattern, k)}
    return keys


def missing_keys(needed: Set[str], have: Set[str], prefix: str = "") -> List[str]:
    """``needed`` keys absent from ``have`` after ``from_pretrained``'s prefix rule: a base-model checkpoint loaded
    under a head gains ``prefix.``; a head checkpoint loaded into the base model loses it."""
    if prefix:
        p = prefix + "."
        needs_prefix = any(k.startswith(p) for k in needed)
        has_prefix = any(k.startswith(p) for k in have)
        if needs_prefix and not has_prefix:
            have = {p + k for k in have}
        elif has_prefix and not needs_prefix:
            have = {k[len(p) :] if k.startswith(p) else k for k in have}
    return sorted(needed - have)


def summarize(keys: Iterable[str], limit: int = 4) -> str:
    """A few key names, then how many more."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_config(path: str, key: str, trust_remote_code: bool = False):
    """``AutoConfig`` of ``path``, its problems as one line naming ``key``."""
    from transformers import AutoConfig

    if not os.path.isfile(os.path.join(path, "config.json")):
        raise RcsInputError(f"{key}: {path} has no config.json: not a model directory in HF format")
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        if "trust_remote_code" in msg:
            raise RcsInputError(
                f"{key}: {path} ships its own model code (auto_map in config.json): set "
                f"{key.rsplit('.', 1)[0]}.trust_remote_code=true if you trust it"
            ) from None
        raise RcsInputError(f"{key}: {path}: {msg}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RcsInputError(f"{key}: {path}/config.json is not readable: {str(exc).splitlines()[0]}") from None


def architectures(config) -> List[str]:
    return list(getattr(config, "architectures", None) or [])


def check_causal_lm(path: str, key: str, trust_remote_code: bool = False) -> None:
    """A policy / reference / implicit-reward / judge model: a causal LM whose checkpoint has every weight.

    Raises:
        RcsInputError: a reward model or encoder given as a causal LM, missing weights, an unreadable file.
    """
    from transformers import AutoModelForCausalLM

    config = read_config(path, key, trust_remote_code)
    arch = architectures(config)
    heads = [
        a
        for a in arch
        if a.endswith(("ForSequenceClassification", "ForScore", "ForTokenClassification")) or "RewardModel" in a
    ]
    if heads:
        raise RcsInputError(
            f"{key}: {path} is a reward model ({', '.join(heads)}), not a causal language model: it "
            f"cannot generate or give log-probs"
        )
    try:
        model = on_meta(lambda: AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code))
    except ValueError:
        raise RcsInputError(
            f"{key}: {path} ({', '.join(architectures(config)) or config.model_type}) is not a causal language model"
        ) from None
    missing = missing_keys(needed_keys(model), checkpoint_keys(path, key), getattr(model, "base_model_prefix", ""))
    if missing:
        what = ", ".join(architectures(config)) or config.model_type
        raise RcsInputError(
            f"{key}: {path} ({what}) lacks weights {type(model).__name__} needs: {summarize(missing)}; "
            f"it would load with random values there: point {key} at a causal LM checkpoint"
        )


def loading_problem(info: Optional[dict]) -> List[str]:
    """The missing / mismatched keys of ``from_pretrained(..., output_loading_info=True)``'s report."""
    if not info:
        return []
    bad = list(info.get("missing_keys") or [])
    bad += [m[0] if isinstance(m, (tuple, list)) else str(m) for m in info.get("mismatched_keys") or []]
    return sorted(set(bad))
