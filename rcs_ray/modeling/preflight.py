"""The model checks of the built-in reward sources, as their registry entries name them (``check_model``): one local
model of an objective, checked on the meta device before anything loads it (no weights read).

Each hook is ``(objective, path, key) -> None`` (see :class:`rcs_ray.registry.RewardSourceSpec`), run by the
sampling job's preflight (:func:`rcs_ray.sampling.job.preflight`) and by ``rcs-ray plan``
(:func:`rcs_ray.planning.checks.check_models`).
"""

from __future__ import annotations


def check_reward_model_of(objective, path: str, key: str) -> None:
    """A reward model read at the objective's ``output`` and ``head``
    (:func:`rcs_ray.modeling.reward_models.check_reward_model`).

    Raises:
        RcsInputError: one line naming ``key``.
    """
    from rcs_ray.modeling.reward_models import check_reward_model

    check_reward_model(path, objective.output, [objective.head], objective.kind, objective.trust_remote_code, key)


def check_causal_lm_of(objective, path: str, key: str) -> None:
    """A causal LM (an implicit reward's policy or reference, a judge) holding every weight
    (:func:`rcs_ray.modeling.checkpoints.check_causal_lm`).

    Raises:
        RcsInputError: one line naming ``key``.
    """
    from rcs_ray.modeling.checkpoints import check_causal_lm

    check_causal_lm(path, key, objective.trust_remote_code)
