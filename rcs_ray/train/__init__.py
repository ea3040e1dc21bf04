"""Training: pure preference losses and sequence log-probs here; Ray Train / DeepSpeed only at the edges.

- :mod:`rcs_ray.train.losses` -- ``dpo_loss``, ``modpo_loss``, ``spo_loss`` over log-prob tensors, the ``LOSSES``
  registry and ``get_loss(name)``. Imports torch only.
- :mod:`rcs_ray.train.logprobs` -- ``sequence_logps`` (summed / averaged response log-probs), ``tokenize_example``,
  ``build_pair_features`` and ``collate_pairs``. Imports torch only (a tokenizer is passed in).
- :mod:`rcs_ray.train.data` -- reading and validating training pairs; MODPO / SPO margin columns (numpy).
- :mod:`rcs_ray.train.refs` -- reference log-probs as a Ray Data actor-pool stage (the trainer holds no reference).
- :mod:`rcs_ray.train.loop` -- the per-worker loop: DeepSpeed engine, seeded batches, metrics, checkpoints.
- :mod:`rcs_ray.train.trainer` -- ``run``: the TorchTrainer launch, resume, HF export.

This package ``__init__`` imports nothing, so ``import rcs_ray.train`` pulls in neither torch nor Ray; ``run`` below
imports the trainer when called.
"""


def run(cfg, stage=None, pairs=None, policy=None, reference=None, out_dir=None, progress=True):
    """Train one stage; see :func:`rcs_ray.train.trainer.run`."""
    from rcs_ray.train.trainer import run as _run

    return _run(cfg, stage=stage, pairs=pairs, policy=policy, reference=reference, out_dir=out_dir,
                progress=progress)
