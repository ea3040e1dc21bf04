"""Cluster job: train one stage (DPO / MODPO / SPO, Ray Train + DeepSpeed).

Same arguments as ``rcs-ray train``, plus ``ray.address=auto`` by default.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/train.py configs/tiny/k2.yaml [key=value ...] [options]
"""

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.main("train"))
