"""Reward models as their families ship them: which output holds the reward, and loading without random weights.

An objective reads one ``output`` of its model's forward pass, indexed by ``head`` (every objective of one model is
served by one forward pass):

==============  ==================================================================================================
``logits``      a sequence classifier (``AutoModelForSequenceClassification``, e.g. Skywork / Llama RMs):
                ``logits[:, head]``, ``num_labels`` values
``rewards``     a multi-objective RM's vector of objective rewards (ArmoRM: ``output.rewards``, ``num_objectives``
                values; its custom code needs ``trust_remote_code``)
``score``       the model's own scalar (ArmoRM's gated ``output.score``; one value)
``end_scores``  a safe-rlhf score or cost model (``LlamaModelForScore``: a backbone under ``model.``, a linear
                ``score_head``): the head's value at the last attended token, ``score_dim`` values; loaded here
                without the safe-rlhf package, normalised as its config says (``do_normalize``)
``auto``        decided from the config: ``*ForScore`` architectures (or ``score_dim``) -> ``end_scores``; custom code
                with ``num_objectives`` -> the kind's ``auto_output`` (``multi_head``: ``rewards``) or ``score``;
                else ``logits``. The decision is logged.
==============  ==================================================================================================

:func:`check_reward_model` is the pre-flight check (no weights loaded): the output exists, every head is in range,
the checkpoint holds every weight the reading class needs (else one line naming the missing keys and what to set),
and a causal LM given as a reward model is refused.

Batches are right-padded with an id that occurs in none of their rows, and the model is told that id
(:mod:`rcs_ray.modeling.padding`), so every family reads each row where it reads the sequence alone: transformers'
classifiers at the rightmost non-pad token, ArmoRM-style code before the first pad token, score models at the last
attended token.
"""

from __future__ import annotations

import logging
from typing import Dict, Sequence, Tuple

from rcs_ray.errors import RcsInputError
from rcs_ray.modeling.checkpoints import (
    architectures,
    checkpoint_keys,
    missing_keys,
    needed_keys,
    on_meta,
    read_config,
    summarize,
    weight_files,
)

log = logging.getLogger(__name__)

OUTPUTS = ("logits", "rewards", "score", "end_scores")
_CAUSAL = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def multi_objective_output(kind: str) -> str:
    """What ``output: auto`` reads from a multi-objective reward model for an objective of ``kind``: its registry
    entry's ``options["auto_output"]`` (``multi_head``: ``rewards``, one value per objective), else ``score``."""
    from rcs_ray import registry

    source = registry.REWARD_SOURCES.get(kind)
    return source.options.get("auto_output", "score") if source is not None else "score"


def resolve_output(config, requested: str, kind: str) -> Tuple[str, str]:
    """``(output, why)``: ``requested`` itself, or what ``auto`` decides from the config."""
    if requested != "auto":
        return requested, "as configured"
    arch = architectures(config)
    if any(a.endswith("ForScore") for a in arch) or hasattr(config, "score_dim"):
        return "end_scores", f"auto: a safe-rlhf score model ({', '.join(arch) or 'score_dim in its config'})"
    if getattr(config, "num_objectives", None) and getattr(config, "auto_map", None):
        out = multi_objective_output(kind)
        return out, f"auto: a multi-objective reward model ({config.num_objectives} objectives, {', '.join(arch)})"
    return "logits", f"auto: a sequence classifier ({', '.join(arch) or config.model_type})"


def output_size(config, output: str) -> int:
    """How many values ``output`` has per sequence."""
    if output == "logits":
        return int(getattr(config, "num_labels", 1))
    if output == "rewards":
        return int(getattr(config, "num_objectives", 0) or 0)
    if output == "end_scores":
        return int(getattr(config, "score_dim", 1))
    return 1


def _classifier_on_meta(config, path: str, key: str, trust_remote_code: bool):
    from transformers import AutoModelForSequenceClassification

    try:
        return on_meta(
            lambda: AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise RcsInputError(
                f"{key}: {path} ships its own model code (auto_map in config.json): set "
                f"{key.rsplit('.', 1)[0]}.trust_remote_code=true if you trust it"
            ) from None
        raise RcsInputError(
            f"{key}: {path} ({', '.join(architectures(config)) or config.model_type}) has no "
            f"sequence-classification head: {str(exc).splitlines()[0]}"
        ) from None


def _hint(have, objective: str, output: str, trust_remote_code: bool) -> str:
    if any(k.startswith("score_head.") for k in have) and output != "end_scores":
        return f"it is a safe-rlhf score model (score_head): set {objective}.output=end_scores (or auto)"
    if any(k.startswith("regression_layer.") for k in have) and not trust_remote_code:
        return f"it is a multi-objective RM with its own code: set {objective}.trust_remote_code=true"
    return "the checkpoint does not belong to this model class: check the path and the output"


def check_reward_model(
    path: str, output: str, heads: Sequence[int], kind: str, trust_remote_code: bool, key: str
) -> str:
    """The pre-flight check of a reward model read as ``output`` at ``heads``; returns the resolved output.

    Args:
        path: a local model directory.
        output: ``auto`` or one of :data:`OUTPUTS`.
        heads: the indices the objectives read.
        kind: the objective kind (``classifier`` or ``multi_head``: what ``auto`` prefers).
        trust_remote_code: the objective's setting.
        key: the config key of the model (``objectives.1.model``), for messages.

    Raises:
        RcsInputError: one line: a causal LM, missing weights (naming them and what to set), a head out of range,
            custom code without ``trust_remote_code``, an unreadable checkpoint.
    """
    objective = key.rsplit(".", 1)[0]
    config = read_config(path, key, trust_remote_code)
    out, why = resolve_output(config, output, kind)
    arch = architectures(config)
    if any(a.endswith(_CAUSAL) for a in arch) and out == "logits":
        raise RcsInputError(
            f"{key}: {path} is a causal language model ({', '.join(arch)}), not a reward model: its "
            f"score head would be random; use kind implicit (beta * log pi/pi_ref) or judge"
        )
    model = (
        on_meta(lambda: ScoreModel(config))
        if out == "end_scores"
        else _classifier_on_meta(config, path, key, trust_remote_code)
    )
    have = checkpoint_keys(path, key)
    needed = needed_keys(model)
    missing = missing_keys(needed, have, getattr(model, "base_model_prefix", ""))
    if missing:
        extra = sorted(have - needed - {f"{model.base_model_prefix}.{k}" for k in needed})
        raise RcsInputError(
            f"{key}: {path} lacks weights {type(model).__name__} needs: {summarize(missing)}"
            + (f" (the checkpoint has {summarize(extra, 2)} instead)" if extra else "")
            + f"; they would be random: {_hint(have, objective, out, trust_remote_code)}"
        )
    size = output_size(config, out)
    if out == "rewards" and size == 0:
        raise RcsInputError(
            f"{objective}.output: rewards needs a multi-objective RM (num_objectives in its config); "
            f"{path} has none: use logits or score"
        )
    for head in heads:
        if not 0 <= head < size:
            raise RcsInputError(f"{objective}.head: {head} out of range: output {out} of {path} has {size} value(s)")
    log.info("%s: reading output %s%s of %s (%s)", objective, out, list(heads), path, why)
    return out


# ----------------------------------------------------------------------------------------------- safe-rlhf models
def _score_model_class():
    import torch

    class ScoreModel(torch.nn.Module):
        """safe-rlhf's score model (``LlamaModelForScore`` and its siblings) without the safe-rlhf package: the
        family's backbone under ``model.`` and ``score_head``; ``forward`` returns ``end_scores`` (B, score_dim)."""

        base_model_prefix = "model"

        def __init__(self, config, backbone=None):
            from transformers import AutoModel

            super().__init__()
            self.config = config
            self.model = backbone if backbone is not None else AutoModel.from_config(config)
            self.score_head = torch.nn.Linear(
                config.hidden_size, int(getattr(config, "score_dim", 1)), bias=bool(getattr(config, "bias", False))
            )

        def get_input_embeddings(self):
            return self.model.get_input_embeddings()

        def forward(self, input_ids, attention_mask):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            scores = self.score_head(hidden.to(self.score_head.weight.dtype))  # (B, L, D)
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            end = (attention_mask.bool() * positions).argmax(dim=1)  # last attended token: never by the pad id
            end_scores = scores[torch.arange(scores.shape[0], device=scores.device), end]  # (B, D)
            return {"end_scores": _normalized(end_scores, self.config)}

    return ScoreModel


def ScoreModel(config, backbone=None):  # noqa: N802 - a class built on first use (torch stays a lazy import)
    return _score_model_class()(config, backbone)


def _normalized(x, config):
    """safe-rlhf's normalisation when the config asks for it: affine (reward), scale (cost), identity (critic)."""
    import torch

    if not getattr(config, "do_normalize", False) or getattr(config, "normalizer_type", None) is None:
        return x
    mean = torch.as_tensor(getattr(config, "mean", None) or 0.0, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(getattr(config, "var", None) or 1.0, dtype=x.dtype, device=x.device).sqrt()
    kind = getattr(config, "score_type", "reward")
    if kind == "reward":
        return (x - mean) / (std + 1e-8)
    if kind == "cost":
        return x / (std + 1e-8)
    return x


def _head_tensors(path: str) -> Dict[str, object]:
    """``score_head.*`` tensors of a checkpoint, read from whichever file holds them."""
    out = {}
    for f in weight_files(path):
        if f.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(f, "pt") as fh:
                out.update({k: fh.get_tensor(k) for k in fh.keys() if k.startswith("score_head.")})
        else:
            import torch

            state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            out.update({k: v for k, v in state.items() if k.startswith("score_head.")})
    return out


def load_score_model(path: str, dtype, trust_remote_code: bool = False, **kwargs):
    """A safe-rlhf score model from ``path``: the backbone through ``AutoModel`` (the checked load), the head from the
    checkpoint.

    Raises:
        RcsInputError: the backbone would load with random weights, or the checkpoint has no ``score_head``.
    """
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    from rcs_ray.modeling.loading import load_checked

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # score_head is "unexpected" for the backbone: loaded below instead
    try:
        backbone = load_checked(
            AutoModel,
            path,
            "score model",
            "its backbone lacks them",
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    finally:
        hf_logging.set_verbosity(level)
    model = ScoreModel(backbone.config, backbone)
    state = {k[len("score_head.") :]: v for k, v in _head_tensors(path).items()}
    if "weight" not in state or (model.score_head.bias is not None and "bias" not in state):
        raise RcsInputError(f"{path}: no score_head weights in the checkpoint")
    with torch.no_grad():
        model.score_head.load_state_dict(state)
    return model.to(dtype)


# ----------------------------------------------------------------------------------------------- reading outputs
def read_outputs(result, outputs: Sequence[str]) -> Dict[str, object]:
    """``output name -> (B, n) tensor`` of a forward pass's ``result`` (a ``ModelOutput`` or a dict).

    Raises:
        RcsInputError: the model's output has no such field.
    """
    out = {}
    for name in dict.fromkeys(outputs):
        value = result.get(name) if isinstance(result, dict) else getattr(result, name, None)
        if value is None:
            fields = list(result.keys()) if hasattr(result, "keys") else [a for a in dir(result) if not a[0] == "_"]
            raise RcsInputError(
                f"the reward model's output has no {name!r} (it has {fields}): set output to one of those"
            )
        out[name] = value.reshape(value.shape[0], -1)
    return out


__all__ = [
    "OUTPUTS",
    "ScoreModel",
    "check_reward_model",
    "load_score_model",
    "output_size",
    "read_outputs",
    "resolve_output",
]
