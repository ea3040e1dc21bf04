"""A Hugging Face hub cache built in a temporary directory, laid out as ``huggingface_hub`` leaves it (nothing
downloaded): ``<kind>s--org--name/blobs/<sha256>``, ``snapshots/<commit>/<path>`` as relative symlinks to the blobs,
``refs/main`` holding the commit.

:func:`pku_saferlhf_repo` writes a dataset repository shaped like PKU-SafeRLHF on the Hub: one directory of JSON
lines per generating model, and a README whose YAML front matter declares ``configs:`` (``default`` over every
model's files, one config per model) with ``data_files`` per split. Its rows are the PKU replica's
(:func:`tests.replicas.pku_rows`), each prompt tagged with its config and split so a test can tell them apart.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, List, Union

from tests.replicas import pku_rows

PKU = "PKU-Alignment/PKU-SafeRLHF"
PKU_SUBSETS = {"alpaca-7b": "Alpaca-7B", "alpaca2-7b": "Alpaca2-7B"}  # config name -> directory
PKU_SIZES = {"train": 5, "test": 3}


def use_cache(tmp_path, monkeypatch) -> str:
    """Point the HF caches (hub and ``datasets``) into ``tmp_path``, offline, and work in an empty ``tmp_path/work``
    (where no ``models/`` or ``data/`` exist); returns the hub cache directory."""
    hub = os.path.join(str(tmp_path), "hf", "hub")
    os.makedirs(hub, exist_ok=True)
    os.makedirs(os.path.join(str(tmp_path), "work"), exist_ok=True)
    monkeypatch.setenv("HF_HOME", os.path.join(str(tmp_path), "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", hub)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(os.path.join(str(tmp_path), "work"))
    return hub


def commit_of(repo: str) -> str:
    return hashlib.sha1(repo.encode()).hexdigest()


def put_repo(cache: str, kind: str, repo: str, files: Dict[str, Union[str, bytes]]) -> str:
    """Write ``files`` (path in the repository -> content) as repository ``repo`` (``kind``: model | dataset) of the
    hub cache at ``cache``; returns the snapshot directory."""
    base = os.path.join(cache, f"{kind}s--{repo.replace('/', '--')}")
    commit = commit_of(repo)
    snap = os.path.join(base, "snapshots", commit)
    for rel, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        blob = os.path.join(base, "blobs", hashlib.sha256(data).hexdigest())
        os.makedirs(os.path.dirname(blob), exist_ok=True)
        with open(blob, "wb") as fh:
            fh.write(data)
        link = os.path.join(snap, rel)
        os.makedirs(os.path.dirname(link), exist_ok=True)
        if not os.path.lexists(link):
            os.symlink(os.path.relpath(blob, os.path.dirname(link)), link)
    os.makedirs(os.path.join(base, "refs"), exist_ok=True)
    with open(os.path.join(base, "refs", "main"), "w") as fh:
        fh.write(commit)
    return snap


def put_model(cache: str, repo: str) -> str:
    """A model repository with a config and a tokenizer file (enough to be resolved, not loaded)."""
    return put_repo(
        cache, "model", repo, {"config.json": json.dumps({"model_type": "llama"}), "tokenizer_config.json": "{}"}
    )


def pku_split_rows(config: str, split: str) -> List[dict]:
    """The rows of one generating model's split: PKU replica rows, prompts tagged ``[config/split]``."""
    rows = pku_rows(PKU_SIZES[split])
    for row in rows:
        row["prompt"] = f"{row['prompt']} [{config}/{split}]"
    return rows


def _jsonl(rows: List[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _data_files(pattern: str) -> str:
    return "".join(f"  - split: {s}\n    path: {pattern.format(split=s)}\n" for s in PKU_SIZES)


def pku_saferlhf_repo(cache: str) -> str:
    """PKU-SafeRLHF as a dataset repository in the hub cache (see the module docstring); returns its snapshot."""
    files = {}
    readme = "---\nlicense: cc-by-nc-4.0\nconfigs:\n- config_name: default\n  data_files:\n"
    readme += _data_files("data/*/{split}.jsonl")
    for config, folder in PKU_SUBSETS.items():
        readme += f"- config_name: {config}\n  data_files:\n" + _data_files(f"data/{folder}/{{split}}.jsonl")
        for split in PKU_SIZES:
            files[f"data/{folder}/{split}.jsonl"] = _jsonl(pku_split_rows(config, split))
    files["README.md"] = readme + "---\n# PKU-SafeRLHF (replica)\n"
    files[".gitattributes"] = "*.jsonl filter=lfs diff=lfs merge=lfs -text\n"
    return put_repo(cache, "dataset", PKU, files)
