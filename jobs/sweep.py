"""Cluster job: the sampling-budget sweep (``benchmarks/sampling_budget_sweep.py``) on the cluster it was submitted to.

Same arguments as the benchmark (``--ns``, ``--ks``, ``--prompts``, ``--config``, ``--out``, ``key=value ...``), plus
``ray.address=auto`` by default. ``--out`` is relative to the job's working directory on the head node: give a shared
filesystem path to keep the results.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \\
        python jobs/sweep.py --config configs/paper/pku_helpsteer_k2.yaml --ks 2 --out /mnt/shared/sweep
"""

import importlib.util
import os
import sys

import _common


def load_sweep():
    """The benchmark module (``benchmarks/`` is not a package)."""
    path = os.path.join(_common.REPO, "benchmarks", "sampling_budget_sweep.py")
    spec = importlib.util.spec_from_file_location("sampling_budget_sweep", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sweep_argv(argv):
    """The benchmark's argv with ``ray.address=auto`` among its overrides unless one sets ``ray.address`` (the
    benchmark takes ``key=value`` overrides anywhere on the line)."""
    argv = list(argv)
    if any(t in ("-h", "--help") for t in argv):
        return argv
    return _common.with_cluster_address(argv)


def main(argv=None):
    """Run the benchmark with ``ray.address=auto`` among its overrides (it starts Ray from config + overrides)."""
    load_sweep().main(sweep_argv(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
