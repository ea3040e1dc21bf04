"""Sequence log-probs of responses, and the tokenization and collation of preference pairs that feed them.

- :func:`sequence_logps` -- (B, T, V) logits + (B, T) labels -> (B,) summed (or averaged) response log-probs.
- :func:`tokenize_example` -- one prompt + response -> ``input_ids``, ``attention_mask``, ``labels`` (python lists;
  the labels are ``IGNORE_INDEX`` on every prompt token, so only the response is scored).
- :func:`build_pair_features` -- the same for a (prompt, chosen, rejected) pair, keys prefixed ``chosen_`` /
  ``rejected_``.
- :func:`collate_pairs` -- a list of pair features -> right-padded (B, T) long tensors.
- :class:`ResponseLogps` -- a frozen causal LM's summed (or per-token) response log-probs of tokenized examples.

Padding (:mod:`rcs_ray.modeling.padding`) uses an id that occurs in no row of the batch and is masked by
``attention_mask`` and ``labels``, never recognised by its id.

Prompts are plain strings or chat-message lists (``[{"role": ..., "content": ...}, ...]``); how a prompt becomes
tokens is :mod:`rcs_ray.prompting`'s rule (``use_chat_template``), and the prompt and the response are tokenized
separately and their ids concatenated, so the prompt/response boundary is exact.
Imports torch only; the tokenizer (a ``transformers`` tokenizer or anything with the same calls) is passed in.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from rcs_ray.modeling.padding import IGNORE_INDEX, embedding_rows, free_pad_id, right_pad
from rcs_ray.prompting import Rule, split_ids

__all__ = [
    "IGNORE_INDEX",
    "ResponseLogps",
    "sequence_logps",
    "token_logps",
    "tokenize_example",
    "build_pair_features",
    "collate_pairs",
    "pad_examples",
]

SIDES = ("chosen", "rejected")
FIELDS = ("input_ids", "attention_mask", "labels")


# ----------------------------------------------------------------------------------------------- log-probs
def _token_logps(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[index] over the last dim: (B, T, V), (B, T) -> (B, T), in float32 or wider.

    float32 / float64 use gather - logsumexp, which keeps no (B, T, V) log-softmax for backward; half precision is
    upcast one row at a time, so at most one (T, V) float32 copy exists at once.
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, -1, index.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = [
        torch.log_softmax(row.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        for row, idx in zip(logits, index)
    ]
    return torch.stack(rows)


def sequence_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX, average: bool = False
) -> torch.Tensor:
    """Sum (or mean) of the log-probs of the labelled tokens, one value per sequence.

    Position ``t`` of ``logits`` predicts token ``t + 1``: the result for row ``b`` is
    ``sum_t log softmax(logits[b, t])[labels[b, t + 1]]`` over the ``t`` with ``labels[b, t + 1] != ignore_index``
    (the mean over those tokens with ``average=True``). Logits at positions whose next label is ignored do not
    matter, whatever their value.

    Args:
        logits: (B, T, V) float logits of a causal LM over ``input_ids`` (B, T).
        labels: (B, T) integer token ids, ``ignore_index`` on prompt and padding tokens.
        ignore_index: label value of the positions left out.
        average: mean over the labelled tokens instead of their sum (length-normalized log-prob).

    Returns:
        (B,) log-probs (nats), float32 for half-precision logits, else the logits' dtype.

    Raises:
        ValueError: wrong ranks or shapes, T < 2, a label outside [0, V), a row with no labelled token.
    """
    values, mask = token_logps(logits, labels, ignore_index)
    total = values.sum(dim=-1)
    return total / mask.sum(dim=-1).to(total.dtype) if average else total


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the labelled tokens: ``(values, mask)``, both (B, T - 1).

    ``values[b, t] = log softmax(logits[b, t])[labels[b, t + 1]]`` where ``mask[b, t]`` (the label is not
    ``ignore_index``), 0 elsewhere. Arguments and errors as :func:`sequence_logps`.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float tensor of shape (B, T, V), got {_describe(logits)}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.is_floating_point():
        raise ValueError(f"labels: expected an integer tensor of shape (B, T), got {_describe(labels)}")
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"labels: shape {tuple(labels.shape)} does not match logits (B, T) = {tuple(logits.shape[:2])}"
        )
    if labels.shape[1] < 2:
        raise ValueError(f"labels: need T >= 2 positions (one predicts the next), got T = {labels.shape[1]}")
    targets = labels[:, 1:]
    mask = targets != ignore_index
    index = targets.masked_fill(~mask, 0).long()
    vocab = logits.shape[-1]
    out_of_range = mask & ((index < 0) | (index >= vocab))
    if bool(out_of_range.any()):
        b, t = (int(i) for i in out_of_range.nonzero()[0])
        raise ValueError(
            f"labels: token id {int(targets[b, t])} at row {b}, position {t + 1} is outside "
            f"[0, {vocab}) and is not ignore_index {ignore_index}"
        )
    counts = mask.sum(dim=-1)
    if bool((counts == 0).any()):
        row = int((counts == 0).nonzero()[0, 0])
        raise ValueError(f"labels: row {row} has no labelled token after position 0 (an empty response?)")
    return _token_logps(logits[:, :-1], index).masked_fill(~mask, 0.0), mask


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}"
    return type(x).__name__


# ----------------------------------------------------------------------------------------------- tokenization
def _truncate(
    prompt_ids: List[int], response_ids: List[int], max_length: int, min_response_tokens: Optional[int]
) -> Tuple[List[int], List[int]]:
    """Apply the truncation rule of :func:`tokenize_example`."""
    if len(prompt_ids) + len(response_ids) <= max_length:
        return prompt_ids, response_ids
    floor = max_length // 2 if min_response_tokens is None else int(min_response_tokens)
    floor = max(1, min(floor, max_length - 1, len(response_ids)))
    keep_response = min(len(response_ids), max(max_length - len(prompt_ids), floor))
    response_ids = response_ids[:keep_response]
    keep_prompt = max_length - len(response_ids)
    return prompt_ids[len(prompt_ids) - keep_prompt :], response_ids


def tokenize_example(
    tokenizer,
    prompt,
    response,
    max_length: int,
    min_response_tokens: Optional[int] = None,
    use_chat_template: Rule = False,
    finished: bool = True,
) -> Dict[str, List[int]]:
    """Tokenize one prompt + response for a causal LM, labelling only the response tokens.

    A plain prompt becomes a chat as :func:`rcs_ray.prompting.as_chat` says (``use_chat_template`` and a tokenizer
    with a template); see :func:`rcs_ray.prompting.split_ids`. Plain prompt (a string): ``prompt`` is tokenized with
    the tokenizer's special tokens (e.g. its BOS), the ``response`` string without them, and the EOS id is appended
    to the response unless it already ends with it. Chat prompt (a list of ``{"role", "content"}`` messages): the
    prompt is ``apply_chat_template(messages, add_generation_prompt=True)``; the response (the assistant message
    content as a string, or a list of messages) is the template's rendering of that turn, end-of-turn tokens included.
    Either way the two parts are tokenized separately and concatenated, so ``labels`` are ``IGNORE_INDEX`` on
    exactly the prompt tokens and equal ``input_ids`` on every response token (and its EOS / end-of-turn).

    Truncation, when prompt + response exceed ``max_length`` tokens:
      1. the response is cut from the right (its start is kept; a cut response loses its EOS), down to
         ``max_length - len(prompt)`` tokens but never below ``min_response_tokens`` (default ``max_length // 2``,
         at least 1, at most ``max_length - 1`` and the response's own length);
      2. then the prompt is cut from the left (its end, next to the response, is kept; its BOS / template header
         may go) to fill the remaining ``max_length - len(response)`` tokens.

    Args:
        tokenizer: a ``transformers`` tokenizer (``__call__``, ``eos_token_id``; ``apply_chat_template`` for chat).
        prompt: a string, or a list of chat messages.
        response: a string (for chat, the assistant message content), or for chat a list of messages.
        max_length: most tokens of prompt + response (>= 2).
        min_response_tokens: response tokens kept before the prompt is cut; default ``max_length // 2``.
        use_chat_template: the policy's prompt rule (:class:`rcs_ray.prompting.PromptRule`: chat template, system
            prompt, template variables), or a bool: a plain prompt goes through the chat template.

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``: python lists of the same length (<= ``max_length``).

    Raises:
        ValueError: ``max_length`` < 2, a prompt of no tokens, a malformed message list, a plain prompt with a
            non-string response, a tokenizer without an EOS (plain) or a chat template (chat).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}")
    prompt_ids, response_ids = split_ids(tokenizer, prompt, response, use_chat_template, finished)
    if not prompt_ids:
        raise ValueError("prompt: tokenizes to no tokens; the first response token needs a context to be scored")
    if not response_ids:
        raise ValueError("response: tokenizes to no tokens")
    prompt_ids, response_ids = _truncate(prompt_ids, response_ids, max_length, min_response_tokens)
    input_ids = prompt_ids + response_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + list(response_ids),
    }


def build_pair_features(
    tokenizer,
    prompt,
    chosen,
    rejected,
    max_length: int,
    min_response_tokens: Optional[int] = None,
    use_chat_template: Rule = False,
    finished: Tuple[bool, bool] = (True, True),
) -> Dict[str, List[int]]:
    """Tokenize a preference pair: :func:`tokenize_example` on (prompt, chosen) and on (prompt, rejected);
    ``finished``: whether each side ended (a side cut at the sampling token limit gets no EOS / end of turn).

    Returns:
        ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels``, ``rejected_input_ids``,
        ``rejected_attention_mask``, ``rejected_labels`` (python lists). The two sides may differ in length and,
        after truncation, in how much of the prompt they keep.
    """
    out: Dict[str, List[int]] = {}
    for side, response, done in zip(SIDES, (chosen, rejected), finished):
        for key, value in tokenize_example(
            tokenizer, prompt, response, max_length, min_response_tokens, use_chat_template, done
        ).items():
            out[f"{side}_{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- collation
def collate_pairs(
    features: Sequence[Mapping[str, Any]], pad_token_id: int, extra_keys: Sequence[str] = ()
) -> Dict[str, torch.Tensor]:
    """Stack pair features into right-padded tensors.

    Both sides are padded to one common length, the longest chosen or rejected sequence of the batch, so a trainer
    can ``torch.cat`` chosen and rejected into one (2B, T) forward pass. Padding has ``attention_mask = 0``,
    ``labels = IGNORE_INDEX`` and ``input_ids`` = an id that occurs in no row of the batch
    (:func:`rcs_ray.modeling.padding.free_pad_id`: ``pad_token_id`` when it is absent, else the smallest absent id
    below the largest id in use, so always inside the embedding).

    Args:
        features: B mappings with the six keys of :func:`build_pair_features` (lists or 1-D arrays of ints).
        pad_token_id: the tokenizer's pad id (an id inside the model's embedding), preferred for padding.
        extra_keys: further per-pair numeric keys (e.g. ``ref_chosen_logps`` (scalar) or ``chosen_margin_rewards``
            (K-1 floats)) stacked as float32 tensors of shape (B,) or (B, M).

    Returns:
        ``{side}_input_ids``, ``{side}_attention_mask``, ``{side}_labels`` for side in (chosen, rejected): (B, T)
        long tensors; plus one float32 tensor per extra key.

    Raises:
        ValueError: an empty batch, no ``pad_token_id``, a missing key, fields of different lengths in one row.
    """
    if len(features) == 0:
        raise ValueError("features: empty batch")
    if pad_token_id is None:
        raise ValueError("pad_token_id: required (set tokenizer.pad_token, e.g. to the EOS token)")
    rows: Dict[str, List[List[torch.Tensor]]] = {side: [] for side in SIDES}
    for i, feature in enumerate(features):
        for side in SIDES:
            fields = []
            for field in FIELDS:
                key = f"{side}_{field}"
                if key not in feature:
                    raise ValueError(f"features: row {i} has no {key!r}")
                fields.append(torch.as_tensor(feature[key], dtype=torch.long).reshape(-1))
            if len({len(f) for f in fields}) != 1:
                raise ValueError(
                    f"features: row {i} has {side} fields of different lengths "
                    f"{[len(f) for f in fields]} (input_ids, attention_mask, labels)"
                )
            rows[side].append(fields)
    length = max(len(fields[0]) for side in SIDES for fields in rows[side])
    pad = free_pad_id((fields[0] for side in SIDES for fields in rows[side]), prefer=(pad_token_id,))
    out: Dict[str, torch.Tensor] = {}
    for side in SIDES:
        ids, mask, labels = zip(*rows[side])
        for key, value in right_pad(ids, pad, width=length, labels=labels, attention_mask=mask).items():
            out[f"{side}_{key}"] = value
    for key in extra_keys:
        missing = [i for i, f in enumerate(features) if key not in f]
        if missing:
            raise ValueError(f"features: row {missing[0]} has no {key!r}")
        try:
            out[key] = torch.stack([torch.as_tensor(f[key], dtype=torch.float32) for f in features])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{key}: cannot stack as float32 rows ({exc})".splitlines()[0]) from None
    return out


# ----------------------------------------------------------------------------------------------- frozen models
def pad_examples(
    examples: Sequence[Mapping[str, Sequence[int]]],
    pad_token_id: Optional[int] = None,
    vocab_size: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Right-pad N examples (``input_ids``, ``labels``; the mask is 1 on every token) to (N, T) long tensors, with
    an id that occurs in none of them (``pad_token_id`` when absent; see :func:`rcs_ray.modeling.padding.free_pad_id`,
    ``vocab_size`` the model's embedding rows)."""
    ids = [e["input_ids"] for e in examples]
    pad = free_pad_id(ids, vocab_size, prefer=(pad_token_id,))
    return right_pad(ids, pad, labels=[e["labels"] for e in examples])


class ResponseLogps:
    """Response log-probs of a frozen causal LM: ``sum_t log pi(y_t | x, y_<t)`` over the labelled tokens (or each
    token's term), no grad.

    Args:
        model: a causal LM in eval mode (e.g. :func:`rcs_ray.modeling.loading.load_causal_lm`).
        pad_token_id: preferred padding id (used when no sequence of the batch contains it; None: any free id).
            Padding is masked by ``attention_mask`` and ``labels``, never by id.
        micro_batch: sequences per forward pass, each pass padded to its longest sequence.
        device: where the model is.
    """

    def __init__(self, model, pad_token_id: Optional[int], micro_batch: int, device: str = "cpu"):
        self.model, self.micro_batch, self.device = model, int(micro_batch), device
        self.pad = None if pad_token_id is None else int(pad_token_id)
        self.vocab_size = embedding_rows(model)

    def _passes(self, examples: Sequence[Mapping[str, Sequence[int]]]):
        """``(values (b, T-1), mask (b, T-1))`` of :func:`token_logps` per micro batch, on the CPU."""
        for start in range(0, len(examples), self.micro_batch):
            batch = {
                k: v.to(self.device)
                for k, v in pad_examples(examples[start : start + self.micro_batch], self.pad, self.vocab_size).items()
            }
            with torch.no_grad():
                logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                values, mask = token_logps(logits, batch["labels"])
            yield values.cpu(), mask.cpu()

    def __call__(self, examples: Sequence[Mapping[str, Sequence[int]]]) -> np.ndarray:
        """(N,) float64 summed log-probs of N examples (``input_ids``, ``labels`` from :func:`tokenize_example`)."""
        out = [values.sum(dim=-1).double().numpy() for values, _ in self._passes(examples)]
        return np.concatenate(out) if out else np.zeros(0)

    def per_token(self, examples: Sequence[Mapping[str, Sequence[int]]]) -> List[np.ndarray]:
        """N float64 arrays: each example's log-probs of its labelled tokens, in order."""
        return [row[m].double().numpy() for values, mask in self._passes(examples) for row, m in zip(values, mask)]
