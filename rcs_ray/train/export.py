"""Step 5 of a training stage: the stage's policy out of Ray Train's final checkpoint.

- :func:`export` -- the HF model (plus the tokenizer) and ``metrics.jsonl`` out of the final checkpoint;
- :func:`merge_adapter` -- a LoRA run's adapter merged into its base for an HF model vLLM loads unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import List, Optional

from rcs_ray import storage
from rcs_ray.run_layout import TrainFiles
from rcs_ray.train.launch import LaunchSpec


def export(result, local: str, tokenizer, spec: Optional[LaunchSpec] = None) -> List[dict]:
    """The stage's policy out of the final checkpoint into ``<local>/model`` (with the tokenizer), and
    ``metrics.jsonl``; returns the metric history. ``local`` is the staging directory of the step's
    :class:`~rcs_ray.storage.OutputSet` (the trainer commits the set).

    A LoRA run's checkpoint holds the adapter: it is kept in ``<local>/adapter`` and merged into the base weights
    (``spec.policy``) for ``<local>/model``, a plain HF model that ``from_pretrained`` and vLLM load.
    """
    from rcs_ray.train.loop import HF_DIR

    files = TrainFiles(local)
    history = list(result.return_value or [])
    with result.checkpoint.as_directory() as d:
        src = os.path.join(d, HF_DIR)
        if not os.path.isdir(src):
            raise RuntimeError(f"the final checkpoint {result.checkpoint.path} has no {HF_DIR}/ export")
        with storage.writing(local):
            if os.path.isfile(os.path.join(src, "adapter_config.json")):
                if spec is None:
                    raise RuntimeError("a LoRA checkpoint needs the base policy to merge into")
                shutil.copytree(src, files.adapter)
                merge_adapter(spec.policy, files.adapter, files.model, spec.trust_remote_code)
            else:
                shutil.copytree(src, files.model)
            tokenizer.save_pretrained(files.model)
            with open(files.metrics, "w", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(m) + "\n" for m in history))
    return history


def merge_adapter(base: str, adapter: str, out: str, trust_remote_code: bool = False) -> None:
    """``base`` + the LoRA ``adapter`` merged (W + B A alpha / r) and saved as an HF model in ``out``, in the base's
    own dtype."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rcs_ray.storage import local_copy

    model = AutoModelForCausalLM.from_pretrained(local_copy(base), dtype="auto", trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
