"""Raw rows from data files: JSON lines, JSON arrays, parquet, HF ``datasets`` directories, dirs of files.

Rows are read lazily, one :class:`Record` at a time, each with the place it came from (file and 1-based row;
for JSON lines, the line number), so a reader can stop at ``limit`` and name the row at fault. ``datasets`` is
imported only when an HF dataset directory is read.

A path may be a URI (``s3://``, ``gs://``, ``file://``; see :mod:`rcs_ray.storage`): files are listed and read
through the pyarrow filesystem (parquet with ``filesystem=``, JSON through an input stream); an HF dataset
directory is copied into the local cache first.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple

from rcs_ray import storage
from rcs_ray.data.canonical import BadRow, BadRowPolicy
from rcs_ray.errors import RcsInputError

TABLE_FORMATS = ("auto", "jsonl", "json", "parquet", "hf")
_JSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
_PARQUET_SUFFIXES = (".parquet",)
_BATCH_ROWS = 1024


@dataclass
class Record:
    """One raw row and where it came from.

    Attributes:
        data: the row, column name -> value (Python objects: str, list, dict, int, float, None).
        file: the file (or HF dataset directory) it was read from.
        row: 1-based row number; for JSON lines files, the line number.
        columns: the file's column names (for JSON lines: this row's keys).
        is_line: whether ``row`` is a line number (changes how :attr:`where` reads).
    """

    data: dict
    file: str
    row: int
    columns: Sequence[str]
    is_line: bool = False

    @property
    def where(self) -> str:
        """``data.jsonl:3`` for a line, ``data.parquet: row 3`` otherwise."""
        return f"{self.file}:{self.row}" if self.is_line else f"{self.file}: row {self.row}"


def read_table(path: str, format: str = "auto", split: Optional[str] = None, limit: Optional[int] = None) -> List[dict]:
    """Read the raw rows of a data file or directory, strictly (any bad line is an error).

    Args:
        path: a ``.jsonl``/``.json`` (optionally ``.gz``) or ``.parquet`` file, an HF dataset directory written
            by ``save_to_disk``, or a directory of data files (e.g. a hub snapshot; all read, sorted by path).
        format: ``auto`` (decide from the path), ``jsonl``, ``json``, ``parquet`` or ``hf``.
        split: for a DatasetDict directory or a snapshot directory: which split (default ``train`` if present).
        limit: read at most this many rows.

    Returns:
        The rows as dicts, in file order.

    Raises:
        RcsInputError: a missing path, an unknown format, a malformed line, an unknown split.
    """
    rows = []
    for record in iter_records(path, format, split, BadRowPolicy("error")):
        if limit is not None and len(rows) >= limit:
            break
        rows.append(record.data)
    return rows


def iter_records(path: str, format: str, split: Optional[str], policy: BadRowPolicy) -> Iterator[Record]:
    """Yield the raw rows of ``path`` lazily (see :func:`read_table`); malformed lines go to ``policy``."""
    for file, kind in resolve_files(path, format, split):
        if kind == "hf":
            yield from _hf_records(file, split)
        elif kind == "parquet":
            yield from _parquet_records(file)
        else:
            yield from _json_records(file, policy)


def resolve_files(path: str, format: str = "auto", split: Optional[str] = None) -> List[Tuple[str, str]]:
    """The files to read for ``path`` as ``(file, kind)`` pairs, kind one of ``json``, ``parquet``, ``hf``.

    Raises:
        RcsInputError: the path does not exist, the format is unknown, or a directory holds no data files.
    """
    if format not in TABLE_FORMATS:
        raise RcsInputError(f"{path}: unknown data format {format!r}; expected one of {list(TABLE_FORMATS)}")
    if not path:
        raise RcsInputError("no data path given")
    if storage.is_uri(path):
        return _remote_files(path, format, split)
    if not os.path.exists(path):
        raise RcsInputError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        if format == "hf" or (format == "auto" and _is_hf_dir(path)):
            return [(path, "hf")]
        return _data_files(path, format, split)
    if format == "hf":
        raise RcsInputError(f"{path}: format 'hf' needs a directory written by datasets' save_to_disk")
    if format == "auto":
        return [(path, _kind_from_suffix(path) or "json")]
    return [(path, "parquet" if format == "parquet" else "json")]


def _remote_files(uri: str, format: str, split: Optional[str]) -> List[Tuple[str, str]]:
    """:func:`resolve_files` for a URI, from the filesystem's listing."""
    kind = storage.path_kind(uri)
    if kind is None:
        raise RcsInputError(f"{uri}: no such file or directory")
    if kind == "dir":
        files = [
            (storage.join(uri, rel), rel)
            for rel, _, _ in storage.list_files(uri)
            if not any(part.startswith(".") for part in rel.split("/")[:-1])
        ]
        if format == "hf" or (format == "auto" and _is_hf_names({rel for _, rel in files if "/" not in rel})):
            return [(uri, "hf")]
        return _data_files(uri, format, split, files)
    if format == "hf":
        raise RcsInputError(f"{uri}: format 'hf' needs a directory written by datasets' save_to_disk")
    if format == "auto":
        return [(uri, _kind_from_suffix(uri.split("?", 1)[0]) or "json")]
    return [(uri, "parquet" if format == "parquet" else "json")]


def _is_hf_dir(path: str) -> bool:
    return _is_hf_names(set(os.listdir(path)))


def _is_hf_names(names: set) -> bool:
    return "dataset_dict.json" in names or {"state.json", "dataset_info.json"} <= names


def _kind_from_suffix(path: str) -> Optional[str]:
    low = path.lower()
    if low.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if low.endswith(_JSON_SUFFIXES):
        return "json"
    return None


def _data_files(
    root: str, format: str, split: Optional[str], files: Optional[List[Tuple[str, str]]] = None
) -> List[Tuple[str, str]]:
    """Data files under ``root`` (hidden dirs skipped), sorted by path, filtered by split.

    With ``format=auto``: parquet and JSON lines files; ``.json`` files only when there are neither (snapshots
    keep metadata in ``.json`` files). A file belongs to split ``s`` when a path component is ``s`` or starts
    with ``s.`` or ``s-<digit>`` (``train.jsonl``, ``train-00000-of-00001.parquet``, ``train/part.parquet``).
    ``files``: ``(path, path relative to root)`` of every file under a remote ``root`` (default: walk ``root``).
    """
    found = []
    relpath = dict(files) if files is not None else None
    if files is None:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                kind = _kind_from_suffix(name)
                if kind and not name.startswith("."):
                    found.append((os.path.join(dirpath, name), kind))
    else:
        for full, rel in files:
            name = rel.rsplit("/", 1)[-1]
            kind = _kind_from_suffix(name)
            if kind and not name.startswith("."):
                found.append((full, kind))

    def rel_of(path: str) -> str:
        return relpath[path] if relpath is not None else os.path.relpath(path, root)

    if format in ("jsonl", "json"):
        found = [f for f in found if f[1] == "json"]
    elif format == "parquet":
        found = [f for f in found if f[1] == "parquet"]
    elif any(f[1] == "parquet" or ".jsonl" in f[0].lower() for f in found):
        found = [f for f in found if f[1] == "parquet" or ".jsonl" in f[0].lower()]
    found.sort()
    if not found:
        raise RcsInputError(f"{root}: no data files (.jsonl, .json, .parquet) in this directory")
    in_split = [f for f in found if _in_split(rel_of(f[0]), split or "train")]
    if split is not None and not in_split:
        names = ", ".join(rel_of(f[0]) for f in found[:10])
        raise RcsInputError(f"{root}: no data files for split {split!r} (files: {names})")
    return in_split or found


def _in_split(relpath: str, split: str) -> bool:
    pattern = rf"(^|{re.escape(os.sep)}){re.escape(split)}($|{re.escape(os.sep)}|\.|-\d)"
    return re.search(pattern, relpath) is not None


def _open_text(path: str):
    if storage.is_uri(path):
        raw = storage.open_binary(path)
        if path.split("?", 1)[0].lower().endswith(".gz"):
            raw = gzip.GzipFile(fileobj=raw)
        return io.TextIOWrapper(raw, encoding="utf-8")
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _json_records(path: str, policy: BadRowPolicy) -> Iterator[Record]:
    """A JSON array file (rows numbered by element) or a JSON lines file (rows numbered by line)."""
    with _open_text(path) as fh:
        head = fh.read(4096).lstrip()
        fh.seek(0)
        if head.startswith("["):
            yield from _json_array_records(path, fh, policy)
            return
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            data = policy.attempt(where, _parse_json_line, line)
            if data is not None:
                yield Record(data, path, lineno, list(data), is_line=True)


def _parse_json_line(line: str) -> dict:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadRow("invalid_json", f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise BadRow("invalid_json", f"expected a JSON object, got {type(data).__name__}")
    return data


def _json_array_records(path: str, fh, policy: BadRowPolicy) -> Iterator[Record]:
    try:
        items = json.load(fh)
    except json.JSONDecodeError as exc:
        raise RcsInputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(items, list):
        raise RcsInputError(f"{path}: expected a JSON array of objects or JSON lines")
    for i, item in enumerate(items, start=1):
        if isinstance(item, dict):
            yield Record(item, path, i, list(item))
        else:
            policy.handle(
                f"{path}: row {i}", BadRow("invalid_json", f"expected a JSON object, got {type(item).__name__}")
            )


def read_parquet(path: str):
    """The whole ``pyarrow.Table`` of a parquet file or a directory of parquet files (local or URI), schema
    metadata included.

    Raises:
        RcsInputError: ``<path>: not a readable parquet file: <pyarrow's first line>``.
    """
    return _parquet(path, lambda pq, fs, source: pq.read_table(source, filesystem=fs))


def open_parquet(path: str):
    """A ``pyarrow.parquet.ParquetFile`` of one parquet file (local or URI), to read in batches.

    Raises:
        RcsInputError: as :func:`read_parquet`.
    """
    return _parquet(path, lambda pq, fs, source: pq.ParquetFile(source, filesystem=fs))


def _parquet(path: str, read):
    """The one parquet read with its error wrapping: ``read(pq, filesystem, path on it)``."""
    import pyarrow.parquet as pq

    fs, source = storage.resolve(path)
    try:
        return read(pq, fs, source)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise RcsInputError(f"{path}: not a readable parquet file: {str(exc).splitlines()[0]}") from None


def _parquet_records(path: str) -> Iterator[Record]:
    pf = open_parquet(path)
    columns = list(pf.schema_arrow.names)
    row = 0
    for batch in pf.iter_batches(batch_size=_BATCH_ROWS):
        for data in batch.to_pylist():
            row += 1
            yield Record(data, path, row, columns)


def _hf_records(path: str, split: Optional[str]) -> Iterator[Record]:
    import datasets  # lazy: heavy, and only HF dataset directories need it

    try:
        ds = datasets.load_from_disk(storage.local_copy(path))
    except Exception as exc:  # noqa: BLE001 - datasets raises several types for unreadable dirs
        raise RcsInputError(f"{path}: not a readable HF dataset directory: {str(exc).splitlines()[0]}") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        name = split if split is not None else ("train" if "train" in ds else None)
        if name not in ds:
            wanted = f"split {split!r} not found" if split is not None else "no split given and no 'train' split"
            raise RcsInputError(f"{path}: {wanted}; splits: {', '.join(splits)}")
        ds = ds[name]
        path = storage.join(path, name)
    yield from dataset_records(ds, path)


def dataset_records(ds, where: str) -> Iterator[Record]:
    """The rows of a ``datasets.Dataset`` as records named ``where: row N`` (read in Arrow batches)."""
    columns = list(ds.column_names)
    row = 0
    for batch in ds.with_format("arrow").iter(batch_size=_BATCH_ROWS):
        for data in batch.to_pylist():
            row += 1
            yield Record(data, where, row, columns)


def check_each_file(records: Iterable[Record], check: Callable[[Record], None]) -> Iterator[Record]:
    """Pass ``records`` through, calling ``check(record)`` on the first record of each file (column checks)."""
    last = None
    for record in records:
        if record.file != last:
            check(record)
            last = record.file
        yield record
