"""Loading tokenizers and models for every role (policy, reference, reward model, judge, the trained policy): the
dtype names, the pad-token rule and the one checked load (:func:`load_checked`: never a model with random weights)
live here once. The device choice is :mod:`rcs_ray.modeling.devices`, the context limit
:mod:`rcs_ray.modeling.context`, the ``vllm.LLM`` builder :mod:`rcs_ray.modeling.vllm_llm`.

Paths may be URIs: the model is fetched into the node's local cache first (:func:`rcs_ray.storage.local_copy`).
"""

from __future__ import annotations

from typing import Optional

DTYPES = ("float32", "bfloat16", "float16")


def torch_dtype(name: str):
    """``"float32" | "bfloat16" | "float16"`` -> the torch dtype.

    Raises:
        ValueError: another name.
    """
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {list(DTYPES)}")
    return getattr(torch, name)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """An HF tokenizer with a pad token (the EOS when it has none: what ``generate`` needs for finished rows).

    That pad token is only a preference for batched forward passes: reward models, judges and log-prob passes pad
    with an id that occurs in no row of the batch (:mod:`rcs_ray.modeling.padding`), so an EOS inside the text is
    never taken for padding.
    """
    from transformers import AutoTokenizer

    from rcs_ray.storage import local_copy

    tok = AutoTokenizer.from_pretrained(local_copy(path, weights=False), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_checked(auto_class, path: str, what: str, hint: str, **kwargs):
    """``auto_class.from_pretrained(path, **kwargs)``, refused when the checkpoint left any weight random.

    transformers fills a weight the checkpoint lacks (or holds in another shape) with a fresh random initialisation
    and only logs it; here its loading report (``output_loading_info``) is read and such a load is an input error.
    The pre-flight checks (:mod:`rcs_ray.modeling.checkpoints`) find the same on the meta device before anything
    loads; this is the check on what was actually loaded.

    Args:
        auto_class: the class to load with (``AutoModelForCausalLM``, ``AutoModelForSequenceClassification``,
            ``AutoModel``, ...).
        path: the model directory or URI (fetched into the node's cache first).
        what: what the model is, for the message (``policy.path``, ``objective 'helpful'``).
        hint: what to do about it, the message's last clause.
        kwargs: ``from_pretrained`` arguments (``dtype``, ``trust_remote_code``, ``quantization_config``, ...).

    Raises:
        RcsInputError: one line naming ``what``, the path and the missing or mismatched weights.
    """
    from rcs_ray.errors import RcsInputError
    from rcs_ray.modeling.checkpoints import loading_problem, summarize
    from rcs_ray.storage import local_copy

    model, info = auto_class.from_pretrained(local_copy(path), output_loading_info=True, **kwargs)
    missing = loading_problem(info)
    if missing:
        raise RcsInputError(
            f"{what}: {path} loaded with random weights for {summarize(missing)} (missing from the "
            f"checkpoint or of another shape): {hint}"
        )
    return model


def load_causal_lm(
    path: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: Optional[str] = None,
    what: str = "model",
    **kwargs,
):
    """A causal LM in eval mode on ``device`` (default CPU) through :func:`load_checked`; ``kwargs`` go to
    ``from_pretrained``.

    Raises:
        RcsInputError: the checkpoint left weights random (missing or mismatched keys), naming ``what`` and ``path``.
    """
    from transformers import AutoModelForCausalLM

    model = load_checked(
        AutoModelForCausalLM,
        path,
        what,
        "not a causal LM checkpoint",
        dtype=torch_dtype(dtype),
        trust_remote_code=trust_remote_code,
        **kwargs,
    )
    return model.to(device or "cpu").eval()


def check_vocab(tokenizer, vocab_size: int, model: str) -> None:
    """The tokenizer's ids must fit the model's embedding (``len(tokenizer) <= vocab_size``).

    A model may have more embedding rows than the tokenizer has tokens (padded vocabularies); never fewer.

    Raises:
        RcsInputError: a tokenizer with more tokens than the model's ``vocab_size``.
    """
    from rcs_ray.errors import RcsInputError

    n = len(tokenizer)
    if n > int(vocab_size):
        raise RcsInputError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has {n} tokens but model "
            f"{model} has vocab_size {vocab_size}: they do not belong together (set policy.tokenizer)"
        )


def check_models_fit(tokenizer, models, trust_remote_code: bool = False) -> None:
    """:func:`check_vocab` of ``tokenizer`` against each model directory's config (read without its weights)."""
    from transformers import AutoConfig

    from rcs_ray.storage import local_copy

    for path in dict.fromkeys(models):
        vocab = getattr(
            AutoConfig.from_pretrained(local_copy(path, weights=False), trust_remote_code=trust_remote_code),
            "vocab_size",
            None,
        )
        if vocab is not None:
            check_vocab(tokenizer, vocab, path)
