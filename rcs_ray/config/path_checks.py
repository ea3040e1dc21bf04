"""Checks of the model and data paths a config names, by the one rule of :mod:`rcs_ray.storage.hub`: ``hf://`` is
the Hub, ``./``, ``../``, ``/`` and ``~`` are local, a bare ``org/name`` is either. Only what the config itself shows
is checked here (no filesystem, no Hub): the shape of an ``hf://`` name, and the Hub dataset fields
(``config_name``, ``data_files``) against the path and ``split``. Each failure is one line naming the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Tuple

from rcs_ray.storage import hub

if TYPE_CHECKING:  # the config modules import these checks
    from rcs_ray.config.data import DataConfig
    from rcs_ray.config.run import RunConfig


def model_paths(cfg: RunConfig) -> Iterator[Tuple[str, Optional[str]]]:
    """``(key, path)`` of every model a config names: the policy and its tokenizer, each objective's model,
    reference and tokenizer, the evaluation judge's, the SPO policies."""
    yield "policy.path", cfg.policy.path
    yield "policy.tokenizer", cfg.policy.tokenizer
    objectives = [(f"objectives.{i}", o) for i, o in enumerate(cfg.objectives)]
    if cfg.eval.judge is not None:
        objectives.append(("eval.judge", cfg.eval.judge))
    for key, obj in objectives:
        for name in ("model", "reference", "tokenizer"):
            yield f"{key}.{name}", getattr(obj, name)
    for j, path in enumerate(cfg.train.spo_policies or []):
        yield f"train.spo_policies.{j}", path


def validate_model_paths(c, cfg: RunConfig) -> None:
    """Every ``hf://`` model path names a repository (``c``: the config checker)."""
    for key, path in model_paths(cfg):
        if hub.is_hf(path) and hub.hf_repo(path) is None:
            c.fail(key, f"{path}: {hub.HF_SHAPE}")


def validate_data_source(c, key: str, data: DataConfig) -> None:
    """The Hub side of a data config at ``key`` (e.g. ``stages.0.data``): an ``hf://`` path's shape and format,
    ``config_name`` and ``data_files`` only where the path may be a Hub dataset, ``split`` among ``data_files``'."""
    path = data.path
    if hub.is_hf(path):
        if hub.hf_repo(path) is None:
            c.fail(f"{key}.path", f"{path}: {hub.HF_SHAPE}")
        if data.format != "auto":
            c.fail(
                f"{key}.format",
                f"{data.format!r}: a Hub dataset is read by datasets.load_dataset from its own "
                f"files; leave format auto",
            )
    if data.config_name is not None and not (isinstance(data.config_name, str) and data.config_name.strip()):
        c.fail(f"{key}.config_name", f"must be a configuration name, got {data.config_name!r}")
    if data.data_files is not None:
        _validate_data_files(c, key, data)
    given = [name for name in ("config_name", "data_files") if getattr(data, name) is not None]
    if given and path and not (hub.is_hf(path) or hub.is_bare_id(path)):
        c.fail(
            f"{key}.{given[0]}",
            f"only for a Hub dataset (hf://org/name[@revision]); {path} is read as a local path or URI",
        )


def _files_ok(value) -> bool:
    """A file (glob) or a non-empty list of them."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, str) and v.strip() for v in value)


def _validate_data_files(c, key: str, data: DataConfig) -> None:
    files, split = data.data_files, data.split
    base = split.split("[", 1)[0] if split else None  # load_dataset's slices: train[:10%]
    if isinstance(files, dict):
        if not files or not all(isinstance(k, str) and k and _files_ok(v) for k, v in files.items()):
            c.fail(f"{key}.data_files", f"a mapping needs split names to files (globs) or lists of them, got {files!r}")
        if base is not None and base not in files:
            c.fail(f"{key}.split", f"{split!r} is not a split of data_files ({', '.join(files)})")
        if base is None and "train" not in files and len(files) > 1:
            c.fail(f"{key}.split", f"data_files has no 'train' split: set split to one of {', '.join(files)}")
        return
    if not _files_ok(files):
        c.fail(f"{key}.data_files", f"needs a file (glob), a list of them or {{split: files}}, got {files!r}")
    if base is not None and base != "train":
        c.fail(
            f"{key}.split",
            f"{split!r}: data_files given as files make one split, 'train'; name the split with "
            f"data_files: {{{base}: [...]}}",
        )
