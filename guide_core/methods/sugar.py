"""SUGAR (WACV 2026, arXiv 2512.06562) as a Method: learned per-identity targets and an EWC penalty on the fine-tune.

- Targets: a small "trigger" network T maps each identity's offset from the mean, w_u - w̄ (the [num_ws, w_dim] code
  read as a one-channel image), to a personal surrogate direction: w_t = w̄ - d * T(w_u - w̄) / ||T(w_u - w̄)||, d = 20
  as in SUGAR's scripts. T is a one-level 2D U-Net (64 / 128 channels, residual 3x3 convolutions, the output the mean
  over its channels), trained with the generator frozen so that w_t keeps w_u's structure (tri-planes; the image for
  a 2D generator) close while the identity embedding and LPIPS move far:
  L_T = lambda_l2 * MSE(P(w_u), P(w_t)) + s_id * cos(id(w_u), id(w_t)) - lambda_per * LPIPS(I(w_u), I(w_t)), with the
  identity weight tied to the structure term, s_id = lambda_id * (lambda_l2 * MSE) detached, as SUGAR does.
- Fine-tune: the synthesis network, with GUIDE's local and adjacency losses (adjacent targets w_t + delta, SUGAR's
  GUIDE-style branch) and, against forgetting everyone else, an EWC penalty lambda_ewc * sum_i F_i (theta_i -
  theta0_i)^2 (lambda_ewc = 50 as in SUGAR's scripts). SUGAR drops GUIDE's global loss for it; here the model's own
  schedule decides (the paper's settings keep N_g = 2 random people; ``--n-glob 0`` is SUGAR's own choice).
- Fisher information: diagonal, estimated on latents near the forgotten identities (each w_u moved by a radius in
  [alpha_max, 2 alpha_max], just outside the adjacency region, towards random people). SUGAR squares the gradients
  of a structure MSE between two identical generators, which is zero up to noise; here F is the Fisher of a
  unit-variance Gaussian observation of the structure, diag(J^T J) / numel, estimated without bias by random
  projections (E[(J^T r)^2] = diag(J^T J) for r ~ N(0, I)). The penalty then measures, to second order, how far the
  structure of those latents drifts, in the local loss's MSE units.

A run stores the trigger network (method.safetensors) and a per-tensor summary of F (run.json's extra).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from guide_core.config import LTUConfig
from guide_core.engine.losses import LossNets, render
from guide_core.engine.method import register_method
from guide_core.identity import embedding_similarity
from guide_core.methods.guide import GuideMethod

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle
    from guide_core.engine.loop import Unlearning


@dataclass
class SugarConfig(LTUConfig):
    """SUGAR's settings: GUIDE's (LTUConfig, with SUGAR's d = 20) plus the trigger network's and the EWC penalty's."""

    d: float = field(default=20.0, metadata={"help": "surrogate distance d: w_t = w_avg - d * unit(T(w_u - w_avg))",
                                             "range": (0.0, 60.0)})
    trigger_steps: int = field(default=50, metadata={"help": "Adam steps of the trigger network (all identities in "
                                                              "each step, one random camera)", "range": (0, 500)})
    trigger_lr: float = field(default=2e-4, metadata={"help": "learning rate of the trigger network",
                                                      "range": (1e-5, 1e-2)})
    trigger_width: int = field(default=64, metadata={"help": "channels of the trigger network's first level",
                                                     "range": (4, 128)})
    lambda_ewc: float = field(default=50.0, metadata={"help": "weight of the EWC penalty", "range": (0.0, 500.0)})
    fisher_samples: int = field(default=16, metadata={
        "help": "latents per identity on which the Fisher information is estimated", "range": (1, 128)})

    def validate(self) -> "SugarConfig":
        """GUIDE's checks and SUGAR's."""
        super().validate()
        for name, ok in (("trigger_steps", self.trigger_steps >= 0), ("trigger_lr", self.trigger_lr > 0),
                         ("trigger_width", self.trigger_width >= 1), ("lambda_ewc", self.lambda_ewc >= 0),
                         ("fisher_samples", self.fisher_samples >= 1)):
            if not ok or not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"SugarConfig.{name} = {getattr(self, name)!r} is out of range")
        return self


class _Residual(nn.Module):
    """3x3 conv -> ReLU -> 3x3 conv, plus a 1x1 projection of the input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class TriggerNet(nn.Module):
    """SUGAR's trigger: offsets [N, num_ws, w_dim] -> surrogate directions of the same shape (a one-level U-Net)."""

    def __init__(self, width: int = 64, seed: int = 0):
        super().__init__()
        self.down = _Residual(1, width)
        self.bottom = _Residual(width, 2 * width)
        self.up = nn.ConvTranspose2d(2 * width, 2 * width, 2, stride=2)
        self.out = _Residual(3 * width, width)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                if p.ndim > 1:  # Xavier uniform on every weight, as SUGAR initialises its U-Net
                    fan_in, fan_out = p.shape[1] * p[0, 0].numel(), p.shape[0] * p[0, 0].numel()
                    bound = math.sqrt(6.0 / (fan_in + fan_out))
                    p.uniform_(-bound, bound, generator=gen)

    def forward(self, offset: torch.Tensor) -> torch.Tensor:
        x = self.down(offset.unsqueeze(1))
        y = self.up(self.bottom(nn.functional.max_pool2d(x, 2)))
        y = nn.functional.pad(y, (0, x.shape[-1] - y.shape[-1], 0, x.shape[-2] - y.shape[-2]))  # odd sides
        return self.out(torch.cat([x, y], dim=1)).mean(dim=1)


def surrogate_target(trigger: TriggerNet, w_u: torch.Tensor, w_avg: torch.Tensor, d: float) -> torch.Tensor:
    """w_t = w̄ - d * T(w_u - w̄) / ||T(w_u - w̄)|| (the norm over each sample's whole code)."""
    direction = trigger(w_u - w_avg)
    return w_avg - d * direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)


def train_trigger(bundle: "ModelBundle", w_u: torch.Tensor, cfg: "SugarConfig") -> tuple[TriggerNet, list[float]]:
    """Fit the trigger network with the generator frozen; returns it and its loss per step."""
    trigger = TriggerNet(cfg.trigger_width, seed=cfg.seed).to(w_u.device)
    nets, G_s, backend = LossNets.of(bundle, cfg), bundle.G, bundle.backend
    w_avg = bundle.w_avg.to(w_u)
    optimizer = torch.optim.Adam(trigger.parameters(), lr=cfg.trigger_lr * w_u.shape[0])
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        structure_u = backend.structure(G_s, w_u, cfg.noise_mode)
    history = []
    for _ in range(cfg.trigger_steps):
        yaw = (torch.rand((), generator=gen).item() * 2 - 1) * cfg.yaw_range
        camera = bundle.camera(yaw, cfg.pitch)
        cams = None if camera is None else camera.expand(w_u.shape[0], -1)
        w_t = surrogate_target(trigger, w_u, w_avg, cfg.d)
        structure_t = backend.structure(G_s, w_t, cfg.noise_mode)
        with torch.no_grad():
            x_u = render(nets, G_s, structure_u, w_u, cams, cfg)
            emb_u = nets.embed(x_u)
        x_t = render(nets, G_s, structure_t, w_t, cams, cfg)
        keep = cfg.lambda_l2 * (structure_t - structure_u).pow(2).mean()
        similarity = embedding_similarity(emb_u, nets.embed(x_t)).mean()
        loss = keep + cfg.lambda_id * keep.detach() * similarity - cfg.lambda_per * nets.distance(x_u, x_t).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return trigger.eval().requires_grad_(False), history


def fisher_latents(bundle: "ModelBundle", w_u: torch.Tensor, cfg: LTUConfig) -> torch.Tensor:
    """fisher_samples latents per identity: w_u moved towards random people by a radius in [alpha_max, 2 alpha_max]."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    n, k = w_u.shape[0], cfg.fisher_samples
    z = torch.randn(n * k, bundle.z_dim, generator=gen).to(w_u.device)
    w_r = bundle.backend.map(bundle.G, z, cfg.truncation_psi)
    source = w_u.repeat_interleave(k, dim=0)
    direction = w_r - source
    radius = cfg.alpha_max * (1 + torch.rand(n * k, generator=gen)).to(w_u.device).view(-1, 1, 1)
    return source + radius * direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)


def fisher_information(bundle: "ModelBundle", G: nn.Module, latents: torch.Tensor, cfg: LTUConfig,
                       batch: int = 4) -> dict[str, torch.Tensor]:
    """Diagonal Fisher diag(J^T J) / numel of G's structure at ``latents``, for G's parameters that train, estimated
    by one Gaussian random projection per latent."""
    params = {name: p for name, p in G.named_parameters() if p.requires_grad}
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    for start in range(0, len(latents), batch):
        structure = bundle.backend.structure(G, latents[start:start + batch], cfg.noise_mode)
        probe = torch.randn(structure.shape, generator=gen).to(structure)
        projection = (structure * probe).sum() / math.sqrt(structure[0].numel())
        grads = torch.autograd.grad(projection, list(params.values()), allow_unused=True)
        for name, g in zip(params, grads):
            if g is not None:
                fisher[name] += g.detach().pow(2)
    return {name: f / len(latents) for name, f in fisher.items()}


def ewc_penalty(G: nn.Module, fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_i F_i (theta_i - theta0_i)^2 over the parameters F covers."""
    params = dict(G.named_parameters())
    terms = [(fisher[name] * (params[name] - anchor[name]).pow(2)).sum() for name in fisher]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class SugarMethod(GuideMethod):
    """Trigger-network targets; the synthesis network fine-tuned with GUIDE's losses (robust option included) plus an
    EWC penalty."""

    name = "sugar"
    config_type = SugarConfig
    learned_targets = True

    def __init__(self) -> None:
        super().__init__()
        self.trigger: TriggerNet | None = None
        self.trigger_history: list[float] = []
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def targets(self, bundle: "ModelBundle", w_u: torch.Tensor, cfg: LTUConfig) -> torch.Tensor:
        """Train the trigger network on these identities, then each one's surrogate target."""
        cfg = _sugar(cfg)
        self.trigger, self.trigger_history = train_trigger(bundle, w_u, cfg)
        with torch.no_grad():
            return surrogate_target(self.trigger, w_u, bundle.w_avg.to(w_u), cfg.d)

    def start(self, run: "Unlearning") -> None:
        """The Fisher information around the identities, and the parameters the penalty anchors to."""
        super().start(run)
        cfg = _sugar(run.cfg)
        if cfg.lambda_ewc:
            latents = fisher_latents(run.bundle, run.w_u, cfg)
            self.fisher = fisher_information(run.bundle, run.G_u, latents, cfg)
            self.anchor = {name: p.detach().clone() for name, p in run.G_u.named_parameters() if p.requires_grad}

    def penalty(self, G: nn.Module) -> torch.Tensor:
        """The EWC penalty of a generator against the anchor (zero before the first step)."""
        return ewc_penalty(G, self.fisher, self.anchor)

    def losses(self, run: "Unlearning", step: int, draws: Any,
               camera: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """GUIDE's losses plus lambda_ewc x the EWC penalty."""
        total, losses = super().losses(run, step, draws, camera)
        if self.fisher:
            losses["ewc"] = self.penalty(run.G_u)
            total = losses["total"] = total + _sugar(run.cfg).lambda_ewc * losses["ewc"]
        return total, losses

    def finish(self, run: "Unlearning") -> None:
        """The trigger network beside the delta; its loss and a summary of F in run.json."""
        super().finish(run)
        if self.trigger is not None:
            run.method_tensors.update({f"trigger.{k}": v for k, v in self.trigger.state_dict().items()})
        summary = [{"tensor": name, "mean": float(f.mean()), "max": float(f.max())} for name, f in self.fisher.items()]
        run.extra["sugar"] = {
            "trigger_loss": {"first": self.trigger_history[:1], "last": self.trigger_history[-1:],
                             "steps": len(self.trigger_history)},
            "fisher": {"latents": int(_sugar(run.cfg).fisher_samples * run.w_u.shape[0]),
                       "mean": float(sum(f.sum() for f in self.fisher.values()) /
                                     max(1, sum(f.numel() for f in self.fisher.values()))),
                       "per_tensor": summary}}


def _sugar(cfg: LTUConfig) -> SugarConfig:
    """A run's settings as SUGAR's."""
    return cfg if isinstance(cfg, SugarConfig) else SugarConfig(**cfg.to_dict())


def load_trigger(tensors: dict[str, torch.Tensor]) -> TriggerNet:
    """The trigger network of a SUGAR run from its method.safetensors (guide_core.runs.load_method_tensors)."""
    state = {k[len("trigger."):]: v for k, v in tensors.items() if k.startswith("trigger.")}
    if "down.skip.weight" not in state:
        raise ValueError("these method tensors hold no SUGAR trigger network")
    trigger = TriggerNet(int(state["down.skip.weight"].shape[0]))
    trigger.load_state_dict(state)
    return trigger.eval().requires_grad_(False)


register_method("sugar", SugarMethod,
                "SUGAR (WACV 2026): trigger-network surrogate targets, fine-tune with an EWC penalty")
