# The model bundle: everything one GUIDE unlearning needs from "a world" (generator, mean latent, cameras, encoder,
# identity / perceptual / feature networks, face alignment, default settings), so the engine, CLI and studio never
# care whether it is the embedded tiny world or the released EG3D FFHQ generator with GOAE, ArcFace, CurricularFace,
# LPIPS and Inception. Worlds are found by name in guide_core.registry.
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from guide_core.eg3d.camera import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS, FOV_DEGREES
from guide_core.guide import LTUConfig

# Align a photo when the bundle has no face aligner: say so instead of guessing a crop.
def _no_alignment(image: Any) -> Any:
    raise RuntimeError("this model bundle has no face alignment; pass an already aligned 512x512 crop")


# One world, ready for unlearning. G is the SOURCE generator G_s (eval mode, frozen); w_avg is its mean latent
# ([512] or [num_ws, 512]); cond_c the frontal conditioning camera [1, 25]; camera geometry for `camera(yaw, pitch)`.
# encoder: aligned images in [-1, 1] [N,3,H,W] -> ABSOLUTE w+ [N,num_ws,512] (w_avg + offset), or None.
# id_loss_net (ArcFace role) / id_metric_net (CurricularFace role): `.embed(images in [-1,1]) -> unit [N, 512]`.
# perceptual: (x, y) -> [N] (LPIPS role). feature_net: images in [-1, 1] -> [N, F] for FID, described by feature_note
# wherever a FID is shown. align: PIL photo -> aligned 512x512 PIL crop (raises a clear error when no face is found).
# ltu_defaults: the LTUConfig a run on this world starts from (the paper's, unless the world needs its own schedule);
# the CLI, the studio and the Python API all start there, explicit settings win. perceptual_uses_metric_net: the
# perceptual distance is built on the metric identity net (the embedded world's one net), so the erasure audit's
# attacker matches pixels only and never optimises its own score.
@dataclass
class ModelBundle:
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

    # The source generator is frozen and in eval mode; codes and cameras live on its device.
    def __post_init__(self) -> None:
        self.G.eval().requires_grad_(False)
        self.w_avg = self.w_avg.detach().to(self.device, torch.float32)
        self.cond_c = self.cond_c.detach().to(self.device, torch.float32).reshape(1, 25)

    # Device of the generator (every tensor the bundle hands out is put there).
    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    # Number of w rows the synthesis network takes (14 for EG3D FFHQ 512).
    @property
    def num_ws(self) -> int:
        backbone = self.G.backbone
        return int(getattr(backbone, "num_ws", None) or backbone.mapping.num_ws)

    # Dimension of the mapping network's input z.
    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    # Camera parameters [N, 25] for yaw / pitch offsets (radians) from the frontal view, on the bundle's device.
    def camera(self, yaw: float | torch.Tensor, pitch: float | torch.Tensor) -> torch.Tensor:
        from guide_core.eg3d import camera_params
        return camera_params(yaw, pitch, radius=self.radius, fov_deg=self.fov_deg,
                             pivot=self.pivot).to(self.device, torch.float32)

    # Mean latent as a full code [num_ws, 512].
    def w_avg_code(self) -> torch.Tensor:
        return self.w_avg.expand(self.num_ws, -1) if self.w_avg.ndim == 1 else self.w_avg

    # Aligned image(s) -> absolute w+ [N, num_ws, 512] through the bundle's encoder (GOAE role).
    def invert(self, images: Any) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError(f"model {self.name!r} has no inversion encoder: a photo cannot be turned into w_u")
        if not isinstance(images, torch.Tensor):
            images = pil_to_tensor(images)
        with torch.no_grad():
            ws = self.encoder(images.to(self.device))
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise RuntimeError(f"encoder of {self.name!r} returned {tuple(ws.shape)}, expected [N, {self.num_ws}, 512]")
        return ws

    # Render codes [N, num_ws, 512] with a generator at yaw/pitch offsets: images in [-1, 1].
    def render(self, G: torch.nn.Module, ws: torch.Tensor, yaw: float | torch.Tensor = 0.0, pitch: float = 0.0,
               noise_mode: str = "const") -> torch.Tensor:
        c = self.camera(yaw, pitch)
        c = c.expand(ws.shape[0], -1) if c.shape[0] == 1 else c
        with torch.no_grad():
            return G.synthesis(ws, c, noise_mode=noise_mode, deterministic=True)["image"]


# PIL image(s) -> float tensor [N, 3, H, W] in [-1, 1] (the 8-bit levels / 127.5 - 1 convention of GUIDE's loader).
def pil_to_tensor(images: Any) -> torch.Tensor:
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
