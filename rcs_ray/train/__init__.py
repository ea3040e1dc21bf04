"""Training: pure preference losses and sequence log-probs here; Ray Train / DeepSpeed only at the edges.

- :mod:`rcs_ray.train.losses` -- ``dpo_loss``, ``modpo_loss``, ``spo_loss`` over log-prob tensors, the ``LOSSES``
  registry and ``get_loss(name)``. Imports torch only.
- :mod:`rcs_ray.train.logprobs` -- ``sequence_logps`` (summed / averaged response log-probs), ``tokenize_example``,
  ``build_pair_features`` and ``collate_pairs``. Imports torch only (a tokenizer is passed in).

This package ``__init__`` imports nothing, so ``import rcs_ray.train`` pulls in neither torch nor Ray; the trainer
modules that need Ray or DeepSpeed import them inside themselves.
"""
