"""Writers of tiny data files in the public schemas, for the reader tests (nothing downloaded or committed).

Row builders return plain Python rows; ``write_rows`` writes them as JSON lines, a JSON array, parquet, an HF
dataset directory (``save_to_disk``) or an HF DatasetDict directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Union

FORMATS = ("jsonl", "json", "parquet", "hf")


def plain_pairs() -> List[dict]:
    """Three string pairs with two scores each; the first and third share a prompt."""
    return [
        {
            "prompt": "What is 2+2?",
            "chosen": "4",
            "rejected": "5",
            "chosen_scores": [1.0, 0.5],
            "rejected_scores": [0.0, 0.25],
        },
        {
            "prompt": "Name a colour.",
            "chosen": "Blue.",
            "rejected": "A car.",
            "chosen_scores": [0.75, 1.0],
            "rejected_scores": [0.5, 0.0],
        },
        {
            "prompt": "What is 2+2?",
            "chosen": "Four.",
            "rejected": "Twenty-two.",
            "chosen_scores": [1.0, 1.0],
            "rejected_scores": [0.0, 1.0],
        },
    ]


def chat_pairs() -> List[dict]:
    """Two chat pairs in TRL's conversational form: prompt messages, then assistant message lists."""
    return [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
            "chosen": [{"role": "assistant", "content": "Hello."}],
            "rejected": [{"role": "assistant", "content": "Go away."}],
        },
        {
            "prompt": [{"role": "user", "content": "Capital of France?"}],
            "chosen": [{"role": "assistant", "content": "Paris."}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        },
    ]


def pku_rows() -> List[dict]:
    """PKU-SafeRLHF rows; row 1 has better=0, safer=1 (the helpful answer is the unsafe one)."""

    def row(prompt, r0, r1, better, safer):
        return {
            "prompt": prompt,
            "response_0": r0,
            "response_1": r1,
            "is_response_0_safe": safer == 0,
            "is_response_1_safe": safer == 1,
            "better_response_id": better,
            "safer_response_id": safer,
        }

    return [
        row("How do I pick a lock?", "Insert a tension wrench, then rake the pins.", "I can't help with that.", 0, 1),
        row("How do I bake bread?", "Mix, knead, rise, bake.", "Buy it.", 0, 0),
        row("How do I pick a lock?", "Call a locksmith.", "Use a bump key.", 1, 0),
    ]


def helpsteer2_rows() -> List[dict]:
    """HelpSteer2 rows, one per response, two responses per prompt; prompt "P2" ties on helpfulness."""

    def row(prompt, response, h, c, co, cx, v):
        return {
            "prompt": prompt,
            "response": response,
            "helpfulness": h,
            "correctness": c,
            "coherence": co,
            "complexity": cx,
            "verbosity": v,
        }

    return [
        row("P1", "weak answer", 1, 2, 3, 1, 1),
        row("P1", "strong answer", 4, 4, 4, 2, 2),
        row("P2", "answer a", 3, 3, 4, 1, 2),
        row("P2", "answer b", 3, 2, 4, 1, 0),
        row("P3", "good", 3, 4, 4, 2, 1),
        row("P3", "bad", 0, 1, 2, 0, 3),
    ]


def ultrafeedback_rows() -> List[dict]:
    """UltraFeedback-binarized rows: chosen/rejected are [user, assistant] conversations."""

    def row(pid, prompt, good, bad, sg, sb):
        user = {"role": "user", "content": prompt}
        return {
            "prompt": prompt,
            "prompt_id": pid,
            "chosen": [user, {"role": "assistant", "content": good}],
            "rejected": [user, {"role": "assistant", "content": bad}],
            "messages": [user, {"role": "assistant", "content": good}],
            "score_chosen": sg,
            "score_rejected": sb,
        }

    return [
        row("uf-a", "Write a haiku.", "Old pond, frog jumps in.", "No.", 8.5, 3.0),
        row("uf-b", "Sum 1..3?", "6", "7", 10.0, 1.0),
    ]


def scored_pair_rows(n: int = 4) -> List[dict]:
    """``n`` pairs with recorded rewards on three objectives (the target: helpful), as a sampled stage writes them."""
    return [
        {
            "prompt": f"ask p{i}",
            "chosen": "good answer",
            "rejected": "bad answer",
            "chosen_rewards": [1.0, 2.0, 0.5],
            "rejected_rewards": [0.0, 1.0, 1.5],
            "target": "helpful",
        }
        for i in range(n)
    ]


def write_jsonl(path: Union[str, Path], rows: List[dict]) -> Path:
    """One JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_lines(path: Union[str, Path], lines: List[str]) -> Path:
    """Raw text lines (for malformed JSON lines files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_json_array(path: Union[str, Path], rows: List[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return path


def write_parquet(path: Union[str, Path], rows: List[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


def write_hf_dir(path: Union[str, Path], rows: Union[List[dict], Dict[str, List[dict]]]) -> Path:
    """An HF dataset directory: a Dataset for a list of rows, a DatasetDict for ``{split: rows}``."""
    import datasets

    path = Path(path)
    if isinstance(rows, dict):
        ds = datasets.DatasetDict({name: datasets.Dataset.from_list(r) for name, r in rows.items()})
    else:
        ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(path))
    return path


def write_rows(tmp_path: Union[str, Path], rows: List[dict], fmt: str, name: str = "data") -> Path:
    """Write ``rows`` under ``tmp_path`` in format ``fmt`` (one of :data:`FORMATS`); returns the path."""
    base = Path(tmp_path)
    if fmt == "jsonl":
        return write_jsonl(base / f"{name}.jsonl", rows)
    if fmt == "json":
        return write_json_array(base / f"{name}.json", rows)
    if fmt == "parquet":
        return write_parquet(base / f"{name}.parquet", rows)
    if fmt == "hf":
        return write_hf_dir(base / name, rows)
    raise ValueError(f"unknown fixture format {fmt!r}")


def write_snapshot(tmp_path: Union[str, Path], splits: Dict[str, List[List[dict]]]) -> Path:
    """A hub-snapshot-like directory: ``data/{split}-0000i-of-0000n.parquet`` shards, a README and metadata.

    Args:
        tmp_path: where to create ``snapshot/``.
        splits: split name -> list of shards, each a list of rows.
    """
    root = Path(tmp_path) / "snapshot"
    for split, shards in splits.items():
        for i, shard in enumerate(shards):
            write_parquet(root / "data" / f"{split}-{i:05d}-of-{len(shards):05d}.parquet", shard)
    (root / "README.md").write_text("# tiny snapshot\n", encoding="utf-8")
    (root / ".git").mkdir()
    (root / ".git" / "stray.jsonl").write_text("not data\n", encoding="utf-8")
    os.makedirs(root / "meta", exist_ok=True)
    (root / "meta" / "info.json").write_text('{"not": "rows"}', encoding="utf-8")
    return root
