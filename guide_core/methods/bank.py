"""Bank then erase (beyond the paper; after STEREO, Srivatsan et al., CVPR 2025): gather the codes that bring the
person back first, then hold them all to the target.

STEREO's finding, for text-to-image diffusion: erasing a concept's own prompt leaves other prompts that still draw it,
so search for those adversarially first and erase the whole set. The GAN counterpart: unlearning moves the stored
latent w_u, yet an attacker kept inside the model's own code distribution (the ladder's ``typical_wplus`` tier) finds
other codes that render the person. Before the first iteration, that same attacker (guide_core.inversion.optimise_codes
with CodeDistribution.project) runs into G_s from ``bank_codes`` starts per identity: w_u, w̄, then seeded random
people (a stream of their own, never the audit's draws), each start pulled toward one of the identity's views (its
photos, their mirror images, small re-crops). Every iteration ``bank_batch`` banked codes, in turns, are held to
their identity's target with the local loss, as robust unlearning holds its attack latents; G_u is rendered at the
run's camera, so the codes are held across views. With ``bank_refresh_every`` set, a chunk of the bank (in turns)
attacks the current G_u again every that many iterations, warm-started from where it stands and kept in the ball, so
the bank follows the codes where the person still is rather than where they were in G_s.

Preservation: the same attacker banks ``bank_strangers`` codes of people who are never forgotten (G_s's renders of
seeded random people at turned yaws, some mirrored), and each iteration ``bank_batch`` of them are held to G_s's own
render with the global loss, so that erasing the person's recovering codes does not spread to everybody's.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from guide_core.config import LTUConfig
from guide_core.engine.draws import in_turns
from guide_core.engine.encoder_side import KEEP_YAWS, augment, strangers_for_encoder
from guide_core.engine.losses import LossNets, global_loss, render
from guide_core.identity import embedding_similarity
from guide_core.inversion import attacker_identity_weight, attacker_perceptual_weight, optimise_codes
from guide_core.typical import code_distribution

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

# Offset of the bank's random starts and stranger people from the run's seed: a stream apart from the run's draws,
# robust unlearning's and the ladder's.
BANK_STREAM = 6151
# Codes optimised in one batch: bounds the attacker's memory on a full-size generator.
BANK_CHUNK = 16


def gather(bundle: "ModelBundle", photos: torch.Tensor, starts: torch.Tensor, steps: int,
           G: torch.nn.Module | None = None) -> torch.Tensor:
    """The attacker's codes [N, num_ws, 512] from ``starts``, each pulled toward photos[i] in G (default G_s), every
    row kept in the 99 % typical ball of the model's mapped codes (the ladder's typical_wplus tier)."""
    codes = code_distribution(bundle)
    found = []
    for i in range(0, len(starts), BANK_CHUNK):
        *_, (_, _, _, w) = optimise_codes(bundle, G if G is not None else bundle.G, photos[i:i + BANK_CHUNK],
                                          starts[i:i + BANK_CHUNK], steps,
                                          lambda_id=attacker_identity_weight(bundle),
                                          lambda_per=attacker_perceptual_weight(bundle), project=codes.project)
        found.append(w)
    return torch.cat(found)


class RecoveryBank:
    """Each identity's banked recovering codes, the strangers' codes held to G_s, and what the bank reached."""

    def __init__(self, bundle: "ModelBundle", w_u: torch.Tensor, photos: list[torch.Tensor], cfg: LTUConfig):
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.seed + BANK_STREAM)
        k = cfg.bank_codes
        w_avg = bundle.w_avg_code()[None].to(w_u)
        targets, starts, owner = [], [], []
        for i, shots in enumerate(photos):
            views = augment(shots, gen).to(w_u)
            z = torch.randn(max(k - 2, 0), bundle.z_dim, generator=gen).to(w_u.device)
            first = torch.cat([w_u[i:i + 1], w_avg] + ([bundle.map(bundle.G, z, 1.0)] if len(z) else []))[:k]
            starts.append(first)
            targets.append(views[torch.arange(k) % len(views)])
            owner.append(torch.full((k,), i, dtype=torch.long))
        self.views = torch.cat(targets)
        self.owner = torch.cat(owner).to(w_u.device)
        self.codes = gather(bundle, self.views, torch.cat(starts), cfg.bank_steps)
        self.kept = w_u[:0]
        if cfg.bank_strangers:
            views_each = 2 * (len(KEEP_YAWS) if bundle.has_camera else 1)  # yaws, each also mirrored
            people = strangers_for_encoder(bundle, cfg.seed + BANK_STREAM, -(-cfg.bank_strangers // views_each))
            chosen = people[torch.randperm(len(people), generator=gen)[:cfg.bank_strangers]].to(w_u)
            kept_starts = w_avg.expand(len(chosen), -1, -1)
            self.kept = gather(bundle, chosen, kept_starts, cfg.bank_steps)
        distribution = code_distribution(bundle)
        with torch.no_grad():
            renders = bundle.synthesize(bundle.G, self.codes, bundle.camera(0.0, 0.0))
            reached = embedding_similarity(bundle.id_loss_net.embed(renders), bundle.id_loss_net.embed(self.views))
        self.summary = {
            "codes": len(self.codes), "strangers": len(self.kept), "steps": cfg.bank_steps,
            "reached_id": [round(float(reached[self.owner == i].mean()), 4) for i in range(len(photos))],
            "code_distance": round(float(distribution.distance(self.codes).mean()), 3),
            "typical_p99": round(distribution.p99, 3), "seconds": round(time.perf_counter() - start, 2),
            "refreshes": 0, "refresh_seconds": 0.0}

    def refresh(self, bundle: "ModelBundle", G_u: torch.nn.Module, step: int, cfg: LTUConfig) -> None:
        """Every ``bank_refresh_every`` iterations, the next chunk of banked codes attacks G_u again from where it
        stands."""
        every = cfg.bank_refresh_every
        if not every or step == 0 or step % every:
            return
        start = time.perf_counter()
        chunk = in_turns(step // every - 1, len(self.codes), BANK_CHUNK)
        chunk = torch.arange(len(self.codes)) if chunk is None else chunk
        self.codes[chunk] = gather(bundle, self.views[chunk], self.codes[chunk], cfg.bank_refresh_steps, G_u)
        self.summary["refreshes"] += 1
        self.summary["refresh_seconds"] = round(self.summary["refresh_seconds"] + time.perf_counter() - start, 2)

    def held(self, step: int, cfg: LTUConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """The banked codes this iteration holds to their targets, and each one's identity."""
        turn = in_turns(step, len(self.codes), cfg.bank_batch)
        return (self.codes, self.owner) if turn is None else (self.codes[turn], self.owner[turn])

    def preserved(self, step: int, cfg: LTUConfig) -> torch.Tensor:
        """The strangers' banked codes this iteration holds to G_s."""
        turn = in_turns(step, len(self.kept), cfg.bank_batch)
        return self.kept if turn is None else self.kept[turn]


def keep_loss(G_u: torch.nn.Module, G_s: torch.nn.Module, w: torch.Tensor, nets: LossNets, cfg: LTUConfig,
              c: torch.Tensor | None) -> torch.Tensor:
    """The global loss (GUIDE Sec. 3.3) at given codes: G_u's renders pulled onto G_s's."""
    if not len(w):
        return w.new_zeros(())
    cams = None if c is None else c.expand(w.shape[0], -1)
    with torch.no_grad():
        x_s = render(nets, G_s, nets.backend.structure(G_s, w, cfg.noise_mode), w, cams, cfg)
    x_u = render(nets, G_u, nets.backend.structure(G_u, w, cfg.noise_mode), w, cams, cfg)
    return global_loss(x_u, x_s, nets)
