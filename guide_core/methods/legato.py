"""LEGATO (arXiv 2601.04282, 2026) as a Method: GUIDE's targets and losses, but G_u = the frozen generator plus small
ODE adapters, and only the adapters train.

- Parameterisation: after the last convolution of every synthesis resolution (before its ToRGB; the backend names the
  layers, ``Backend.feature_sites``) the features x pass through a Neural ODE dx/dt = f(x), f = 1x1 conv -> LeakyReLU
  (0.2) -> 1x1 conv with a hidden width of 256, integrated with explicit Euler steps (0.4 over t in [0, 1.6], 4 steps).
  f's last convolution starts at zero, so every adapter starts as the identity and G_u equals G_s before the first
  step. Every weight of the generator itself stays frozen.
- Losses: GUIDE's local, adjacency and global losses (guide_core.engine.losses), plus a trajectory-consistency term
  that joins the local loss: the mean squared difference of consecutive Euler states of one adapter (the 128 px
  resolution's, or the finest below it), over the local pairs (the identities and their adjacent codes).
- Targets: UFO (guide_core.methods.guide.ufo_target); like GUIDE it can add robust unlearning's attack latents.

The adapters are registered in G_u's own state_dict (``<layer>.legato_adapter.*``), so a run's delta holds them and
reloading a run rebuilds them (``rebuild``). A LEGATO run that continues a LEGATO run trains the adapters it inherits.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from guide_core.config import LTUConfig
from guide_core.engine.method import register_method
from guide_core.methods.guide import GuideMethod

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle
    from guide_core.engine.loop import Unlearning

ADAPTER = "legato_adapter"


@dataclass
class LegatoConfig(LTUConfig):
    """LEGATO's settings: GUIDE's (LTUConfig) and the adapters'."""

    adapter_width: int = field(default=256, metadata={"help": "hidden channels of each adapter's 1x1 convolutions",
                                                       "range": (8, 512)})
    ode_step: float = field(default=0.4, metadata={"help": "Euler step of the adapters' ODE", "range": (0.05, 1.6)})
    ode_time: float = field(default=1.6, metadata={"help": "integration time T of the adapters' ODE (t in [0, T])",
                                                   "range": (0.1, 3.2)})
    lambda_traj: float = field(default=1.0, metadata={
        "help": "weight of the trajectory-consistency term (MSE of consecutive Euler states) in the local loss",
        "range": (0.0, 10.0)})
    traj_resolution: int = field(default=128, metadata={
        "help": "resolution of the adapter whose Euler states the trajectory term compares (the finest at or below "
                "it)", "range": (8, 1024)})

    def validate(self) -> "LegatoConfig":
        """GUIDE's checks and the adapters'."""
        super().validate()
        for name, ok in (("adapter_width", self.adapter_width >= 1), ("ode_step", self.ode_step > 0),
                         ("ode_time", self.ode_time > 0), ("lambda_traj", self.lambda_traj >= 0),
                         ("traj_resolution", self.traj_resolution >= 1)):
            if not ok or not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"LegatoConfig.{name} = {getattr(self, name)!r} must be a positive finite number")
        if self.ode_step > self.ode_time:
            raise ValueError(f"LegatoConfig.ode_step {self.ode_step} is longer than ode_time {self.ode_time}")
        return self


class EulerAdapter(nn.Module):
    """x -> x(T) of dx/dt = f(x), f a 1x1 conv -> LeakyReLU -> 1x1 conv whose last layer starts at zero.

    The step and the number of steps are buffers, so a saved adapter reloads with the schedule it was trained with.
    With ``keep_states`` set, the last forward's Euler states x_0 .. x_K stay in ``states``.
    """

    def __init__(self, channels: int, width: int = 256, step: float = 0.4, time: float = 1.6, seed: int = 0):
        super().__init__()
        self.field = nn.Sequential(nn.Conv2d(channels, width, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, channels, 1))
        gen = torch.Generator().manual_seed(seed)
        bound = math.sqrt(6.0 / channels)  # Kaiming uniform (a = 0, fan in) on the first convolution
        with torch.no_grad():
            self.field[0].weight.uniform_(-bound, bound, generator=gen)
            for p in (self.field[0].bias, self.field[2].weight, self.field[2].bias):
                p.zero_()
        self.register_buffer("step", torch.tensor(float(step)))
        self.register_buffer("n_steps", torch.tensor(max(1, round(time / step))))
        self.keep_states = False
        self.states: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        states = [h]
        step = float(self.step)
        for _ in range(int(self.n_steps)):
            h = h + step * self.field(h)
            states.append(h)
        self.states = states if self.keep_states else None
        return h.to(x.dtype)


def _adapt(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an adapted layer: its output through its adapter (a plain function, so deepcopy keeps it)."""
    return getattr(module, ADAPTER)(output)


def attach_adapter(layer: nn.Module, adapter: EulerAdapter) -> EulerAdapter:
    """Put ``adapter`` after ``layer`` (a child module, so it is in the generator's state_dict, and a forward hook)."""
    layer.add_module(ADAPTER, adapter)
    layer.register_forward_hook(_adapt)
    return adapter


def adapters(G: nn.Module) -> dict[str, EulerAdapter]:
    """Every adapter in a generator, by the path of the layer it follows."""
    return {name: getattr(module, ADAPTER) for name, module in G.named_modules() if hasattr(module, ADAPTER)}


def with_adapters(base: nn.Module, sites: list, cfg: LegatoConfig) -> nn.Module:
    """A frozen copy of ``base`` with an adapter after each site (one already there, from an earlier LEGATO run, is
    kept and trains on); only the adapters' parameters have requires_grad."""
    G_u = copy.deepcopy(base).requires_grad_(False)
    existing = adapters(G_u)
    for index, site in enumerate(sites):
        if site.path not in existing:
            attach_adapter(G_u.get_submodule(site.path),
                           EulerAdapter(site.channels, cfg.adapter_width, cfg.ode_step, cfg.ode_time, seed=index))
    for adapter in adapters(G_u).values():
        adapter.requires_grad_(True)
    return G_u


def trajectory_loss(states: list[torch.Tensor], rows: int) -> torch.Tensor:
    """Mean squared difference of consecutive Euler states over the first ``rows`` samples (the local pairs)."""
    steps = [(b[:rows] - a[:rows]).pow(2).mean() for a, b in zip(states, states[1:])]
    return torch.stack(steps).mean()


class LegatoMethod(GuideMethod):
    """GUIDE's targets and losses (robust option included); G_u = frozen generator + Euler ODE adapters, plus
    trajectory consistency."""

    name = "legato"
    config_type = LegatoConfig

    def __init__(self) -> None:
        super().__init__()
        self.traced: EulerAdapter | None = None

    def generator(self, bundle: "ModelBundle", base: torch.nn.Module,
                  trainable_prefix: str | tuple[str, ...], cfg: LTUConfig) -> torch.nn.Module:
        """G_u: the base, frozen, with an adapter after every feature site of the backend."""
        return with_adapters(base, bundle.backend.feature_sites(base), _legato(cfg)).to(bundle.device)

    def start(self, run: "Unlearning") -> None:
        """Keep the Euler states of the adapter the trajectory term reads."""
        super().start(run)
        cfg = _legato(run.cfg)
        sites = [s for s in run.bundle.backend.feature_sites(run.G_u) if s.resolution <= cfg.traj_resolution]
        if cfg.lambda_traj and sites:
            self.traced = adapters(run.G_u)[sites[-1].path]
            self.traced.keep_states = True

    def losses(self, run: "Unlearning", step: int, draws: Any,
               camera: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """GUIDE's losses, with lambda_traj x trajectory consistency added to the local loss."""
        total, losses = super().losses(run, step, draws, camera)
        if self.traced is not None and self.traced.states:
            k, n_adj = draws.z_adj.shape[:2]
            weight = _legato(run.cfg).lambda_traj
            losses["trajectory"] = trajectory_loss(self.traced.states, run.w_u.shape[0] + k * n_adj)
            losses["local"] = losses["local"] + weight * losses["trajectory"]
            total = losses["total"] = total + weight * losses["trajectory"]
        return total, losses

    def finish(self, run: "Unlearning") -> None:
        """Stop keeping states; record the adapters' size."""
        super().finish(run)
        if self.traced is not None:
            self.traced.keep_states, self.traced.states = False, None
        found = adapters(run.G_u)
        run.extra["adapters"] = {"count": len(found),
                                 "parameters": sum(p.numel() for a in found.values() for p in a.field.parameters())}

    def rebuild(self, G: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Attach an adapter wherever a saved state names one, shaped as saved (values are loaded afterwards)."""
        for key, value in state.items():
            if f".{ADAPTER}.field.0.weight" in key:
                path = key.split(f".{ADAPTER}.")[0]
                layer = G.get_submodule(path)
                if not hasattr(layer, ADAPTER):
                    attach_adapter(layer, EulerAdapter(int(value.shape[1]), int(value.shape[0])).to(value.device))


def _legato(cfg: LTUConfig) -> LegatoConfig:
    """A run's settings as LEGATO's (settings of another method type get LEGATO's defaults for the adapters)."""
    return cfg if isinstance(cfg, LegatoConfig) else LegatoConfig(**cfg.to_dict())


register_method("legato", LegatoMethod,
                "LEGATO (2026): frozen generator, Euler ODE adapters after each synthesis resolution, GUIDE's losses")
