"""Presets: the schemas of public preference datasets, turned into canonical rows.

- ``pku_saferlhf`` (PKU-Alignment/PKU-SafeRLHF): ``prompt, response_0, response_1, better_response_id,
  safer_response_id``. Objectives ``["helpful", "harmless"]``; ``objective`` picks the label that defines
  chosen (``helpful``: better_response_id, the default; ``harmless``: safer_response_id). A response scores
  1.0 on helpful if it is the better one, 1.0 on harmless if it is the safer one, else 0.0.
- ``helpsteer2`` (nvidia/HelpSteer2): one row per response, ``prompt, response`` and five 0-4 attributes.
  Responses are grouped by prompt (first-seen order) and every pair in a group becomes a pair, chosen the higher
  on ``objective`` (default ``helpfulness``); ties are skipped and counted as ``tie_on_objective``.
- ``ultrafeedback_binarized`` (HuggingFaceH4/ultrafeedback_binarized): ``prompt_id``, ``chosen``/``rejected``
  message lists, ``score_chosen``, ``score_rejected``. The prompt is the messages before the final assistant
  message; chosen/rejected are ``[final assistant message]``; objective ``["overall"]``.

``DataConfig.columns`` maps a preset's column names (as above) to the file's, e.g. ``{"response_0": "a"}``.
"""

from __future__ import annotations

import json
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Tuple

from rcs_ray.config import DataConfig
from rcs_ray.data.canonical import BadRow, BadRowPolicy, ColumnMap, Text, check_pair, check_score, check_text
from rcs_ray.data.file_rows import Record, check_each_file
from rcs_ray.errors import RcsInputError


class RowConverter(Protocol):
    """Turns raw records into canonical rows (without ``prompt_id`` uniqueness: the reader assigns ids)."""

    objectives: List[str]

    def convert(self, records: Iterable[Record], policy: BadRowPolicy, pairs: bool) -> Iterator[dict]:
        """Yield canonical rows; ``pairs=False`` (a prompt list) may leave out chosen/rejected."""
        ...


def one_row_each(
    records: Iterable[Record], policy: BadRowPolicy, check: Callable[[Record], None], make_row: Callable[[dict], dict]
) -> Iterator[dict]:
    """``make_row(record.data)`` for each record (a :class:`BadRow` goes to ``policy``), ``check`` run on the first
    record of each file (its columns)."""
    for rec in check_each_file(records, check):
        row = policy.attempt(rec.where, make_row, rec.data)
        if row is not None:
            yield row


def _choice(preset: str, value: Optional[str], choices: Tuple[str, ...]) -> str:
    """``cfg.objective`` (default: the first choice), checked against the preset's choices."""
    if value is None:
        return choices[0]
    if value not in choices:
        raise RcsInputError(f"objective {value!r} is not valid for preset {preset}; choices: {', '.join(choices)}")
    return value


class PkuSaferRLHF:
    """PKU-SafeRLHF: two responses per row, a helpfulness label and a safety label (see module docstring)."""

    NAME = "pku_saferlhf"
    COLUMNS = ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id")
    LABELS = {"helpful": "better_response_id", "harmless": "safer_response_id"}
    CHOICES = tuple(LABELS)

    def __init__(self, cfg: DataConfig):
        self.objectives = list(self.LABELS)
        self.objective = _choice(self.NAME, cfg.objective, self.CHOICES)
        self.cols = ColumnMap(self.COLUMNS, cfg.columns, self.NAME)

    def convert(self, records: Iterable[Record], policy: BadRowPolicy, pairs: bool) -> Iterator[dict]:
        """Yield one pair per row (prompt lists keep the pair too)."""
        return one_row_each(records, policy, self.cols.checker(self.COLUMNS), self._row)

    def _label(self, data: dict, name: str) -> int:
        col = self.cols[name]
        value = data.get(col)
        if isinstance(value, bool) or value not in (0, 1):
            raise BadRow("bad_label", f"expected 0 or 1, got {value!r}", col)
        return int(value)

    def _row(self, data: dict) -> dict:
        c = self.cols
        better = self._label(data, "better_response_id")
        safer = self._label(data, "safer_response_id")
        win = better if self.objective == "helpful" else safer
        fields = (c["prompt"], c[f"response_{win}"], c[f"response_{1 - win}"])
        prompt = check_text(data.get(fields[0]), fields[0], "prompt")
        chosen = check_text(data.get(fields[1]), fields[1], "chosen")
        rejected = check_text(data.get(fields[2]), fields[2], "rejected")
        check_pair(prompt, chosen, rejected, fields)
        scores = [[float(i == better), float(i == safer)] for i in (0, 1)]
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "chosen_scores": scores[win],
            "rejected_scores": scores[1 - win],
        }


class HelpSteer2:
    """HelpSteer2: one row per response with five attribute scores; pairs are formed within each prompt."""

    NAME = "helpsteer2"
    ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    COLUMNS = ("prompt", "response") + ATTRIBUTES
    CHOICES = ATTRIBUTES

    def __init__(self, cfg: DataConfig):
        self.objectives = list(self.ATTRIBUTES)
        self.target = self.ATTRIBUTES.index(_choice(self.NAME, cfg.objective, self.CHOICES))
        self.cols = ColumnMap(self.COLUMNS, cfg.columns, self.NAME)

    def convert(self, records: Iterable[Record], policy: BadRowPolicy, pairs: bool) -> Iterator[dict]:
        """Group responses by prompt (reads every row), then yield pairs, or one row per prompt.

        ``pairs=True``: every pair of a prompt's responses with different scores on the objective.
        ``pairs=False``: one row per prompt, with the pair of largest gap on the objective when there is one
        (a prompt whose responses all tie is kept without a pair, and not counted as skipped).
        """
        check = self.cols.checker(self.COLUMNS)
        groups: Dict[str, List[Tuple[str, Text, Text, List[float]]]] = {}
        for rec in check_each_file(records, check):
            item = policy.attempt(rec.where, self._response, rec.data)
            if item is not None:
                prompt, response, scores = item
                groups.setdefault(json.dumps(prompt, sort_keys=True), []).append((rec.where, prompt, response, scores))
        for group in groups.values():
            found = list(self._pairs(group, policy, count_ties=pairs))
            if pairs:
                yield from found
            elif found:
                t = self.target
                yield max(found, key=lambda p: p["chosen_scores"][t] - p["rejected_scores"][t])
            else:
                yield {"prompt": group[0][1]}

    def _response(self, data: dict) -> Tuple[Text, Text, List[float]]:
        c = self.cols
        prompt = check_text(data.get(c["prompt"]), c["prompt"], "prompt")
        response = check_text(data.get(c["response"]), c["response"], "response")
        scores = [check_score(data.get(c[a]), c[a]) for a in self.ATTRIBUTES]
        return prompt, response, scores

    def _pairs(self, group: list, policy: BadRowPolicy, count_ties: bool) -> Iterator[dict]:
        """Pairs (i < j in file order) of one prompt's responses; ties skipped (and counted), identical ones bad."""
        t = self.target
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                (_, prompt, ri, si), (where, _, rj, sj) = group[i], group[j]
                if si[t] == sj[t]:
                    if count_ties:
                        policy.count("tie_on_objective")
                    continue
                win, lose = ((ri, si), (rj, sj)) if si[t] > sj[t] else ((rj, sj), (ri, si))
                pair = policy.attempt(where, self._pair, prompt, win, lose)
                if pair is not None:
                    yield pair

    def _pair(self, prompt: Text, win: Tuple[Text, List[float]], lose: Tuple[Text, List[float]]) -> dict:
        col = self.cols["response"]
        check_pair(prompt, win[0], lose[0], (self.cols["prompt"], col, col))
        return {
            "prompt": prompt,
            "chosen": win[0],
            "rejected": lose[0],
            "chosen_scores": list(win[1]),
            "rejected_scores": list(lose[1]),
        }


class UltraFeedbackBinarized:
    """UltraFeedback binarized: chosen/rejected conversations ending in the assistant's answer, one score each."""

    NAME = "ultrafeedback_binarized"
    COLUMNS = ("prompt_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected")
    REQUIRED = ("chosen", "rejected", "score_chosen", "score_rejected")
    CHOICES = ("overall",)

    def __init__(self, cfg: DataConfig):
        self.objectives = list(self.CHOICES)
        _choice(self.NAME, cfg.objective, self.CHOICES)
        self.cols = ColumnMap(self.COLUMNS, cfg.columns, self.NAME)

    def convert(self, records: Iterable[Record], policy: BadRowPolicy, pairs: bool) -> Iterator[dict]:
        """Yield one pair per row (prompt lists keep the pair too); ``prompt_id`` kept when the file has it."""
        return one_row_each(records, policy, self.cols.checker(self.REQUIRED), self._row)

    def _split(self, data: dict, name: str) -> Tuple[list, list]:
        """(messages before the final assistant message, [final assistant message]) of a conversation."""
        col = self.cols[name]
        messages = check_text(data.get(col), col, name)
        if isinstance(messages, str):
            raise BadRow("bad_type", "expected a list of messages, got a string", col)
        if messages[-1]["role"] != "assistant":
            raise BadRow("bad_message", f"the last message is from {messages[-1]['role']!r}, not the assistant", col)
        answer = messages[-1:]
        check_text(answer, col, name)
        return messages[:-1], answer

    def _row(self, data: dict) -> dict:
        c = self.cols
        prompt, chosen = self._split(data, "chosen")
        rejected_prompt, rejected = self._split(data, "rejected")
        if not prompt:
            raise BadRow("empty_prompt", "no messages before the assistant's answer", c["chosen"])
        check_text(prompt, c["chosen"], "prompt")
        if rejected_prompt != prompt:
            raise BadRow(
                "prompt_mismatch", f"the messages before the answer differ from '{c['chosen']}'", c["rejected"]
            )
        check_pair(prompt, chosen, rejected, (c["chosen"], c["chosen"], c["rejected"]))
        row = {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "chosen_scores": [check_score(data.get(c["score_chosen"]), c["score_chosen"])],
            "rejected_scores": [check_score(data.get(c["score_rejected"]), c["score_rejected"])],
        }
        prompt_id = data.get(c["prompt_id"])
        if prompt_id not in (None, ""):
            row["prompt_id"] = str(prompt_id)
        return row


PRESETS = {cls.NAME: cls for cls in (PkuSaferRLHF, HelpSteer2, UltraFeedbackBinarized)}


def preset_objectives(preset: str) -> Tuple[str, ...]:
    """The objectives that can define chosen/rejected for ``preset``; the first is the default.

    Raises:
        RcsInputError: an unknown preset (listing the presets).
    """
    _check_known(preset)
    return PRESETS[preset].CHOICES


def default_objective(preset: str) -> str:
    """The objective whose label defines chosen/rejected when ``DataConfig.objective`` is not set.

    ``pku_saferlhf``: ``helpful``; ``helpsteer2``: ``helpfulness``; ``ultrafeedback_binarized``: ``overall``.

    Raises:
        RcsInputError: an unknown preset (listing the presets).
    """
    return preset_objectives(preset)[0]


def _check_known(preset: Optional[str]) -> None:
    if preset not in PRESETS:
        raise RcsInputError(f"unknown data preset {preset!r}; presets: {', '.join(PRESETS)}")


def make_preset(cfg: DataConfig) -> RowConverter:
    """The converter for ``cfg.preset``.

    Raises:
        RcsInputError: an unknown preset (listing the presets), or an objective the preset does not have.
    """
    _check_known(cfg.preset)
    return PRESETS[cfg.preset](cfg)
