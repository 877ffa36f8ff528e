"""The random draws of one Latent Target Unlearning iteration (GUIDE Sec. 3.3).

Each iteration draws a camera yaw, the adjacency latents with their step sizes alpha, and the global latents, from a
CPU generator: device-independent streams, so the same run gives the same draws on a CPU and a GPU, and the batched
and the one-at-a-time formulation can be compared on identical inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from guide_core.config import LTUConfig

# Random people drawn per iteration among which LTUConfig.n_glob_near picks the ones nearest to w_u.
NEAR_POOL = 64


@dataclass
class LTUDraws:
    """One iteration's randomness: camera yaw, adjacency latents and alphas, global latents (and their near pool)."""

    yaw: float
    z_adj: torch.Tensor  # [K, N_a, z_dim] for the K sources of adj_index
    alpha: torch.Tensor  # [K, N_a]
    z_glob: torch.Tensor  # [N_g - N_near, z_dim]
    z_pool: torch.Tensor  # [NEAR_POOL or 0, z_dim]: candidates for the N_near global latents nearest to w_u
    adj_index: torch.Tensor | None = None  # [K] sources that get adjacent latents this iteration; None = all N
    # Identities forgotten by earlier runs of a chain, this iteration's turn: (their w_u, their w_t), [M, num_ws, w_dim].
    forgotten: tuple[torch.Tensor, torch.Tensor] | None = None


def in_turns(step: int, n: int, k: int) -> torch.Tensor | None:
    """K of n items taken in turns at iteration ``step`` (K consecutive ones in a cycle, so each gets the same share
    of the iterations); None when K is 0 or covers them all."""
    if k == 0 or k >= n:
        return None
    return (torch.arange(k) + step * k) % n


def adjacency_sources(step: int, n_sources: int, cfg: LTUConfig) -> torch.Tensor | None:
    """The sources whose adjacency pairs iteration ``step`` computes: all of them, or (n_adj_sources = K < N) K of
    them in turns, so a step costs K * N_a adjacency pairs instead of N * N_a."""
    return in_turns(step, n_sources, cfg.n_adj_sources)


def sample_draws(gen: torch.Generator, cfg: LTUConfig, n_sources: int, z_dim: int, step: int = 0) -> LTUDraws:
    """Draw one iteration's randomness from a CPU generator."""
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
