"""The networks of a pSp / e4e / StyleGAN2 release: ``encoder, generator, latent_avg`` (GUIDE-SG2, App. A.7).

guide_core.weights.read_inversion_checkpoint reads the file as data (tensors only) and tells which it is; this module
builds guide's own networks from it: pSp's GradualStyleEncoder or e4e's Encoder4Editing, wrapped so that they return
ABSOLUTE w+ (latent_avg added, as both repositories do with start_from_latent_avg), and the StyleGAN2 decoder.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from guide_core.encoders.e4e import load_e4e_encoder
from guide_core.encoders.psp import INPUT_SIZE, load_psp_encoder
from guide_core.stylegan2 import StyleGAN2Generator
from guide_core.weights.errors import UnsafeCheckpointError
from guide_core.weights.inversion_file import InversionCheckpoint, read_inversion_checkpoint

ENCODER_LOADERS = {"psp": load_psp_encoder, "e4e": load_e4e_encoder}


class AbsoluteCodeEncoder(nn.Module):
    """An offset encoder plus latent_avg: aligned faces [N, 3, 256, 256] in [-1, 1] -> absolute w+ [N, 18, 512]."""

    def __init__(self, encoder: nn.Module, latent_avg: torch.Tensor, kind: str):
        super().__init__()
        self.encoder, self.kind = encoder, kind
        self.register_buffer("latent_avg", latent_avg.detach().to(torch.float32).clone())
        self.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Absolute codes; the photo must already be the 256² FFHQ crop (guide_core.faces_ffhq)."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"the {self.kind} encoder takes [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] images in [-1, 1], "
                             f"got {list(images.shape)}")
        return self.encoder(images) + self.latent_avg


def build_generator(state: dict[str, torch.Tensor], size: int, source: str,
                    device: str | torch.device = "cpu") -> StyleGAN2Generator:
    """rosinality's FFHQ config-f generator at ``size`` px from its state dict, strict, eval mode, frozen."""
    with torch.device("meta"):
        G = StyleGAN2Generator(size=size)
    expected = G.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mis_shaped:
        parts = [f"{len(items)} {label}: {', '.join(items[:4])}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)) if items]
        raise UnsafeCheckpointError(f"{source}: the decoder does not fit StyleGAN2 {size} px: " + "; ".join(parts))
    state = {k: v.to(expected[k].dtype) for k, v in state.items()}
    G.load_state_dict(state, strict=True, assign=True)
    return G.to(device).eval().requires_grad_(False)


def build_inversion_networks(ckpt: InversionCheckpoint, device: str | torch.device = "cpu"):
    """``(encoder or None, generator, latent_avg)`` of a checkpoint read by read_inversion_checkpoint."""
    size = int(ckpt.opts.get("output_size") or ckpt.opts.get("stylegan_size") or 1024)
    generator = build_generator(ckpt.decoder, size, ckpt.path or ckpt.kind, device)
    latent_avg = None if ckpt.latent_avg is None else ckpt.latent_avg.to(device, torch.float32)
    if ckpt.kind == "stylegan2":
        return None, generator, latent_avg
    rows = generator.num_ws
    if latent_avg.shape not in ((rows, generator.w_dim), (generator.w_dim,)):
        raise UnsafeCheckpointError(f"{ckpt.path}: latent_avg has shape {list(latent_avg.shape)}, expected "
                                    f"[{rows}, {generator.w_dim}]")
    encoder = AbsoluteCodeEncoder(ENCODER_LOADERS[ckpt.kind](ckpt.encoder, device), latent_avg, ckpt.kind)
    return encoder, generator, latent_avg


def load_inversion_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``encoder, generator, latent_avg`` of a pSp / e4e file (or ``None, generator, latent_avg`` of a StyleGAN2 one).

    ``encoder(images [N,3,256,256] in [-1,1])`` returns absolute w+ [N, 18, 512] (latent_avg added);
    ``generator(ws)`` returns [N, 3, 1024, 1024] images. Nothing stored in the file is run."""
    return build_inversion_networks(read_inversion_checkpoint(path), device)
