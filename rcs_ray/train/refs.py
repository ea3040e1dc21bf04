"""Reference log-probs as a Ray Data batch stage, and the feature cache every way of computing them shares.

When the reference is the policy the training workers start from, they compute its log-probs themselves
(:mod:`rcs_ray.train.worker_refs`): the driver only tokenizes (:func:`features_for_workers`) and the workers write
the cache under the same key. The pass below runs otherwise (another reference model, SPO's policy chain, QLoRA,
``train.reference_pass: separate``).

The driver turns a :class:`~rcs_ray.data.pairs.PairSet` into a feature table in one Ray Data pass::

    pairs rows -> ReferenceLogps("ref", tokenizes first) [-> ReferenceLogps("spo0") ...]
    pairs rows -> TokenizePairs                          (reference log-probs given in the pairs file)

Each :class:`ReferenceLogps` actor (the stages: :mod:`rcs_ray.train.ref_stages`) loads its frozen causal LM once in
``__init__`` and adds the summed response log-probs ``<prefix>_chosen_logps`` and ``<prefix>_rejected_logps``
(float64 columns) in ``__call__``. SPO's policy chain (pi_0 .. pi_k) uses the same stage with one prefix per model.
The result is materialized in the driver (before the training workers take the CPUs / GPUs), checked for non-finite
values and cached as ``<out_dir>/features.parquet`` keyed by the pairs, the models and the tokenization settings, so a
restarted job does not recompute it.

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
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pyarrow as pa

from rcs_ray.run_layout import FEATURES_FILE, FEATURES_KEY
from rcs_ray.storage import integrity
from rcs_ray.train.ref_stages import ReferenceLogps, TokenizePairs, check_finite_logps

log = logging.getLogger(__name__)

CACHE_VERSION = 2


# ----------------------------------------------------------------------------------------------- driver side
def _model_stamp(path: str) -> List:
    """Path plus size and mtime of its weight / config files: a changed model changes the cache key."""
    from rcs_ray import storage

    if storage.is_uri(path):
        return [path] + [
            [rel, size, mtime]
            for rel, size, mtime in storage.list_files(path)
            if "/" not in rel and (rel.endswith((".safetensors", ".bin")) or rel == "config.json")
        ]
    files = sorted(
        glob.glob(os.path.join(path, "*.safetensors"))
        + glob.glob(os.path.join(path, "*.bin"))
        + glob.glob(os.path.join(path, "config.json"))
    )
    return [os.path.abspath(path)] + [[os.path.basename(f), os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files]


def cache_key(table: pa.Table, models: Dict[str, str], settings: dict) -> str:
    """sha256 of the pairs' content, the models (paths, weight stamps) and the tokenization settings."""
    h = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    h.update(sink.getvalue().to_pybytes())
    blob = {
        "version": CACHE_VERSION,
        "models": {k: _model_stamp(v) for k, v in sorted(models.items())},
        "settings": settings,
    }
    h.update(json.dumps(blob, sort_keys=True, default=str).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class FeatureSettings:
    """How the pairs are tokenized and the reference models run (from ``policy`` and the stage's ``train``).

    Attributes:
        tokenizer: tokenizer directory.
        pad_token_id: the tokenizer's pad id.
        max_length: most tokens of prompt + response (``train.max_length``).
        chat_template, system_prompt, chat_template_kwargs: the policy's prompt rule (``policy.chat_template``,
            ``policy.system_prompt``, ``policy.chat_template_kwargs``).
        dtype: the models' dtype (``policy.dtype``).
        trust_remote_code: passed to ``from_pretrained`` (``policy.trust_remote_code``).
        batch_size: pairs per Ray Data batch and per forward pass (``train.ref_batch_size``).
        num_actors: actor-pool size of each model stage (``train.ref_num_actors``).
        use_gpu: one GPU shared by the model stages (``train.use_gpu``).
    """

    tokenizer: str
    pad_token_id: int
    max_length: int = 512
    chat_template: bool = True
    system_prompt: Optional[str] = None
    chat_template_kwargs: Dict = field(default_factory=dict)
    dtype: str = "float32"
    trust_remote_code: bool = False
    batch_size: int = 16
    num_actors: int = 1
    use_gpu: bool = False

    @classmethod
    def of(cls, train, policy, tokenizer: str, pad_token_id: int) -> "FeatureSettings":
        """From a :class:`~rcs_ray.config.TrainConfig` and the policy's :class:`~rcs_ray.config.ModelConfig`."""
        return cls(
            tokenizer=tokenizer,
            pad_token_id=pad_token_id,
            max_length=train.max_length,
            chat_template=policy.chat_template,
            system_prompt=policy.system_prompt,
            chat_template_kwargs=dict(policy.chat_template_kwargs),
            dtype=policy.dtype,
            trust_remote_code=policy.trust_remote_code,
            batch_size=train.ref_batch_size,
            num_actors=train.ref_num_actors,
            use_gpu=train.use_gpu,
        )

    def prompt_rule(self) -> dict:
        """The rule's settings beyond ``chat_template`` (in the cache key only when set: older caches stay valid)."""
        out = {} if self.system_prompt is None else {"system_prompt": self.system_prompt}
        return {**out, **({"chat_template_kwargs": self.chat_template_kwargs} if self.chat_template_kwargs else {})}

    def tokenize_kwargs(self) -> dict:
        """The :class:`TokenizePairs` arguments."""
        return dict(
            tokenizer=self.tokenizer,
            max_length=self.max_length,
            chat_template=self.chat_template,
            trust_remote_code=self.trust_remote_code,
            system_prompt=self.system_prompt,
            chat_template_kwargs=dict(self.chat_template_kwargs),
        )


def _stamp(settings: FeatureSettings) -> dict:
    """The tokenization settings of the cache key."""
    return dict(
        tokenizer=_model_stamp(settings.tokenizer),
        max_length=settings.max_length,
        chat_template=settings.chat_template,
        dtype=settings.dtype,
        **settings.prompt_rule(),
    )


def compute_features(
    table: pa.Table,
    models: Dict[str, str],
    settings: FeatureSettings,
    cache_dir: Optional[str] = None,
    progress: bool = False,
) -> Tuple[pa.Table, bool]:
    """Tokenize the pairs and add each model's log-prob columns, in one Ray Data pass (cached in ``cache_dir``).

    Args:
        table: :meth:`rcs_ray.data.pairs.PairSet.table` (``index, prompt, chosen, rejected`` + per-pair columns).
        models: column prefix -> model directory, e.g. ``{"ref": reference}`` (empty: tokenize only).
        settings: tokenization and model settings.
        cache_dir: read / write ``features.parquet`` here (a local directory) when the key matches.
        progress: a progress bar over the pairs.

    Returns:
        ``(the feature table (see the module docstring) in ``index`` order, whether it came from the cache)``.

    Raises:
        RcsInputError: a non-finite log-prob (NaN weights, a broken model).
    """
    key = cache_key(table, models, _stamp(settings)) if cache_dir else None
    cached = read_cache(cache_dir, key) if key else None
    if cached is not None:
        return cached, True
    out = _run_pipeline(table, models, settings, progress)
    for prefix, path in models.items():
        for side in ("chosen", "rejected"):
            column = f"{prefix}_{side}_logps"
            check_finite_logps(out.column(column).to_numpy(), column, path)
    if key:
        write_cache(cache_dir, out, key, models)
    return out, False


def features_for_workers(
    table: pa.Table, reference: str, settings: FeatureSettings, cache_dir: str, progress: bool = False
) -> Tuple[pa.Table, Optional[str]]:
    """The features of a stage whose training workers compute the reference log-probs themselves.

    Returns:
        ``(features, None)`` when ``cache_dir`` holds them for these inputs (reference columns included), else
        ``(tokens only, key)``: tokenized here, in this process (no actor starts for it); the workers add
        ``ref_chosen_logps`` / ``ref_rejected_logps`` before step 1 and write the cache under ``key`` (the key a
        separate pass of ``{"ref": reference}`` would use, so either way a rerun finds it).
    """
    key = cache_key(table, {"ref": reference}, _stamp(settings))
    cached = read_cache(cache_dir, key)
    if cached is not None:
        return cached, None
    return tokenize_here(table, settings, progress), key


def tokenize_here(table: pa.Table, settings: FeatureSettings, progress: bool = False) -> pa.Table:
    """:class:`TokenizePairs` over ``table`` in this process, 1,024 pairs at a time, in ``index`` order."""
    from tqdm import tqdm

    stage, step = TokenizePairs(**settings.tokenize_kwargs()), 1024
    parts = []
    with tqdm(total=table.num_rows, desc="tokenize", unit="pair", disable=not progress) as bar:
        for start in range(0, table.num_rows, step):
            parts.append(stage(table.slice(start, step)))
            bar.update(parts[-1].num_rows)
    return (pa.concat_tables(parts) if parts else stage(table)).sort_by("index")


def read_cache(cache_dir: str, key: str) -> Optional[pa.Table]:
    """The cached features in ``cache_dir`` (a local directory) when their key is ``key``; None otherwise (a
    damaged cache is set aside and computed again)."""
    import pyarrow.parquet as pq

    if cached_key(cache_dir) != key:
        return None
    cached = os.path.join(cache_dir, FEATURES_FILE)
    try:
        features = pq.read_table(cached)
    except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed
        integrity.set_aside(cached, "feature cache", f"the reference log-probs are computed again ({exc})")
        return None
    log.info("reference log-probs: reusing %s", cached)
    return features


def write_cache(cache_dir: str, features: pa.Table, key: str, models: Dict[str, str]) -> None:
    """``features.parquet`` and its key file into ``cache_dir`` (a local directory or a URI: a training worker
    writes the features it computed to the stage's home), the table first."""
    import tempfile

    import pyarrow.parquet as pq

    from rcs_ray import storage

    target = storage.join(cache_dir, FEATURES_FILE)
    if storage.is_uri(cache_dir):
        with tempfile.TemporaryDirectory(prefix="rcs-features-") as tmp:
            pq.write_table(features, os.path.join(tmp, FEATURES_FILE))
            storage.upload(os.path.join(tmp, FEATURES_FILE), target)
    else:
        with storage.atomic_path(target) as tmp:
            pq.write_table(features, tmp)
    storage.write_text(
        storage.join(cache_dir, FEATURES_KEY),
        json.dumps({"key": key, "models": models, "rows": features.num_rows}, indent=1),
    )


def cached_key(cache_dir: str) -> Optional[str]:
    """The key of the feature cache in ``cache_dir`` (None: no cache; a damaged key file is set aside)."""
    path = os.path.join(cache_dir, FEATURES_KEY)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            key = json.load(fh)["key"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        integrity.set_aside(path, "feature cache key", f"the reference log-probs are computed again ({exc})")
        return None
    return key if os.path.isfile(os.path.join(cache_dir, FEATURES_FILE)) else None


def _run_pipeline(table: pa.Table, models: Dict[str, str], s: FeatureSettings, progress: bool) -> pa.Table:
    import ray
    from tqdm import tqdm

    from rcs_ray.ray_runtime import data_context

    data_context()
    blocks = [table.slice(i, s.batch_size) for i in range(0, table.num_rows, s.batch_size)] or [table]
    ds = ray.data.from_arrow(blocks)
    tokenize = s.tokenize_kwargs()
    if not models:
        ds = ds.map_batches(
            TokenizePairs,
            fn_constructor_kwargs=tokenize,
            batch_size=s.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.25,
        )
    share = 1.0 / max(1, len(models))  # the model stages stream side by side: share one CPU / GPU
    for i, (prefix, path) in enumerate(models.items()):
        ds = ds.map_batches(
            ReferenceLogps,
            fn_constructor_kwargs=dict(
                model=path,
                prefix=prefix,
                pad_token_id=s.pad_token_id,
                dtype=s.dtype,
                micro_batch=s.batch_size,
                use_gpu=s.use_gpu,
                trust_remote_code=s.trust_remote_code,
                tokenize=tokenize if i == 0 else None,
            ),
            batch_size=s.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=s.num_actors),
            num_cpus=0 if s.use_gpu else share,
            num_gpus=share if s.use_gpu else 0,
        )
    parts = []
    what = "reference log-probs" if models else "tokenize"
    with tqdm(total=table.num_rows, desc=what, unit="pair", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            parts.append(batch)
            bar.update(batch.num_rows)
    out = pa.concat_tables(parts) if parts else table
    return out.sort_by("index")


def logps_columns(features: pa.Table, prefix: str) -> tuple:
    """``(<prefix>_chosen_logps, <prefix>_rejected_logps)`` as (N,) float64 arrays."""
    return tuple(features.column(f"{prefix}_{side}_logps").to_numpy() for side in ("chosen", "rejected"))
