"""Language-model pieces shared by sampling and training: loading tokenizers and models, and response log-probs.

- :mod:`rcs_ray.modeling.loading` -- ``load_tokenizer`` (with a pad token), ``torch_dtype``, ``device_for``,
  ``load_causal_lm``.
- :mod:`rcs_ray.modeling.logprobs` -- ``sequence_logps``, ``tokenize_example``, ``build_pair_features``,
  ``collate_pairs`` and :class:`~rcs_ray.modeling.logprobs.ResponseLogps` (a frozen LM's summed response log-probs,
  used by the implicit-reward scorer and the reference log-prob stage alike).

Importing this package imports nothing heavy; the modules import torch / transformers where they need them.
"""
