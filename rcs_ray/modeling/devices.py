"""The device a model runs on: whether CUDA is there, and the one device choice of every role."""

from __future__ import annotations


def has_cuda() -> bool:
    """Whether torch sees a CUDA GPU (False when torch itself is missing)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency; a thin client may lack it
        return False
    return torch.cuda.is_available()


def device_for(use_gpu: bool) -> str:
    """``"cuda"`` when asked for and available, else ``"cpu"``.

    Args:
        use_gpu: the role asks for a GPU (``num_gpus > 0``, ``train.use_gpu``).
    """
    return "cuda" if use_gpu and has_cuda() else "cpu"
