"""Reference log-probs as a Ray Data batch stage, so the trainer never holds a reference model.

The driver turns :class:`~rcs_ray.train.data.TrainingPairs` into a feature table in one Ray Data pass::

    pairs rows -> ReferenceLogps("ref", tokenizes first) [-> ReferenceLogps("spo0") ...]
    pairs rows -> TokenizePairs                          (reference log-probs given in the pairs file)

Each :class:`ReferenceLogps` actor loads its frozen causal LM once in ``__init__`` and adds the summed response
log-probs ``<prefix>_chosen_logps`` and ``<prefix>_rejected_logps`` (float64 columns) in ``__call__``. SPO's policy
chain (pi_0 .. pi_k) uses the same stage with one prefix per model. The result is materialized in the driver
(before the training workers take the CPUs / GPUs), checked for non-finite values and cached as
``<out_dir>/features.parquet`` keyed by the pairs, the models and the tokenization settings, so a restarted job does
not recompute it.

Feature table columns: ``index`` (int64, the pair's row in the input), ``chosen_input_ids``, ``chosen_labels``,
``rejected_input_ids``, ``rejected_labels`` (list<int32>; labels are ``-100`` on prompt tokens), the log-prob columns,
and any per-pair columns passed through (``chosen_margin`` / ``rejected_margin``: list<float64>).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa

from rcs_ray.train.data import TrainingPairs, check_finite_logps

log = logging.getLogger(__name__)

TOKEN_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels")
FEATURES_FILE = "features.parquet"
FEATURES_KEY = "features.json"
CACHE_VERSION = 1


def _dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """An HF tokenizer with a pad token (the EOS when it has none)."""
    from transformers import AutoTokenizer

    from rcs_ray.storage import local_copy

    tok = AutoTokenizer.from_pretrained(local_copy(path, weights=False), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def as_chat(prompt, tokenizer, chat_template: bool):
    """A plain prompt as one user message when the tokenizer has a chat template and ``chat_template`` is on (how
    the policy saw it when sampling); chat prompts and everything else unchanged."""
    if isinstance(prompt, str) and chat_template and getattr(tokenizer, "chat_template", None):
        return [{"role": "user", "content": prompt}]
    return prompt


class TokenizePairs:
    """Ray Data stage: ``prompt_json, chosen_json, rejected_json`` -> token ids and labels of both sides.

    Args:
        tokenizer: tokenizer directory.
        max_length: most tokens of prompt + response (see :func:`rcs_ray.train.logprobs.tokenize_example`).
        chat_template: format plain prompts with the tokenizer's chat template.
        trust_remote_code: passed to ``from_pretrained``.
    """

    def __init__(self, tokenizer: str, max_length: int, chat_template: bool = True, trust_remote_code: bool = False):
        self.tokenizer = load_tokenizer(tokenizer, trust_remote_code)
        self.max_length = max_length
        self.chat_template = chat_template

    def __call__(self, batch: pa.Table) -> pa.Table:
        from rcs_ray.train.logprobs import build_pair_features

        cols: Dict[str, list] = {c: [] for c in TOKEN_COLUMNS}
        for p, c, r in zip(*(batch.column(f"{k}_json").to_pylist() for k in ("prompt", "chosen", "rejected"))):
            prompt = as_chat(json.loads(p), self.tokenizer, self.chat_template)
            feats = build_pair_features(self.tokenizer, prompt, json.loads(c), json.loads(r), self.max_length)
            for key in TOKEN_COLUMNS:
                cols[key].append(feats[key])
        batch = batch.drop_columns(["prompt_json", "chosen_json", "rejected_json"])
        for key in TOKEN_COLUMNS:
            batch = batch.append_column(key, pa.array(cols[key], type=pa.list_(pa.int32())))
        return batch


def pad_side(batch: pa.Table, side: str, pad_token_id: int):
    """Right-padded ``(B, T)`` long tensors ``input_ids``, ``attention_mask``, ``labels`` of one side."""
    import torch

    ids = batch.column(f"{side}_input_ids").to_pylist()
    labels = batch.column(f"{side}_labels").to_pylist()
    width = max(len(x) for x in ids)
    out_ids = torch.full((len(ids), width), pad_token_id, dtype=torch.long)
    out_mask = torch.zeros((len(ids), width), dtype=torch.long)
    out_labels = torch.full((len(ids), width), -100, dtype=torch.long)
    for b, (x, y) in enumerate(zip(ids, labels)):
        out_ids[b, :len(x)], out_mask[b, :len(x)], out_labels[b, :len(y)] = torch.tensor(x), 1, torch.tensor(y)
    return out_ids, out_mask, out_labels


class ReferenceLogps:
    """Ray Data stage: a frozen causal LM's summed response log-probs of both sides of each pair.

    ``__init__`` loads the model once per actor; ``__call__`` adds ``<prefix>_chosen_logps`` and
    ``<prefix>_rejected_logps`` (float64, one per pair): ``sum_t log pi(y_t | x, y_<t)`` over the labelled tokens.

    Args:
        model: model directory (``AutoModelForCausalLM``).
        prefix: column prefix (``"ref"`` gives ``ref_chosen_logps`` / ``ref_rejected_logps``).
        pad_token_id: id written at padded positions (masked out anyway).
        dtype: ``float32`` | ``bfloat16`` | ``float16``.
        micro_batch: pairs per forward pass ((2 * micro_batch, T) tokens).
        use_gpu: run on ``cuda`` when available.
        trust_remote_code: passed to ``from_pretrained``.
    """

    def __init__(self, model: str, prefix: str = "ref", pad_token_id: int = 0, dtype: str = "float32",
                 micro_batch: int = 16, use_gpu: bool = False, trust_remote_code: bool = False,
                 tokenize: Optional[dict] = None):
        import torch
        from transformers import AutoModelForCausalLM

        from rcs_ray.storage import local_copy

        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(local_copy(model), dtype=_dtype(dtype),
                                                          trust_remote_code=trust_remote_code).to(self.device).eval()
        self.prefix, self.pad, self.micro_batch = prefix, pad_token_id, micro_batch
        # The first model stage also tokenizes (one actor start-up less than a separate stage).
        self.tokenize = TokenizePairs(**tokenize) if tokenize else None

    def _logps(self, batch: pa.Table) -> np.ndarray:
        """(2B,) log-probs: the B chosen then the B rejected responses of ``batch``."""
        import torch

        from rcs_ray.train.logprobs import sequence_logps

        chosen, rejected = pad_side(batch, "chosen", self.pad), pad_side(batch, "rejected", self.pad)
        width = max(chosen[0].shape[1], rejected[0].shape[1])
        ids, mask, labels = (torch.cat([torch.nn.functional.pad(a, (0, width - a.shape[1]), value=v),
                                        torch.nn.functional.pad(b, (0, width - b.shape[1]), value=v)])
                             for a, b, v in zip(chosen, rejected, (self.pad, 0, -100)))
        with torch.no_grad():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            return sequence_logps(logits, labels.to(self.device)).double().cpu().numpy()

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.tokenize is not None:
            batch = self.tokenize(batch)
        out = []
        for start in range(0, batch.num_rows, self.micro_batch):
            part = batch.slice(start, self.micro_batch)
            lp = self._logps(part)
            out.append(lp.reshape(2, part.num_rows))
        both = np.concatenate(out, axis=1) if out else np.zeros((2, 0))
        batch = batch.append_column(f"{self.prefix}_chosen_logps", pa.array(both[0], type=pa.float64()))
        return batch.append_column(f"{self.prefix}_rejected_logps", pa.array(both[1], type=pa.float64()))


# ----------------------------------------------------------------------------------------------- driver side
def pairs_table(pairs: TrainingPairs, extra: Optional[Dict[str, pa.Array]] = None) -> pa.Table:
    """The rows as an Arrow table: ``index``, ``prompt_json``, ``chosen_json``, ``rejected_json`` (+ ``extra``)."""
    cols = {"index": pa.array(np.arange(len(pairs.rows), dtype=np.int64))}
    for key in ("prompt", "chosen", "rejected"):
        cols[f"{key}_json"] = pa.array([json.dumps(r[key], ensure_ascii=False) for r in pairs.rows], pa.string())
    cols.update(extra or {})
    return pa.table(cols)


def _model_stamp(path: str) -> List:
    """Path plus size and mtime of its weight / config files: a changed model changes the cache key."""
    from rcs_ray import storage

    if storage.is_uri(path):
        return [path] + [[rel, size, mtime] for rel, size, mtime in storage.list_files(path)
                         if "/" not in rel and (rel.endswith((".safetensors", ".bin")) or rel == "config.json")]
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")) + glob.glob(os.path.join(path, "*.bin"))
                   + glob.glob(os.path.join(path, "config.json")))
    return [os.path.abspath(path)] + [[os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns]
                                      for f in files]


def cache_key(table: pa.Table, models: Dict[str, str], settings: dict) -> str:
    """sha256 of the pairs' content, the models (paths, weight stamps) and the tokenization settings."""
    h = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h.update(sink.getvalue().to_pybytes())
    blob = {"version": CACHE_VERSION, "models": {k: _model_stamp(v) for k, v in sorted(models.items())},
            "settings": settings}
    h.update(json.dumps(blob, sort_keys=True, default=str).encode())
    return h.hexdigest()


def compute_features(table: pa.Table, models: Dict[str, str], tokenizer: str, max_length: int,
                     chat_template: bool = True, dtype: str = "float32", batch_size: int = 16, num_actors: int = 1,
                     use_gpu: bool = False, trust_remote_code: bool = False, cache_dir: Optional[str] = None,
                     pad_token_id: int = 0) -> pa.Table:
    """Tokenize the pairs and add each model's log-prob columns, in one Ray Data pass (cached in ``cache_dir``).

    Args:
        table: from :func:`pairs_table`.
        models: column prefix -> model directory, e.g. ``{"ref": reference}`` (empty: tokenize only).
        tokenizer: tokenizer directory.
        max_length: most tokens of prompt + response.
        chat_template: format plain prompts with the tokenizer's chat template.
        dtype: the models' dtype.
        batch_size: pairs per Ray Data batch.
        num_actors: actor-pool size of each model stage.
        use_gpu: one GPU shared by the model stages.
        trust_remote_code: passed to ``from_pretrained``.
        cache_dir: read / write ``features.parquet`` here when the key matches.
        pad_token_id: the tokenizer's pad id.

    Returns:
        The feature table (see the module docstring), in ``index`` order.

    Raises:
        RcsInputError: a non-finite log-prob (NaN weights, a broken model).
    """
    import pyarrow.parquet as pq

    settings = dict(tokenizer=_model_stamp(tokenizer), max_length=max_length, chat_template=chat_template,
                    dtype=dtype)
    key = cache_key(table, models, settings) if cache_dir else None
    if key and cached_key(cache_dir) == key:
        log.info("reference log-probs: reusing %s", os.path.join(cache_dir, FEATURES_FILE))
        return pq.read_table(os.path.join(cache_dir, FEATURES_FILE))
    out = _run_pipeline(table, models, tokenizer, max_length, chat_template, dtype, batch_size, num_actors, use_gpu,
                        trust_remote_code, pad_token_id)
    for prefix, path in models.items():
        for side in ("chosen", "rejected"):
            column = f"{prefix}_{side}_logps"
            check_finite_logps(out.column(column).to_numpy(), column, path)
    if key:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = os.path.join(cache_dir, FEATURES_FILE + ".tmp")
        pq.write_table(out, tmp)
        os.replace(tmp, os.path.join(cache_dir, FEATURES_FILE))
        with open(os.path.join(cache_dir, FEATURES_KEY), "w", encoding="utf-8") as fh:
            json.dump({"key": key, "models": models, "rows": out.num_rows}, fh, indent=1)
    return out


def cached_key(cache_dir: str) -> Optional[str]:
    try:
        with open(os.path.join(cache_dir, FEATURES_KEY), encoding="utf-8") as fh:
            key = json.load(fh)["key"]
    except (OSError, ValueError, KeyError):
        return None
    return key if os.path.isfile(os.path.join(cache_dir, FEATURES_FILE)) else None


def _run_pipeline(table: pa.Table, models: Dict[str, str], tokenizer: str, max_length: int, chat_template: bool,
                  dtype: str, batch_size: int, num_actors: int, use_gpu: bool, trust_remote_code: bool,
                  pad_token_id: int) -> pa.Table:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    blocks = [table.slice(i, batch_size) for i in range(0, table.num_rows, batch_size)] or [table]
    ds = ray.data.from_arrow(blocks)
    tokenize = dict(tokenizer=tokenizer, max_length=max_length, chat_template=chat_template,
                    trust_remote_code=trust_remote_code)
    if not models:
        ds = ds.map_batches(TokenizePairs, fn_constructor_kwargs=tokenize, batch_size=batch_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
    share = 1.0 / max(1, len(models))          # the model stages stream side by side: share one CPU / GPU
    for i, (prefix, path) in enumerate(models.items()):
        ds = ds.map_batches(ReferenceLogps, fn_constructor_kwargs=dict(
            model=path, prefix=prefix, pad_token_id=pad_token_id, dtype=dtype, micro_batch=batch_size,
            use_gpu=use_gpu, trust_remote_code=trust_remote_code, tokenize=tokenize if i == 0 else None),
            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=num_actors),
            num_cpus=0 if use_gpu else share, num_gpus=share if use_gpu else 0)
    parts = [b for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    out = pa.concat_tables(parts) if parts else table
    return out.sort_by("index")


def logps_columns(features: pa.Table, prefixes: Sequence[str], side: str) -> List[np.ndarray]:
    """``[<prefix>_<side>_logps for prefix in prefixes]`` as (N,) float64 arrays."""
    return [features.column(f"{p}_{side}_logps").to_numpy() for p in prefixes]
