# EG3D-convention cameras for the embedded world (look-at around the pivot, normalised intrinsics).
# Uses guide_core.eg3d's camera helpers when that package provides them, so the world and the generator share one
# definition; the local fallback follows the same convention (EG3D, Chan et al. CVPR 2022, LookAtPoseSampler):
# a camera at `radius` from the origin, horizontal angle pi/2 + yaw, vertical angle pi/2 + pitch, looking at the pivot,
# world y up, OpenCV camera axes (x right, y down, z forward); c = 16 cam2world values + 9 intrinsics values.
from __future__ import annotations

import math

import torch

AVG_CAMERA_RADIUS = 2.7
AVG_CAMERA_PIVOT = (0.0, 0.0, 0.2)
FOV_DEGREES = 18.837
# The FFHQ-like pose range the world is rendered and trained on (radians from frontal).
YAW_STD, YAW_MAX = 0.3, 0.7
PITCH_STD, PITCH_MAX = 0.12, 0.35


# Normalised intrinsics of EG3D: the focal length is defined through the field of view with EG3D's sqrt(2) factor.
def fov_to_intrinsics(fov_degrees: float = FOV_DEGREES) -> torch.Tensor:
    focal = 1.0 / (math.tan(fov_degrees * math.pi / 360.0) * 1.414)
    return torch.tensor([[focal, 0.0, 0.5], [0.0, focal, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


# cam2world of a camera at `origin` looking along `forward`, world y up, no roll (EG3D's convention).
def look_at_cam2world(forward: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    forward = forward / forward.norm(dim=-1, keepdim=True)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=forward.dtype).expand_as(forward)
    right = -torch.linalg.cross(up, forward, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(forward, right, dim=-1)
    up = up / up.norm(dim=-1, keepdim=True)
    m = torch.eye(4, dtype=forward.dtype).repeat(forward.shape[0], 1, 1)
    m[:, :3, :3] = torch.stack((right, up, forward), dim=-1)
    m[:, :3, 3] = origin
    return m


# Camera parameters c [N,25] for yaw/pitch offsets (radians) from the frontal view.
def camera_params(yaw: torch.Tensor | float, pitch: torch.Tensor | float, radius: float = AVG_CAMERA_RADIUS,
                  pivot: tuple[float, float, float] = AVG_CAMERA_PIVOT, fov_degrees: float = FOV_DEGREES) -> torch.Tensor:
    yaw_t = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
    pitch_t = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1)
    yaw_t, pitch_t = torch.broadcast_tensors(yaw_t, pitch_t)
    theta = math.pi / 2 + yaw_t
    v = (math.pi / 2 + pitch_t).clamp(1e-5, math.pi - 1e-5) / math.pi
    phi = torch.arccos(1 - 2 * v)
    origin = torch.stack((radius * torch.sin(phi) * torch.cos(math.pi - theta),
                          radius * torch.cos(phi),
                          radius * torch.sin(phi) * torch.sin(math.pi - theta)), dim=-1)
    forward = torch.tensor(pivot, dtype=torch.float32) - origin
    cam2world = look_at_cam2world(forward, origin)
    intrinsics = fov_to_intrinsics(fov_degrees).reshape(1, 9).expand(len(yaw_t), 9)
    return torch.cat((cam2world.reshape(-1, 16), intrinsics), dim=1)


# The frontal camera: the mapping network's conditioning in GUIDE (Seo et al. 2024, Sec. 4: camera of the canonical view).
def frontal_camera(n: int = 1) -> torch.Tensor:
    return camera_params(torch.zeros(n), torch.zeros(n))


# Random FFHQ-like poses: Gaussian yaw/pitch clipped to the range the world was trained on.
def sample_yaw_pitch(n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    yaw = (torch.randn(n, generator=generator) * YAW_STD).clamp(-YAW_MAX, YAW_MAX)
    pitch = (torch.randn(n, generator=generator) * PITCH_STD).clamp(-PITCH_MAX, PITCH_MAX)
    return yaw, pitch


# Rays of every pixel centre for cameras c [N,25] (EG3D's ray sampler): origins [N,R,3], unit directions [N,R,3].
def camera_rays(c: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
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
