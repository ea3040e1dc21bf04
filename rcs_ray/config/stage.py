"""A stage's config (``stages.N``): its objective, data, selection and its overrides of the top-level ``train``.

A stage's ``train:`` is typed: :class:`StageTrainConfig` has every :class:`~rcs_ray.config.train.TrainConfig` field,
each optional (unset: the top-level ``train``'s value), so an unknown key there fails at load time.
:func:`rcs_ray.config.stages.stage_train` merges the fields set onto the top-level ``train``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from rcs_ray.config.data import DataConfig
from rcs_ray.config.fields import Checker, doc_field, field_doc
from rcs_ray.config.rc import RCConfig
from rcs_ray.config.train import LoraConfig, TrainConfig


class Overrides:
    """The base of a generated overrides dataclass: every field optional, None meaning "inherit"."""

    def overrides(self) -> Dict[str, Any]:
        """The fields set (not None), a nested overrides config as the dict of its own (left out when empty): what
        :func:`~rcs_ray.config.stages.stage_train` merges, and how the config prints and fingerprints."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Overrides):
                value = value.overrides() or None
            if value is not None:
                out[f.name] = value
        return out


def overrides_of(cls: type, name: str, prefix: str, nested: Optional[Dict[str, type]] = None) -> type:
    """A dataclass with the fields of the dataclass ``cls``, each ``Optional`` with default None.

    Args:
        cls: the config it overrides (e.g. :class:`TrainConfig`).
        name: the new class's name; it is bound under that name in this module (so it pickles).
        prefix: the key ``cls`` sits at (``train``), for the fields' docs.
        nested: fields of ``cls`` that are configs themselves -> their overrides class (kept as a section).
    """
    hints = typing.get_type_hints(cls)
    nested = nested or {}
    specs = []
    for f in dataclasses.fields(cls):
        doc = f"This stage's {prefix}.{f.name} (unset: the top-level one). {field_doc(f)}"
        if f.name in nested:
            specs.append((f.name, nested[f.name], doc_field(factory=nested[f.name], doc=doc)))
        else:
            specs.append((f.name, Optional[hints[f.name]], doc_field(None, doc)))
    made = dataclasses.make_dataclass(name, specs, bases=(Overrides,))
    made.__module__ = __name__
    made.__doc__ = f"A stage's overrides of the top-level ``{prefix}``: every field optional (unset: inherited)."
    return made


StageLoraConfig = overrides_of(LoraConfig, "StageLoraConfig", "train.lora")
StageTrainConfig = overrides_of(TrainConfig, "StageTrainConfig", "train", {"lora": StageLoraConfig})


@dataclass
class StageConfig:
    """Stage k: align ``objective`` on ``data``; ``sample: false`` trains on the data as it is (stage 1)."""

    objective: str = doc_field(MISSING, "The objective this stage aligns (required): one of objectives' names.")
    data: DataConfig = doc_field(
        factory=DataConfig, doc="The stage's preference data (sample: false) or its prompts (sample: true)."
    )
    sample: bool = doc_field(
        True, "Sample candidates from the policy and RC-select pairs; false: train on the data as it is."
    )
    rc: RCConfig = doc_field(factory=RCConfig, doc="How a prompt's candidates become a pair.")
    train: StageTrainConfig = doc_field(
        factory=StageTrainConfig, doc="This stage's overrides of the top-level train (unset keys: inherited)."
    )
    mix: List[DataConfig] = doc_field(
        factory=list,
        doc="More datasets trained together with data in this stage, as "
        'they are (sample: false, DPO): the "mixed" baseline is one '
        "stage over every objective's data.",
    )
    iterations: int = doc_field(
        1,
        "Iterative RCS (sample: true): split the stage's prompts into this many disjoint slices (a seeded hash of "
        "prompt_id) and per slice sample from the current policy, RC-select and train from it; the reference stays "
        "the stage's starting policy, each iteration trains the stage's train schedule on its pairs. 1: one-shot.",
    )

    def check(self, c: Checker, key: str, names: List[str], train_loss: str) -> None:
        """The objective, the data and mixed-in data, the selection (the merged ``train`` is checked apart).

        Args:
            c: the checker.
            key: where this stage sits (``stages.N``).
            names: the config's objective names.
            train_loss: the top-level ``train.loss`` (a mixed stage trains with dpo).

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        if self.objective not in names:
            c.fail(f"{key}.objective", f"{self.objective!r} is not an objective; objectives are {names}")
        self.data.check(c, f"{key}.data")
        for j, extra in enumerate(self.mix):
            extra.check(c, f"{key}.mix.{j}")
            if not extra.path:
                c.fail(f"{key}.mix.{j}.path", "a mixed-in dataset needs a path")
        if self.mix:
            if self.sample:
                c.fail(f"{key}.mix", "mixing datasets trains on them as they are: set sample: false for this stage")
            loss = self.train.loss if self.train.loss is not None else train_loss
            if loss != "dpo":
                c.fail(
                    f"{key}.mix", f"a mixed stage trains with loss dpo (its pairs have different targets), got {loss!r}"
                )
        self.rc.check(c, f"{key}.rc", names)
        c.at_least(f"{key}.iterations", self.iterations, 1)
        if self.iterations > 1 and not self.sample:
            c.fail(f"{key}.iterations", "iterations re-sample from the policy: set sample: true for this stage")
