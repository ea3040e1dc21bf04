"""Rule rewards used by the pipeline tests (imported by Ray workers as tests.ray.rules:<fn>)."""

import math
import os

from rcs_ray.tinyworld.rewards import harmless

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIE_MARKER = os.path.join(REPO, ".cache", "test-die-once.done")


def nan_for_quickly(prompt, response):
    """harmless, but NaN for prompts asking to answer quickly."""
    return math.nan if "quickly" in prompt else harmless(prompt, response)


def harmless_die_once(prompt, response):
    """harmless, but the first call anywhere kills its worker process (a crashed scorer actor)."""
    if not os.path.exists(DIE_MARKER):
        os.makedirs(os.path.dirname(DIE_MARKER), exist_ok=True)
        with open(DIE_MARKER, "w") as fh:
            fh.write("died\n")
        os._exit(1)
    return harmless(prompt, response)
