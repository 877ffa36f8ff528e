"""Held-out measurements of the world's networks, taken during training and by ``export`` for the model card."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from guide_core.eg3d import TriPlaneGenerator
from guide_core.world.encoder import WorldEncoder
from guide_core.world.identity import IdentityNet
from tools.world.data import WorldData


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of images in [-1, 1] (peak-to-peak 2), per image."""
    mse = (a - b).pow(2).mean((1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(4.0 / mse)


def picture_rows(G: nn.Module, data: WorldData, rows: torch.Tensor) -> torch.Tensor:
    """G's picture of data rows ``rows``: their z through the mapping network, rendered from their own cameras."""
    device = next(G.parameters()).device  # data may sit on the CPU while G renders on a GPU
    z, c = data.z[rows].to(device), data.c[rows].to(device)
    return G.synthesis(G.mapping(z, c), c, noise_mode="const", deterministic=True)["image"]


@torch.no_grad()
def evaluate_generator(G: TriPlaneGenerator, data: WorldData, n: int = 64, batch: int = 16) -> dict[str, float]:
    """Held-out quality: PSNR of G(mapping(z), c) against the procedural renders of unseen people and poses."""
    G.eval()
    values, raw_values = [], []
    for i in range(0, min(n, len(data)), batch):
        idx = torch.arange(i, min(i + batch, n, len(data)), device=data.z.device)
        out = G(data.z[idx], data.c[idx], noise_mode="const", deterministic=True)
        target = data.images(idx)
        values.append(psnr(out["image"], target))
        raw_values.append(psnr(out["image_raw"], F.adaptive_avg_pool2d(target, out["image_raw"].shape[-1])))
    v, r = torch.cat(values), torch.cat(raw_values)
    return {"psnr": v.mean().item(), "psnr_min": v.min().item(), "psnr_raw": r.mean().item(), "n": len(v)}


@torch.no_grad()
def multiview_psnr(G: TriPlaneGenerator, n_people: int = 6, yaws: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5),
                   seed: int = 31337) -> dict[str, float]:
    """Whether views of one latent agree across cameras: PSNR per yaw.

    G against the anti-aliased procedural render (2x2 supersampled) of the same held-out people at several yaws; a
    3D-consistent generator scores alike at every yaw.
    """
    from guide_core.world.cameras import camera_params
    from guide_core.world.heads import random_z, render_z
    G.eval()
    z = random_z(n_people, seed).repeat_interleave(len(yaws), 0)
    c = camera_params(torch.tensor(yaws).repeat(n_people), torch.zeros(n_people * len(yaws)))
    target = render_z(z, c, 64).image
    image = G(z, c, noise_mode="const", deterministic=True)["image"]
    per_view = psnr(image, target).view(n_people, len(yaws)).mean(0)
    return {f"psnr_yaw{y:+.2f}": v.item() for y, v in zip(yaws, per_view)}


@torch.no_grad()
def _photo_embeddings(net: IdentityNet, data: WorldData, n: int | None = None, batch: int = 256) -> torch.Tensor:
    """Embeddings of the first ``n`` photos of a data set (all by default), in batches."""
    n = len(data) if n is None else min(n, len(data))
    device = next(net.parameters()).device
    return torch.cat([net(data.images(torch.arange(i, min(i + batch, n))).to(device)).cpu()
                      for i in range(0, n, batch)])


def _threshold_at_far(impostor: torch.Tensor, far: float) -> float:
    """The similarity that a fraction ``far`` of impostor pairs exceed (torch.quantile refuses 16M inputs or more)."""
    if impostor.numel() < 16_000_000:
        return torch.quantile(impostor, 1 - far).item()
    return impostor.kthvalue(int(impostor.numel() * (1 - far))).values.item()


@torch.no_grad()
def verification_tar(net: IdentityNet, data: WorldData, far: float = 0.01, batch: int = 256) -> dict[str, float]:
    """Verification on held-out people: TAR at the threshold where FAR equals ``far`` over all impostor pairs."""
    net.eval()
    emb = _photo_embeddings(net, data, batch=batch)
    sims = emb @ emb.T
    same = data.person[:, None] == data.person[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    genuine = sims[same & upper]
    impostor = sims[~same & upper]
    threshold = _threshold_at_far(impostor, far)
    return {"tar": (genuine > threshold).float().mean().item(), "far": far, "threshold": threshold,
            "genuine_mean": genuine.mean().item(), "impostor_mean": impostor.mean().item(),
            "pairs_genuine": genuine.numel(), "pairs_impostor": impostor.numel()}


@torch.no_grad()
def render_verification(net: IdentityNet, G: nn.Module, data: WorldData, n: int = 256, far: float = 0.01,
                        batch: int = 32) -> dict[str, float]:
    """How the identity net sees the generator.

    The similarity of G's render of a held-out photo's own z and camera to that photo (the best any inversion can
    do), and whether the net still tells people apart there: TAR at FAR ``far`` of render-vs-photo pairs (genuine:
    the render and its photo; impostor: the render and every photo of another person).
    """
    net.eval()
    n = min(n, len(data))
    rendered = torch.cat([net(picture_rows(G, data, torch.arange(i, min(i + batch, n)))) for i in range(0, n, batch)])
    photos = _photo_embeddings(net, data, n, batch)
    sims = rendered @ photos.T
    genuine = sims.diagonal()
    impostor = sims[data.person[:n, None] != data.person[None, :n]]
    threshold = _threshold_at_far(impostor, far)
    return {"render_similarity": genuine.mean().item(), "render_similarity_min": genuine.min().item(),
            "render_tar": (genuine > threshold).float().mean().item(), "render_impostor_mean": impostor.mean().item()}


@torch.no_grad()
def evaluate_encoder(enc: WorldEncoder, G, w_avg: torch.Tensor, idnet: IdentityNet | None, data: WorldData,
                     n: int = 32, batch: int = 64) -> dict[str, float]:
    """Held-out inversion quality: re-render PSNR (same camera as the photo) and identity similarity to the photo."""
    enc.eval()
    values, similarities = [], []
    for i in range(0, min(n, len(data)), batch):
        idx = torch.arange(i, min(i + batch, n, len(data)), device=data.z.device)
        x = data.images(idx)
        image = G.synthesis(enc(x) + w_avg, data.c[idx], noise_mode="const", deterministic=True)["image"]
        values.append(psnr(image, x))
        if idnet is not None:
            similarities.append((idnet(image) * idnet(x)).sum(1))
    result = {"rerender_psnr": torch.cat(values).mean().item(), "n": len(torch.cat(values))}
    if idnet is not None:
        result["id_similarity"] = torch.cat(similarities).mean().item()
    return result
