"""Sequence log-probs of responses, and the tokenization and collation of preference pairs that feed them.

- :func:`sequence_logps` -- (B, T, V) logits + (B, T) labels -> (B,) summed (or averaged) response log-probs.
- :func:`tokenize_example` -- one prompt + response -> ``input_ids``, ``attention_mask``, ``labels`` (python lists;
  the labels are ``IGNORE_INDEX`` on every prompt token, so only the response is scored).
- :func:`build_pair_features` -- the same for a (prompt, chosen, rejected) pair, keys prefixed ``chosen_`` /
  ``rejected_``.
- :func:`collate_pairs` -- a list of pair features -> right-padded (B, T) long tensors.

Prompts are plain strings or chat-message lists (``[{"role": ..., "content": ...}, ...]``); the prompt and the
response are tokenized separately and their ids concatenated, so the prompt/response boundary is exact.
Imports torch only; the tokenizer (a ``transformers`` tokenizer or anything with the same calls) is passed in.
"""

from __future__ import annotations

from itertools import takewhile
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["IGNORE_INDEX", "sequence_logps", "tokenize_example", "build_pair_features", "collate_pairs"]

IGNORE_INDEX = -100
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
    rows = [torch.log_softmax(row.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
            for row, idx in zip(logits, index)]
    return torch.stack(rows)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   average: bool = False) -> torch.Tensor:
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
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or not logits.is_floating_point():
        raise ValueError(f"logits: expected a float tensor of shape (B, T, V), got {_describe(logits)}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 2 or labels.is_floating_point():
        raise ValueError(f"labels: expected an integer tensor of shape (B, T), got {_describe(labels)}")
    if tuple(labels.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"labels: shape {tuple(labels.shape)} does not match logits (B, T) = "
                         f"{tuple(logits.shape[:2])}")
    if labels.shape[1] < 2:
        raise ValueError(f"labels: need T >= 2 positions (one predicts the next), got T = {labels.shape[1]}")
    targets = labels[:, 1:]
    mask = targets != ignore_index
    index = targets.masked_fill(~mask, 0).long()
    vocab = logits.shape[-1]
    out_of_range = mask & ((index < 0) | (index >= vocab))
    if bool(out_of_range.any()):
        b, t = (int(i) for i in out_of_range.nonzero()[0])
        raise ValueError(f"labels: token id {int(targets[b, t])} at row {b}, position {t + 1} is outside "
                         f"[0, {vocab}) and is not ignore_index {ignore_index}")
    counts = mask.sum(dim=-1)
    if bool((counts == 0).any()):
        row = int((counts == 0).nonzero()[0, 0])
        raise ValueError(f"labels: row {row} has no labelled token after position 0 (an empty response?)")
    token_logps = _token_logps(logits[:, :-1], index).masked_fill(~mask, 0.0)
    total = token_logps.sum(dim=-1)
    return total / counts.to(total.dtype) if average else total


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}"
    return type(x).__name__


# ----------------------------------------------------------------------------------------------- tokenization
def _encode(tokenizer, text: str, add_special_tokens: bool) -> List[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]]


def _messages(name: str, value) -> List[Dict[str, Any]]:
    """A chat-message list as plain dicts (parquet / Arrow may hand over numpy arrays of dicts)."""
    if isinstance(value, Mapping):
        value = [value]
    try:
        items = list(value)
    except TypeError:
        raise ValueError(f"{name}: expected a string or a list of chat messages, got {type(value).__name__}") from None
    if not items:
        raise ValueError(f"{name}: empty chat-message list")
    out = []
    for i, m in enumerate(items):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{name}: message {i} is not a mapping with 'role' and 'content': {m!r}")
        out.append(dict(m))
    return out


def _split_ids(tokenizer, prompt, response) -> Tuple[List[int], List[int]]:
    """Token ids of the prompt and of the response, tokenized separately (before truncation)."""
    if isinstance(prompt, str):
        if not isinstance(response, str):
            raise ValueError(f"response: expected a string for a plain-string prompt, got {type(response).__name__}")
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is None:
            raise ValueError("tokenizer: has no eos_token_id, needed to end a plain-text response")
        prompt_ids = _encode(tokenizer, prompt, add_special_tokens=True)
        response_ids = _encode(tokenizer, response, add_special_tokens=False)
        if not response_ids or response_ids[-1] != eos:
            response_ids.append(int(eos))
        return prompt_ids, response_ids
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("tokenizer: has no chat_template, needed for a chat-message prompt")
    messages = _messages("prompt", prompt)
    if isinstance(response, str):
        reply = [{"role": "assistant", "content": response}]
    else:
        reply = _messages("response", response)
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages + reply, tokenize=False)
    # The response is the template's rendering of the assistant turn (its leading spaces, end-of-turn and EOS
    # tokens included): the part of the full conversation after the prompt. A template whose generation prompt
    # differs from how it renders the same turn inside a conversation (e.g. one that adds a think tag) is handled
    # as TRL does: the prompt becomes the common prefix of the two renderings.
    prefix = "".join(a for a, _ in takewhile(lambda ab: ab[0] == ab[1], zip(prompt_text, full_text)))
    response_text = full_text[len(prefix):]
    # Chat templates write their own BOS / special tokens into the text: no tokenizer-added ones here.
    return _encode(tokenizer, prefix, add_special_tokens=False), _encode(tokenizer, response_text, False)


def _truncate(prompt_ids: List[int], response_ids: List[int], max_length: int,
              min_response_tokens: Optional[int]) -> Tuple[List[int], List[int]]:
    """Apply the truncation rule of :func:`tokenize_example`."""
    if len(prompt_ids) + len(response_ids) <= max_length:
        return prompt_ids, response_ids
    floor = max_length // 2 if min_response_tokens is None else int(min_response_tokens)
    floor = max(1, min(floor, max_length - 1, len(response_ids)))
    keep_response = min(len(response_ids), max(max_length - len(prompt_ids), floor))
    response_ids = response_ids[:keep_response]
    keep_prompt = max_length - len(response_ids)
    return prompt_ids[len(prompt_ids) - keep_prompt:], response_ids


def tokenize_example(tokenizer, prompt, response, max_length: int,
                     min_response_tokens: Optional[int] = None) -> Dict[str, List[int]]:
    """Tokenize one prompt + response for a causal LM, labelling only the response tokens.

    Plain prompt (a string): ``prompt`` is tokenized with the tokenizer's special tokens (e.g. its BOS), the
    ``response`` string without them, and the EOS id is appended to the response unless it already ends with it.
    Chat prompt (a list of ``{"role", "content"}`` messages): the prompt is
    ``apply_chat_template(messages, add_generation_prompt=True)``; the response (the assistant message content as
    a string, or a list of messages) is the template's rendering of that turn, end-of-turn tokens included.
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

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``: python lists of the same length (<= ``max_length``).

    Raises:
        ValueError: ``max_length`` < 2, a prompt of no tokens, a malformed message list, a plain prompt with a
            non-string response, a tokenizer without an EOS (plain) or a chat template (chat).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length: expected an integer >= 2, got {max_length!r}")
    prompt_ids, response_ids = _split_ids(tokenizer, prompt, response)
    if not prompt_ids:
        raise ValueError("prompt: tokenizes to no tokens; the first response token needs a context to be scored")
    if not response_ids:
        raise ValueError("response: tokenizes to no tokens")
    prompt_ids, response_ids = _truncate(prompt_ids, response_ids, max_length, min_response_tokens)
    input_ids = prompt_ids + response_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
            "labels": [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)}


def build_pair_features(tokenizer, prompt, chosen, rejected, max_length: int,
                        min_response_tokens: Optional[int] = None) -> Dict[str, List[int]]:
    """Tokenize a preference pair: :func:`tokenize_example` on (prompt, chosen) and on (prompt, rejected).

    Returns:
        ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels``, ``rejected_input_ids``,
        ``rejected_attention_mask``, ``rejected_labels`` (python lists). The two sides may differ in length and,
        after truncation, in how much of the prompt they keep.
    """
    out: Dict[str, List[int]] = {}
    for side, response in zip(SIDES, (chosen, rejected)):
        for key, value in tokenize_example(tokenizer, prompt, response, max_length, min_response_tokens).items():
            out[f"{side}_{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- collation
def collate_pairs(features: Sequence[Mapping[str, Any]], pad_token_id: int,
                  extra_keys: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """Stack pair features into right-padded tensors.

    Both sides are padded to one common length, the longest chosen or rejected sequence of the batch, so a trainer
    can ``torch.cat`` chosen and rejected into one (2B, T) forward pass. Padding has ``input_ids = pad_token_id``,
    ``attention_mask = 0`` and ``labels = IGNORE_INDEX``.

    Args:
        features: B mappings with the six keys of :func:`build_pair_features` (lists or 1-D arrays of ints).
        pad_token_id: id written at padded positions.
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
                raise ValueError(f"features: row {i} has {side} fields of different lengths "
                                 f"{[len(f) for f in fields]} (input_ids, attention_mask, labels)")
            rows[side].append(fields)
    length = max(len(fields[0]) for side in SIDES for fields in rows[side])
    batch = len(features)
    out: Dict[str, torch.Tensor] = {}
    for side in SIDES:
        ids = torch.full((batch, length), int(pad_token_id), dtype=torch.long)
        mask = torch.zeros((batch, length), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        for b, (row_ids, row_mask, row_labels) in enumerate(rows[side]):
            n = len(row_ids)
            ids[b, :n], mask[b, :n], labels[b, :n] = row_ids, row_mask, row_labels
        out[f"{side}_input_ids"], out[f"{side}_attention_mask"], out[f"{side}_labels"] = ids, mask, labels
    for key in extra_keys:
        missing = [i for i, f in enumerate(features) if key not in f]
        if missing:
            raise ValueError(f"features: row {missing[0]} has no {key!r}")
        try:
            out[key] = torch.stack([torch.as_tensor(f[key], dtype=torch.float32) for f in features])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{key}: cannot stack as float32 rows ({exc})".splitlines()[0]) from None
    return out
