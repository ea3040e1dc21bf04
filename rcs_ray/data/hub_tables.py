"""Raw rows of a Hugging Face Hub dataset, read with ``datasets.load_dataset`` from its snapshot in the HF cache.

A Hub dataset (``hf://org/name[@revision]``, or a bare ``org/name`` that is not a local path) is resolved to its
snapshot directory by :func:`rcs_ray.user_paths.resolve_data` (``huggingface_hub``, offline-aware). That directory is a
copy of the repository, so ``load_dataset`` on it applies the repository's own metadata: the ``configs:`` of its
README (data files per config and split), else its file layout (``data/train-*.parquet``, ...). The data config
chooses ``config_name`` (``load_dataset``'s ``name``), ``split`` (default ``train``, or the only split) and
``data_files`` (paths or globs inside the repository, replacing the config's). ``load_dataset`` is given the snapshot
directory rather than the ID because ``datasets`` does not read the hub cache offline: it only finds datasets it
prepared itself before. Prepared Arrow copies go to ``HF_DATASETS_CACHE`` (else ``$HF_HOME/datasets``).

Rows come out as :class:`~rcs_ray.data.file_rows.Record` named ``hf://org/name (config, split): row N``. ``datasets`` is
imported only here, when a Hub dataset is read.
"""

from __future__ import annotations

from typing import Iterator, List, Optional

from rcs_ray.config import DataConfig
from rcs_ray.data.file_rows import Record, dataset_records
from rcs_ray.errors import RcsInputError
from rcs_ray.storage import hub


def is_hub_dataset(path: Optional[str]) -> bool:
    """``path`` is a dataset snapshot directory of an HF cache (what :func:`rcs_ray.user_paths.resolve_data` gives a Hub
    dataset)."""
    return hub.is_snapshot_root(path, "dataset")


def hub_records(cfg: DataConfig) -> Iterator[Record]:
    """The rows of the Hub dataset whose snapshot directory is ``cfg.path``, in ``cfg.config_name`` and
    ``cfg.split`` (``cfg.data_files`` replacing the config's files).

    Raises:
        RcsInputError: one line naming the dataset: a format other than auto, an unknown config or split, data files
            that match nothing, an unreadable file.
    """
    import datasets  # lazy: heavy, and only Hub datasets need it

    repo, _, _ = hub.snapshot_of(cfg.path)
    label = f"hf://{repo}"
    if cfg.format != "auto":
        raise RcsInputError(
            f"{label}: format {cfg.format!r}: a Hub dataset is read by datasets.load_dataset from "
            f"its own files; leave format auto"
        )
    local = hub.ensure_local(cfg.path)
    kwargs = dict(name=cfg.config_name, data_files=_plain(cfg.data_files), cache_dir=hub.datasets_cache())
    try:
        builder = datasets.load_dataset_builder(local, **kwargs)
    except Exception as exc:  # noqa: BLE001 - datasets raises ValueError, FileNotFoundError, its own errors
        raise RcsInputError(f"{label}: {_first_line(exc)}") from None
    config = builder.config.name
    split = _split(label, cfg.split, _splits(builder))
    try:
        ds = datasets.load_dataset(local, split=split, **kwargs)
    except Exception as exc:  # noqa: BLE001 - as above, and pyarrow errors for unreadable files
        raise RcsInputError(f"{label} ({config}, {split}): {_first_line(exc)}") from None
    yield from dataset_records(ds, f"{label} ({config}, {split})")


def _plain(files):
    """``data_files`` as plain Python containers (a config may hold tuples or OmegaConf leftovers)."""
    if isinstance(files, dict):
        return {str(k): _plain(v) for k, v in files.items()}
    if isinstance(files, (list, tuple)):
        return [str(f) for f in files]
    return files


def _splits(builder) -> List[str]:
    """The split names the builder's config declares (its data files), else its info's."""
    names = list(builder.config.data_files or {}) if getattr(builder.config, "data_files", None) else []
    return names or list(builder.info.splits or {})


def _split(label: str, split: Optional[str], splits: List[str]) -> str:
    """``split`` when the dataset has it (a slice like ``train[:10%]`` by its base name); else ``train`` or the only
    split."""
    if split is None:
        if "train" in splits or not splits:
            return "train"
        if len(splits) == 1:
            return splits[0]
        raise RcsInputError(f"{label}: no split given and no 'train' split; splits: {', '.join(splits)}")
    if splits and split.split("[", 1)[0] not in splits:
        raise RcsInputError(f"{label}: split {split!r} not found; splits: {', '.join(splits)}")
    return split


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
