"""Training: pure preference losses here; Ray Train / DeepSpeed only at the edges.

- :mod:`rcs_ray.train.losses` -- ``dpo_loss``, ``modpo_loss``, ``spo_loss`` over log-prob tensors, ``LOSSES`` (their
  registry entries, :data:`rcs_ray.registry.LOSSES`) and ``get_loss(name)``. Imports torch only.
- :mod:`rcs_ray.train.sources` -- where a stage's pairs come from (a pairs file, its sampling output, its dataset).
- :mod:`rcs_ray.train.margins` -- each loss's hyperparameters and per-pair margin columns for a stage (numpy).
- :mod:`rcs_ray.train.refs` -- reference log-probs as a Ray Data actor-pool stage, and the feature cache.
- :mod:`rcs_ray.train.worker_refs` -- the reference log-probs computed by the training workers before step 1, when
  the reference is the policy they start from (no second model).
- :mod:`rcs_ray.train.batches` -- what a step computes on: the seeded data order, batches, log-probs, the loss.
- :mod:`rcs_ray.train.deepspeed_engine` -- the policy in a DeepSpeed engine (ZeRO, LoRA, QLoRA), its HF export.
- :mod:`rcs_ray.train.memory` -- what a worker's memory holds (the ``memory/*`` metrics).
- :mod:`rcs_ray.train.loop` -- the per-worker loop: DeepSpeed engine, steps, metrics, checkpoints.
- :mod:`rcs_ray.train.launch` -- the TorchTrainer launch and the resume check.
- :mod:`rcs_ray.train.export` -- the HF model out of the final checkpoint (a LoRA adapter merged).
- :mod:`rcs_ray.train.trainer` -- ``run``: one stage as named steps (pairs, loss inputs, features, launch, export).

Sequence log-probs and pair tokenization are shared with sampling: :mod:`rcs_ray.modeling.logprobs`.
This package ``__init__`` imports nothing, so ``import rcs_ray.train`` pulls in neither torch nor Ray; ``run`` below
imports the trainer when called.
"""


def run(cfg, stage=None, pairs=None, policy=None, reference=None, out_dir=None, progress=True, chain=None):
    """Train one stage; see :func:`rcs_ray.train.trainer.run`."""
    from rcs_ray.train.trainer import run as _run

    return _run(
        cfg,
        stage=stage,
        pairs=pairs,
        policy=policy,
        reference=reference,
        out_dir=out_dir,
        progress=progress,
        chain=chain,
    )
