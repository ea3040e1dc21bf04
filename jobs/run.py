"""Cluster job: the sequential RCS workflow over the K stages (resumable).

Same arguments as ``rcs-ray run``, plus ``ray.address=auto`` by default.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/run.py configs/tiny/k2.yaml [key=value ...] [options]
"""

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.main("run"))
