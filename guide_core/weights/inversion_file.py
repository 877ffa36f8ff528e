"""The released inversion checkpoints of the 2D half of GUIDE (GUIDE-SG2, App. A.7), read as data.

- ``psp_ffhq_encode.pt`` (pixel2style2pixel, Richardson et al., CVPR 2021) and ``e4e_ffhq_encode.pt``
  (encoder4editing, Tov et al., SIGGRAPH 2021) are written by their training coach with torch.save as
  ``{'state_dict': OrderedDict('encoder.*', 'decoder.*'), 'opts': dict, 'latent_avg': tensor}``; the two files share
  key sets, order and shapes, and say which they are through ``opts['encoder_type']`` (GradualStyleEncoder = pSp,
  Encoder4Editing = e4e).
- rosinality's ``stylegan2-ffhq-config-f.pt`` is ``{'g_ema': OrderedDict, 'latent_avg': tensor [512]}``.

Reading goes through load_torch (tensors and plain containers only): pickled code is never run. This module knows the
file layouts only; guide_core.encoders.inversion builds the networks (``load_inversion_checkpoint``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from guide_core.weights.errors import UnsafeCheckpointError
from guide_core.weights.safe_load import load_torch, tensor_file_refusal

# opts['encoder_type'] -> the kind of inversion network.
ENCODER_TYPES = {"GradualStyleEncoder": "psp", "Encoder4Editing": "e4e"}


@dataclass
class InversionCheckpoint:
    """What a released file holds: its kind (psp, e4e or stylegan2), the encoder's and the decoder's state dicts
    (prefixes stripped; the encoder's empty for a generator-only file), latent_avg [18, 512] or [512], and opts."""

    kind: str
    decoder: dict[str, torch.Tensor]
    latent_avg: torch.Tensor | None
    encoder: dict[str, torch.Tensor] = field(default_factory=dict)
    opts: dict[str, Any] = field(default_factory=dict)
    path: str = ""


def _tensors(path: Path, what: str, value: Any) -> dict[str, torch.Tensor]:
    if not isinstance(value, Mapping) or not value:
        raise UnsafeCheckpointError(f"{path}: {what} is a {type(value).__name__}, not a state dict of tensors")
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise UnsafeCheckpointError(f"{path}: {what} holds entries that are not tensors: {bad[:3]}")
    return dict(value)


def _split(path: Path, state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The 'encoder.*' and 'decoder.*' parts of a pSp / e4e state dict, prefixes stripped; anything else is an error."""
    parts: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    other = []
    for key, value in state.items():
        head, _, rest = key.partition(".")
        (parts[head].__setitem__(rest, value) if head in parts and rest else other.append(key))
    if other:
        raise UnsafeCheckpointError(f"{path}: state_dict has keys outside encoder.* / decoder.*: {other[:3]}")
    for name, part in parts.items():
        if not part:
            raise UnsafeCheckpointError(f"{path}: state_dict has no {name}.* tensors: not a pSp / e4e checkpoint")
    return parts["encoder"], parts["decoder"]


def read_inversion_checkpoint(path: str | os.PathLike) -> InversionCheckpoint:
    """Read a pSp, e4e or rosinality StyleGAN2 file without running anything in it; tells which it is from the file.

    A truncated, foreign or hostile file raises UnsafeCheckpointError (a ValueError) whose one-line message names the
    problem; a missing file a FileNotFoundError."""
    path = Path(path)
    try:
        data = load_torch(path, map_location="cpu")
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{path} cannot be read as a pSp / e4e / StyleGAN2 checkpoint: "
                                    f"{tensor_file_refusal(path, exc)}") from exc
    if not isinstance(data, Mapping):
        raise UnsafeCheckpointError(f"{path} holds a {type(data).__name__}, not a pSp / e4e / StyleGAN2 checkpoint")
    latent_avg = data.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise UnsafeCheckpointError(f"{path}: latent_avg is a {type(latent_avg).__name__}, not a tensor")
    if "g_ema" in data:
        return InversionCheckpoint(kind="stylegan2", decoder=_tensors(path, "g_ema", data["g_ema"]),
                                   latent_avg=latent_avg, path=str(path))
    if "state_dict" not in data:
        raise UnsafeCheckpointError(f"{path} has neither 'state_dict' (pSp / e4e) nor 'g_ema' (StyleGAN2); its entries "
                                    f"are {sorted(map(str, data))[:6]}")
    opts = data.get("opts")
    if not isinstance(opts, Mapping):
        raise UnsafeCheckpointError(f"{path}: 'opts' is missing, so the file does not say whether it is pSp or e4e")
    encoder_type = opts.get("encoder_type")
    if encoder_type not in ENCODER_TYPES:
        raise UnsafeCheckpointError(f"{path}: opts['encoder_type'] is {encoder_type!r}; guide reads "
                                    f"{' and '.join(ENCODER_TYPES)} (pSp / e4e FFHQ encoders)")
    if latent_avg is None:
        # pSp would then add nothing, and e4e would recompute it from random samples: neither is the released model.
        raise UnsafeCheckpointError(f"{path} has no latent_avg: the released FFHQ encoders are trained from it")
    encoder, decoder = _split(path, _tensors(path, "state_dict", data["state_dict"]))
    return InversionCheckpoint(kind=ENCODER_TYPES[encoder_type], encoder=encoder, decoder=decoder,
                               latent_avg=latent_avg, opts=dict(opts), path=str(path))
