"""Starting (or joining) Ray with the settings every rcs-ray job needs."""

from __future__ import annotations

import logging
import os

from rcs_ray import interrupts
from rcs_ray.config import RayConfig

log = logging.getLogger(__name__)

# Environment passed on to every Ray worker. Hub access follows the driver's environment (HF_HUB_OFFLINE and the
# cache location pass through): the driver resolves Hub IDs before any worker starts, so workers read the cache.
WORKER_ENV_DEFAULTS = {
    "TOKENIZERS_PARALLELISM": "false",
    # Ray Train's controller polls workers every 2 s by default and each report waits for a poll: with a report
    # per step that dominates small steps.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
}
_STARTED = False  # this process started a local Ray (not joined a cluster): it shuts it down when it ends
# vLLM's CPU build: a small KV cache, no thread binding and an in-process engine core (see docs/usage.md,
# "vLLM on CPU").
# On GPUs vLLM's defaults stand: the engine core runs in its own process and overlaps scheduling with the GPU.
WORKER_ENV_CPU = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
}
PASSTHROUGH = (
    "PYTHONPATH",
    "RAY_AUTH_MODE",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
    "DS_ACCELERATOR",
    "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND",
    "VLLM_ENABLE_V1_MULTIPROCESSING",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_TOKEN",
    "RCS_RAY_CACHE",
)


def worker_env(use_gpu: bool = False) -> dict:
    env = dict(WORKER_ENV_DEFAULTS)
    if not use_gpu:
        env.update(WORKER_ENV_CPU)
    env.update({k: os.environ[k] for k in PASSTHROUGH if k in os.environ})
    return env


def init_ray(cfg: RayConfig, use_gpu: bool = False) -> None:
    """``ray.init`` once: join ``cfg.address`` if set, else the cluster ``RAY_ADDRESS`` names (how a `ray job submit`
    driver finds its cluster), else start a new local Ray (dashboard off, bound to localhost).

    A new local Ray is asked for explicitly (``address="local"``): a bare ``ray.init()`` would join whatever cluster
    ``ray start`` last started on this machine (its address file outlives it), not what ``ray.address: null`` says.
    """
    import ray

    if ray.is_initialized():
        return
    env = worker_env(use_gpu)
    job_env = _job_env_vars()
    if job_env:  # a `ray job submit` driver: the job's runtime_env wins; Ray refuses to merge a key twice
        env = {k: v for k, v in env.items() if k not in job_env}
    global _STARTED
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if not address:
        env = {**_local_ray_env(), **env}
    kwargs = dict(runtime_env={"env_vars": env}, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        _STARTED = True
        if cfg.num_cpus is not None:
            kwargs["num_cpus"] = cfg.num_cpus
        if cfg.object_store_memory_mb is not None:
            kwargs["object_store_memory"] = cfg.object_store_memory_mb << 20
        kwargs["runtime_env"]["worker_process_setup_hook"] = "rcs_ray.worker_setup.local_worker_setup"
        ray.init(address="local", include_dashboard=False, dashboard_host="127.0.0.1", **kwargs)
        interrupts.at_exit_now(kill_started_ray)
    interrupts.reinstall()  # ray.init installs its own SIGTERM handler (sys.exit(15) wherever it lands)
    log.info("ray: %s", ray.cluster_resources())


def _local_ray_env() -> dict:
    """What only a local Ray (one machine, started by this process) sets in its workers. It has no node a cloud can
    preempt, so Ray Train's preemption watcher, an actor started for every fit (about 1 CPU-s each, measured on 2
    cores), has nothing to watch. A joined cluster keeps Ray's default; the user's own setting passes through."""
    key = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    return {key: os.environ.get(key, "0")}


def started_ray() -> bool:
    """Whether this process started the local Ray it uses."""
    return _STARTED


def shutdown_started_ray() -> bool:
    """Shut down the local Ray this process started (its raylet, GCS, dashboard and worker processes); a joined
    cluster is left alone. Returns whether there was one."""
    global _STARTED
    if not _STARTED:
        return False
    import ray

    _STARTED = False
    interrupts.cancel_exit_now(kill_started_ray)
    if ray.is_initialized():
        ray.shutdown()
    return True


def kill_started_ray() -> None:
    """Kill the local Ray this process started (its node processes, which take their workers with them) without
    waiting for anything: the clean-up of a process that must stop at once (:mod:`rcs_ray.interrupts`)."""
    if not _STARTED:
        return
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    if node is not None:
        node.kill_all_processes(check_alive=False, allow_graceful=False)


def data_context():
    """The Ray Data context every rcs-ray dataset runs under: output in input order whatever the actor timing (the
    writer and the feature cache rely on it), and Ray Data's own progress bars off (rcs-ray shows its own)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    return ctx


def _job_env_vars() -> dict:
    """The env_vars of the runtime_env this driver was submitted with (``ray job submit``), else ``{}``."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return {}
