"""Language-model pieces shared by sampling and training: loading tokenizers and models, and response log-probs.

- :mod:`rcs_ray.modeling.loading` -- ``load_tokenizer`` (with a pad token), ``torch_dtype``, the one checked load
  ``load_checked`` (a model that would have random weights is an input error) and ``load_causal_lm``.
- :mod:`rcs_ray.modeling.devices` -- ``has_cuda``, ``device_for`` (the one device choice).
- :mod:`rcs_ray.modeling.context` -- ``context_limit``: the one rule for how many tokens a model reads.
- :mod:`rcs_ray.modeling.vllm_llm` -- ``build_llm``: every ``vllm.LLM`` (engine, scorer, judge) with the same
  arguments (``llm_kwargs``).
- :mod:`rcs_ray.modeling.logprobs` -- ``sequence_logps``, ``tokenize_example``, ``build_pair_features``,
  ``collate_pairs`` and :class:`~rcs_ray.modeling.logprobs.ResponseLogps` (a frozen LM's summed response log-probs,
  used by the implicit-reward scorer and the reference log-prob stage alike).
- :mod:`rcs_ray.modeling.padding` -- the one right-padding helper: a pad id that occurs in no row of the batch
  (``free_pad_id``), ``right_pad``, ``tell_pad_id`` (the id a reward model reads as its pad).

Importing this package imports nothing heavy; the modules import torch / transformers where they need them.
"""
