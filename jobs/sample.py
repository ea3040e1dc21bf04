"""Cluster job: sample, score and RC-select one stage's prompts.

Same arguments as ``rcs-ray sample``, plus ``ray.address=auto`` by default.

    ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- \
        python jobs/sample.py configs/tiny/k2.yaml [key=value ...] [options]
"""

import sys

import _common

if __name__ == "__main__":
    sys.exit(_common.main("sample"))
