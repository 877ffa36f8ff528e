"""The LTU losses formulated one image at a time, the way the official unlearn.py computes them.

Each code goes through the structure pass and again through the full synthesis, G_s recomputed every time, in the
original's arithmetic (it ignores the speed settings). It is the reference the batched ``ltu_losses`` is tested and
benchmarked against.
"""
from __future__ import annotations

import torch

from guide_core.config import LTUConfig
from guide_core.engine.draws import LTUDraws
from guide_core.engine.losses import (LossNets, adjacent_codes, combine_losses, global_latents, global_loss,
                                      global_pairs, local_loss)


def ltu_losses_reference(G_u: torch.nn.Module, G_s: torch.nn.Module, w_u: torch.Tensor, w_t: torch.Tensor,
                         draws: LTUDraws, nets: LossNets, cfg: LTUConfig,
                         c: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The same losses as ``ltu_losses``, one (code for G_u, code for G_s) pair per generator call."""
    backend = nets.backend
    n, n_adj = w_u.shape[0], draws.z_adj.shape[1]
    dev = w_u.device

    def synthesize(G: torch.nn.Module, code: torch.Tensor) -> torch.Tensor:
        return backend.synthesize(G, code, c, noise_mode=cfg.noise_mode, deterministic=cfg.deterministic_render)

    def pair(code_u: torch.Tensor, code_t: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        structure_u = backend.structure(G_u, code_u, cfg.noise_mode)
        with torch.no_grad():
            structure_t = backend.structure(G_s, code_t, cfg.noise_mode)
            x_t = synthesize(G_s, code_t)
        x_u = synthesize(G_u, code_u)
        return local_loss(structure_u, structure_t, x_u, x_t, nets, cfg)

    local_terms, adj_terms, parts_list = [], [], []
    for i in range(n):
        term, parts = pair(w_u[i:i + 1], w_t[i:i + 1])
        local_terms.append(term)
        parts_list.append(parts)
    adj_sources = range(n) if draws.adj_index is None else draws.adj_index.tolist()
    for row_index, i in enumerate(adj_sources):
        row = []
        for j in range(n_adj):
            w_r = backend.map(G_s, draws.z_adj[row_index, j:j + 1].to(dev), cfg.truncation_psi)
            code_u, code_t = adjacent_codes(w_u[i:i + 1], w_t[i:i + 1], w_r,
                                            draws.alpha[row_index, j:j + 1].to(dev))
            row.append(pair(code_u, code_t)[0])
        adj_terms.append(torch.cat(row) if row else w_u.new_zeros(0))
    glob = w_u.new_zeros(())
    glob_u, glob_s = global_pairs(global_latents(G_s, w_u, draws, nets, cfg), draws)
    for code_u, code_s in zip(glob_u.split(1), glob_s.split(1)) if len(glob_u) else ():  # empty splits into one chunk
        x_u = synthesize(G_u, code_u)
        with torch.no_grad():
            x_s = synthesize(G_s, code_s)
        glob = glob + global_loss(x_u, x_s, nets)
    parts = {k: torch.cat([p[k] for p in parts_list]) for k in ("l2", "per", "id")}
    return combine_losses(torch.cat(local_terms), torch.stack(adj_terms), glob, parts, n, cfg)
