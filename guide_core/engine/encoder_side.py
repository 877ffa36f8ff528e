"""Encoder-side unlearning (beyond the paper; after IREU, Shi, Zhang and Yang 2026, who unlearn an identity in the
inversion encoder alone, and AdvUnlearn's finding that the gateway is the better place to defend).

A hosted generator is reached through its encoder: a visitor uploads a photo, the encoder inverts it, G_u renders the
code. Unlearning G_u moves the person's stored latent, but the encoder still inverts a new photo of them to a code
from which G_u draws them again. Here a copy E_u of the encoder is fine-tuned after the generator so that the
person's photos (flipped and slightly re-cropped too) invert to their target w_t, while strangers' inversions stay
where the original encoder puts them:

  L = mean_i ||E_u(aug(photo_i)) - w_t,i||^2 + lambda_keep * mean_k ||E_u(x_k) - E(x_k)||^2

with the strangers x_k rendered by G_s from seeded random people at a few yaws (and flipped). Only E_u's
parameters train; a run stores the tensors of E_u that changed.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle
    from guide_core.config import LTUConfig

KEEP_PEOPLE = 48
KEEP_YAWS = (-0.3, 0.0, 0.3)


def augment(photos: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The photos, their mirror images, and a random re-crop (90-100 % of the side, resized back) of each."""
    side = photos.shape[-1]
    crops = []
    for photo in photos:
        size = int(side * (0.9 + 0.1 * torch.rand((), generator=gen).item()))
        top, left = (int(torch.randint(0, side - size + 1, (), generator=gen)) for _ in range(2))
        crop = photo[None, :, top:top + size, left:left + size]
        crops.append(F.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False))
    return torch.cat([photos, photos.flip(-1), *crops])


def strangers_for_encoder(bundle: "ModelBundle", seed: int, people: int = KEEP_PEOPLE) -> torch.Tensor:
    """G_s's renders of ``people`` seeded random people at a few yaws, and their mirror images."""
    z = torch.randn(people, bundle.z_dim, generator=torch.Generator().manual_seed(seed + 7))
    w = bundle.map(bundle.G, z)
    renders = torch.cat([bundle.render(bundle.G, w, yaw) for yaw in (KEEP_YAWS if bundle.has_camera else (0.0,))])
    return torch.cat([renders, renders.flip(-1)])


def unlearn_encoder(bundle: "ModelBundle", photos: list[torch.Tensor], w_t: torch.Tensor, cfg: "LTUConfig",
                    base: torch.nn.Module | None = None) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """E_u: a copy of ``base`` (default: the bundle's encoder) fine-tuned so that each identity's photos invert to its
    w_t while strangers' inversions stay; returns it (eval, frozen) and its loss history."""
    source = base if base is not None else bundle.encoder
    if not isinstance(source, torch.nn.Module):
        raise ValueError(f"model {bundle.name!r} has no encoder module to fine-tune: encoder-side unlearning needs one")
    gen = torch.Generator().manual_seed(cfg.seed)
    keep = strangers_for_encoder(bundle, cfg.seed)
    with torch.no_grad():
        keep_codes = source(keep)
    encoder = copy.deepcopy(source).train().requires_grad_(True)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=cfg.encoder_lr)
    history = []
    for _ in range(cfg.encoder_steps):
        forget, targets = [], []
        for images, target in zip(photos, w_t):
            views = augment(images.to(bundle.device), gen)
            forget.append(views)
            targets.append(target.expand(len(views), -1, -1))
        chosen = torch.randperm(len(keep), generator=gen)[:16]
        forget_loss = F.mse_loss(encoder(torch.cat(forget)), torch.cat(targets))
        keep_loss = F.mse_loss(encoder(keep[chosen]), keep_codes[chosen])
        loss = forget_loss + cfg.lambda_encoder_keep * keep_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"forget": float(forget_loss.detach()), "keep": float(keep_loss.detach())})
    return encoder.eval().requires_grad_(False), history


def changed_encoder_tensors(encoder: torch.nn.Module, original: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of E_u that differ from the original encoder, under "encoder." + their state_dict names."""
    base = original.state_dict()
    return {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()
            if not torch.equal(v.detach().cpu(), base[k].detach().cpu())}


def encoder_with(original: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> torch.nn.Module | None:
    """The unlearned encoder a run saved ("encoder." tensors of its method file) on a copy of the original; None when
    the run has none."""
    own = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if not own:
        return None
    encoder = copy.deepcopy(original)
    state = encoder.state_dict()
    unknown = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if unknown:
        raise ValueError(f"the run's encoder tensors do not fit this model's encoder ({unknown[0]}, ...)")
    with torch.no_grad():
        for key, value in own.items():
            state[key].copy_(value.to(state[key]))
    return encoder.eval().requires_grad_(False)
