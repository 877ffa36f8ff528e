"""The Backend seam: what a generator family must answer for unlearning, evaluation and the audit.

GUIDE (Seo et al., CVPR 2024) trains a copy G_u of a generator G_s; the engine never calls a generator directly, it
asks the backend. Both generators of a run are handed in on every call, so one backend object serves G_s and G_u.

- ``structure`` is what the local loss compares besides the images: EG3D's tri-planes (GUIDE Sec. 3.3); for a 2D
  generator the image itself, as the paper's GUIDE-SG2 does (App. A.7).
- ``camera`` is None for a generator without one; the studio hides its pose controls then.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class FeatureSite:
    """One synthesis layer's output: the module's path in the generator, its channels and its resolution."""

    path: str
    channels: int
    resolution: int


class RenderSettings(Protocol):
    """The run settings a backend reads when it renders for the loss (LTUConfig has all of them)."""

    noise_mode: str
    deterministic_render: bool
    precision: str
    compile_renderer: bool
    fused_sr: bool


@runtime_checkable
class Backend(Protocol):
    """A generator family: renders codes, exposes the structure the local loss compares, names what trains."""

    name: str
    has_camera: bool
    trainable_prefix: str | tuple[str, ...]

    def num_ws(self, G: torch.nn.Module) -> int:
        """Number of w rows the synthesis network takes."""
        ...

    def z_dim(self, G: torch.nn.Module) -> int:
        """Dimension of the mapping network's input z."""
        ...

    def resolution(self, G: torch.nn.Module) -> int:
        """Side of the images the generator renders."""
        ...

    def camera(self, yaw: float | torch.Tensor, pitch: float | torch.Tensor,
               device: torch.device | str) -> torch.Tensor | None:
        """Camera parameters for yaw / pitch offsets (radians) from frontal; None for a generator without camera."""
        ...

    def map(self, G: torch.nn.Module, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Codes w+ [N, num_ws, w_dim] of the mapping network for z [N, z_dim] (no gradient)."""
        ...

    def synthesize(self, G: torch.nn.Module, ws: torch.Tensor, camera: torch.Tensor | None,
                   noise_mode: str = "const", deterministic: bool = True) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] of codes ws, end to end."""
        ...

    def structure(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """What the local loss compares besides the images (EG3D: tri-planes)."""
        ...

    def render_structure(self, G: torch.nn.Module, structure: torch.Tensor, ws: torch.Tensor,
                         camera: torch.Tensor | None, settings: RenderSettings) -> torch.Tensor:
        """Images [N, 3, H, W] from a structure already computed, with a run's speed settings."""
        ...

    def feature_sites(self, G: torch.nn.Module) -> list[FeatureSite]:
        """The synthesis layers whose output features a method may adapt (LEGATO's adapters sit after each
        resolution's last convolution, before its ToRGB), coarse to fine."""
        ...
