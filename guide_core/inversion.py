"""Code optimisation: pulling a generator's renders onto a photo by moving only the code w+.

The erasure audit's attackers and robust unlearning's in-loop attacker are the same optimiser. It minimises
lambda_per * LPIPS + lambda_l2 * MSE + lambda_id * (1 - cos) under the LOSS-side identity net (the ArcFace role) and
never touches the metric net (the CurricularFace role): where a bundle has a single identity net the identity term is
left out, and where its perceptual distance is built on the metric net (the embedded world) so is the perceptual
term, and the attacker matches pixels only.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn.functional as F

from guide_core.identity import embedding_similarity

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

# Weight of the loss-side identity term in the optimisation attacks (pSp / GOAE train their encoders with 0.1-1).
LAMBDA_ID = 0.5


def to_resolution(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a [-1, 1] photo batch to a render's resolution (area filter when shrinking)."""
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear",
                         align_corners=None if x.shape[-1] > size else False)


def attacker_identity_weight(bundle: "ModelBundle", lambda_id: float = LAMBDA_ID) -> float:
    """The weight the attacker may give the loss-side identity net: none when it is the metric net itself."""
    return 0.0 if bundle.id_loss_net is bundle.id_metric_net else float(lambda_id)


def attacker_perceptual_weight(bundle: "ModelBundle") -> float:
    """The weight of the perceptual term: none when the bundle's perceptual distance is made of the metric net."""
    return 0.0 if bundle.perceptual_uses_metric_net else 1.0


def photo_batch(bundle: "ModelBundle", photo: torch.Tensor) -> torch.Tensor:
    """A photo [3, H, W] or batch [N, 3, H, W] as a float batch on the bundle's device."""
    photo = photo.to(bundle.device, torch.float32)
    return photo.unsqueeze(0) if photo.ndim == 3 else photo


def optimise_codes(bundle: "ModelBundle", G: torch.nn.Module, photo: torch.Tensor, w_init: torch.Tensor,
                   steps: int, lr: float = 0.01, lambda_l2: float = 1.0, lambda_id: float = 0.0,
                   lambda_per: float = 1.0, space: str = "wplus",
                   project: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[tuple]:
    """The attacker's code optimisation: G's frontal renders of w (start w_init, one code per photo) pulled onto the
    photos under lambda_per * LPIPS + lambda_l2 * MSE + lambda_id * the loss-side identity loss.

    space "wplus" moves every row of the code on its own; "w" moves one row shared by all (it starts from the mean of
    w_init's rows). ``project`` (e.g. CodeDistribution.project) is applied to the start and after every step, keeping
    the codes inside a set. Yields (step, render, loss, codes) before each Adam step and (steps, render, None, codes)
    at the end, codes as full [N, num_ws, D] codes; the generator is never changed.
    """
    if space not in ("w", "wplus"):
        raise ValueError(f"code space must be 'w' or 'wplus', got {space!r}")
    if steps < 0:
        raise ValueError(f"audit steps must be >= 0, got {steps}")
    if lambda_id and bundle.id_loss_net is bundle.id_metric_net:
        raise ValueError("the attacker's identity term would optimise the metric's own network: this bundle has one "
                         "identity net, so use lambda_id=0 (attacker_identity_weight)")
    if lambda_per and bundle.perceptual_uses_metric_net:
        raise ValueError("the attacker's perceptual term would optimise the metric's own network: this bundle's "
                         "perceptual distance is built on it, so use lambda_per=0 (attacker_perceptual_weight)")
    photo = photo_batch(bundle, photo)
    c = bundle.camera(0.0, 0.0)
    was = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    if lambda_id:
        with torch.no_grad():
            id_target = bundle.id_loss_net.embed(photo)
    start = w_init.detach().clone().to(bundle.device)
    start = start.mean(dim=1, keepdim=True) if space == "w" else start
    w = (project(start) if project is not None else start).requires_grad_(True)
    rows = w_init.shape[1]
    optimizer = torch.optim.Adam([w], lr=lr)
    try:
        for step in range(steps + 1):
            codes = w.expand(-1, rows, -1) if space == "w" else w
            image = bundle.synthesize(G, codes, c)
            if step == steps:
                yield step, image.detach(), None, codes.detach()
                break
            target = to_resolution(photo, image.shape[-1])
            loss = lambda_l2 * F.mse_loss(image, target)
            if lambda_per:
                loss = loss + lambda_per * bundle.perceptual(image, target).mean()
            if lambda_id:
                loss = loss + lambda_id * (1 - embedding_similarity(bundle.id_loss_net.embed(image), id_target)).mean()
            yield step, image.detach(), float(loss.detach()), codes.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if project is not None:
                with torch.no_grad():
                    w.copy_(project(w))
    finally:
        for p, flag in zip(G.parameters(), was):
            p.requires_grad_(flag)
