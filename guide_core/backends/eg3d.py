"""EG3D behind the Backend seam (Chan et al., CVPR 2022): tri-planes, volume rendering, super-resolution.

The mapping network is conditioned on the frontal camera (GUIDE's unlearn.py maps every latent with it), and only
the tri-plane backbone's synthesis network trains (``backbone.synthesis.``), as in the official GUIDE code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from guide_core.backends.base import FeatureSite, RenderSettings
from guide_core.eg3d.camera import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS, FOV_DEGREES, camera_params
from guide_core.precision import autocast_dtype


@dataclass
class EG3DBackend:
    """An EG3D-architecture generator (``TriPlaneGenerator``) seen by the engine.

    ``cond_c`` [1, 25] is the frontal conditioning camera of the mapping network; radius, fov_deg and pivot place the
    rendering cameras of ``camera(yaw, pitch)``.
    """

    cond_c: torch.Tensor = field(default_factory=lambda: camera_params(0.0, 0.0))
    radius: float = AVG_CAMERA_RADIUS
    fov_deg: float = FOV_DEGREES
    pivot: tuple[float, float, float] = AVG_CAMERA_PIVOT
    name: str = "eg3d"
    has_camera: bool = True
    trainable_prefix: str = "backbone.synthesis."

    def __post_init__(self) -> None:
        self.cond_c = self.cond_c.detach().to(torch.float32).reshape(1, 25)

    def to(self, device: torch.device | str) -> "EG3DBackend":
        """Move the conditioning camera to a device (the bundle's)."""
        self.cond_c = self.cond_c.to(device)
        return self

    def num_ws(self, G: torch.nn.Module) -> int:
        """Rows of w+ (14 for EG3D FFHQ 512)."""
        backbone = G.backbone
        return int(getattr(backbone, "num_ws", None) or backbone.mapping.num_ws)

    def z_dim(self, G: torch.nn.Module) -> int:
        """Dimension of z."""
        return int(G.z_dim)

    def resolution(self, G: torch.nn.Module) -> int:
        """Side of the super-resolved image."""
        return int(G.img_resolution)

    def camera(self, yaw: float | torch.Tensor, pitch: float | torch.Tensor,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """Camera parameters [N, 25] orbiting the pivot at the average radius."""
        return camera_params(yaw, pitch, radius=self.radius, fov_deg=self.fov_deg,
                             pivot=self.pivot).to(device, torch.float32)

    def map(self, G: torch.nn.Module, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """w+ of the mapping network, conditioned on the frontal camera."""
        with torch.no_grad():
            return G.mapping(z, self.cond_c.to(z.device).expand(z.shape[0], -1), truncation_psi=truncation_psi)

    def synthesize(self, G: torch.nn.Module, ws: torch.Tensor, camera: torch.Tensor | None,
                   noise_mode: str = "const", deterministic: bool = True) -> torch.Tensor:
        """Tri-planes, volume rendering and super-resolution in one call."""
        return G.synthesis(ws, camera, noise_mode=noise_mode, deterministic=deterministic)["image"]

    def structure(self, G: torch.nn.Module, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """The tri-planes the local loss's L2 term compares (GUIDE Sec. 3.3)."""
        return G.get_planes(ws, noise_mode=noise_mode)

    def render_structure(self, G: torch.nn.Module, structure: torch.Tensor, ws: torch.Tensor,
                         camera: torch.Tensor | None, settings: RenderSettings) -> torch.Tensor:
        """Tri-planes through the decoder, the volume renderer and the super-resolution (EG3D Sec. 3-4).

        fused_modconv=None leaves each SR block to its own train / eval default.
        """
        return G.render_planes(structure, camera, ws=ws, noise_mode=settings.noise_mode,
                               deterministic=settings.deterministic_render,
                               sr_dtype=autocast_dtype(settings.precision, structure.device),
                               compiled=settings.compile_renderer,
                               fused_modconv=True if settings.fused_sr else None)["image"]

    def feature_sites(self, G: torch.nn.Module) -> list[FeatureSite]:
        """The second convolution of every tri-plane synthesis block after the 4x4 one (where LEGATO's official
        SynthesisBlock runs its ODE block, before the ToRGB)."""
        synthesis = G.backbone.synthesis
        return [FeatureSite(f"backbone.synthesis.b{res}.conv1", int(getattr(synthesis, f"b{res}").conv1.out_channels),
                            int(res)) for res in synthesis.block_resolutions[1:]]
