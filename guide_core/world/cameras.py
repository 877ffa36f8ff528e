"""EG3D-convention cameras for the embedded world (Chan et al. CVPR 2022).

Poses come from guide_core.eg3d.camera so the world and its generator share one definition (a camera at radius 2.7
from the origin, horizontal angle pi/2 + yaw, vertical angle pi/2 + pitch, looking at the pivot (0, 0, 0.2), world y
up, OpenCV camera axes; c = 16 cam2world values + 9 normalised intrinsics). The ray sampler below mirrors EG3D's so
procedural renders and generator renders see the same pixels.
"""
from __future__ import annotations

import torch

from guide_core.eg3d.camera import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS, FOV_DEGREES, camera_params

__all__ = ["AVG_CAMERA_PIVOT", "AVG_CAMERA_RADIUS", "FOV_DEGREES", "camera_params", "frontal_camera",
           "sample_yaw_pitch", "camera_rays"]
# The FFHQ-like pose range the world is rendered and trained on (radians from frontal).
YAW_STD, YAW_MAX = 0.3, 0.7
PITCH_STD, PITCH_MAX = 0.12, 0.35


def frontal_camera(n: int = 1) -> torch.Tensor:
    """The frontal camera: the mapping network's conditioning in GUIDE (Seo et al. 2024, Sec. 4: the canonical view)."""
    return camera_params(torch.zeros(n), torch.zeros(n))


def sample_yaw_pitch(n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random FFHQ-like poses: Gaussian yaw/pitch clipped to the range the world was trained on."""
    yaw = (torch.randn(n, generator=generator) * YAW_STD).clamp(-YAW_MAX, YAW_MAX)
    pitch = (torch.randn(n, generator=generator) * PITCH_STD).clamp(-PITCH_MAX, PITCH_MAX)
    return yaw, pitch


def camera_rays(c: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of every pixel centre for cameras c [N,25] (EG3D's ray sampler): origins and unit directions [N,R,3]."""
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f"camera parameters must have shape [N, 25], got {tuple(c.shape)}")
    n = c.shape[0]
    cam2world = c[:, :16].reshape(n, 4, 4)
    intr = c[:, 16:].reshape(n, 3, 3)
    fx, fy, cx, cy, sk = intr[:, 0, 0], intr[:, 1, 1], intr[:, 0, 2], intr[:, 1, 2], intr[:, 0, 1]
    idx = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    yy, xx = torch.meshgrid(idx, idx, indexing="ij")  # x = column, y = row (image y points down)
    x_cam = xx.reshape(1, -1).expand(n, -1)
    y_cam = yy.reshape(1, -1).expand(n, -1)
    x_lift = (x_cam - cx[:, None] + cy[:, None] * sk[:, None] / fy[:, None]
              - sk[:, None] * y_cam / fy[:, None]) / fx[:, None]
    y_lift = (y_cam - cy[:, None]) / fy[:, None]
    cam_points = torch.stack((x_lift, y_lift, torch.ones_like(x_lift), torch.ones_like(x_lift)), dim=-1)
    world = torch.bmm(cam2world, cam_points.transpose(1, 2)).transpose(1, 2)[..., :3]
    origins = cam2world[:, None, :3, 3].expand_as(world)
    dirs = world - origins
    return origins, dirs / dirs.norm(dim=-1, keepdim=True)
