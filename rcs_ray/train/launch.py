"""Launching a training stage on Ray Train, refusing to resume other inputs' checkpoints, and exporting the result.

- :func:`check_resumable` -- the run's fingerprint (``run.json``) against the one its checkpoints were trained with;
- :func:`launch` -- ``TorchTrainer`` over :func:`rcs_ray.train.loop.train_loop_per_worker` on the features;

The export of the result (the HF model, ``metrics.jsonl``) is :mod:`rcs_ray.train.export`.

Resume: the Ray Train run is named ``<name>-stage<k>`` under ``<out_dir>/checkpoints``. A failed worker group restarts
from the latest checkpoint (``train.max_failures``); running the same command again after a crash continues from
the latest checkpoint of that run. Both give exactly the weights of an uninterrupted run (tested).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import List, Optional

from ray.train import UserCallback

from rcs_ray import interrupts, storage
from rcs_ray.config import TrainConfig
from rcs_ray.errors import RcsInputError, input_error_in
from rcs_ray.fingerprints import TRAIN_RUN_ONLY, schedule_keys
from rcs_ray.run_layout import RUN_FILE, TrainFiles

log = logging.getLogger(__name__)

FAIL_ENV = "RCS_RAY_TEST_FAIL_AT_STEPS"  # test hook: "3,5": the last worker raises once before each step


def resume_free(t: TrainConfig):
    """Settings that may change between a run and its resumption (they change neither batches nor weights)."""
    return TRAIN_RUN_ONLY + schedule_keys(t)


@dataclass(frozen=True)
class LaunchSpec:
    """What the workers train: the policy to start from, its tokenizer's pad id, the loss's hyperparameters, how the
    policy loads, where rank 0 reports its metrics (:class:`rcs_ray.tracking.TrackingSettings` dict), and whether the
    workers compute the reference log-probs (:mod:`rcs_ray.train.worker_refs`)."""

    policy: str
    pad_token_id: int
    loss_params: dict
    trust_remote_code: bool = False
    attn_implementation: Optional[str] = None
    tracking: Optional[dict] = None
    reference_key: Optional[str] = None  # set: the workers compute the reference log-probs, cached under this key


class ProgressLog(UserCallback):
    """Ray Train callback (runs in the controller): one log line per reported step."""

    def after_report(self, run_context, metrics, checkpoint):
        m = metrics[0] if metrics else {}
        if "loss" in m:
            print(
                f"[train] step {m['step']}/{m['total_steps']} loss {m['loss']:.4f} "
                f"acc {m['rewards/accuracy']:.3f} margin {m['rewards/margins']:+.4f} lr {m['lr']:.2e} "
                f"{m['tokens_per_second']:.0f} tok/s" + ("  [checkpoint]" if checkpoint else ""),
                flush=True,
            )

    def after_exception(self, run_context, worker_exceptions):
        pass


def check_resumable(
    local: str, home: str, run_name: str, t: TrainConfig, spec: LaunchSpec, features_key: Optional[str]
) -> None:
    """Refuse to resume checkpoints of a run trained on other inputs; record this run's inputs otherwise.

    The fingerprint is the feature cache key (pairs, tokenizer, reference models) plus the policy, the loss's
    hyperparameters and the training settings that shape the weights. A finished run with the same fingerprint is
    resumed (and re-exported) as it is. ``local``: where ``run.json`` is; ``home``: where the checkpoints live (a
    URI or ``local``).
    """
    fingerprint = json.loads(
        json.dumps(
            {
                "features": features_key,
                "policy": spec.policy,
                "loss_kwargs": spec.loss_params,
                "train": {k: v for k, v in dataclasses.asdict(t).items() if k not in resume_free(t)},
            }
        )
    )
    path = os.path.join(local, RUN_FILE)
    if storage.isdir(TrainFiles(home).run_checkpoints(run_name)) and os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        if old != fingerprint:
            diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
            raise RcsInputError(
                f"{home} holds checkpoints of run {run_name!r} trained with other inputs ({diff} "
                f"differ): remove it, pass another --out, or change 'name'"
            )
    storage.write_text(path, json.dumps(fingerprint, indent=1))


def _interruptible(base):
    """``base`` (Ray Train's TorchTrainer) that leaves signals to rcs-ray (:mod:`rcs_ray.interrupts`) and keeps the
    run's controller, so a signal during ``fit`` aborts it (Ray Train's own handler would install itself for SIGINT
    only, exit 0 on a second one, and stay installed after ``fit``)."""

    class Trainer(base):
        controller = None

        def _register_sigint_handler(self, controller):  # Ray Train 2.60's hook, called inside fit()
            self.controller = controller
            if interrupts.received() is not None:  # the signal came while the controller started
                self.abort(interrupts.received())

        def abort(self, signum) -> bool:
            """Abort the run in the background (a signal handler must not block); False before the controller
            exists (the signal is raised then)."""
            import ray

            controller = self.controller
            if controller is None:
                return False

            def stop():
                try:
                    ray.get(controller.abort.remote(), timeout=30)
                except Exception:  # noqa: BLE001 - the controller may already be gone
                    pass

            threading.Thread(target=stop, name="rcs-ray-train-abort", daemon=True).start()
            return True

    return Trainer


SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train 2.60's record of the checkpoints it reported


def remove_orphan_checkpoints(home: str, run_name: str) -> List[str]:
    """Delete checkpoint directories of run ``run_name`` that Ray Train's snapshot does not list (a driver killed
    while its workers were saving leaves one behind: it would never be resumed from or cleaned); returns their names.
    """
    run_dir = TrainFiles(home).run_checkpoints(run_name)
    if not storage.isdir(run_dir):
        return []
    names = sorted(
        {
            rel.split("/", 1)[0]
            for rel, _, _ in storage.list_files(run_dir)
            if rel.startswith("checkpoint_") and "/" in rel
        }
    )
    snapshot = storage.join(run_dir, SNAPSHOT)
    known = storage.read_text(snapshot) if storage.isfile(snapshot) else ""
    orphans = [n for n in names if n not in known]
    for name in orphans:
        log.warning("removing checkpoint %s of %s: no record of it (left by an interrupted run)", name, run_name)
        storage.remove(storage.join(run_dir, name))
    return orphans


def check_checkpoints(home: str, run_name: str) -> None:
    """The checkpoints a resumed run would read (Ray Train's snapshot and every checkpoint it lists) must be
    readable: a damaged one stops here with one line naming it and the remedy, not inside Ray Train's workers.

    Raises:
        RcsInputError: the snapshot or a listed checkpoint file cannot be read.
    """
    from rcs_ray.storage import integrity

    run_dir = TrainFiles(home).run_checkpoints(run_name)
    snapshot = storage.join(run_dir, SNAPSHOT)
    if not storage.isfile(snapshot):
        return
    remedy = f"remove {run_dir} to train this stage from its start (or restore the file)"
    why = integrity.problem(snapshot)
    if why is not None:
        raise RcsInputError(f"{snapshot} cannot be read ({why}): the training run cannot resume; {remedy}")
    names = [
        r.get("checkpoint_dir_name")
        for r in json.loads(storage.read_text(snapshot)).get("checkpoint_results", [])
        if isinstance(r, dict)
    ]
    for name in filter(None, names):
        checkpoint = storage.join(run_dir, name)
        if not storage.isdir(checkpoint):
            raise RcsInputError(
                f"{checkpoint} is missing, but {snapshot} lists it: the training run cannot resume from it; {remedy}"
            )
        for rel, _, _ in storage.list_files(checkpoint):
            why = integrity.problem(storage.join(checkpoint, rel))
            if why is not None:
                raise RcsInputError(
                    f"{storage.join(checkpoint, rel)} cannot be read ({why}): the training run "
                    f"cannot resume from it; {remedy}"
                )


def launch(
    features, t: TrainConfig, spec: LaunchSpec, run_name: str, home: str, marker_dir: str, progress: bool = True
):
    """Train on ``features`` with ``TorchTrainer`` (``t.num_workers`` workers, DeepSpeed inside); returns Ray Train's
    ``Result``. Checkpoints go to ``<home>/checkpoints/<run_name>`` (``home`` may be a URI).

    Raises:
        RcsInputError: a worker refused its input (e.g. a policy that would load with random weights).
        The workers' error, when training fails otherwise.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from rcs_ray.train.loop import train_loop_per_worker

    remove_orphan_checkpoints(home, run_name)
    check_checkpoints(home, run_name)

    # Every worker reads the whole (tokenized) table from one object in the store: no Ray Data dataset, so no
    # DatasetManager actor and no streaming execution in each worker (a no-op fit here: 1.6 s less with one worker,
    # 0.4 s with two; docs/architecture.md).
    loop_config = {**_loop_config(t, spec, run_name, home, marker_dir), "features": ray.put(features)}
    resources = worker_resources(t)
    trainer = _interruptible(TorchTrainer)(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=t.backend) if t.backend else None,
        scaling_config=ScalingConfig(num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources),
        run_config=RayRunConfig(
            name=run_name,
            storage_path=TrainFiles(home).checkpoints,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            callbacks=[ProgressLog()] if progress else None,
        ),
    )
    with interrupts.handling(), interrupts.deferred(trainer.abort):
        try:
            result = trainer.fit()
        except Exception as exc:
            interrupts.check()  # the aborted controller dies: that is the signal
            full = storage.disk_error_in(exc, TrainFiles(home).checkpoints)  # a checkpoint on a full disk
            if full is not None:
                raise full from None
            wrong = input_error_in(exc)  # a worker's one-line input error: the CLI's exit 2
            if wrong is not None:
                raise wrong from None
            raise
        interrupts.check()
    if result.error is not None:
        raise input_error_in(result.error) or result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name} produced no checkpoint")
    return result


def worker_resources(t) -> dict:
    """The Ray resources of one training worker: a CPU, a GPU with ``use_gpu``, and ``resources_per_worker``."""
    return {"CPU": 1, **({"GPU": 1} if t.use_gpu else {}), **t.resources_per_worker}


def _loop_config(t: TrainConfig, spec: LaunchSpec, run_name: str, home: str, marker_dir: str) -> dict:
    """The workers' ``train_loop_config`` (see :func:`rcs_ray.train.loop.train_loop_per_worker`): the train settings,
    the launch spec, and the test hook (the steps ``FAIL_ENV`` names, its markers and snapshot)."""
    fail_at = os.environ.get(FAIL_ENV, "")
    return {
        "train": dataclasses.asdict(t),
        "policy": spec.policy,
        "pad_token_id": spec.pad_token_id,
        "loss_kwargs": spec.loss_params,
        "trust_remote_code": spec.trust_remote_code,
        "attn_implementation": spec.attn_implementation,
        "tracking": spec.tracking,
        "reference": None
        if spec.reference_key is None
        else {
            "key": spec.reference_key,
            "cache_dir": home,
            "batch_size": t.batch_size,
            "model": spec.policy,
        },
        "fail_at_steps": [int(x) for x in fail_at.split(",") if x.strip()],
        "fail_marker_dir": marker_dir,
        "fail_snapshot": None
        if storage.is_uri(home)
        else storage.join(TrainFiles(home).run_checkpoints(run_name), SNAPSHOT),
    }
