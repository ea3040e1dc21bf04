"""The Ray Data stages of the reference pass (:mod:`rcs_ray.train.refs` runs them): :class:`TokenizePairs` turns
``prompt, chosen, rejected`` into token ids and labels; :class:`ReferenceLogps` loads its frozen causal LM once per
actor and adds the summed response log-probs ``<prefix>_chosen_logps`` / ``<prefix>_rejected_logps`` (float64),
checked finite (:func:`check_finite_logps`).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pyarrow as pa

from rcs_ray.data.pairs import FINISHED_COLUMNS, TEXT_COLUMNS, require_columns
from rcs_ray.errors import RcsInputError

TOKEN_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")


def check_finite_logps(values: np.ndarray, column: str, what: str) -> None:
    """Raise one line naming the first row whose log-prob is NaN / inf.

    Args:
        values: (N,) log-probs.
        column: the column name for the message.
        what: where they came from (a model path) for the message.
    """
    bad = ~np.isfinite(np.asarray(values, dtype=np.float64))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise RcsInputError(
            f"{what}: row {i}: {column} is {values[i]} ({int(bad.sum())} non-finite of "
            f"{len(values)}); the reference model's weights or inputs are broken"
        )


class TokenizePairs:
    """Ray Data stage: ``prompt, chosen, rejected`` -> token ids and labels of both sides.

    Args:
        tokenizer: tokenizer directory.
        max_length: most tokens of prompt + response (see :func:`rcs_ray.modeling.logprobs.tokenize_example`).
        chat_template, system_prompt, chat_template_kwargs: the policy's prompt rule
            (:class:`rcs_ray.prompting.PromptRule`).
        trust_remote_code: passed to ``from_pretrained``.
    """

    INPUTS = TEXT_COLUMNS

    def __init__(
        self,
        tokenizer: str,
        max_length: int,
        chat_template: bool = True,
        trust_remote_code: bool = False,
        system_prompt: Optional[str] = None,
        chat_template_kwargs: Optional[dict] = None,
    ):
        from rcs_ray.modeling.loading import load_tokenizer
        from rcs_ray.prompting import PromptRule

        self.tokenizer = load_tokenizer(tokenizer, trust_remote_code)
        self.max_length = max_length
        self.chat_template = PromptRule(bool(chat_template), system_prompt, dict(chat_template_kwargs or {}))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rcs_ray.modeling.logprobs import build_pair_features

        require_columns(batch, self.INPUTS, "tokenize")
        cols: Dict[str, list] = {c: [] for c in TOKEN_COLUMNS}
        finished = zip(
            *(
                batch.column(k).to_pylist() if k in batch.column_names else [True] * batch.num_rows
                for k in FINISHED_COLUMNS
            )
        )
        for (p, c, r), done in zip(zip(*(batch.column(k).to_pylist() for k in TEXT_COLUMNS)), finished):
            feats = build_pair_features(
                self.tokenizer, p, c, r, self.max_length, use_chat_template=self.chat_template, finished=done
            )
            for key in TOKEN_COLUMNS:
                cols[key].append(feats[key])
        batch = batch.drop_columns([k for k in (*TEXT_COLUMNS, *FINISHED_COLUMNS) if k in batch.column_names])
        for key in TOKEN_COLUMNS:
            batch = batch.append_column(key, pa.array(cols[key], type=pa.list_(pa.int32())))
        return batch


class ReferenceLogps:
    """Ray Data stage: a frozen causal LM's summed response log-probs of both sides of each pair.

    ``__init__`` loads the model once per actor; ``__call__`` adds ``<prefix>_chosen_logps`` and
    ``<prefix>_rejected_logps`` (float64, one per pair): ``sum_t log pi(y_t | x, y_<t)`` over the labelled tokens,
    both sides of ``micro_batch`` pairs in one forward pass.

    Args:
        model: model directory (``AutoModelForCausalLM``).
        prefix: column prefix (``"ref"`` gives ``ref_chosen_logps`` / ``ref_rejected_logps``).
        pad_token_id: preferred padding id, used when no sequence of a batch contains it (masked out anyway).
        dtype: ``float32`` | ``bfloat16`` | ``float16``.
        micro_batch: pairs per forward pass ((2 * micro_batch, T) tokens).
        use_gpu: run on ``cuda`` when available.
        trust_remote_code: passed to ``from_pretrained``.
        tokenize: :class:`TokenizePairs` arguments when this stage also tokenizes (the first model stage does: one
            actor start-up less than a separate stage).
    """

    INPUTS = TOKEN_COLUMNS

    def __init__(
        self,
        model: str,
        prefix: str = "ref",
        pad_token_id: int = 0,
        dtype: str = "float32",
        micro_batch: int = 16,
        use_gpu: bool = False,
        trust_remote_code: bool = False,
        tokenize: Optional[dict] = None,
    ):
        from rcs_ray.modeling.devices import device_for
        from rcs_ray.modeling.loading import load_causal_lm
        from rcs_ray.modeling.logprobs import ResponseLogps

        device = device_for(use_gpu)
        model = load_causal_lm(model, dtype, trust_remote_code, device, f"reference pass ({prefix})")
        self.logps = ResponseLogps(model, pad_token_id, 2 * micro_batch, device)
        self.prefix, self.micro_batch = prefix, micro_batch
        self.tokenize = TokenizePairs(**tokenize) if tokenize else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.tokenize is not None:
            batch = self.tokenize(batch)
        require_columns(batch, self.INPUTS, f"reference log-probs {self.prefix}")
        sides = {
            side: [
                {"input_ids": i, "labels": y}
                for i, y in zip(
                    batch.column(f"{side}_input_ids").to_pylist(), batch.column(f"{side}_labels").to_pylist()
                )
            ]
            for side in ("chosen", "rejected")
        }
        out = []
        for start in range(0, batch.num_rows, self.micro_batch):
            chosen = sides["chosen"][start : start + self.micro_batch]
            lp = self.logps(chosen + sides["rejected"][start : start + self.micro_batch])
            out.append(lp.reshape(2, len(chosen)))
        both = np.concatenate(out, axis=1) if out else np.zeros((2, 0))
        batch = batch.append_column(f"{self.prefix}_chosen_logps", pa.array(both[0], type=pa.float64()))
        return batch.append_column(f"{self.prefix}_rejected_logps", pa.array(both[1], type=pa.float64()))
