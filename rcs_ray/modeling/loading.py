"""Loading tokenizers and models for every role (policy, reference, reward model): the dtype names, the pad-token
rule and the device choice live here once.

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


def device_for(use_gpu: bool) -> str:
    """``"cuda"`` when asked for and available, else ``"cpu"``."""
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


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


def load_causal_lm(path: str, dtype: str = "float32", trust_remote_code: bool = False,
                   device: Optional[str] = None, **kwargs):
    """A causal LM in eval mode on ``device`` (default CPU); ``kwargs`` go to ``from_pretrained``.

    Raises:
        RcsInputError: the checkpoint left weights random (missing or mismatched keys).
    """
    from transformers import AutoModelForCausalLM

    from rcs_ray.errors import RcsInputError
    from rcs_ray.modeling.checkpoints import loading_problem, summarize
    from rcs_ray.storage import local_copy

    model, info = AutoModelForCausalLM.from_pretrained(local_copy(path), dtype=torch_dtype(dtype),
                                                       trust_remote_code=trust_remote_code,
                                                       output_loading_info=True, **kwargs)
    missing = loading_problem(info)
    if missing:
        raise RcsInputError(f"{path}: loaded with random weights for {summarize(missing)}: not a causal LM "
                            f"checkpoint")
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
        raise RcsInputError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has {n} tokens but model "
                            f"{model} has vocab_size {vocab_size}: they do not belong together (set policy.tokenizer)")


def check_models_fit(tokenizer, models, trust_remote_code: bool = False) -> None:
    """:func:`check_vocab` of ``tokenizer`` against each model directory's config (read without its weights)."""
    from transformers import AutoConfig

    from rcs_ray.storage import local_copy

    for path in dict.fromkeys(models):
        vocab = getattr(AutoConfig.from_pretrained(local_copy(path, weights=False),
                                                   trust_remote_code=trust_remote_code), "vocab_size", None)
        if vocab is not None:
            check_vocab(tokenizer, vocab, path)
