"""Settings of an unlearning: the paper's defaults in one place (GUIDE Sec. 4, "Implementation details").

CLI flags and studio sliders are generated from these fields (guide_core.flags); ``metadata`` carries their help text
and slider range. A run records them in run.json's ``config``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from guide_core.precision import PRECISIONS


@dataclass
class LTUConfig:
    """Every setting of one unlearning (GUIDE's, the engine's and the speed settings), with the paper's defaults."""

    d: float = field(default=30.0, metadata={"help": "UFO distance d: w_t = w_avg - d * unit(w_u - w_avg)",
                                             "range": (-30.0, 60.0)})
    alpha_max: float = field(default=15.0, metadata={"help": "adjacency step alpha ~ U(0, alpha_max)",
                                                     "range": (0.0, 30.0)})
    lambda_l2: float = field(default=1e-2, metadata={"help": "weight of the tri-plane L2 term of the local loss",
                                                     "range": (0.0, 0.1)})
    lambda_per: float = field(default=1.0, metadata={"help": "weight of the perceptual (LPIPS) term",
                                                      "range": (0.0, 5.0)})
    lambda_id: float = field(default=0.1, metadata={"help": "weight of the identity (ArcFace) term",
                                                    "range": (0.0, 1.0)})
    n_adj: int = field(default=2, metadata={"help": "N_a: adjacent latents per iteration", "range": (0, 8)})
    n_adj_sources: int = field(default=2, metadata={
        "help": "when unlearning several identities at once: how many of them get their N_a adjacent latents in each "
                "iteration, taking turns (0 = all of them every iteration; one identity always gets its own)",
        "range": (0, 8)})
    n_glob: int = field(default=2, metadata={"help": "N_g: random latents for the global loss", "range": (0, 8)})
    n_glob_near: int = field(default=0, metadata={
        "help": "how many of the N_g global latents (at most all N_g) are the random people nearest to w_u (of NEAR_POOL "
                "drawn, outside the adjacency radius) instead of uniformly random ones; 0 = the paper", "range": (0, 8)})
    n_glob_forgotten: int = field(default=1, metadata={
        "help": "in a run that continues from an earlier one: how many identities forgotten by the earlier runs join "
                "the global loss each iteration, taking turns, held to their own UFO targets so they stay forgotten",
        "range": (0, 8)})
    lambda_adj: float = field(default=1.0, metadata={"help": "weight of the adjacency loss", "range": (0.0, 5.0)})
    lambda_glob: float = field(default=1.0, metadata={"help": "weight of the global preservation loss",
                                                      "range": (0.0, 5.0)})
    adversarial_sources: int = field(default=0, metadata={
        "help": "robust unlearning (beyond the paper): how many latents found by re-inversion attacks of each "
                "identity's photos into the current G_u are kept as extra sources held to its w_t (0 = the paper)",
        "range": (0, 8)})
    attack_every: int = field(default=20, metadata={
        "help": "robust unlearning: iterations between two re-inversion attacks", "range": (1, 200)})
    attack_steps: int = field(default=10, metadata={
        "help": "robust unlearning: w+ optimisation steps of each attack, warm-started from the last latent found",
        "range": (1, 100)})
    attack_chains: int = field(default=2, metadata={
        "help": "robust unlearning: attacks per identity run at once, from w_u, from the mean latent, then from "
                "seeded random people", "range": (1, 8)})
    lambda_adv: float = field(default=1.0, metadata={
        "help": "robust unlearning: weight of the local loss of the attack latents", "range": (0.0, 10.0)})
    bank_codes: int = field(default=0, metadata={
        "help": "bank then erase (beyond the paper, after STEREO): recovering codes of each identity found before "
                "unlearning by the typical-ball w+ attacker in G_s, from that many starts toward its photos, mirrors "
                "and crops, all held to its target (0 = off)", "range": (0, 256)})
    bank_strangers: int = field(default=16, metadata={
        "help": "bank then erase: codes of never-forgotten people found by the same attacker, held to G_s's renders "
                "so the erasure does not spread to other people's recovering codes", "range": (0, 256)})
    bank_steps: int = field(default=25, metadata={
        "help": "bank then erase: Adam steps of the attacker that fills the bank", "range": (1, 500)})
    bank_batch: int = field(default=4, metadata={
        "help": "bank then erase: banked codes (and as many strangers' codes) in each iteration's loss, taking turns",
        "range": (1, 64)})
    lambda_bank: float = field(default=4.0, metadata={
        "help": "bank then erase: weight of the local loss of the banked codes", "range": (0.0, 10.0)})
    lambda_bank_keep: float = field(default=15.0, metadata={
        "help": "bank then erase: weight of the global loss of the strangers' banked codes", "range": (0.0, 50.0)})
    bank_refresh_every: int = field(default=0, metadata={
        "help": "bank then erase: every that many iterations, some banked codes (in turns) attack the current G_u "
                "again, warm-started and inside the typical ball, so the bank follows where the person still is "
                "(0 = never)", "range": (0, 200)})
    bank_refresh_steps: int = field(default=10, metadata={
        "help": "bank then erase: Adam steps of each refresh", "range": (1, 100)})
    encoder_steps: int = field(default=0, metadata={
        "help": "encoder-side unlearning (beyond the paper, after IREU): Adam steps fine-tuning a copy of the inversion "
                "encoder after the generator, so that each identity's photos invert to its target while strangers' "
                "inversions stay (0 = off)", "range": (0, 1000)})
    encoder_lr: float = field(default=1e-4, metadata={"help": "encoder-side unlearning: Adam learning rate",
                                                      "range": (1e-6, 1e-2)})
    lambda_encoder_keep: float = field(default=1.0, metadata={
        "help": "encoder-side unlearning: weight of keeping strangers' inversions", "range": (0.0, 10.0)})
    lr: float = field(default=1e-4, metadata={"help": "Adam learning rate", "range": (1e-5, 1e-3)})
    identity_scaling: float = field(default=0.5, metadata={
        "help": "with N identities at once: lr x N^s and lambda_glob x N^-s for this exponent s (0 = the same settings "
                "for any N; one identity is unaffected)", "range": (0.0, 1.0)})
    iters: int = field(default=1000, metadata={"help": "Latent Target Unlearning iterations", "range": (1, 2000)})
    yaw_range: float = field(default=math.pi / 12, metadata={"help": "camera yaw ~ U(-yaw_range, yaw_range) rad",
                                                             "range": (0.0, 0.8)})
    pitch: float = field(default=-0.2, metadata={"help": "camera pitch offset from frontal (rad)",
                                                 "range": (-0.5, 0.5)})
    truncation_psi: float = field(default=1.0, metadata={"help": "truncation psi of the mapping network",
                                                         "range": (0.5, 1.0)})
    seed: int = field(default=0, metadata={"help": "seed of every random draw (cameras, latents, alphas)"})
    preview_every: int = field(default=100, metadata={"help": "preview renders every k iterations (0 = only the last)",
                                                      "range": (0, 1000)})
    noise_mode: str = field(default="const", metadata={"help": "per-layer noise of the synthesis network",
                                                       "choices": ("const", "random", "none")})
    deterministic_render: bool = field(default=False, metadata={
        "help": "fixed (mid-bin) depth samples instead of EG3D's random stratified ones"})
    # Speed settings: how the same losses are computed, not what is optimised (guide_core.precision; benchmarks/ltu_step.py
    # measures each). ltu_losses_reference ignores them: it keeps the original's arithmetic as well as its shape.
    precision: str = field(default="auto", metadata={
        "help": "arithmetic of the super-resolution (where EG3D itself runs half precision) and of the loss networks "
                "(LPIPS, identity net); the trained tri-plane backbone, rendering, losses and Adam stay fp32. auto = "
                "bf16 on devices that compute it natively, else fp32", "choices": PRECISIONS})
    channels_last: bool = field(default=True, metadata={
        "help": "feed the loss networks' convolutions channels-last images (the layout oneDNN and cuDNN prefer)"})
    fused_sr: bool = field(default=True, metadata={
        "help": "G_u's frozen super-resolution runs the fused modulated convolution, as at inference (the same "
                "maths; the unfused form only pays where its weights are trained)"})
    compile_renderer: bool = field(default=False, metadata={
        "help": "render rays through torch.compile: each new shape compiles first (tens of seconds), then the "
                "renderer runs about 1.5x faster; pays on long runs"})
    checkpoint_synthesis: bool = field(default=False, metadata={
        "help": "recompute the synthesis network's activations in the backward pass instead of keeping them: far less "
                "memory (a 1024 px StyleGAN2 keeps gigabytes per code), about a third more time, the same maths "
                "(StyleGAN2 generators)"})

    def validate(self) -> "LTUConfig":
        """Reject settings that cannot describe an unlearning, with the field's name in the message."""
        checks = [("iters", self.iters >= 1, "must be >= 1"), ("lr", self.lr > 0, "must be > 0"),
                  ("n_adj", self.n_adj >= 0, "must be >= 0"), ("n_glob", self.n_glob >= 0, "must be >= 0"),
                  ("n_glob_near", self.n_glob_near >= 0, "must be >= 0"),
                  ("n_adj_sources", self.n_adj_sources >= 0, "must be >= 0"),
                  ("n_glob_forgotten", self.n_glob_forgotten >= 0, "must be >= 0"),
                  ("adversarial_sources", self.adversarial_sources >= 0, "must be >= 0"),
                  ("attack_every", self.attack_every >= 1, "must be >= 1"),
                  ("attack_steps", self.attack_steps >= 1, "must be >= 1"),
                  ("attack_chains", self.attack_chains >= 1, "must be >= 1"),
                  ("bank_codes", self.bank_codes >= 0, "must be >= 0"),
                  ("bank_strangers", self.bank_strangers >= 0, "must be >= 0"),
                  ("bank_steps", self.bank_steps >= 1, "must be >= 1"),
                  ("bank_batch", self.bank_batch >= 1, "must be >= 1"),
                  ("bank_refresh_every", self.bank_refresh_every >= 0, "must be >= 0"),
                  ("bank_refresh_steps", self.bank_refresh_steps >= 1, "must be >= 1"),
                  ("encoder_steps", self.encoder_steps >= 0, "must be >= 0"),
                  ("encoder_lr", self.encoder_lr > 0, "must be > 0"),
                  ("lambda_encoder_keep", self.lambda_encoder_keep >= 0, "must be >= 0"),
                  ("identity_scaling", self.identity_scaling >= 0, "must be >= 0"),
                  ("alpha_max", self.alpha_max >= 0, "must be >= 0"),
                  ("yaw_range", self.yaw_range >= 0, "must be >= 0"),
                  ("truncation_psi", 0 <= self.truncation_psi <= 1, "must be in [0, 1]"),
                  ("preview_every", self.preview_every >= 0, "must be >= 0"),
                  ("noise_mode", self.noise_mode in ("const", "random", "none"), "must be const, random or none"),
                  ("precision", self.precision in PRECISIONS, f"must be one of {', '.join(PRECISIONS)}")]
        for name in ("d", "alpha_max", "lambda_l2", "lambda_per", "lambda_id", "lambda_adj", "lambda_glob", "lambda_adv",
                     "lambda_bank", "lambda_bank_keep", "lr", "identity_scaling", "yaw_range", "pitch",
                     "truncation_psi"):
            checks.append((name, math.isfinite(float(getattr(self, name))), "must be a finite number"))
        for name in ("lambda_l2", "lambda_per", "lambda_id", "lambda_adj", "lambda_glob", "lambda_adv", "lambda_bank",
                     "lambda_bank_keep"):
            checks.append((name, getattr(self, name) >= 0, "must be >= 0"))
        for name, ok, why in checks:
            if not ok:
                raise ValueError(f"LTUConfig.{name} = {getattr(self, name)!r} {why}")
        return self

    def original_arithmetic(self) -> "LTUConfig":
        """The same settings at the original's arithmetic (fp32, unfused, eager): what ltu_losses_reference computes."""
        return dataclasses.replace(self, precision="fp32", channels_last=False, fused_sr=False, compile_renderer=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every setting (run.json, the UI)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "LTUConfig":
        """Rebuild from a run.json "config" object; unknown keys are an error so a typo never silently uses a default.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LTUConfig setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values).validate()
