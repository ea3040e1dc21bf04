"""A dataset's config (``stages.N.data``, ``stages.N.mix.M``, ``eval.prompts``): where it is and how its columns map
onto prompt / chosen / rejected; read by :mod:`rcs_ray.data`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from rcs_ray.config.fields import Checker, doc_field
from rcs_ray.config.path_checks import validate_data_source

DATA_FORMATS = ("auto", "jsonl", "parquet", "hf")
PRESETS = ("pku_saferlhf", "helpsteer2", "ultrafeedback_binarized")  # rcs_ray.data.presets (tied by a test)


@dataclass
class DataConfig:
    """Where a stage's data comes from and how its columns map onto prompt / chosen / rejected."""

    path: Optional[str] = doc_field(
        None,
        "jsonl | parquet | HF dataset dir (load_from_disk) | dir of files | a Hub "
        "dataset: hf://org/name[@revision] (bare org/name: local if it exists).",
    )
    format: str = doc_field("auto", "auto | jsonl | parquet | hf.")
    preset: Optional[str] = doc_field(
        None, "A known dataset's column map: pku_saferlhf | helpsteer2 | ultrafeedback_binarized."
    )
    objective: Optional[str] = doc_field(None, 'With a preset: which label defines chosen/rejected (e.g. "harmless").')
    columns: Dict[str, str] = doc_field(
        factory=dict, doc="Canonical name (prompt, chosen, rejected, ...) -> column in the file."
    )
    score_names: Optional[List[str]] = doc_field(
        None, "Names of the K generic per-objective scores (else objective_0, objective_1, ...)."
    )
    split: Optional[str] = doc_field(None, "For a DatasetDict directory or a Hub dataset (default: train).")
    config_name: Optional[str] = doc_field(None, "A Hub dataset: which of its configs (load_dataset's name).")
    data_files: Any = doc_field(
        None,
        "A Hub dataset: files (globs) in the repository, for split train, or "
        "{split: file(s)} (load_dataset's data_files).",
    )
    limit: Optional[int] = doc_field(None, "Read at most this many rows.")
    on_bad_row: str = doc_field("error", "error | skip (skips are counted and reported).")

    def check(self, c: Checker, key: str) -> None:
        """Choices, the Hub fields against the path (:mod:`rcs_ray.config.path_checks`), the row limit.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        c.choice(f"{key}.format", self.format, DATA_FORMATS)
        validate_data_source(c, key, self)
        if self.preset is not None:
            c.choice(f"{key}.preset", self.preset, PRESETS)
        c.choice(f"{key}.on_bad_row", self.on_bad_row, ("error", "skip"))
        if self.limit is not None:
            c.at_least(f"{key}.limit", self.limit, 1)
