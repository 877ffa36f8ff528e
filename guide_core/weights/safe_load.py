"""Loading weight files without ever running code stored in them: torch checkpoints restricted to tensors, state
dicts, .safetensors with their metadata, .npy without pickle, and the words that say why a tensor file was refused
(the global it names, found by scanning the file without building anything). Every checkpoint read of the project
goes through here; whole EG3D generators are read by guide_core.eg3d.io, whose pickle reader is its own allowlist."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import torch

from guide_core.files import atomic_path
from guide_core.weights.errors import UnsafeCheckpointError


def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """torch.load restricted to tensors and plain containers (weights_only=True).

    A file that needs pickled code is refused with UnsafeCheckpointError naming the refused global, a truncated or
    foreign file with UnsafeCheckpointError too (torch's own error is its __cause__); a missing file is a
    FileNotFoundError."""
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
            f"guide_core.eg3d.io.load_generator.") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise UnsafeCheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or another format): "
                                    f"{exc}") from exc


def load_torch_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                          key: str | None = None) -> dict[str, torch.Tensor]:
    """A state_dict ({name: tensor}) from a .pt/.pth file; `key` picks a nested dict such as "state_dict"."""
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


def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of a .safetensors file plus its metadata (JSON values decoded where they parse)."""
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


def save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """The writing side of load_safetensors: metadata values stored as JSON strings, the file replaced atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in metadata.items()})


def load_npy(path: str | os.PathLike):
    """A .npy array without pickle (e.g. the real-image Inception features of ΔFID_real)."""
    import numpy as np

    try:
        return np.load(Path(path), allow_pickle=False)
    except ValueError as exc:
        raise UnsafeCheckpointError(f"{path} holds pickled Python objects, which guide never loads: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------------
# Why a tensor file was refused, in our words
# ---------------------------------------------------------------------------------------------------------------------

def _is_tensor_global(module: str, name: str) -> bool:
    """Whether a plain torch tensor file may name this global (storage types, tensor rebuilders, dtypes,
    OrderedDict): anything else in a tensor payload is what made torch's weights-only reader refuse it."""
    if module == "torch" or module.startswith("torch."):
        return True
    return (module, name) in (("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                              ("builtins", "slice"), ("builtins", "bytearray"))


class _ForeignGlobal(Exception):
    """Raised inside the scanner to stop at the first global a tensor file has no business naming."""


class _Inert:
    """Accepts every pickle operation and does nothing, so the scanner can walk a whole pickle without building
    anything."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setitem__(self, key, value):
        pass

    def __setstate__(self, state):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def add(self, value):
        pass


class _GlobalScanner(pickle.Unpickler):
    """An unpickler that only reads: tensor globals become _Inert, the first other global is reported, nothing is
    executed."""

    def find_class(self, module: str, name: str):
        if _is_tensor_global(module, name):
            return _Inert
        raise _ForeignGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        return _Inert()


def foreign_global(source: bytes | str | Path) -> str | None:
    """The first global outside plain tensor data in a torch file (zip or legacy stream, as bytes or a path), or
    None. Used to say in our own words why torch's weights-only reader refused a file; it never builds any object."""
    def scan(stream: BinaryIO) -> str | None:
        for _ in range(8):  # a legacy torch.save stream is five pickles, then raw storage bytes
            try:
                _GlobalScanner(stream).load()
            except _ForeignGlobal as found:
                return str(found)
            except Exception:  # the end of the pickles, raw bytes, or a corrupt stream: nothing more to name
                return None
        return None

    try:
        opened = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
        with opened as f:
            if not zipfile.is_zipfile(f):
                f.seek(0)
                return scan(f)
            with zipfile.ZipFile(f) as archive:
                for member in archive.namelist():
                    if member.endswith(".pkl"):
                        with archive.open(member) as pickled:
                            found = scan(io.BytesIO(pickled.read()))
                        if found is not None:
                            return found
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return None


def is_weights_only_refusal(exc: BaseException) -> bool:
    """True when torch.load(weights_only=True) failed because it refused content, not because the bytes were
    corrupt."""
    return isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower()


def tensor_file_refusal(source: bytes | str | Path, error: BaseException) -> str:
    """Why a tensor file could not be read, in our words: the global it names (found by scanning the file, nothing
    built), a refusal of other content, or corruption; never torch's own advice text.

    `error` is what torch.load(weights_only=True) raised, or the UnsafeCheckpointError of load_torch around it."""
    if isinstance(error, UnsafeCheckpointError) and error.__cause__ is not None:
        error = error.__cause__
    culprit = foreign_global(source)
    if culprit is not None:
        return f"it names the global {culprit}, which plain tensor data never needs; it was not loaded and nothing " \
               "in it was run"
    if is_weights_only_refusal(error):
        return "it holds content that plain tensor data never contains; it was not loaded and nothing in it was run"
    return f"the file is truncated or not a torch tensor file ({type(error).__name__})"
