"""The losses of Latent Target Unlearning (GUIDE, Seo et al., CVPR 2024, Sec. 3.3), batched.

Facts taken from the official unlearn.py (KHU-AGI/GUIDE) and kept on purpose:
  - one camera per iteration (yaw ~ U(-pi/12, pi/12), pitch -0.2 from frontal) shared by all three losses;
  - latents come from the mapping network conditioned on the frontal camera with psi = 1;
  - the adjacency norm is taken over each sample's whole [num_ws, 512] code;
  - the adjacency and global losses are SUMS over their N_a / N_g draws (the official code adds them up; the paper's
    text reads as an average - sum = N_a x mean, so lambda_adj = 1 here equals lambda_adj = N_a there).
Deliberate difference: one batched forward per generator per iteration instead of one call per image
(guide_core.engine.reference keeps the one-at-a-time formulation; tests prove both give the same loss). One addition,
off by default: ``n_glob_near`` (global_latents).

The generator is reached only through a Backend (guide_core.backends): ``structure`` is what the local loss's L2 term
compares (EG3D's tri-planes; a 2D generator's image).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from guide_core.backends import Backend
from guide_core.config import LTUConfig
from guide_core.engine.draws import LTUDraws
from guide_core.identity import embedding_similarity
from guide_core.precision import autocast_dtype, mixed_precision


@dataclass
class LossNets:
    """The identity-free networks an LTU step needs, and the backend that renders for them.

    dtype (an autocast dtype, None = fp32) and channels_last say how their convolutions run; their outputs are
    always fp32.
    """

    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> [N]
    id_net: Any  # .embed(images in [-1, 1]) -> unit [N, 512]
    backend: Backend
    dtype: torch.dtype | None = None
    channels_last: bool = False

    @classmethod
    def of(cls, bundle: Any, cfg: LTUConfig) -> "LossNets":
        """The bundle's loss networks with a run's speed settings."""
        return cls(perceptual=bundle.perceptual, id_net=bundle.id_loss_net, backend=bundle.backend,
                   dtype=autocast_dtype(cfg.precision, bundle.device), channels_last=cfg.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Perceptual distance [N] of two image batches."""
        with mixed_precision(self.dtype, x.device.type):
            return self.perceptual(self._layout(x), self._layout(y)).reshape(-1).float()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Unit identity embeddings [N, D] of an image batch."""
        with mixed_precision(self.dtype, x.device.type):
            emb = self.id_net.embed(self._layout(x)).float()
        return torch.nn.functional.normalize(emb, dim=1) if self.dtype is not None else emb


def adjacent_codes(w_u: torch.Tensor, w_t: torch.Tensor, w_r: torch.Tensor,
                   alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adjacent codes (GUIDE Sec. 3.3, L_adj): delta = alpha * (w_r - w_u) / ||w_r - w_u|| added to BOTH w_u and w_t,
    so G_u learns to move the whole neighbourhood of the identity along with it."""
    direction = w_r - w_u
    delta = alpha.view(-1, 1, 1) * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1)
    return w_u + delta, w_t + delta


def global_latents(G_s: torch.nn.Module, w_u: torch.Tensor, draws: LTUDraws, nets: LossNets,
                   cfg: LTUConfig) -> torch.Tensor:
    """The global loss's latents: N_g - N_near random people, plus (n_glob_near, not in the paper) the N_near people
    of a random pool nearest to any source in w but outside the adjacency radius alpha_max.

    The edit spreads to w-neighbours of the source: uniformly random latents rarely land near w_u, so the people an
    unlearning damages most are the ones the paper's global loss almost never sees.
    """
    dev = w_u.device
    w_glob = nets.backend.map(G_s, draws.z_glob.to(dev), cfg.truncation_psi)
    if draws.z_pool.shape[0] == 0:
        return w_glob
    pool = nets.backend.map(G_s, draws.z_pool.to(dev), cfg.truncation_psi)
    distance = torch.cdist(pool.flatten(1), w_u.flatten(1)).min(dim=1).values
    distance = distance.masked_fill(distance <= cfg.alpha_max, math.inf)
    nearest = distance.topk(min(cfg.n_glob_near, cfg.n_glob), largest=False).indices
    return torch.cat([w_glob, pool[nearest]])


def global_pairs(w_glob: torch.Tensor, draws: LTUDraws) -> tuple[torch.Tensor, torch.Tensor]:
    """The global loss's codes for G_u and for G_s: the global latents (the same code on both sides), then, in a run
    that continues a chain, the identities forgotten by earlier runs: G_u(w_u) is held to G_s(w_t), their erased
    state. The global loss pulls G_u toward the ORIGINAL G_s everywhere, which would otherwise give them back."""
    if draws.forgotten is None:
        return w_glob, w_glob
    kept_u, kept_t = (w.to(w_glob) for w in draws.forgotten)
    return torch.cat([w_glob, kept_u]), torch.cat([w_glob, kept_t])


def local_loss(structure_u: torch.Tensor, structure_t: torch.Tensor, x_u: torch.Tensor, x_t: torch.Tensor,
               nets: LossNets, cfg: LTUConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair local unlearning loss (GUIDE Sec. 3.3): lambda_L2 * MSE of the structures (tri-planes) + lambda_per *
    LPIPS of the renders + lambda_id * (1 - cosine of identity embeddings), the target side detached.

    Returns [N] and its parts.
    """
    l2 = (structure_u - structure_t.detach()).pow(2).flatten(1).mean(dim=1)
    per = nets.distance(x_u, x_t.detach())
    with torch.no_grad():
        emb_t = nets.embed(x_t)
    identity = 1.0 - embedding_similarity(nets.embed(x_u), emb_t)
    total = cfg.lambda_l2 * l2 + cfg.lambda_per * per + cfg.lambda_id * identity
    return total, {"l2": l2, "per": per, "id": identity}


def adjacency_loss(local_terms: torch.Tensor) -> torch.Tensor:
    """Adjacency-aware unlearning loss (GUIDE Sec. 3.3): the local loss of each (w_u + delta, w_t + delta) pair,
    summed over the N_a pairs of one source (official unlearn.py) -- ``local_terms`` is [N, N_a]."""
    if local_terms.numel() == 0:
        return local_terms.new_zeros(())
    return local_terms.sum(dim=1).mean()


def global_loss(x_u: torch.Tensor, x_s: torch.Tensor, nets: LossNets) -> torch.Tensor:
    """Global preservation loss (GUIDE Sec. 3.3): LPIPS between G_u and G_s renders of fresh random latents, summed
    over N_g."""
    if x_u.shape[0] == 0:
        return x_u.new_zeros(())
    return nets.distance(x_u, x_s.detach()).sum()


def render(nets: LossNets, G: torch.nn.Module, structure: torch.Tensor, ws: torch.Tensor, c: torch.Tensor | None,
           cfg: LTUConfig) -> torch.Tensor:
    """Images of a structure already computed, through the backend, with the run's speed settings."""
    return nets.backend.render_structure(G, structure, ws, c, cfg)


def identity_scale(n_sources: int, cfg: LTUConfig) -> float:
    """How N identities at once scale the step size and the preservation weight (identity_scaling = s): lr x N^s and
    lambda_glob x N^-s.

    The local loss is a mean over the sources, so each identity's pull weighs 1/N against the global loss, and all N
    share one Adam step (docs/many_identities.md has the measurements behind the default).
    """
    return float(n_sources) ** cfg.identity_scaling


def combine_losses(local_terms: torch.Tensor, adj_terms: torch.Tensor, glob: torch.Tensor,
                   parts: dict[str, torch.Tensor], n_sources: int,
                   cfg: LTUConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Combine the three LTU losses: total = local + lambda_adj * adjacency + lambda_glob * global."""
    local = local_terms.mean()
    adjacency = adjacency_loss(adj_terms)
    total = local + cfg.lambda_adj * adjacency + cfg.lambda_glob / identity_scale(n_sources, cfg) * glob
    losses = {"total": total, "local": local, "adjacency": adjacency, "global": glob,
              "local_l2": parts["l2"][:n_sources].mean(), "local_per": parts["per"][:n_sources].mean(),
              "local_id": parts["id"][:n_sources].mean()}
    return total, losses


def ltu_losses(G_u: torch.nn.Module, G_s: torch.nn.Module, w_u: torch.Tensor, w_t: torch.Tensor,
               structure_t: torch.Tensor, draws: LTUDraws, nets: LossNets, cfg: LTUConfig,
               c: torch.Tensor | None,
               image_t: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One LTU iteration's losses, batched: all of G_u's codes (sources, adjacent codes, global latents) go through
    ONE structure + ONE render pass with gradients; G_s's side is one no-grad pass that reuses the cached structure at
    w_t (and, with a fixed camera and deterministic rendering, the cached image ``image_t``)."""
    backend = nets.backend
    n, (k, n_adj) = w_u.shape[0], draws.z_adj.shape[:2]
    dev = w_u.device
    adj_u, adj_t = (w_u, w_t) if draws.adj_index is None else (w_u[draws.adj_index], w_t[draws.adj_index])
    src_u = adj_u.repeat_interleave(n_adj, dim=0)
    src_t = adj_t.repeat_interleave(n_adj, dim=0)
    w_r_adj = backend.map(G_s, draws.z_adj.reshape(k * n_adj, draws.z_adj.shape[-1]).to(dev), cfg.truncation_psi)
    w_u_adj, w_t_adj = adjacent_codes(src_u, src_t, w_r_adj, draws.alpha.reshape(-1).to(dev))
    glob_u, glob_s = global_pairs(global_latents(G_s, w_u, draws, nets, cfg), draws)
    pairs = n + k * n_adj
    ws_u = torch.cat([w_u, w_u_adj, glob_u])
    cams = None if c is None else c.expand(ws_u.shape[0], -1)
    with torch.no_grad():
        fresh = torch.cat([w_t_adj, glob_s])
        # With N_a = N_g = 0 (the paper's local-only baseline) there is nothing fresh: the synthesis takes no empty batch.
        structure_fresh = backend.structure(G_s, fresh, cfg.noise_mode) if len(fresh) else structure_t[:0]
        structure_s = torch.cat([structure_t, structure_fresh])
        if image_t is None:
            x_s = render(nets, G_s, structure_s, torch.cat([w_t, fresh]), cams, cfg)
        else:  # fixed camera + deterministic rendering: G_s's render of w_t is a constant
            x_fresh = (render(nets, G_s, structure_fresh, fresh, None if cams is None else cams[n:], cfg)
                       if len(fresh) else image_t[:0])
            x_s = torch.cat([image_t, x_fresh])
    structure_u = backend.structure(G_u, ws_u, cfg.noise_mode)
    x_u = render(nets, G_u, structure_u, ws_u, cams, cfg)
    terms, parts = local_loss(structure_u[:pairs], structure_s[:pairs], x_u[:pairs], x_s[:pairs], nets, cfg)
    glob = global_loss(x_u[pairs:], x_s[pairs:], nets)
    return combine_losses(terms[:n], terms[n:].view(k, n_adj), glob, parts, n, cfg)
