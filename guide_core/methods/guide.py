"""GUIDE (Seo et al., "Generative Unlearning for Any Identity", CVPR 2024) as a Method.

- Targets: UFO, "Un-identifying Face On latent space" (Sec. 3.2), w_t = w̄ - d * (w_u - w̄) / ||w_u - w̄||, the norm
  over each sample's whole code as the official implementation takes it.
- Parameterisation: a copy of the generator whose synthesis network trains (the official unlearn.py trains
  ``backbone.synthesis`` with Adam, lr 1e-4, 1000 iterations); the backend names the prefix.
- Losses: Latent Target Unlearning's local, adjacency and global losses (Sec. 3.3, guide_core.engine.losses), plus,
  off by default, robust unlearning's attack latents (guide_core.methods.robust) and bank then erase's banked
  recovering codes (guide_core.methods.bank).
"""
from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch

from guide_core.config import LTUConfig
from guide_core.engine.losses import ltu_losses
from guide_core.engine.method import register_method
from guide_core.methods.bank import RecoveryBank, keep_loss
from guide_core.methods.robust import AdversarialMemory, adversarial_loss

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle
    from guide_core.engine.loop import Unlearning


def ufo_target(w_u: torch.Tensor, w_avg: torch.Tensor, d: float = 30.0) -> torch.Tensor:
    """UFO (GUIDE Sec. 3.2): extrapolate from the source code w_u through the mean w_avg to the far side, at distance
    d. d = 0 is the mean face (the paper's "average" baseline target); d < 0 moves toward the source (ablation)."""
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


def fine_tuned_copy(base: torch.nn.Module, trainable_prefix: str | tuple[str, ...]) -> torch.nn.Module:
    """A copy of ``base`` whose parameters under ``trainable_prefix`` (one prefix or several) train and all others stay
    frozen."""
    G_u = copy.deepcopy(base)
    names = [name for name, _ in G_u.named_parameters() if name.startswith(trainable_prefix)]
    if not names:
        raise ValueError(f"no generator parameter starts with {trainable_prefix!r}: nothing would be trained")
    for name, p in G_u.named_parameters():
        p.requires_grad_(name.startswith(trainable_prefix))
    return G_u


class GuideMethod:
    """UFO targets, the synthesis network fine-tuned, the three LTU losses; robust when adversarial_sources > 0, bank
    then erase when bank_codes > 0."""

    name = "guide"
    config_type = LTUConfig
    learned_targets = False

    def __init__(self) -> None:
        self.memory: AdversarialMemory | None = None
        self.bank: RecoveryBank | None = None

    def targets(self, bundle: "ModelBundle", w_u: torch.Tensor, cfg: LTUConfig) -> torch.Tensor:
        """UFO targets at distance cfg.d."""
        return ufo_target(w_u, bundle.w_avg, cfg.d)

    def generator(self, bundle: "ModelBundle", base: torch.nn.Module,
                  trainable_prefix: str | tuple[str, ...], cfg: LTUConfig) -> torch.nn.Module:
        """G_u: a copy of the base whose synthesis network trains."""
        return fine_tuned_copy(base, trainable_prefix)

    def start(self, run: "Unlearning") -> None:
        """Robust unlearning's attacker memory and bank then erase's bank, when asked for."""
        if run.cfg.adversarial_sources:
            self.memory = AdversarialMemory(run.bundle, run.w_u, run.identity_photos(), run.cfg)
        if run.cfg.bank_codes:
            self.bank = RecoveryBank(run.bundle, run.w_u, run.identity_photos(), run.cfg)

    def losses(self, run: "Unlearning", step: int, draws: Any,
               camera: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The LTU losses, plus the attack latents' local loss every iteration of a robust run."""
        cfg = run.cfg
        total, losses = ltu_losses(run.G_u, run.G_s, run.w_u, run.w_t, run.structure_t, draws, run.nets, cfg,
                                   camera, image_t=run.image_t)
        if self.memory is not None:
            if step % cfg.attack_every == 0:
                self.memory.attack(run.bundle, run.G_u, cfg)
            w_adv, owner = self.memory.sources()
            losses["adversarial"] = adversarial_loss(run.G_u, run.G_s, w_adv, owner.to(run.device), run.w_t,
                                                     run.structure_t, run.nets, cfg, camera)
            total = total + cfg.lambda_adv * losses["adversarial"]
            losses["total"] = total
        if self.bank is not None:
            self.bank.refresh(run.bundle, run.G_u, step, cfg)
            w_bank, owner = self.bank.held(step, cfg)
            losses["bank"] = adversarial_loss(run.G_u, run.G_s, w_bank, owner, run.w_t, run.structure_t, run.nets, cfg,
                                              camera)
            losses["bank_keep"] = keep_loss(run.G_u, run.G_s, self.bank.preserved(step, cfg), run.nets, cfg, camera)
            total = losses["total"] = total + (cfg.lambda_bank * losses["bank"]
                                          + cfg.lambda_bank_keep * losses["bank_keep"])
        return total, losses

    def finish(self, run: "Unlearning") -> None:
        """How close the attacker inside the loop came, round by round, and what the bank held (run.json's extra)."""
        if self.memory is not None:
            run.extra["adversarial_attack_id"] = {"every": run.cfg.attack_every, "best_id": self.memory.found_id}
        if self.bank is not None:
            run.extra["bank"] = self.bank.summary

    def rebuild(self, G: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """GUIDE only changes tensors the generator has."""


register_method("guide", GuideMethod, "GUIDE (CVPR 2024): UFO targets, Latent Target Unlearning of the synthesis net")
