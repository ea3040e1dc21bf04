"""Is a file a step left behind whole? Cheap checks that read no data (a parquet footer, a JSON document, a
torch zip's central directory, a safetensors header), and setting damaged state aside with a warning.

A full disk, a sync tool or a hand edit can leave a manifest, a stats file, a feature cache or a checkpoint that
cannot be read. rcs-ray then either redoes the step with a warning naming what it set aside (manifests, outputs
the manifest lists, the feature cache, the run lock) or stops with one line naming the file and the remedy
(checkpoints, where redoing means losing training).
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zipfile
from typing import Optional

from rcs_ray.storage.files import is_uri, open_binary, path_kind, read_text

log = logging.getLogger(__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def problem(path: str) -> Optional[str]:
    """Why ``path`` (a file or directory, local or URI) cannot be read, or None when it looks whole. Missing is a
    problem too. Parquet: the footer; JSON / JSON lines: parsed; a model directory: its ``config.json``; a torch
    file: its zip directory; safetensors: the header against the file size."""
    kind = path_kind(path)
    if kind is None:
        return "missing"
    if kind == "dir":  # a model directory: its config and weight headers
        names = [f"{path.rstrip('/')}/config.json"] if path_kind(f"{path.rstrip('/')}/config.json") == "file" else []
        if not is_uri(path):
            names += sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
        return next((f"{os.path.basename(n)}: {why}" for n in names if (why := problem(n)) is not None), None)
    try:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            with open_binary(path) as fh:
                pq.read_metadata(fh)
        elif path.endswith(".json"):
            json.loads(read_text(path))
        elif path.endswith(".jsonl"):
            for line in read_text(path).splitlines():
                if line.strip():
                    json.loads(line)
        elif path.endswith((".pt", ".bin")) and not is_uri(path):
            with zipfile.ZipFile(path):
                pass
        elif path.endswith(".safetensors") and not is_uri(path):
            _check_safetensors(path)
    except Exception as exc:  # noqa: BLE001 - any reader error means "cannot be read"
        return _first_line(exc)
    return None


def _check_safetensors(path: str) -> None:
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = struct.unpack("<Q", head)[0]
        if 8 + n > size:
            raise ValueError(f"header of {n} bytes in a file of {size}")
        header = json.loads(fh.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise ValueError(f"truncated: the tensors end at byte {8 + n + end}, the file has {size}")


def set_aside(path: str, what: str, consequence: str) -> Optional[str]:
    """Move a damaged ``path`` out of the way (``<path>.damaged-<time>``, kept for inspection; on an object store it
    is deleted) and warn, naming it and what happens instead. Returns where it went (None: deleted)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if is_uri(path):
        from rcs_ray.storage.mirror import remove

        remove(path)
        kept = None
    else:
        kept = f"{path}.damaged-{stamp}"
        os.replace(path, kept)
    note = f" (kept as {kept})" if kept else ""
    log.warning("%s %s cannot be read: set aside%s; %s", what, path, note, consequence)
    print(f"warning: {what} {path} cannot be read: set aside{note}; {consequence}", flush=True)
    return kept
