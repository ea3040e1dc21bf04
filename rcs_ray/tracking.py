"""Experiment tracking: ``train.report_to: [tensorboard, mlflow, wandb]``.

A workflow is one group of runs: ``stage1``, ``stage2``, ... (training metrics per step under ``train/*``, the stage's
sampling stats under ``sampling/*``, the stage's train config as parameters) and ``eval`` (the evaluation's
metrics). Where they go (:class:`rcs_ray.config.TrackingConfig`):

- **TensorBoard**: event files in ``<tracking.dir>/tensorboard/<name>/<run>`` (``tensorboard --logdir`` on it);
- **MLflow**: experiment ``tracking.project`` at ``tracking.mlflow_uri`` (default a local file store in
  ``<tracking.dir>/mlruns``): one parent run per workflow, a nested run per stage;
- **W&B**: project ``tracking.project``, group = the workflow, one run per stage, files in ``tracking.dir``
  (``tracking.wandb_mode``: offline by default, ``wandb sync`` uploads it later; ``tracking.wandb_entity``).

A key the config leaves null takes the tracker's standard environment variable of the process that calls
:func:`settings_for` (the driver; the resolved values travel to the train workers), else the default:
``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME`` (default ``name``), ``WANDB_PROJECT`` (default ``name``),
``WANDB_DIR`` (default ``tracking.dir``), ``WANDB_MODE`` (default ``offline``), ``WANDB_ENTITY`` (default the
account's). A value set in the config always wins over the variable.

The default ``tracking.dir`` is ``<output_dir>/tracking``. Runs are found again by a key of the output directory and
the run name, so a resumed or rerun stage appends to its run instead of starting another. On a cluster, rank 0 of
the train workers logs the per-step metrics: point ``tracking.dir`` at shared storage (or use an MLflow server /
W&B online) to see them from the head node. The trackers are optional dependencies (``pip install
'rcs-ray[tracking]'``); a missing one is a clear error before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rcs_ray.errors import RcsInputError

log = logging.getLogger(__name__)

MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


@dataclass(frozen=True)
class TrackingSettings:
    """Everything a process needs to open one run (picklable: it travels to the train workers as a dict)."""

    backends: List[str]
    dir: str
    group: str  # the workflow's name
    key: str  # the workflow's identity: name + output dir
    run: str  # stage1 | stage2 | ... | eval
    mlflow_experiment: str
    wandb_project: str
    mlflow_uri: Optional[str] = None  # None: a file store in <dir>/mlruns
    wandb_dir: Optional[str] = None  # None: dir
    wandb_mode: str = "offline"
    wandb_entity: Optional[str] = None  # None: the W&B account's default entity
    params: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": "[1, 2]"}`` (scalars kept, lists as JSON)."""
    out: Dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    out[key] = json.dumps(d) if isinstance(d, (list, tuple)) else d
    return out


def numbers(metrics: Dict[str, Any], prefix: str = "") -> Dict[str, float]:
    """The finite numeric leaves of a nested dict, flattened with ``/`` (what a tracker can plot); characters MLflow
    refuses in a name (e.g. ``>`` in ``sampled>original_rejected``) become ``_``."""
    out: Dict[str, float] = {}
    for k, v in (metrics or {}).items():
        name = re.sub(r"[^\w\-. :/]", "_", f"{prefix}{k}")
        if isinstance(v, dict):
            out.update(numbers(v, f"{name}/"))
        elif isinstance(v, bool):
            out[name] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(v):
            out[name] = float(v)
    return out


def check_installed(backends: List[str]) -> None:
    """Raises RcsInputError naming a tracker whose package is missing."""
    import importlib.util

    for b in backends:
        if importlib.util.find_spec(MODULES[b]) is None:
            raise RcsInputError(
                f"train.report_to: {b!r} needs the {MODULES[b]} package: pip install 'rcs-ray[tracking]'"
            )


def _env(name: str) -> Optional[str]:
    """An environment variable's value; unset and empty are both None."""
    return os.environ.get(name) or None


def settings_for(
    cfg, run: str, report_to: Optional[List[str]] = None, params: Optional[dict] = None
) -> Optional[TrackingSettings]:
    """The settings of run ``run`` of workflow ``cfg`` (None when nothing is tracked).

    ``report_to`` defaults to ``cfg.train.report_to``; ``params`` are logged as the run's parameters (flattened).
    Each ``cfg.tracking`` key that is null falls back to its tracker's environment variable, then to the default
    (module docstring).
    """
    from rcs_ray import storage

    backends = list(cfg.train.report_to if report_to is None else report_to)
    if not backends:
        return None
    check_installed(backends)
    t = cfg.tracking
    out = cfg.output_dir
    where = os.path.abspath(
        t.dir
        or (
            os.path.join(storage.absolute(out), "tracking")
            if not storage.is_uri(out)
            else os.path.join(os.path.expanduser("~/.cache/rcs_ray/tracking"), cfg.name)
        )
    )
    key = hashlib.sha256(f"{cfg.name}\0{storage.absolute(out)}".encode()).hexdigest()[:10]
    wandb_dir = where if t.dir else os.path.abspath(os.path.expanduser(_env("WANDB_DIR") or where))
    return TrackingSettings(
        backends=backends,
        dir=where,
        group=cfg.name,
        key=key,
        run=run,
        mlflow_experiment=t.project or _env("MLFLOW_EXPERIMENT_NAME") or cfg.name,
        wandb_project=t.project or _env("WANDB_PROJECT") or cfg.name,
        mlflow_uri=t.mlflow_uri or _env("MLFLOW_TRACKING_URI") or "file://" + os.path.join(where, "mlruns"),
        wandb_dir=wandb_dir,
        wandb_mode=t.wandb_mode or _env("WANDB_MODE") or "offline",
        wandb_entity=t.wandb_entity or _env("WANDB_ENTITY"),
        params=flatten(params or {}),
    )


# ------------------------------------------------------------------------------------------------ backends
class _TensorBoard:
    def __init__(self, s: TrackingSettings):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=os.path.join(s.dir, "tensorboard", s.group, s.run))
        if s.params:
            self.writer.add_text("params", "\n".join(f"    {k}: {v}" for k, v in sorted(s.params.items())))

    def log(self, metrics: Dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class _MLflow:
    """MLflow's client API (no global active run: safe in Ray workers and beside a user's own runs)."""

    def __init__(self, s: TrackingSettings):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = s.mlflow_uri or "file://" + os.path.join(s.dir, "mlruns")
        if uri.startswith("file:") or "://" not in uri:  # a plain path is a file store too
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x asks for it explicitly
        self.client = c = MlflowClient(tracking_uri=uri)
        exp = c.get_experiment_by_name(s.mlflow_experiment)
        exp_id = exp.experiment_id if exp is not None else c.create_experiment(s.mlflow_experiment)
        parent = self._find(exp_id, f"tags.`rcs_ray.key` = '{s.key}' and tags.`rcs_ray.run` = 'workflow'")
        if parent is None:
            parent = c.create_run(
                exp_id, run_name=s.group, tags={"rcs_ray.key": s.key, "rcs_ray.run": "workflow"}
            ).info.run_id
        run = self._find(exp_id, f"tags.`rcs_ray.key` = '{s.key}' and tags.`rcs_ray.run` = '{s.run}'")
        if run is None:
            run = c.create_run(
                exp_id, run_name=s.run, tags={"rcs_ray.key": s.key, "rcs_ray.run": s.run, "mlflow.parentRunId": parent}
            ).info.run_id
        else:
            c.update_run(run, status="RUNNING")
        have = c.get_run(run).data.params  # params are write-once: log the ones not there yet
        params = [Param(k, str(v)[:6000]) for k, v in s.params.items() if k not in have]
        for i in range(0, len(params), 100):
            c.log_batch(run, params=params[i : i + 100])
        self.run_id = run

    def _find(self, exp_id: str, query: str) -> Optional[str]:
        runs = self.client.search_runs([exp_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def log(self, metrics: Dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class _WandB:
    def __init__(self, s: TrackingSettings):
        import wandb

        where = s.wandb_dir or s.dir
        os.makedirs(where, exist_ok=True)
        self.run = wandb.init(
            project=s.wandb_project,
            entity=s.wandb_entity,
            group=s.group,
            name=f"{s.group}/{s.run}",
            id=f"{s.key}-{s.run}",
            resume="allow",
            mode=s.wandb_mode,
            dir=where,
            config=s.params,
            reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )
        if s.params:
            self.run.config.update(s.params, allow_val_change=True)

    def log(self, metrics: Dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


BACKENDS = {"tensorboard": _TensorBoard, "mlflow": _MLflow, "wandb": _WandB}


class Tracker:
    """The open runs of one :class:`TrackingSettings` (one per backend); a no-op without settings."""

    def __init__(self, settings: Optional[TrackingSettings]):
        self.backends = [BACKENDS[b](settings) for b in settings.backends] if settings else []

    @classmethod
    def open(cls, settings) -> "Tracker":
        if isinstance(settings, dict):
            settings = TrackingSettings(**settings)
        return cls(settings)

    @classmethod
    def none(cls) -> "Tracker":
        return cls(None)

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        values = numbers(metrics)
        for b in self.backends:
            try:
                b.log(values, step)
            except Exception as exc:  # noqa: BLE001 - a tracker's hiccup never stops a training run
                log.warning("tracking: %s failed to log step %d: %s", type(b).__name__.strip("_"), step, exc)

    def close(self) -> None:
        for b in self.backends:
            b.close()
        self.backends = []


def log_once(settings: Optional[TrackingSettings], metrics: Dict[str, Any], step: int = 0) -> None:
    """Open the run, log ``metrics`` (nested dicts flattened with ``/``) at ``step``, close it."""
    if settings is None:
        return
    tracker = Tracker(settings)
    try:
        tracker.log(metrics, step)
    finally:
        tracker.close()
