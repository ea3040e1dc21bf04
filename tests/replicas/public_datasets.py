"""The public dataset schemas of the replicas (PKU-SafeRLHF, HelpSteer2, UltraFeedback-binarized): tiny rows in
each schema over :data:`WORDS` (the words the replica tokenizers are trained on), and each dataset as a
``save_to_disk`` directory (:func:`datasets_dir`); :func:`tests.replicas.hub_cache` puts them in an HF hub cache."""

from __future__ import annotations

import os
from typing import Dict, List

WORDS = (
    "hello world how are you today the a an is to of and in it that for on with as was good bad help safe "
    "harm answer question please thanks sure here bread bake lock pick door key water plant sun tree city "
    "river book story write code python list sort number one two three four five six seven eight nine ten "
    "score rate response request best worst"
).split()


def pku_rows(n: int = 24) -> List[dict]:
    rows = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        rows.append(
            {
                "prompt": f"how to {w} {WORDS[(i * 7) % len(WORDS)]}",
                "prompt_source": "replica",
                "response_0": f"sure here is help {w}",
                "response_1": f"harm {w} bad answer",
                "is_response_0_safe": True,
                "is_response_1_safe": i % 3 == 0,
                "better_response_id": i % 2,
                "safer_response_id": 0 if i % 3 else 1,
                "response_0_harm_category": {"Violence": False, "Privacy Violation": False},
                "response_1_harm_category": {"Violence": i % 2 == 0, "Privacy Violation": i % 3 == 0},
                "response_0_severity_level": 0,
                "response_1_severity_level": 1,
            }
        )
    return rows


def helpsteer2_rows(n_prompts: int = 16) -> List[dict]:
    rows = []
    for i in range(n_prompts):
        p = f"please write a {WORDS[(i * 3) % len(WORDS)]} story about the {WORDS[(i * 5) % len(WORDS)]}"
        for j in range(2):
            rows.append(
                {
                    "prompt": p,
                    "response": f"here is a {'good' if j else 'bad'} story {WORDS[i % 40]}",
                    "helpfulness": (i + j) % 5,
                    "correctness": (i + 2 * j) % 5,
                    "coherence": 3 + j,
                    "complexity": 1,
                    "verbosity": (i * j) % 5,
                }
            )
    return rows


def ultrafeedback_rows(n: int = 16) -> List[dict]:
    rows = []
    for i in range(n):
        p = f"question {WORDS[(i * 11) % len(WORDS)]} how does the {WORDS[i % len(WORDS)]} work"
        user = {"role": "user", "content": p}
        chosen = [user, {"role": "assistant", "content": f"good answer {WORDS[(i + 1) % 40]}"}]
        rejected = [user, {"role": "assistant", "content": f"bad answer {WORDS[(i + 2) % 40]}"}]
        rows.append(
            {
                "prompt": p,
                "prompt_id": f"uf{i:04d}",
                "chosen": chosen,
                "rejected": rejected,
                "messages": chosen,
                "score_chosen": 8.0,
                "score_rejected": 4.0 + (i % 3),
            }
        )
    return rows


DATASETS: Dict[str, tuple] = {  # local name, Hub ID, {split: rows}
    "pku": ("PKU-SafeRLHF", "PKU-Alignment/PKU-SafeRLHF", lambda: {"train": pku_rows(), "test": pku_rows(8)}),
    "helpsteer2": (
        "HelpSteer2",
        "nvidia/HelpSteer2",
        lambda: {"train": helpsteer2_rows(), "validation": helpsteer2_rows(4)},
    ),
    "ultrafeedback": (
        "ultrafeedback_binarized",
        "HuggingFaceH4/ultrafeedback_binarized",
        lambda: {"train_prefs": ultrafeedback_rows(), "test_prefs": ultrafeedback_rows(4)},
    ),
}


def datasets_dir(root: str) -> str:
    """Each dataset as a ``save_to_disk`` DatasetDict under ``root/<local name>``."""
    import datasets

    for name, _, splits in DATASETS.values():
        datasets.DatasetDict({s: datasets.Dataset.from_list(rows) for s, rows in splits().items()}).save_to_disk(
            os.path.join(root, name)
        )
    return root
