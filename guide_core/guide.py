# GUIDE (Seo et al., "Generative Unlearning for Any Identity", CVPR 2024): the UFO target (Sec. 3.2), Latent Target
# Unlearning with its local / adjacency / global losses (Sec. 3.3), the batched unlearning loop of one or many
# identities, alone or continuing an earlier run (run records: guide_core.runs).
#
# Facts taken from the official unlearn.py (KHU-AGI/GUIDE) and kept here on purpose:
#   - only `backbone.synthesis` of a copy G_u is trained (Adam, lr 1e-4, 1000 iterations); G_s stays frozen;
#   - one camera per iteration (yaw ~ U(-pi/12, pi/12), pitch -0.2 from frontal) shared by all three losses;
#   - latents come from the mapping network conditioned on the frontal camera with psi = 1;
#   - the UFO norm and the adjacency norm are taken over each sample's whole [num_ws, 512] code;
#   - the adjacency and global losses are SUMS over their N_a / N_g draws (the official code adds them up; the
#     paper's text reads as an average - sum = N_a x mean, so lambda_adj = 1 here equals lambda_adj = N_a there).
# Deliberate differences: noise_mode "const" (the official run uses random per-layer noise, which would make G_s's
# target planes differ every call; const noise makes them a constant that is computed once), and one batched
# forward per generator per iteration instead of one call per image (`ltu_losses_reference` keeps the one-at-a-time
# formulation; tests prove both give the same loss). One addition, off by default: `n_glob_near` (global_latents).
from __future__ import annotations

import copy
import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from guide_core.config import LTUConfig  # noqa: F401 - re-exported
from guide_core.precision import autocast_dtype, mixed_precision

if TYPE_CHECKING:  # the bundle module imports model code lazily; only its type is needed here
    from guide_core.bundle import ModelBundle

TRAINABLE_PREFIX = "backbone.synthesis."
# Random people drawn per iteration among which LTUConfig.n_glob_near picks the ones nearest to w_u.
NEAR_POOL = 64
# Offset of robust unlearning's random attack starts from the run's seed: a stream apart from the run's draws.
ATTACK_START_STREAM = 7919


# UFO, "Un-identifying Face On latent space" (GUIDE Sec. 3.2): extrapolate from the source code w_u through the mean
# w_avg to the far side, at distance d. d = 0 is the mean face (the paper's "average" baseline target); d < 0 moves
# toward the source (ablation). The norm is over each sample's whole code, as the official implementation takes it.
def ufo_target(w_u: torch.Tensor, w_avg: torch.Tensor, d: float = 30.0) -> torch.Tensor:
    if w_u.ndim not in (2, 3) or w_u.shape[-1] != w_avg.shape[-1]:
        raise ValueError(f"w_u must be [num_ws, {w_avg.shape[-1]}] or [N, num_ws, {w_avg.shape[-1]}], "
                         f"got {tuple(w_u.shape)}")
    if not math.isfinite(float(d)):
        raise ValueError(f"UFO distance d must be finite, got {d!r}")
    single = w_u.ndim == 2
    codes = w_u.unsqueeze(0) if single else w_u
    w_avg = w_avg.to(codes)
    offset = codes - w_avg
    norm = offset.flatten(1).norm(dim=1).view(-1, 1, 1)
    if bool((norm == 0).any()):
        raise ValueError("w_u equals w_avg: the source is the mean face, so UFO has no direction to extrapolate along")
    w_t = w_avg - d * offset / norm
    return w_t[0] if single else w_t


# The random draws of one LTU iteration (camera yaw, adjacency latents + step sizes, global latents): drawn once and
# shared by the batched and the reference formulation, so both can be compared on identical inputs.
@dataclass
class LTUDraws:
    yaw: float
    z_adj: torch.Tensor  # [K, N_a, z_dim] for the K sources of adj_index
    alpha: torch.Tensor  # [K, N_a]
    z_glob: torch.Tensor  # [N_g - N_near, z_dim]
    z_pool: torch.Tensor  # [NEAR_POOL or 0, z_dim]: candidates for the N_near global latents nearest to w_u
    adj_index: torch.Tensor | None = None  # [K] sources that get adjacent latents this iteration; None = all N
    # Identities forgotten by earlier runs of a chain, this iteration's turn: (their w_u, their w_t), [M, num_ws, w_dim].
    forgotten: tuple[torch.Tensor, torch.Tensor] | None = None


# K of n items taken in turns at iteration `step` (K consecutive ones in a cycle, so each gets the same share of the
# iterations); None when K is 0 or covers them all.
def in_turns(step: int, n: int, k: int) -> torch.Tensor | None:
    if k == 0 or k >= n:
        return None
    return (torch.arange(k) + step * k) % n


# The sources whose adjacency pairs iteration `step` computes: all of them, or (n_adj_sources = K < N) K of them in
# turns, so a step costs K * N_a adjacency pairs instead of N * N_a.
def adjacency_sources(step: int, n_sources: int, cfg: LTUConfig) -> torch.Tensor | None:
    return in_turns(step, n_sources, cfg.n_adj_sources)


# Draw one iteration's randomness from a CPU generator (device-independent streams -> the same run on CPU and GPU).
def sample_draws(gen: torch.Generator, cfg: LTUConfig, n_sources: int, z_dim: int, step: int = 0) -> LTUDraws:
    yaw = float((torch.rand(1, generator=gen, dtype=torch.float64) * 2 - 1).item() * cfg.yaw_range)
    adj_index = adjacency_sources(step, n_sources, cfg)
    n_adj_rows = n_sources if adj_index is None else len(adj_index)
    z_adj = torch.randn(n_adj_rows, cfg.n_adj, z_dim, generator=gen)
    alpha = torch.rand(n_adj_rows, cfg.n_adj, generator=gen) * cfg.alpha_max
    n_near = min(cfg.n_glob_near, cfg.n_glob)
    z_glob = torch.randn(cfg.n_glob - n_near, z_dim, generator=gen)
    # Drawn last and only when asked: runs at n_glob_near = 0 keep the random stream they always had.
    z_pool = torch.randn(NEAR_POOL, z_dim, generator=gen) if n_near else torch.zeros(0, z_dim)
    return LTUDraws(yaw=yaw, z_adj=z_adj, alpha=alpha, z_glob=z_glob, z_pool=z_pool, adj_index=adj_index)


# The identity-free networks an LTU step needs; the bundle supplies them, the loss functions only see this. dtype
# (an autocast dtype, None = fp32) and channels_last say how their convolutions run; their outputs are always fp32.
@dataclass
class LossNets:
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> [N]
    id_net: Any  # .embed(images in [-1, 1]) -> unit [N, 512]
    cond_c: torch.Tensor  # [1, 25] frontal camera: the mapping network's conditioning
    dtype: torch.dtype | None = None
    channels_last: bool = False

    # The bundle's loss networks with a run's speed settings.
    @classmethod
    def of(cls, bundle: "ModelBundle", cfg: "LTUConfig") -> "LossNets":
        return cls(perceptual=bundle.perceptual, id_net=bundle.id_loss_net, cond_c=bundle.cond_c.to(bundle.device),
                   dtype=autocast_dtype(cfg.precision, bundle.device), channels_last=cfg.channels_last)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    # Perceptual distance [N] of two image batches.
    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with mixed_precision(self.dtype, x.device.type):
            return self.perceptual(self._layout(x), self._layout(y)).reshape(-1).float()

    # Unit identity embeddings [N, D] of an image batch.
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        with mixed_precision(self.dtype, x.device.type):
            emb = self.id_net.embed(self._layout(x)).float()
        return torch.nn.functional.normalize(emb, dim=1) if self.dtype is not None else emb


# Latents of the mapping network for fresh z (GUIDE Sec. 3.3: w_r = mapping(z), frontal conditioning, psi).
def map_latents(G: torch.nn.Module, z: torch.Tensor, cond_c: torch.Tensor, psi: float) -> torch.Tensor:
    with torch.no_grad():
        return G.mapping(z, cond_c.expand(z.shape[0], -1), truncation_psi=psi)


# Adjacent codes (GUIDE Sec. 3.3, Eq. for L_adj): delta = alpha * (w_r - w_u) / ||w_r - w_u|| added to BOTH w_u and
# w_t, so G_u learns to move the whole neighbourhood of the identity along with it.
def adjacent_codes(w_u: torch.Tensor, w_t: torch.Tensor, w_r: torch.Tensor,
                   alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    direction = w_r - w_u
    delta = alpha.view(-1, 1, 1) * direction / direction.flatten(1).norm(dim=1).view(-1, 1, 1)
    return w_u + delta, w_t + delta


# The global loss's latents: N_g - N_near random people, plus (n_glob_near, not in the paper) the N_near people of a
# random pool nearest to any source in w but outside the adjacency radius alpha_max. The edit spreads to w-neighbours
# of the source (README, "The embedded default world"): uniformly random latents rarely land near w_u, so the people
# an unlearning damages most are the ones the paper's global loss almost never sees.
def global_latents(G_s: torch.nn.Module, w_u: torch.Tensor, draws: LTUDraws, nets: LossNets,
                   cfg: LTUConfig) -> torch.Tensor:
    dev = w_u.device
    w_glob = map_latents(G_s, draws.z_glob.to(dev), nets.cond_c, cfg.truncation_psi)
    if draws.z_pool.shape[0] == 0:
        return w_glob
    pool = map_latents(G_s, draws.z_pool.to(dev), nets.cond_c, cfg.truncation_psi)
    distance = torch.cdist(pool.flatten(1), w_u.flatten(1)).min(dim=1).values
    distance = distance.masked_fill(distance <= cfg.alpha_max, math.inf)
    nearest = distance.topk(min(cfg.n_glob_near, cfg.n_glob), largest=False).indices
    return torch.cat([w_glob, pool[nearest]])


# The global loss's codes for G_u and for G_s: the global latents (the same code on both sides), then, in a run that
# continues a chain, the identities forgotten by earlier runs: G_u(w_u) is held to G_s(w_t), their erased state.
# The global loss pulls G_u toward the ORIGINAL G_s everywhere, which would otherwise give them back.
def global_pairs(w_glob: torch.Tensor, draws: LTUDraws) -> tuple[torch.Tensor, torch.Tensor]:
    if draws.forgotten is None:
        return w_glob, w_glob
    kept_u, kept_t = (w.to(w_glob) for w in draws.forgotten)
    return torch.cat([w_glob, kept_u]), torch.cat([w_glob, kept_t])


# Per-pair local unlearning loss (GUIDE Sec. 3.3): lambda_L2 * MSE of the tri-planes + lambda_per * LPIPS of the
# renders + lambda_id * (1 - cosine of identity embeddings), the target side detached. Returns [N] and its parts.
def local_loss(planes_u: torch.Tensor, planes_t: torch.Tensor, x_u: torch.Tensor, x_t: torch.Tensor,
               nets: LossNets, cfg: LTUConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from guide_core.identity import embedding_similarity

    l2 = (planes_u - planes_t.detach()).pow(2).flatten(1).mean(dim=1)
    per = nets.distance(x_u, x_t.detach())
    with torch.no_grad():
        emb_t = nets.embed(x_t)
    identity = 1.0 - embedding_similarity(nets.embed(x_u), emb_t)
    total = cfg.lambda_l2 * l2 + cfg.lambda_per * per + cfg.lambda_id * identity
    return total, {"l2": l2, "per": per, "id": identity}


# Adjacency-aware unlearning loss (GUIDE Sec. 3.3): the local loss of each (w_u + delta, w_t + delta) pair, summed over
# the N_a pairs of one source (official unlearn.py) -- `local_terms` is [N, N_a].
def adjacency_loss(local_terms: torch.Tensor) -> torch.Tensor:
    if local_terms.numel() == 0:
        return local_terms.new_zeros(())
    return local_terms.sum(dim=1).mean()


# Global preservation loss (GUIDE Sec. 3.3): LPIPS between G_u and G_s renders of fresh random latents, summed over N_g.
def global_loss(x_u: torch.Tensor, x_s: torch.Tensor, nets: LossNets) -> torch.Tensor:
    if x_u.shape[0] == 0:
        return x_u.new_zeros(())
    return nets.distance(x_u, x_s.detach()).sum()


# Robust unlearning (beyond the paper): an attacker who re-inverts the photo into G_u finds latents that still render
# the person. Every attack_every iterations the audit's own attacker (audit.optimise_codes) runs attack_steps steps
# into the current G_u from `attack_chains` starts per identity at once: w_u, w̄, then seeded random people (a stream
# of their own, never the audit's draws), each chain re-inverting one of the identity's photos (in turns) and
# warm-started from the latent it found last, so a chain's steps add up over a run like one long attack. The latents
# found are held to the identity's target like w_u itself (the local loss of (G_u(w_adv), G_s(w_t)) pairs), the last
# `adversarial_sources` per identity (a round adds attack_chains of them). Measured on the default world
# (docs/results.md): it holds off its own warm chains but not a fresh attack, so it is off by default.
class AdversarialMemory:
    def __init__(self, bundle: "ModelBundle", w_u: torch.Tensor, photos: list[torch.Tensor], cfg: LTUConfig):
        self.capacity = cfg.adversarial_sources
        self.photos = photos  # per identity [P, 3, H, W]: the photos the attacker re-inverts, in turns
        gen = torch.Generator().manual_seed(cfg.seed + ATTACK_START_STREAM)
        n_random = max(cfg.attack_chains - 2, 0)
        z = torch.randn(len(photos), n_random, bundle.z_dim, generator=gen).to(w_u.device)
        w_avg = bundle.w_avg_code()[None].to(w_u)
        self.chains = []  # per identity [attack_chains, num_ws, 512]: the latest latent of each chain
        for i in range(len(photos)):
            starts = [w_u[i:i + 1], w_avg] + ([map_latents(bundle.G, z[i], bundle.cond_c.to(w_u.device), 1.0)]
                                              if n_random else [])
            self.chains.append(torch.cat(starts)[:cfg.attack_chains].clone())
        with torch.no_grad():  # the loss-side net is frozen: the photos' embeddings are fixed for the whole run
            self.photo_embeddings = [bundle.id_loss_net.embed(p) for p in photos]
        self.codes: list[torch.Tensor] = [w_u[:0].clone() for _ in photos]  # per identity [<= capacity, num_ws, 512]
        self.found_id: list[float] = []  # per round: the best similarity to a photo the attacker reached (loss-side net)
        self.rounds = 0

    # One round: every chain of every identity takes attack_steps steps into G_u; keep what they found.
    def attack(self, bundle: "ModelBundle", G_u: torch.nn.Module, cfg: LTUConfig) -> None:
        from guide_core.audit import attacker_identity_weight, attacker_perceptual_weight, optimise_codes
        from guide_core.identity import embedding_similarity
        was_training = G_u.training
        G_u.eval()
        best = -1.0
        for i, photos in enumerate(self.photos):
            k = len(self.chains[i])
            turn = (torch.arange(k) + self.rounds) % len(photos)
            photo = photos[turn]
            *_, (_, image, _, found) = optimise_codes(bundle, G_u, photo, self.chains[i], cfg.attack_steps,
                                                      lambda_id=attacker_identity_weight(bundle),
                                                      lambda_per=attacker_perceptual_weight(bundle))
            self.chains[i] = found
            self.codes[i] = torch.cat([self.codes[i], found])[-self.capacity:]
            with torch.no_grad():
                found_id = embedding_similarity(bundle.id_loss_net.embed(image), self.photo_embeddings[i][turn])
            best = max(best, float(found_id.max()))
        self.found_id.append(best)
        G_u.train(was_training)
        self.rounds += 1

    # The kept latents [M, num_ws, 512] and, for each, the index of its identity [M]; None before the first attack.
    def sources(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not sum(len(c) for c in self.codes):
            return None
        owner = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(self.codes)])
        return torch.cat(self.codes), owner


# The adversarial sources' loss: the local loss of each (G_u(w_adv), G_s(w_t of its identity)) pair, mean over pairs.
def adversarial_loss(G_u: torch.nn.Module, G_s: torch.nn.Module, w_adv: torch.Tensor, owner: torch.Tensor,
                     w_t: torch.Tensor, planes_t: torch.Tensor, nets: LossNets, cfg: LTUConfig,
                     c: torch.Tensor) -> torch.Tensor:
    cams = c.expand(w_adv.shape[0], -1)
    with torch.no_grad():
        x_t = render(G_s, planes_t[owner], w_t[owner], cams, cfg)
    planes_adv = G_u.get_planes(w_adv, noise_mode=cfg.noise_mode)
    x_adv = render(G_u, planes_adv, w_adv, cams, cfg)
    terms, _ = local_loss(planes_adv, planes_t[owner], x_adv, x_t, nets, cfg)
    return terms.mean()


# Render tri-planes through a generator's decoder, volume renderer and super-resolution (EG3D Sec. 3-4), with the
# run's speed settings (fused_modconv=None leaves each SR block to its own train/eval default).
def render(G: torch.nn.Module, planes: torch.Tensor, ws: torch.Tensor, c: torch.Tensor, cfg: LTUConfig) -> torch.Tensor:
    return G.render_planes(planes, c, ws=ws, noise_mode=cfg.noise_mode, deterministic=cfg.deterministic_render,
                           sr_dtype=autocast_dtype(cfg.precision, planes.device), compiled=cfg.compile_renderer,
                           fused_modconv=True if cfg.fused_sr else None)["image"]


# How N identities at once scale the step size and the preservation weight (identity_scaling = s): lr x N^s and
# lambda_glob x N^-s. The local loss is a mean over the sources, so each identity's pull weighs 1/N against the global
# loss, and all N share one Adam step; measured on the default world (docs/many_identities.md), 8 identities at the
# single-identity settings were barely erased, while the sum over sources (s = 1) erased all 8 but damaged far people.
def identity_scale(n_sources: int, cfg: LTUConfig) -> float:
    return float(n_sources) ** cfg.identity_scaling


# Combine the three LTU losses: total = local + lambda_adj * adjacency + lambda_glob * global.
def _combine(local_terms: torch.Tensor, adj_terms: torch.Tensor, glob: torch.Tensor, parts: dict[str, torch.Tensor],
             n_sources: int, cfg: LTUConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    local = local_terms.mean()
    adjacency = adjacency_loss(adj_terms)
    total = local + cfg.lambda_adj * adjacency + cfg.lambda_glob / identity_scale(n_sources, cfg) * glob
    losses = {"total": total, "local": local, "adjacency": adjacency, "global": glob,
              "local_l2": parts["l2"][:n_sources].mean(), "local_per": parts["per"][:n_sources].mean(),
              "local_id": parts["id"][:n_sources].mean()}
    return total, losses


# One LTU iteration's losses, batched: all of G_u's codes (sources, adjacent codes, global latents) go through ONE
# synthesis + ONE render pass with gradients; G_s's side is one no-grad pass that reuses the cached planes at w_t.
def ltu_losses(G_u: torch.nn.Module, G_s: torch.nn.Module, w_u: torch.Tensor, w_t: torch.Tensor,
               planes_t: torch.Tensor, draws: LTUDraws, nets: LossNets, cfg: LTUConfig,
               c: torch.Tensor, image_t: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    n, (k, n_adj) = w_u.shape[0], draws.z_adj.shape[:2]
    dev = w_u.device
    adj_u, adj_t = (w_u, w_t) if draws.adj_index is None else (w_u[draws.adj_index], w_t[draws.adj_index])
    src_u = adj_u.repeat_interleave(n_adj, dim=0)
    src_t = adj_t.repeat_interleave(n_adj, dim=0)
    w_r_adj = map_latents(G_s, draws.z_adj.reshape(k * n_adj, draws.z_adj.shape[-1]).to(dev), nets.cond_c,
                          cfg.truncation_psi)
    w_u_adj, w_t_adj = adjacent_codes(src_u, src_t, w_r_adj, draws.alpha.reshape(-1).to(dev))
    glob_u, glob_s = global_pairs(global_latents(G_s, w_u, draws, nets, cfg), draws)
    pairs = n + k * n_adj
    ws_u = torch.cat([w_u, w_u_adj, glob_u])
    cams = c.expand(ws_u.shape[0], -1)
    with torch.no_grad():
        fresh = torch.cat([w_t_adj, glob_s])
        # With N_a = N_g = 0 (the paper's local-only baseline) there is nothing fresh: the synthesis takes no empty batch.
        planes_fresh = G_s.get_planes(fresh, noise_mode=cfg.noise_mode) if len(fresh) else planes_t[:0]
        planes_s = torch.cat([planes_t, planes_fresh])
        if image_t is None:
            x_s = render(G_s, planes_s, torch.cat([w_t, fresh]), cams, cfg)
        else:  # fixed camera + deterministic rendering: G_s's render of w_t is a constant
            x_fresh = render(G_s, planes_fresh, fresh, cams[n:], cfg) if len(fresh) else image_t[:0]
            x_s = torch.cat([image_t, x_fresh])
    planes_u = G_u.get_planes(ws_u, noise_mode=cfg.noise_mode)
    x_u = render(G_u, planes_u, ws_u, cams, cfg)
    terms, parts = local_loss(planes_u[:pairs], planes_s[:pairs], x_u[:pairs], x_s[:pairs], nets, cfg)
    glob = global_loss(x_u[pairs:], x_s[pairs:], nets)
    return _combine(terms[:n], terms[n:].view(k, n_adj), glob, parts, n, cfg)


# The same losses formulated one image at a time, the way the official unlearn.py computes them (each code through
# get_planes and again through the full synthesis, G_s recomputed every time). Reference for tests and benchmark.
def ltu_losses_reference(G_u: torch.nn.Module, G_s: torch.nn.Module, w_u: torch.Tensor, w_t: torch.Tensor,
                         draws: LTUDraws, nets: LossNets, cfg: LTUConfig,
                         c: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    n, n_adj = w_u.shape[0], draws.z_adj.shape[1]
    dev = w_u.device

    # Local-loss terms of one (code for G_u, code for G_s) pair, each generator called separately.
    def pair(code_u: torch.Tensor, code_t: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        planes_u = G_u.get_planes(code_u, noise_mode=cfg.noise_mode)
        with torch.no_grad():
            planes_t = G_s.get_planes(code_t, noise_mode=cfg.noise_mode)
            x_t = G_s.synthesis(code_t, c, noise_mode=cfg.noise_mode, deterministic=cfg.deterministic_render)["image"]
        x_u = G_u.synthesis(code_u, c, noise_mode=cfg.noise_mode, deterministic=cfg.deterministic_render)["image"]
        return local_loss(planes_u, planes_t, x_u, x_t, nets, cfg)

    local_terms, adj_terms, parts_list = [], [], []
    for i in range(n):
        term, parts = pair(w_u[i:i + 1], w_t[i:i + 1])
        local_terms.append(term)
        parts_list.append(parts)
    adj_sources = range(n) if draws.adj_index is None else draws.adj_index.tolist()
    for row_index, i in enumerate(adj_sources):
        row = []
        for j in range(n_adj):
            w_r = map_latents(G_s, draws.z_adj[row_index, j:j + 1].to(dev), nets.cond_c, cfg.truncation_psi)
            code_u, code_t = adjacent_codes(w_u[i:i + 1], w_t[i:i + 1], w_r,
                                            draws.alpha[row_index, j:j + 1].to(dev))
            row.append(pair(code_u, code_t)[0])
        adj_terms.append(torch.cat(row) if row else w_u.new_zeros(0))
    glob = w_u.new_zeros(())
    glob_u, glob_s = global_pairs(global_latents(G_s, w_u, draws, nets, cfg), draws)
    for code_u, code_s in zip(glob_u.split(1), glob_s.split(1)) if len(glob_u) else ():  # empty splits into one chunk
        x_u = G_u.synthesis(code_u, c, noise_mode=cfg.noise_mode, deterministic=cfg.deterministic_render)["image"]
        with torch.no_grad():
            x_s = G_s.synthesis(code_s, c, noise_mode=cfg.noise_mode, deterministic=cfg.deterministic_render)["image"]
        glob = glob + global_loss(x_u, x_s, nets)
    parts = {k: torch.cat([p[k] for p in parts_list]) for k in ("l2", "per", "id")}
    return _combine(torch.cat(local_terms), torch.stack(adj_terms), glob, parts, n, cfg)


# One report of the unlearning loop: iteration, the losses as floats, optional preview images (uint8 HxWx3), done.
@dataclass
class Progress:
    step: int
    total: int
    losses: dict[str, float]
    previews: dict[str, np.ndarray] | None = None
    done: bool = False
    cancelled: bool = False
    seconds: float = 0.0
    unlearning: "Unlearning | None" = None


# [-1, 1] image tensor [3,H,W] -> uint8 HxWx3, the conversion the official code uses for its saved renders.
def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.detach().permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()


# Point a source batch at [N, num_ws, 512] on the bundle's device, with a clear error for a wrong shape.
def as_codes(w: torch.Tensor, num_ws: int, device: torch.device | str, name: str) -> torch.Tensor:
    w = torch.as_tensor(w, dtype=torch.float32)
    if w.ndim == 2:
        w = w.unsqueeze(0)
    if w.ndim != 3 or w.shape[1] != num_ws or w.shape[0] < 1:
        raise ValueError(f"{name} must be [num_ws={num_ws}, w_dim] or [N, {num_ws}, w_dim], got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or inf")
    return w.to(device)


# Latent Target Unlearning (GUIDE Sec. 3.3) of N identities at once: holds the frozen original generator G_s (targets
# and preservation always come from it), G_u (a copy of G_s, or of an earlier run's G_u when unlearning one identity
# after another, whose synthesis backbone is trained), w_u [N, num_ws, 512], the UFO targets w_t, the settings and
# the loss history; `.run()` yields Progress. Without cfg the run starts from the bundle's own ltu_defaults.
#   sources   one dict per identity for run.json: name, sha256, path, others ([{name, sha256, path, w}]) - the shape
#             of guide_core.runs.source_record; the codes w_u / w_t are added from the tensors when the run is saved;
#   base      the generator G_u starts from (default: a copy of G_s);
#   base_run  what run.json says about where `base` came from (guide_core.runs.base_run_record); the identities its
#             chain forgot are held to their targets in the global loss (LTUConfig.n_glob_forgotten).
class Unlearning:
    def __init__(self, bundle: "ModelBundle", w_u: torch.Tensor, w_t: torch.Tensor | None = None,
                 cfg: LTUConfig | None = None, cancel: threading.Event | None = None,
                 trainable_prefix: str = TRAINABLE_PREFIX, sources: list[dict[str, Any]] | None = None,
                 base: torch.nn.Module | None = None, base_run: dict[str, Any] | None = None,
                 photos: list[torch.Tensor] | None = None):
        self.bundle = bundle
        self.cfg = (cfg or getattr(bundle, "ltu_defaults", None) or LTUConfig()).validate()
        self.cancel = cancel
        self.device = bundle.device
        self.G_s = bundle.G
        self.w_u = as_codes(w_u, bundle.num_ws, self.device, "w_u")
        self.w_t = (ufo_target(self.w_u, bundle.w_avg, self.cfg.d) if w_t is None
                    else as_codes(w_t, bundle.num_ws, self.device, "w_t"))
        if self.w_t.shape != self.w_u.shape:
            raise ValueError(f"w_t {tuple(self.w_t.shape)} does not match w_u {tuple(self.w_u.shape)}")
        n = self.w_u.shape[0]
        self.sources = [dict(s) for s in sources] if sources is not None else [{"name": f"identity {i + 1}"}
                                                                               for i in range(n)]
        if len(self.sources) != n:
            raise ValueError(f"{len(self.sources)} source records for {n} codes w_u: give one per identity")
        if base is not None and base_run is None:
            raise ValueError("a run that starts from another generator needs its base_run record (where it came from)")
        self.base_run = base_run
        from guide_core.runs import chain_links

        earlier = [s for link in chain_links({"base_run": base_run}) for s in link["sources"]]
        # (w_u, w_t) of every identity the chain behind `base` forgot, or None.
        self.forgotten = tuple(torch.tensor([s[key] for s in earlier], dtype=torch.float32, device=self.device)
                               for key in ("w_u", "w_t")) if earlier else None
        if photos is not None and len(photos) != n:
            raise ValueError(f"{len(photos)} photo batches for {n} identities: give each identity its aligned photos")
        self.photos = photos
        self.trainable_prefix = trainable_prefix
        self.G_u = copy.deepcopy(self.G_s if base is None else base)
        names = [name for name, p in self.G_u.named_parameters() if name.startswith(trainable_prefix)]
        if not names:
            raise ValueError(f"no generator parameter starts with {trainable_prefix!r}: nothing would be trained")
        for name, p in self.G_u.named_parameters():
            p.requires_grad_(name.startswith(trainable_prefix))
        self.G_s.requires_grad_(False)
        self.history: list[dict[str, float]] = []
        self.steps_done = 0
        self.completed = False
        self.cancelled = False
        self.seconds = 0.0
        self.metrics: dict[str, Any] = {}
        self.extra: dict[str, Any] = {}  # further JSON-able facts for run.json
        self.adversarial_memory: AdversarialMemory | None = None  # robust unlearning's attack latents, once run
        self._started = False

    # Frozen, constant work of a run: G_s's tri-planes at w_t (noise is const) -> computed once, never per iteration.
    def _target_planes(self) -> torch.Tensor:
        with torch.no_grad():
            return self.G_s.get_planes(self.w_t, noise_mode=self.cfg.noise_mode)

    # The attacker's memory of a robust run: each identity's photos (given, else G_s's frontal render of w_u: what the
    # encoder saw), attacked from w_u and from w̄.
    def _adversarial_memory(self) -> AdversarialMemory:
        if self.photos is None:
            c = self.bundle.camera(0.0, 0.0).expand(self.w_u.shape[0], -1)
            with torch.no_grad():
                renders = self.G_s.synthesis(self.w_u, c, noise_mode="const", deterministic=True)["image"]
            photos = [renders[i:i + 1] for i in range(len(renders))]
        else:
            photos = [torch.as_tensor(p, dtype=torch.float32).to(self.device) for p in self.photos]
            photos = [p.unsqueeze(0) if p.ndim == 3 else p for p in photos]
        return AdversarialMemory(self.bundle, self.w_u, photos, self.cfg)

    # Frontal renders of identity `index` for the progress view: source G_s(w_u), target G_s(w_t), current G_u(w_u).
    def previews(self, which: tuple[str, ...] = ("source", "target", "unlearned"),
                 index: int = 0) -> dict[str, np.ndarray]:
        c = self.bundle.camera(0.0, self.cfg.pitch)
        out: dict[str, np.ndarray] = {}
        with torch.no_grad():
            for key in which:
                G, w = {"source": (self.G_s, self.w_u), "target": (self.G_s, self.w_t),
                        "unlearned": (self.G_u, self.w_u)}[key]
                was_training = G.training
                G.eval()
                image = G.synthesis(w[index:index + 1], c, noise_mode=self.cfg.noise_mode, deterministic=True)["image"][0]
                G.train(was_training)
                out[key] = to_uint8(image)
        return out

    # The training loop. Yields one Progress per iteration (previews every `preview_every`), then a final `done` one.
    def run(self) -> Iterator[Progress]:
        if self._started:
            raise RuntimeError("this Unlearning has already run; create a new one to unlearn again")
        self._started = True
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # EG3D's stratified depth jitter draws from the global stream
        nets = LossNets.of(self.bundle, cfg)
        params = [p for p in self.G_u.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr * identity_scale(self.w_u.shape[0], cfg))
        planes_t = self._target_planes()
        z_dim = int(self.bundle.z_dim)
        fixed_camera = cfg.yaw_range == 0 and cfg.deterministic_render
        image_t = None
        if fixed_camera:
            with torch.no_grad():
                c0 = self.bundle.camera(0.0, cfg.pitch).expand(self.w_t.shape[0], -1)
                image_t = render(self.G_s, planes_t, self.w_t, c0, cfg)
        memory = self._adversarial_memory() if cfg.adversarial_sources else None
        self.adversarial_memory = memory
        self.G_u.train()
        self.G_s.eval()
        start = time.perf_counter()
        for step in range(cfg.iters):
            if self.cancel is not None and self.cancel.is_set():
                self.cancelled = True
                break
            draws = sample_draws(gen, cfg, self.w_u.shape[0], z_dim, step)
            if self.forgotten is not None and cfg.n_glob_forgotten:
                turn = in_turns(step, len(self.forgotten[0]), cfg.n_glob_forgotten)
                draws.forgotten = self.forgotten if turn is None else tuple(w[turn] for w in self.forgotten)
            c = self.bundle.camera(draws.yaw, cfg.pitch)
            total, losses = ltu_losses(self.G_u, self.G_s, self.w_u, self.w_t, planes_t, draws, nets, cfg, c,
                                       image_t=image_t)
            if memory is not None:
                if step % cfg.attack_every == 0:
                    memory.attack(self.bundle, self.G_u, cfg)
                w_adv, owner = memory.sources()
                losses["adversarial"] = adversarial_loss(self.G_u, self.G_s, w_adv, owner.to(self.device), self.w_t,
                                                         planes_t, nets, cfg, c)
                total = total + cfg.lambda_adv * losses["adversarial"]
                losses["total"] = total
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            record = {k: float(v.detach()) for k, v in losses.items()}
            if not math.isfinite(record["total"]):
                raise FloatingPointError(f"LTU loss became {record['total']} at iteration {step}; lower the lr")
            self.history.append(record)
            self.steps_done = step + 1
            self.seconds = time.perf_counter() - start
            last = self.steps_done == cfg.iters
            show = last or (cfg.preview_every > 0 and step % cfg.preview_every == 0)
            yield Progress(step=self.steps_done, total=cfg.iters, losses=record,
                           previews=self.previews() if show else None, seconds=self.seconds)
        if memory is not None:  # how close the attacker inside the loop came, round by round (run.json)
            self.extra["adversarial_attack_id"] = {"every": cfg.attack_every, "best_id": memory.found_id}
        self.G_u.eval()
        self.G_u.requires_grad_(False)
        self.completed = self.steps_done == cfg.iters and not self.cancelled
        yield Progress(step=self.steps_done, total=cfg.iters, losses=self.history[-1] if self.history else {},
                       previews=None, done=True, cancelled=self.cancelled, seconds=self.seconds, unlearning=self)

    # Run to the end (or to cancellation) and return self; a convenience for scripts and tests.
    def run_all(self, callback: Callable[[Progress], None] | None = None) -> "Unlearning":
        for progress in self.run():
            if callback is not None:
                callback(progress)
        return self


# Batched Latent Target Unlearning as an iterator of Progress; the last one has done=True and `.unlearning` set.
def unlearn(bundle: "ModelBundle", w_u: torch.Tensor, w_t: torch.Tensor | None = None, cfg: LTUConfig | None = None,
            cancel: threading.Event | None = None, **kwargs: Any) -> Iterator[Progress]:
    return Unlearning(bundle, w_u, w_t, cfg, cancel, **kwargs).run()
