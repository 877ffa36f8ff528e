"""Loading and saving whole generators: the original .pkl (read safely through legacy.py) and guide's own format,
.safetensors weights + a JSON config {format_version, init_kwargs, neural_rendering_resolution, rendering_kwargs}
stored in the safetensors metadata and in a sibling .json.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from guide_core.eg3d.legacy import GeneratorCheckpoint, UnsafePickleError, load_generator_checkpoint
from guide_core.eg3d.triplane import TriPlaneGenerator
from guide_core.files import atomic_path, atomic_write
from guide_core.weights import catalogue

FORMAT_VERSION = 1
METADATA_KEY = "guide_eg3d_config"


class CheckpointError(ValueError):
    """A generator checkpoint is missing, corrupt, or does not fit the architecture it describes."""


def build_generator(init_kwargs: dict, state_dict: dict[str, torch.Tensor], neural_rendering_resolution: int,
                    rendering_kwargs: dict | None = None, source: str = "checkpoint") -> TriPlaneGenerator:
    """Build a generator from a config + state_dict, with a readable error listing mismatching keys."""
    try:
        G = TriPlaneGenerator(**copy.deepcopy(init_kwargs))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{source}: cannot build TriPlaneGenerator from its init_kwargs: {exc}") from exc
    expected = G.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k} {list(state_dict[k].shape)} != {list(v.shape)}" for k, v in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:5])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:5])})")
        if wrong:
            parts.append(f"{len(wrong)} with wrong shape (e.g. {'; '.join(wrong[:5])})")
        raise CheckpointError(f"{source}: weights do not match the architecture: " + ", ".join(parts))
    G.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state_dict.items()})
    G.neural_rendering_resolution = int(neural_rendering_resolution)
    if rendering_kwargs is not None:
        G.rendering_kwargs = dict(rendering_kwargs)
    return G


def _config_of(G: TriPlaneGenerator) -> dict:
    return {"format_version": FORMAT_VERSION, "init_kwargs": G.init_kwargs,
            "neural_rendering_resolution": int(G.neural_rendering_resolution),
            "rendering_kwargs": dict(G.rendering_kwargs)}


def _read_safetensors_config(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable .safetensors file ({exc})") from exc
    text = metadata.get(METADATA_KEY)
    if text is None:
        sibling = path.with_suffix(".json")
        if not sibling.is_file():
            raise CheckpointError(f"{path}: no generator config in its metadata and no sibling {sibling.name}")
        text = sibling.read_text()
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: generator config is not valid JSON ({exc})") from exc
    for key in ("init_kwargs", "neural_rendering_resolution"):
        if key not in config:
            raise CheckpointError(f"{path}: generator config lacks {key!r}")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {config['format_version']} is newer than this guide "
                              f"({FORMAT_VERSION})")
    return config


def read_generator_pickle(path: str | os.PathLike) -> GeneratorCheckpoint:
    """Read an original EG3D network pickle (training snapshot, released checkpoint or GUIDE's unlearned {'G_ema': ...})
    into a GeneratorCheckpoint. UnsafePickleError for a refused file; CheckpointError, one line, for any other bad file
    (truncated, corrupt, not a pickle, not a generator): unpickling untrusted bytes can fail in any way, all are
    reported.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: generator checkpoint not found")
    try:
        return load_generator_checkpoint(path)
    except UnsafePickleError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise CheckpointError(f"{path}: cannot read the network pickle: {detail}") from exc


def generator_from_checkpoint(ckpt: GeneratorCheckpoint, source: str | os.PathLike) -> TriPlaneGenerator:
    """Build the generator a GeneratorCheckpoint describes (the source names the file and its entry in errors)."""
    return build_generator(ckpt.init_kwargs, ckpt.state_dict, ckpt.neural_rendering_resolution,
                           ckpt.rendering_kwargs, source=f"{source} [{ckpt.entry}]")


def load_generator_file(path: str | os.PathLike, device: str | torch.device = "cpu") -> TriPlaneGenerator:
    """Load a generator (eval mode) from an original EG3D .pkl or from guide's .safetensors (+ JSON config)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: generator checkpoint not found")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        G = generator_from_checkpoint(read_generator_pickle(path), path)
    elif suffix == ".safetensors":
        config = _read_safetensors_config(path)
        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot read tensors ({exc})") from exc
        G = build_generator(config["init_kwargs"], state_dict, config["neural_rendering_resolution"],
                            config.get("rendering_kwargs"), source=str(path))
    else:
        raise CheckpointError(f"{path}: unknown generator format {suffix!r}; expected .pkl or .safetensors")
    return G.to(device).eval().requires_grad_(False)


def load_generator(path_or_name: str | os.PathLike, device: str | torch.device = "cpu") -> TriPlaneGenerator:
    """A generator (eval mode) from a weights-manifest name or a path to an original .pkl or guide's .safetensors.

    A name resolves through guide_core.weights (MissingWeightsError saying how to fetch it when it is not installed);
    a path that does not exist is a FileNotFoundError listing the known names. The file is then read by
    load_generator_file: the pickle through the allowlisting reader, nothing in it run."""
    if isinstance(path_or_name, str) and path_or_name in catalogue.manifest():
        path = catalogue.require(path_or_name)
    else:
        path = Path(path_or_name)
        if not path.exists():
            raise FileNotFoundError(f"generator not found: {path} (and {str(path_or_name)!r} is not a weights name; "
                                    f"known names: {', '.join(catalogue.manifest())})")
    return load_generator_file(path, device)


def save_generator(G: TriPlaneGenerator, path: str | os.PathLike, write_json: bool = True) -> Path:
    """Save G as .safetensors (config in the metadata) plus a sibling .json with the same config; both written
    atomically.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path}: guide saves generators as .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    config = _config_of(G)
    text = json.dumps(config, indent=1, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in G.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", METADATA_KEY: text})
    if write_json:
        atomic_write(path.with_suffix(".json"), text + "\n")
    return path
