"""The HF engine's sampling controls, with vLLM's meaning (used by :class:`~rcs_ray.sampling.engines.HFEngine`).

vLLM applies, in this order: the repetition penalty (to every token of the prompt and of the response so far), the
temperature, ``min_p``, ``top_k``, ``top_p``, then samples; a stop string ends the response before it (the text
excludes it) with the finish reason ``"stop"``. Here:

- :class:`GumbelNoise` -- a ``LogitsProcessor`` that takes the same steps in the same order, then adds Gumbel noise
  from one ``torch.Generator`` per row: ``generate`` takes the argmax, an exact sample, and each row depends only on
  its own seed (batch invariance). ``generate``'s own warpers are not used: they run only under ``do_sample=True``,
  and its repetition penalty also counts the left padding of a batch (so a padded row would be penalised
  differently from the same prompt alone).
- :class:`StopStrings` -- a ``StoppingCriteria``: a row stops once its response text (the generated tokens only,
  decoded as the response is) contains a stop string. transformers' ``stop_strings`` also match across the
  prompt/response boundary (a ChatML prompt ends with a newline: stop ``"\\n\\n"`` would end every response at its
  first newline), which vLLM, checking the output text only, does not.
- :func:`stop_cut` -- a response cut before its first stop string, and the tokens it took (vLLM's text and count).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple


class GumbelNoise:
    """LogitsProcessor: (B, V) scores -> scores after the repetition penalty, divided by the temperature, with the
    min_p, top_k and top_p masks (-inf), plus Gumbel noise from one ``torch.Generator`` per row. Temperature 0:
    the penalised scores (greedy).

    Args:
        seeds: one per row.
        temperature, top_p, top_k, min_p, repetition_penalty: as in ``vllm.SamplingParams`` (``top_k`` 0, ``min_p``
            0, ``repetition_penalty`` 1: off).
        starts: per row, the position in ``input_ids`` of its first real (not padding) token: the penalty counts
            the tokens from there on. Default: every token.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        temperature: float,
        top_p: float,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        starts: Optional[Sequence[int]] = None,
    ):
        import torch

        self.temperature, self.top_p, self.top_k, self.min_p = temperature, top_p, top_k, min_p
        self.repetition_penalty = repetition_penalty
        self.starts = None if starts is None else torch.tensor(list(starts), dtype=torch.long)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        if self.repetition_penalty != 1.0:
            scores = self._penalised(input_ids, scores.float())
        if self.temperature == 0:
            return scores
        scores = scores.float() / self.temperature
        if self.min_p > 0:  # tokens less likely than min_p x the most likely one
            probs = torch.softmax(scores, dim=-1)
            scores = scores.masked_fill(probs < self.min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))
        if 0 < self.top_k < scores.shape[-1]:
            kth = torch.topk(scores, self.top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))  # ties with the k-th stay, as in vLLM
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
            cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
            drop = cum - torch.softmax(sorted_scores, dim=-1) > self.top_p  # keep the smallest set reaching top_p
            scores = scores.scatter(-1, order, sorted_scores.masked_fill(drop, float("-inf")))
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators]).to(scores.device)
        gumbel = -torch.log((-torch.log(uniform.clamp_min(1e-20))).clamp_min(1e-20))
        return scores + gumbel

    def _penalised(self, input_ids, scores):
        """Scores of the tokens present in a row's prompt or response divided by the penalty (positive scores) or
        multiplied by it (negative ones), as vLLM does; padding does not count."""
        import torch

        rows, length = input_ids.shape
        vocab = scores.shape[-1]
        ids = input_ids.clamp(max=vocab)
        if self.starts is not None:
            padding = torch.arange(length, device=ids.device)[None, :] < self.starts.to(ids.device)[:, None]
            ids = ids.masked_fill(padding, vocab)  # a bin past the vocabulary
        seen = torch.zeros(rows, vocab + 1, dtype=torch.bool, device=scores.device)
        seen = seen.scatter_(1, ids.to(scores.device), True)[:, :vocab]
        p = self.repetition_penalty
        return torch.where(seen, torch.where(scores > 0, scores / p, scores * p), scores)


class StopStrings:
    """StoppingCriteria: a row is done once the text of its generated tokens (after the first ``width`` positions,
    the left-padded prompts) contains one of ``stop``."""

    def __init__(self, tokenizer, stop: Sequence[str], width: int):
        self.tokenizer, self.stop, self.width = tokenizer, list(stop), width

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.width :].tolist(), skip_special_tokens=True)
        return torch.tensor(
            [first_stop(t, self.stop) is not None for t in texts], dtype=torch.bool, device=input_ids.device
        )


def first_stop(text: str, stop: Sequence[str]) -> Optional[Tuple[int, int]]:
    """``(start, end)`` in ``text`` of the stop string that completes first (ties: the first listed), as vLLM picks
    it while generating; ``None`` when there is none."""
    best = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i + len(s) < best[1]):
            best = (i, i + len(s))
    return best


def stop_cut(tokenizer, tokens: Sequence[int], text: str, stop: Sequence[str]) -> Optional[Tuple[str, int]]:
    """A response cut at its first stop string: ``(the text before it, the number of tokens up to the one that
    completed it)``, as vLLM reports them (stop string excluded); ``None`` when ``text`` (the decoded ``tokens``)
    holds none."""
    cut = first_stop(text, stop) if stop else None
    if cut is None:
        return None
    lo, hi = 1, len(tokens)  # the fewest tokens whose text holds a stop string (binary search)
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(tokenizer.decode(list(tokens[:mid]), skip_special_tokens=True), stop) is None:
            lo = mid + 1
        else:
            hi = mid
    return text[: cut[0]], lo
