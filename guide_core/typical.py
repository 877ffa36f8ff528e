"""The model's own codes: how far a code lies from what the mapping network produces, and the ball that holds 99 % of it.

An attacker that re-inverts a photo may wander far outside the codes the generator was trained on; a code there is
not something the model "produces", and an erasure may fairly be judged on typical codes first. The distribution of
mapped codes w = mapping(z), z ~ N(0, I), is summarised by its mean and (Ledoit-Wolf shrunk) covariance in one w row
(every row of a mapped code is the same w); the distance of a code is the Mahalanobis distance of each of its rows to that
distribution, averaged over the rows. The typical ball is the set of rows within the 99th percentile of the distances
of held-out mapped codes; ``project`` pulls each row of a code radially (in the whitened space) back inside it.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from sklearn.covariance import LedoitWolf

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

# Mapped codes drawn to fit the distribution, and the share of them held out to measure its quantiles (in-sample
# distances of a fitted covariance run low).
N_CODES = 8192
HELD_OUT = 0.25
TYPICAL_QUANTILE = 0.99


@dataclass
class CodeDistribution:
    """Mean [D] and whitening matrix [D, D] of mapped w rows, with the median and 99th percentile of held-out codes'
    distances."""

    mean: torch.Tensor
    whitening: torch.Tensor
    median: float
    p99: float
    n: int

    def row_distance(self, codes: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of every row, [N, rows] for codes [N, rows, D] (or [N, D] -> [N, 1])."""
        codes = codes.unsqueeze(1) if codes.ndim == 2 else codes
        return ((codes.float() - self.mean.to(codes.device)) @ self.whitening.to(codes.device)).norm(dim=-1)

    def distance(self, codes: torch.Tensor) -> torch.Tensor:
        """Mean over rows of the Mahalanobis distance, [N]."""
        return self.row_distance(codes).mean(dim=-1)

    def project(self, codes: torch.Tensor, radius: float | None = None) -> torch.Tensor:
        """Codes with every row farther than ``radius`` (default: the 99th percentile) pulled radially back onto it."""
        radius = self.p99 if radius is None else radius
        mean = self.mean.to(codes.device)
        scale = (radius / self.row_distance(codes).clamp_min(1e-12)).unsqueeze(-1)
        return torch.where(scale < 1, mean + (codes - mean) * scale, codes)

    def summary(self) -> dict[str, float]:
        """What a report states next to a distance."""
        return {"median": self.median, "p99": self.p99, "codes": self.n}


_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, CodeDistribution]" = weakref.WeakKeyDictionary()


def code_distribution(bundle: "ModelBundle", n: int = N_CODES, seed: int = 0, batch: int = 1024) -> CodeDistribution:
    """The distribution of a bundle's mapped codes (psi = 1), from ``n`` seeded draws; cached per generator."""
    cached = _CACHE.get(bundle.G)
    if cached is not None and cached.n == n:
        return cached
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for start in range(0, n, batch):
        z = torch.randn(min(batch, n - start), bundle.z_dim, generator=gen)
        rows.append(bundle.map(bundle.G, z)[:, 0].double().cpu())
    w = torch.cat(rows)
    held = max(2, int(n * HELD_OUT))
    fit, test = w[held:], w[:held]
    # Mapped codes fill only a few dozen of w's 512 directions (the embedded world's: about 70); Ledoit-Wolf
    # shrinkage keeps the nearly unused directions finite without inflating held-out distances along them.
    estimate = LedoitWolf().fit(fit.numpy())
    mean = torch.from_numpy(estimate.location_)
    values, vectors = torch.linalg.eigh(torch.from_numpy(estimate.covariance_))
    whitening = vectors / values.sqrt()
    distances = ((test - mean) @ whitening).norm(dim=-1)
    result = CodeDistribution(mean.float().to(bundle.device), whitening.float().to(bundle.device),
                              float(distances.median()), float(torch.quantile(distances, TYPICAL_QUANTILE)), n)
    _CACHE[bundle.G] = result
    return result
