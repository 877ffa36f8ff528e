"""The model bundle: everything one unlearning needs from "a world".

A bundle holds the generator with its backend (guide_core.backends: how to render, what the local loss compares,
what trains), the mean latent, the encoder, the identity / perceptual / feature networks, face alignment and default
settings, so the engine, the CLI and the studio never care whether it is the embedded tiny world or the released
EG3D FFHQ generator with GOAE, ArcFace, CurricularFace, LPIPS and Inception. Worlds are found by name in
guide_core.registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from guide_core.backends import Backend, EG3DBackend
from guide_core.config import LTUConfig
from guide_core.eg3d.camera import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS, FOV_DEGREES


def _no_alignment(image: Any) -> Any:
    """Align a photo when the bundle has no face aligner: say so instead of guessing a crop."""
    raise RuntimeError("this model bundle has no face alignment; pass an already aligned 512x512 crop")


@dataclass
class ModelBundle:
    """One world, ready for unlearning.

    G is the SOURCE generator G_s (eval mode, frozen); w_avg is its mean latent ([512] or [num_ws, 512]).
    backend: the generator family (guide_core.backends); when None, an EG3D backend is built from cond_c (the frontal
    conditioning camera [1, 25]) and the camera geometry (radius, fov_deg, pivot) used by ``camera(yaw, pitch)``.
    encoder: aligned images in [-1, 1] [N,3,H,W] -> ABSOLUTE w+ [N,num_ws,512] (w_avg + offset), or None.
    id_loss_net (ArcFace role) / id_metric_net (CurricularFace role): ``.embed(images in [-1,1]) -> unit [N, 512]``.
    perceptual: (x, y) -> [N] (LPIPS role). feature_net: images in [-1, 1] -> [N, F] for FID, described by
    feature_note wherever a FID is shown. align: PIL photo -> aligned PIL crop (a clear error when no face is found).
    ltu_defaults: the LTUConfig a run on this world starts from (the paper's, unless the world needs its own
    schedule); the CLI, the studio and the Python API all start there, explicit settings win.
    perceptual_uses_metric_net: the perceptual distance is built on the metric identity net (the embedded world's
    one net), so the erasure audit's attacker matches pixels only and never optimises its own score.
    """

    name: str
    G: torch.nn.Module
    w_avg: torch.Tensor
    cond_c: torch.Tensor
    id_loss_net: Any
    id_metric_net: Any
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
    encoder_resolution: int = 256
    feature_net: Callable[[torch.Tensor], torch.Tensor] | None = None
    feature_note: str = "no feature network: FID not computable"
    align: Callable[[Any], Any] = _no_alignment
    radius: float = AVG_CAMERA_RADIUS
    fov_deg: float = FOV_DEGREES
    pivot: tuple[float, float, float] = AVG_CAMERA_PIVOT
    real_stats: Path | None = None
    description: str = ""
    ltu_defaults: LTUConfig = field(default_factory=LTUConfig)
    perceptual_uses_metric_net: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    backend: Backend | None = None

    def __post_init__(self) -> None:
        """The source generator is frozen and in eval mode; codes and cameras live on its device."""
        self.G.eval().requires_grad_(False)
        self.w_avg = self.w_avg.detach().to(self.device, torch.float32)
        if self.backend is None:
            self.backend = EG3DBackend(cond_c=self.cond_c, radius=self.radius, fov_deg=self.fov_deg,
                                       pivot=tuple(self.pivot))
        if self.cond_c is not None:
            self.cond_c = self.cond_c.detach().to(self.device, torch.float32).reshape(1, 25)
        if hasattr(self.backend, "to"):
            self.backend.to(self.device)

    @property
    def device(self) -> torch.device:
        """Device of the generator (every tensor the bundle hands out is put there)."""
        return next(self.G.parameters()).device

    @property
    def num_ws(self) -> int:
        """Number of w rows the synthesis network takes (14 for EG3D FFHQ 512)."""
        return self.backend.num_ws(self.G)

    @property
    def z_dim(self) -> int:
        """Dimension of the mapping network's input z."""
        return self.backend.z_dim(self.G)

    @property
    def has_camera(self) -> bool:
        """Whether the generator renders from a camera (a 2D generator does not)."""
        return bool(self.backend.has_camera)

    def camera(self, yaw: float | torch.Tensor, pitch: float | torch.Tensor) -> torch.Tensor | None:
        """Camera parameters [N, 25] for yaw / pitch offsets (radians) from frontal, on the bundle's device."""
        return self.backend.camera(yaw, pitch, self.device)

    def map(self, G: torch.nn.Module, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        """Codes w+ of a generator's mapping network for z [N, z_dim] (no gradient)."""
        return self.backend.map(G, z.to(self.device), truncation_psi)

    def w_avg_code(self) -> torch.Tensor:
        """Mean latent as a full code [num_ws, 512]."""
        return self.w_avg.expand(self.num_ws, -1) if self.w_avg.ndim == 1 else self.w_avg

    def invert(self, images: Any) -> torch.Tensor:
        """Aligned image(s) -> absolute w+ [N, num_ws, 512] through the bundle's encoder (GOAE role)."""
        if self.encoder is None:
            raise RuntimeError(f"model {self.name!r} has no inversion encoder: a photo cannot be turned into w_u")
        if not isinstance(images, torch.Tensor):
            images = pil_to_tensor(images)
        with torch.no_grad():
            ws = self.encoder(images.to(self.device))
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise RuntimeError(f"encoder of {self.name!r} returned {tuple(ws.shape)}, expected [N, {self.num_ws}, 512]")
        return ws

    def render(self, G: torch.nn.Module, ws: torch.Tensor, yaw: float | torch.Tensor = 0.0, pitch: float = 0.0,
               noise_mode: str = "const") -> torch.Tensor:
        """Render codes [N, num_ws, 512] with a generator at yaw / pitch offsets (no gradient): images in [-1, 1]."""
        with torch.no_grad():
            return self.synthesize(G, ws, self.camera(yaw, pitch), noise_mode=noise_mode)

    def synthesize(self, G: torch.nn.Module, ws: torch.Tensor, camera: torch.Tensor | None,
                   noise_mode: str = "const", deterministic: bool = True) -> torch.Tensor:
        """Render codes through the backend with given cameras (one camera is shared by the whole batch)."""
        if camera is not None and camera.shape[0] == 1 and ws.shape[0] != 1:
            camera = camera.expand(ws.shape[0], -1)
        return self.backend.synthesize(G, ws, camera, noise_mode=noise_mode, deterministic=deterministic)


def pil_to_tensor(images: Any) -> torch.Tensor:
    """PIL image(s) -> float tensor [N, 3, H, W] in [-1, 1] (8-bit levels / 127.5 - 1, as GUIDE's loader)."""
    import numpy as np
    from PIL import Image

    items = images if isinstance(images, (list, tuple)) else [images]
    out = []
    for image in items:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or an image tensor, got {type(image).__name__}")
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()
        out.append(torch.from_numpy(pixels).float() / 127.5 - 1)
    if len({tuple(t.shape) for t in out}) > 1:
        raise ValueError("images to invert together must have the same size")
    return torch.stack(out)
