"""Where tensors live: the project's one choice of a torch device."""
from __future__ import annotations


def pick_device(name: str | None = "auto") -> str:
    """``auto`` (or None) -> ``cuda`` when a CUDA device is available, else ``cpu``; any other name as given."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)
