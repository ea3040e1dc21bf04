"""A stage's selection config (``stages.N.rc``): how a prompt's candidates become a pair; read by
:mod:`rcs_ray.selection`, whose :data:`~rcs_ray.selection.STRATEGIES` name the strategies accepted here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

from rcs_ray import selection
from rcs_ray.config.fields import Checker, doc_field

STRATEGY_NAMES = tuple(selection.STRATEGIES)


@dataclass
class RCConfig:
    """How a prompt's candidate group is reduced to a pair (``rs_dpo``: to every pair above a threshold)."""

    strategy: str = doc_field("rcs", "rcs | rc_random | target_only | weighted | rs_dpo | original | filter_only.")
    margin: float = doc_field(
        0.0, "The reward-consistency margin on the earlier objectives; < 0 tolerates ties (integer rewards)."
    )
    enforce: Optional[List[str]] = doc_field(
        None, "Objective names RC must hold on; None: every objective up to the stage's own."
    )
    weights: Optional[List[float]] = doc_field(None, 'The "weighted" strategy: one weight per objective.')
    rs_tau: float = doc_field(
        1.0, "rs_dpo: keep every pair with sigmoid(target gap / rs_tau) > rs_eta (several per prompt)."
    )
    rs_eta: float = doc_field(0.85, "rs_dpo: the threshold on sigmoid(target gap / rs_tau), in [0.5, 1).")
    include_original: bool = doc_field(True, "Add the dataset's chosen/rejected to the candidates.")

    def check(self, c: Checker, key: str, names: List[str]) -> None:
        """The strategy, the margin, the objectives named, rs_dpo's threshold.

        Args:
            c: the checker.
            key: where this config sits (``stages.N.rc``).
            names: the config's objective names.

        Raises:
            RcsInputError: one line naming the key at fault.
        """
        c.choice(f"{key}.strategy", self.strategy, list(selection.STRATEGIES))
        c.finite(f"{key}.margin", self.margin)
        for name in self.enforce or []:
            if name not in names:
                c.fail(f"{key}.enforce", f"{name!r} is not an objective; objectives are {names}")
        if self.weights is not None and len(self.weights) != len(names):
            c.fail(f"{key}.weights", f"needs {len(names)} weights (one per objective), got {len(self.weights)}")
        if not (math.isfinite(self.rs_tau) and self.rs_tau > 0):
            c.fail(f"{key}.rs_tau", f"must be a positive number, got {self.rs_tau}")
        if not 0.5 <= self.rs_eta < 1:
            c.fail(
                f"{key}.rs_eta", f"must be in [0.5, 1) (below 0.5 a pair could lose on the target), got {self.rs_eta}"
            )
