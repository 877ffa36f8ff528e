"""StyleGAN2 behind the Backend seam (Karras et al., CVPR 2020): GUIDE-SG2, the paper's 2D variant (App. A.7).

There is no camera. The local loss compares images where EG3D compares tri-planes, so the structure is the render
itself. Renders are pooled to 256² (adaptive average pooling, pSp's face_pool) before every loss and metric, as pSp and
e4e compute theirs; the generator itself still renders 1024². The mapping network stays frozen and the synthesis
network trains: the constant input, every styled convolution and ToRGB (their modulation affines included).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from guide_core.backends.base import FeatureSite, RenderSettings

# Parameter-name prefixes of the synthesis network in rosinality's layout (everything but the mapping, ``style.*``).
SYNTHESIS_PREFIXES = ("input.", "conv1.", "to_rgb1.", "convs.", "to_rgbs.")


@dataclass
class StyleGAN2Backend:
    """A StyleGAN2 generator (guide_core.stylegan2) seen by the engine; ``output_size`` is the pooled render side."""

    output_size: int = 256
    name: str = "stylegan2"
    has_camera: bool = False
    trainable_prefix: tuple[str, ...] = SYNTHESIS_PREFIXES

    def num_ws(self, G: torch.nn.Module) -> int:
        """Rows of w+ (18 at 1024²)."""
        return int(G.num_ws)

    def z_dim(self, G: torch.nn.Module) -> int:
        """Dimension of z."""
        return int(G.z_dim)

    def resolution(self, G: torch.nn.Module) -> int:
        """Side of the renders the engine sees (pooled)."""
        return min(int(self.output_size), int(G.img_resolution))

    def camera(self, yaw: float | torch.Tensor, pitch: float | torch.Tensor,
               device: torch.device | str = "cpu") -> None:
        """A 2D generator has no camera."""
        return None

    def map(self, G: torch.nn.Module, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """w+ of the mapping network (the style MLP), repeated on every row."""
        with torch.no_grad():
            return G.mapping(z, truncation_psi=truncation_psi)

    def pool(self, images: torch.Tensor) -> torch.Tensor:
        """Renders at ``output_size`` (mean of each block, pSp's face_pool); smaller renders stay as they are."""
        size = self.output_size
        return images if images.shape[-1] <= size else F.adaptive_avg_pool2d(images, (size, size))

    def synthesize(self, G: torch.nn.Module, ws: torch.Tensor, camera: torch.Tensor | None,
                   noise_mode: str = "const", deterministic: bool = True) -> torch.Tensor:
        """Pooled images [N, 3, output_size, output_size]; ``camera`` is ignored (None)."""
        return self.pool(G(ws, noise_mode=noise_mode))

    def structure(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The pooled render: what the local loss's L2 term compares for a 2D generator (GUIDE App. A.7)."""
        return self.synthesize(G, ws, None, noise_mode)

    def render_structure(self, G: torch.nn.Module, structure: torch.Tensor, ws: torch.Tensor,
                         camera: torch.Tensor | None, settings: RenderSettings) -> torch.Tensor:
        """The structure is already the image."""
        return structure

    def feature_sites(self, G: torch.nn.Module) -> list[FeatureSite]:
        """The second styled convolution of every resolution after 4x4 (``convs.1``, ``convs.3``, ...), before its
        ToRGB."""
        return [FeatureSite(f"convs.{2 * i + 1}", int(G.channels[2 ** (i + 3)]), 2 ** (i + 3))
                for i in range(len(G.convs) // 2)]
