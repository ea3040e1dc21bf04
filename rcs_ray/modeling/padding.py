"""Right-padding that can never be mistaken for text: the one padding helper of every batched forward pass (reward
models, judges, implicit rewards, reference log-probs, the trainer's collate).

Why: many tokenizers have no pad token, and the usual fix, ``pad = eos``, makes padding indistinguishable from text
wherever the EOS also occurs inside the input (Llama 3's template ends every turn with ``<|eot_id|>``, the EOS of
many checkpoints). A model that finds the sequence end by its pad id then reads the wrong position:
transformers' ``*ForSequenceClassification`` takes the rightmost token that is not ``config.pad_token_id`` (one
token early when the response ends with the EOS), ArmoRM-style custom code takes the position before the *first*
pad token (the end of the first user turn).

The rule here: a batch is right-padded with an id that occurs in none of its rows (:func:`free_pad_id`; the
model's or tokenizer's own pad id when that is absent, else the smallest absent id) and that lies inside the
model's embedding matrix, so masked positions embed a valid row. A model that reads its pad id is told that id for
the batch (:func:`tell_pad_id`), so both "rightmost non-pad" and "first pad" land on each row's last real token:
exactly what the model reads from the sequence alone, unpadded. Every position past a row's end has
``attention_mask = 0`` (and ``labels = IGNORE_INDEX``): log-prob passes mask by the mask and labels, never by id.

Imports torch only.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import torch

IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX", "embedding_rows", "free_pad_id", "right_pad", "tell_pad_id"]


def _ids(row) -> list:
    if isinstance(row, torch.Tensor):
        return row.reshape(-1).tolist()
    return [int(x) for x in row]


def free_pad_id(
    rows: Iterable[Sequence[int]], vocab_size: Optional[int] = None, prefer: Iterable[Optional[int]] = ()
) -> int:
    """An id that occurs in none of ``rows`` and is a valid embedding row.

    Args:
        rows: the token ids of every sequence of the batch (lists, arrays or 1-D tensors).
        vocab_size: rows of the model's embedding matrix; ``None`` when unknown (then an id from ``prefer`` is
            taken on the caller's word that it is in range, and any other id is below the largest id in use, hence
            in range too).
        prefer: ids to use when they are absent (``None`` entries skipped): the model's or tokenizer's own pad id.

    Returns:
        The first id of ``prefer`` that is absent and in range, else the smallest absent id.

    Raises:
        ValueError: every candidate id occurs in the batch.
    """
    used = set()
    for row in rows:
        used.update(_ids(row))
    for p in prefer:
        if p is not None and 0 <= int(p) and int(p) not in used and (vocab_size is None or int(p) < vocab_size):
            return int(p)
    limit = int(vocab_size) if vocab_size is not None else max(used, default=0)
    for i in range(limit):
        if i not in used:
            return i
    raise ValueError(
        f"padding: no token id below {limit} is free in this batch (every id occurs in it); use a smaller batch"
    )


def right_pad(
    input_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    width: Optional[int] = None,
    labels: Optional[Sequence[Sequence[int]]] = None,
    attention_mask: Optional[Sequence[Sequence[int]]] = None,
) -> Dict[str, torch.Tensor]:
    """Right-pad B sequences to (B, T) long tensors.

    Args:
        input_ids: B sequences of token ids (lists, arrays or 1-D tensors).
        pad_token_id: id written past each row's end (from :func:`free_pad_id`).
        width: T (default: the longest row).
        labels: per-row labels of the same lengths; padded with ``IGNORE_INDEX``.
        attention_mask: per-row masks of the same lengths (default: 1 on every token); padded with 0.

    Returns:
        ``input_ids`` and ``attention_mask`` (B, T), plus ``labels`` (B, T) when given.
    """
    rows = [torch.as_tensor(_ids(x), dtype=torch.long) for x in input_ids]
    width = max((len(r) for r in rows), default=0) if width is None else int(width)
    out = {
        "input_ids": torch.full((len(rows), width), int(pad_token_id), dtype=torch.long),
        "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
    }
    if labels is not None:
        out["labels"] = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(row)
        out["input_ids"][b, :n] = row
        out["attention_mask"][b, :n] = 1 if attention_mask is None else torch.as_tensor(_ids(attention_mask[b]))
        if labels is not None:
            out["labels"][b, :n] = torch.as_tensor(_ids(labels[b]), dtype=torch.long)
    return out


def embedding_rows(model) -> Optional[int]:
    """Rows of ``model``'s input embedding (the ids it can embed), else its config's ``vocab_size``, else None."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        emb = get() if get is not None else None
    except (AttributeError, NotImplementedError):
        emb = None
    if emb is not None and getattr(emb, "num_embeddings", None):
        return int(emb.num_embeddings)
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text, "vocab_size", None)
    return int(vocab) if vocab else None


def tell_pad_id(model, pad_token_id: int) -> None:
    """Make ``model`` read ``pad_token_id`` as its pad id (``config.pad_token_id`` and the text config's, which
    transformers' sequence classifiers read at every forward pass, as ArmoRM-style custom code does)."""
    config = getattr(model, "config", None)
    if config is None:
        return
    config.pad_token_id = int(pad_token_id)
    text = config.get_text_config() if hasattr(config, "get_text_config") else None
    if text is not None and text is not config:
        text.pad_token_id = int(pad_token_id)
