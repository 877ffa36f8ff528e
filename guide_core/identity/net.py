"""Frozen identity networks, their checkpoint loading (through the weights manager's safe loaders), the identity loss
of GUIDE's local objective (§4, from pSp's IDLoss with the IR-SE50 ArcFace backbone) and the cosine identity
similarity behind the ID metric (§5, CurricularFace)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Union

import torch
from torch import nn

from guide_core.weights.catalogue import require
from guide_core.weights.safe_load import load_safetensors, load_torch, tensor_file_refusal

from .backbone import IRBackbone
from .preprocess import arcface_align, eg3d_crop_face_input, idloss_face_input

StateSource = Union[str, Path, Mapping[str, torch.Tensor]]
PREPROCESSINGS = ("idloss", "eg3d_crop", "aligned")


class IdentityCheckpointError(ValueError):
    """Raised when a checkpoint does not fit the backbone (or cannot be read); the message names the offending keys."""


class IdentityNet(nn.Module):
    """A frozen IR backbone plus the preprocessing that turns [-1,1] images into its 112x112 faces."""

    def __init__(self, backbone: IRBackbone, preprocessing: str):
        super().__init__()
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}, got {preprocessing!r}")
        self.backbone = backbone
        self.preprocessing = preprocessing
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "IdentityNet":
        """Stays in eval mode whatever a parent module asks: batch statistics or dropout would change every
        embedding."""
        return super().train(False)

    def face_input(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone input for `images`; with landmarks ([N,5,2] pixel coordinates) the ArcFace warp replaces the
        default."""
        if landmarks is not None:
            return arcface_align(images, landmarks)
        if self.preprocessing == "idloss":
            return idloss_face_input(images)
        if self.preprocessing == "eg3d_crop":
            return eg3d_crop_face_input(images)
        return images

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """[N,3,H,W] images in [-1,1] -> [N,512] unit-length identity embeddings."""
        return self.backbone(self.face_input(images, landmarks))

    def forward(self, images: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """The same as embed."""
        return self.embed(images, landmarks)


def read_state_dict(source: StateSource, what: str = "identity network") -> dict[str, torch.Tensor]:
    """Read a state dict from a .pth/.pt (tensors only, weights_only=True), a .safetensors file, or take a mapping as
    is."""
    if isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} weights not found: {path}. Put the file there (see "
                                    f"`python -m guide_core weights status` for every file and where to get it).")
        if path.suffix == ".safetensors":
            state = load_safetensors(path)[0]
        else:
            try:
                state = load_torch(path)
            except Exception as error:  # an unpickling refusal or a corrupt file: say which file, in our words
                raise IdentityCheckpointError(f"cannot read {what} checkpoint {path} as a plain tensor file "
                                              f"(torch.load weights_only=True): {tensor_file_refusal(path, error)}"
                                              ) from None
        if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IdentityCheckpointError(f"{what} checkpoint is not a mapping of names to tensors")
    state = dict(state)
    # Checkpoints saved from a wrapper (DataParallel, or pSp's IDLoss module) carry a prefix on every key.
    for prefix in ("module.", "facenet."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def fill_batchnorm_counters(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch's BatchNorm counts batches in `num_batches_tracked` (version 2 of its state); checkpoints saved before that
    (the released IR-SE50 among them) lack the counters, and torch's own loading of a state dict without version
    metadata fills each missing one with 0. Same here, for every BatchNorm of `model` that tracks running statistics."""
    state = dict(state)
    for name, module in model.named_modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and module.track_running_stats:
            state.setdefault(f"{name}.num_batches_tracked" if name else "num_batches_tracked",
                             torch.tensor(0, dtype=torch.long))
    return state


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Load `state` into `model` with strict matching, first listing every missing, unexpected or mis-shaped key
    (missing BatchNorm counters are filled first, as torch does)."""
    state = fill_batchnorm_counters(model, state)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [f"{key}: checkpoint {tuple(state[key].shape)} vs model {tuple(value.shape)}"
                  for key, value in expected.items() if key in state and state[key].shape != value.shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise IdentityCheckpointError(f"checkpoint does not fit the {what}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def load_ir_se50(source: StateSource | None = None, device: str | torch.device = "cpu") -> IdentityNet:
    """IR-SE50 (ArcFace, `model_ir_se50.pth`) with IDLoss preprocessing: the network of GUIDE's identity loss. `source`:
    a path, a state dict, or None for the weights manager's file (weights/model_ir_se50.pth)."""
    backbone = IRBackbone(num_layers=50, mode="ir_se", drop_ratio=0.6, affine_output=True)
    source = require("ir_se50") if source is None else source
    load_strict(backbone, read_state_dict(source, "IR-SE50 (model_ir_se50.pth)"), "IR-SE50 backbone")
    return IdentityNet(backbone, "idloss").to(device)


def load_ir101(source: StateSource | None = None, device: str | torch.device = "cpu",
               preprocessing: str = "eg3d_crop") -> IdentityNet:
    """IR-101 (CurricularFace, `CurricularFace_Backbone.pth`): the network of the ID metric. `preprocessing` is
    "eg3d_crop" (square EG3D/GOAE-aligned crops, fixed ArcFace warp) or "aligned" (inputs already 112x112 faces).
    `source`: a path, a state dict, or None for the weights manager's file (weights/CurricularFace_Backbone.pth)."""
    backbone = IRBackbone(num_layers=100, mode="ir", drop_ratio=0.4, affine_output=False)
    source = require("curricularface") if source is None else source
    load_strict(backbone, read_state_dict(source, "IR-101 (CurricularFace_Backbone.pth)"), "IR-101 backbone")
    return IdentityNet(backbone, preprocessing).to(device)


class IDLoss(nn.Module):
    """The identity loss: batch mean of 1 - cos(emb(y_hat), emb(y)); the y side is a constant, gradients reach
    y_hat only."""

    def __init__(self, net: IdentityNet):
        super().__init__()
        self.net = net

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of a batch of generated images `y_hat` against their targets `y` (equal batch sizes)."""
        if y_hat.shape[0] != y.shape[0]:
            raise ValueError(f"IDLoss: batch sizes differ ({y_hat.shape[0]} vs {y.shape[0]})")
        with torch.no_grad():
            target = self.net.embed(y)
        return (1 - embedding_similarity(self.net.embed(y_hat), target)).mean()


def embedding_similarity(emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
    """Per-pair cosine [N] of unit identity embeddings [N, 512] (either may have batch 1 and broadcast): the one
    similarity behind the ID metric, the identity loss and the re-inversion attack's score."""
    if emb_a.shape[0] != emb_b.shape[0] and 1 not in (emb_a.shape[0], emb_b.shape[0]):
        raise ValueError(f"identity similarity: batch sizes {emb_a.shape[0]} and {emb_b.shape[0]} do not broadcast")
    return (emb_a * emb_b).sum(dim=1)


def identity_similarity(net: IdentityNet, a: torch.Tensor, b: torch.Tensor,
                        landmarks_a: torch.Tensor | None = None,
                        landmarks_b: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair cosine identity similarity [N] of two image batches under `net` (anything with `.embed(images)`; the
    landmarks are passed on only when given)."""
    emb_a = net.embed(a) if landmarks_a is None else net.embed(a, landmarks_a)
    emb_b = net.embed(b) if landmarks_b is None else net.embed(b, landmarks_b)
    return embedding_similarity(emb_a, emb_b)
