"""The tiny world: an embedded, locally built default world so the whole system runs on a laptop CPU.

Prompts ``ask <topic> <question> <style>`` (2,048), responses made of HELP / HARM / filler words, three rule
objectives in stage order ``harmless``, ``helpful``, ``concise`` that conflict (see :mod:`.world` and
:mod:`.rewards`), a byte-level BPE tokenizer with a chat template, a tiny Llama policy pretrained on the world's
generator, a 3-head regression reward model and per-stage preference datasets (see :mod:`.build`).

Typical use::

    from rcs_ray.config import TinyWorldConfig
    from rcs_ray.tinyworld import ensure_world, resolve
    paths = ensure_world(TinyWorldConfig())          # builds once (~1-2 min on 2 cores), then cached
    policy_dir = resolve("tinyworld:policy", cfg)     # any other string is returned unchanged

Sampling here: ``rcs_ray.tinyworld.generate.generate(policy_dir, prompts, n, ...)`` (HF ``generate``).
Rule objectives for configs: ``rcs_ray.tinyworld.rewards:harmless`` (``helpful``, ``concise``, and ``*_fine``).
The light parts (world, rewards) import only numpy; the build imports torch/transformers when called.
"""

from rcs_ray.tinyworld.build import (
    WORLD_VERSION,
    WorldPaths,
    ensure_world,
    models_key,
    resolve,
    stage_file_names,
    world_key,
    world_paths,
    world_root,
)
from rcs_ray.tinyworld.rewards import OBJECTIVES, score

__all__ = [
    "WORLD_VERSION",
    "WorldPaths",
    "ensure_world",
    "resolve",
    "stage_file_names",
    "world_key",
    "models_key",
    "world_paths",
    "world_root",
    "OBJECTIVES",
    "score",
]
