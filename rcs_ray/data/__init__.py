"""Data readers: preference pairs and prompt lists from jsonl / json / parquet / HF dataset dirs, as canonical rows.

Pure: imports no Ray, vLLM or DeepSpeed; ``datasets`` is imported only to read an HF dataset directory.

- :func:`read_preferences` -- pairs ``prompt_id, prompt, chosen, rejected`` (+ per-objective scores).
- :func:`read_prompts` -- prompt lists; chosen/rejected kept where present.
- :func:`read_table` -- the raw rows of a file or directory.
- :class:`PreferenceData` -- rows, objective names, source, skip counts.
- :data:`PRESETS` -- ``pku_saferlhf``, ``helpsteer2``, ``ultrafeedback_binarized``; :func:`default_objective`
  and :func:`preset_objectives` give the objectives that can define a preset's chosen/rejected.
"""

from rcs_ray.data.canonical import CANONICAL_COLUMNS, PreferenceData, prompt_hash
from rcs_ray.data.file_rows import read_table
from rcs_ray.data.presets import PRESETS, default_objective, preset_objectives
from rcs_ray.data.readers import read_preferences, read_prompts

__all__ = [
    "CANONICAL_COLUMNS",
    "PRESETS",
    "PreferenceData",
    "default_objective",
    "preset_objectives",
    "prompt_hash",
    "read_preferences",
    "read_prompts",
    "read_table",
]
