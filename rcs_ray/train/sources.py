"""Where a stage's training pairs come from: a pairs file, the stage's sampling output, or its dataset as it is.

Everything here runs in the driver before any model is loaded or any Ray job starts, so bad input stops early with
one :class:`~rcs_ray.errors.RcsInputError` line that names the file, row and column.
"""

from __future__ import annotations

from typing import Optional

from rcs_ray import storage
from rcs_ray.config import DataConfig, RunConfig, stage_objectives
from rcs_ray.data.pairs import TEXT_COLUMNS, PairSet, dataset_is_chat, pairs_from_preferences, read_pairs
from rcs_ray.errors import RcsInputError
from rcs_ray.run_layout import RunLayout
from rcs_ray.user_paths import resolve_data, resolve_path


def stage_pairs(cfg: RunConfig, k: int, pairs: Optional[str] = None) -> PairSet:
    """Stage ``k``'s training pairs: ``pairs`` if given; else the sampling output for a stage that samples, else the
    stage's dataset as it is (stage 1 trains on D1), followed by its ``mix`` datasets.

    Raises:
        RcsInputError: a missing pairs file (naming the command that writes it), the readers' errors.
    """
    st = cfg.stages[k] if cfg.stages else None
    target = st.objective if st else None
    if pairs is None and st is not None and st.sample:
        pairs = RunLayout(cfg.output_dir).stage(k).sampling.pairs
        if not storage.isfile(pairs):
            raise RcsInputError(
                f"stage {k + 1} trains on sampled pairs and {pairs} does not exist: run "
                f"`rcs-ray sample` for it first, or pass --pairs"
            )
    if pairs is not None:
        pairs = resolve_path(pairs, cfg.tinyworld)
        if storage.is_uri(pairs):
            storage.require(pairs, "--pairs", "pairs file")
        rows = read_pairs(pairs, target=target)
        names = [o.name for o in stage_objectives(cfg, k)] if st is not None else []
        if (
            names
            and rows.reward_names
            and rows.reward_names[0].startswith("objective_")
            and len(names) == len(rows.reward_names)
        ):
            rows.reward_names = names  # a file that does not name its rewards: the stage's scored objectives
        return rows
    if st is None:
        raise RcsInputError("no stages in the config: pass --pairs")
    rows = _dataset(cfg, st.data, f"stages.{k}.data", target)
    if st.mix:
        rows = _mixed(cfg, k, rows)
    return rows


def _dataset(cfg: RunConfig, data: DataConfig, key: str, target: Optional[str]) -> PairSet:
    from rcs_ray.data import read_preferences

    data = resolve_data(data, cfg.tinyworld, key=f"{key}.path")
    if not data.path:
        raise RcsInputError(f"{key}.path is required (or pass --pairs)")
    pref = read_preferences(data)
    names = list(pref.objectives)
    if names and target not in names and len(names) == len(cfg.objectives):
        names = cfg.objective_names  # generic objective_0.. names, in config order
    return pairs_from_preferences(pref.rows, names, pref.source, target=target)


def _mixed(cfg: RunConfig, k: int, rows: PairSet) -> PairSet:
    """Stage ``k``'s dataset followed by its ``mix`` datasets (the "mixed" baseline). Reward columns are kept only when
    every part carries the same objectives (DPO does not use them)."""
    parts = [rows] + [
        _dataset(cfg, extra, f"stages.{k}.mix.{j}", rows.target) for j, extra in enumerate(cfg.stages[k].mix)
    ]
    same = all(p.reward_names == rows.reward_names for p in parts)
    out = [r if same else {c: r[c] for c in TEXT_COLUMNS} for p in parts for r in p.rows]
    dataset_is_chat([r["prompt"] for r in out], " + ".join(p.source for p in parts))
    return PairSet(
        rows=out,
        reward_names=rows.reward_names if same else [],
        target=rows.target,
        source=" + ".join(p.source for p in parts),
    )
