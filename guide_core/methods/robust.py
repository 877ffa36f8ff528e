"""Robust unlearning (beyond the paper): attack latents held to the target during unlearning.

An attacker who re-inverts the photo into G_u finds latents that still render the person. Every attack_every
iterations the audit's own attacker (guide_core.inversion.optimise_codes) runs attack_steps steps into the current
G_u from ``attack_chains`` starts per identity at once: w_u, w̄, then seeded random people (a stream of their own,
never the audit's draws), each chain re-inverting one of the identity's photos (in turns) and warm-started from the
latent it found last, so a chain's steps add up over a run like one long attack. The latents found are held to the
identity's target like w_u itself (the local loss of (G_u(w_adv), G_s(w_t)) pairs), the last ``adversarial_sources``
per identity (a round adds attack_chains of them). Measured on the default world (docs/results.md): it holds off its
own warm chains but not a fresh attack, so it is off by default.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from guide_core.config import LTUConfig
from guide_core.engine.losses import LossNets, local_loss, render
from guide_core.identity import embedding_similarity
from guide_core.inversion import attacker_identity_weight, attacker_perceptual_weight, optimise_codes

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

# Offset of robust unlearning's random attack starts from the run's seed: a stream apart from the run's draws.
ATTACK_START_STREAM = 7919


class AdversarialMemory:
    """The attacker's chains and the attack latents kept per identity over a robust run."""

    def __init__(self, bundle: "ModelBundle", w_u: torch.Tensor, photos: list[torch.Tensor], cfg: LTUConfig):
        self.capacity = cfg.adversarial_sources
        self.photos = photos  # per identity [P, 3, H, W]: the photos the attacker re-inverts, in turns
        gen = torch.Generator().manual_seed(cfg.seed + ATTACK_START_STREAM)
        n_random = max(cfg.attack_chains - 2, 0)
        z = torch.randn(len(photos), n_random, bundle.z_dim, generator=gen).to(w_u.device)
        w_avg = bundle.w_avg_code()[None].to(w_u)
        self.chains = []  # per identity [attack_chains, num_ws, 512]: the latest latent of each chain
        for i in range(len(photos)):
            starts = [w_u[i:i + 1], w_avg] + ([bundle.map(bundle.G, z[i], 1.0)] if n_random else [])
            self.chains.append(torch.cat(starts)[:cfg.attack_chains].clone())
        with torch.no_grad():  # the loss-side net is frozen: the photos' embeddings are fixed for the whole run
            self.photo_embeddings = [bundle.id_loss_net.embed(p) for p in photos]
        self.codes: list[torch.Tensor] = [w_u[:0].clone() for _ in photos]  # per identity [<= capacity, num_ws, 512]
        self.found_id: list[float] = []  # per round: the best similarity to a photo the attacker reached (loss-side net)
        self.rounds = 0

    def attack(self, bundle: "ModelBundle", G_u: torch.nn.Module, cfg: LTUConfig) -> None:
        """One round: every chain of every identity takes attack_steps steps into G_u; keep what they found."""
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

    def sources(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The kept latents [M, num_ws, 512] and, for each, the index of its identity [M]; None before any attack."""
        if not sum(len(c) for c in self.codes):
            return None
        owner = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, c in enumerate(self.codes)])
        return torch.cat(self.codes), owner


def adversarial_loss(G_u: torch.nn.Module, G_s: torch.nn.Module, w_adv: torch.Tensor, owner: torch.Tensor,
                     w_t: torch.Tensor, structure_t: torch.Tensor, nets: LossNets, cfg: LTUConfig,
                     c: torch.Tensor | None) -> torch.Tensor:
    """The attack latents' loss: the local loss of each (G_u(w_adv), G_s(w_t of its identity)) pair, mean over pairs."""
    cams = None if c is None else c.expand(w_adv.shape[0], -1)
    with torch.no_grad():
        x_t = render(nets, G_s, structure_t[owner], w_t[owner], cams, cfg)
    structure_adv = nets.backend.structure(G_u, w_adv, cfg.noise_mode)
    x_adv = render(nets, G_u, structure_adv, w_adv, cams, cfg)
    terms, _ = local_loss(structure_adv, structure_t[owner], x_adv, x_t, nets, cfg)
    return terms.mean()
