# Loading weight files without ever running code stored in them: torch checkpoints restricted to tensors, state
# dicts, .safetensors with their metadata, .npy without pickle, and the EG3D generator entry point.
from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from guide_core.files import atomic_path
import guide_core.weights.catalogue as catalogue
from guide_core.weights.catalogue import require
from guide_core.weights.errors import UnsafeCheckpointError


# torch.load restricted to tensors and plain containers (weights_only=True); pickled code is refused with a clear error.
def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False; only the line naming the refused global is useful here.
        found = re.search(r"[^\n]*(GLOBAL|global)[^\n]*", str(exc))
        reason = found.group(0).strip() if found else "it references Python objects beyond tensors"
        raise UnsafeCheckpointError(
            f"{path} is not a plain tensor checkpoint: loading it would need code stored in the file, which guide "
            f"never runs ({reason}). If it is an original EG3D network pickle, load it with "
            f"guide_core.weights.load_generator.") from exc
    except (RuntimeError, EOFError, ValueError) as exc:
        raise UnsafeCheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or another format): "
                                    f"{exc}") from exc


# A state_dict ({name: tensor}) from a .pt/.pth file; `key` picks a nested dict such as "state_dict".
def load_torch_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                          key: str | None = None) -> dict[str, torch.Tensor]:
    obj = load_torch(path, map_location)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise UnsafeCheckpointError(f"{path} has no entry {key!r}")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise UnsafeCheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict (a name → tensor mapping)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(obj.get(k), Mapping)]
        hint = f"; it looks like a wrapper: pass key={nested[0]!r}" if nested else ""
        raise UnsafeCheckpointError(f"{path} is not a flat state_dict: entries {bad[:5]} are not tensors{hint}")
    return dict(obj)


# Tensors of a .safetensors file plus its metadata (JSON values decoded where they parse).
def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            raw = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UnsafeCheckpointError(f"{path} is not a valid .safetensors file: {exc}") from exc
    metadata: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            metadata[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            metadata[k] = v
    return tensors, metadata


# The writing side of load_safetensors: metadata values stored as JSON strings, the file replaced atomically.
def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})


# A .npy array without pickle (e.g. the real-image Inception features of ΔFID_real).
def load_npy(path: str | os.PathLike):
    import numpy as np

    try:
        return np.load(Path(path), allow_pickle=False)
    except ValueError as exc:
        raise UnsafeCheckpointError(f"{path} holds pickled Python objects, which guide never loads: {exc}") from exc


# A TriPlaneGenerator (eval mode) from a manifest name or a path to an original .pkl or our .safetensors.
def load_generator(path_or_name: str | os.PathLike, device: str | torch.device = "cpu"):
    if isinstance(path_or_name, str) and path_or_name in catalogue.manifest():
        path = require(path_or_name)
    else:
        path = Path(path_or_name)
        if not path.exists():
            raise FileNotFoundError(f"generator not found: {path} (and {str(path_or_name)!r} is not a weights name; "
                                    f"known names: {', '.join(catalogue.manifest())})")
    from guide_core.eg3d.io import load_generator_file  # lazy: the EG3D package is heavy and optional for this module

    return load_generator_file(path, device)
