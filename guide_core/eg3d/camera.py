"""Camera helpers in EG3D's conventions (Chan et al., CVPR 2022, Sec. 5; camera_utils of the original): look-at poses
on a sphere around a pivot, normalised pinhole intrinsics, and the 25-value camera vector (16 cam2world + 9 K).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

# The FFHQ checkpoints' camera: radius and look-at pivot from their rendering_kwargs (avg_camera_radius,
# avg_camera_pivot), and the field of view of their normalised intrinsics (focal length 4.2647).
AVG_CAMERA_RADIUS = 2.7
AVG_CAMERA_PIVOT = (0.0, 0.0, 0.2)
FOV_DEGREES = 18.837


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.norm(v, dim=-1, keepdim=True)


def create_cam2world_matrix(forward_vector: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """cam2world of OpenCV-convention cameras (x right, y down, z forward) at `origin` looking along `forward`, y-up
    world.
    """
    forward_vector = _unit(forward_vector)
    up_vector = torch.tensor([0, 1, 0], dtype=torch.float, device=origin.device).expand_as(forward_vector)
    right_vector = -_unit(torch.cross(up_vector, forward_vector, dim=-1))
    up_vector = _unit(torch.cross(forward_vector, right_vector, dim=-1))
    n = forward_vector.shape[0]
    rotation = torch.eye(4, device=origin.device).unsqueeze(0).repeat(n, 1, 1)
    rotation[:, :3, :3] = torch.stack((right_vector, up_vector, forward_vector), dim=-1)
    translation = torch.eye(4, device=origin.device).unsqueeze(0).repeat(n, 1, 1)
    translation[:, :3, 3] = origin
    return translation @ rotation


def lookat_pose(horizontal: torch.Tensor, vertical: torch.Tensor, lookat_position: torch.Tensor,
                radius: float = 1.0) -> torch.Tensor:
    """Look-at pose from the original's angles: horizontal = azimuth around +y (pi/2 = frontal), vertical = polar angle
    from +y (pi/2 = level). As in the original sampler, the camera sits on a sphere around the world origin and looks
    at lookat_position; the vertical angle is mapped through arccos(1 - 2 v / pi).
    """
    h = horizontal.reshape(-1, 1).float()
    v = torch.clamp(vertical.reshape(-1, 1).float(), 1e-5, math.pi - 1e-5)
    phi = torch.arccos(1 - 2 * (v / math.pi))
    origins = torch.zeros((h.shape[0], 3), device=h.device)
    origins[:, 0:1] = radius * torch.sin(phi) * torch.cos(math.pi - h)
    origins[:, 2:3] = radius * torch.sin(phi) * torch.sin(math.pi - h)
    origins[:, 1:2] = radius * torch.cos(phi)
    forward = _unit(lookat_position.to(origins) - origins)
    return create_cam2world_matrix(forward, origins)


def fov_to_intrinsics(fov_degrees: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """3x3 intrinsics normalised by image size for a field of view in degrees (principal point at the centre). The
    original's rounded constants (3.14159, 1.414) are kept so released cameras are reproduced exactly.
    """
    focal_length = float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))
    return torch.tensor([[focal_length, 0, 0.5], [0, focal_length, 0.5], [0, 0, 1]], device=device)


def _as_batch(x, device) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32, device=device)
    return t.reshape(-1)


def camera_params(yaw, pitch, radius: float = AVG_CAMERA_RADIUS, fov_deg: float = FOV_DEGREES,
                  pivot: Sequence[float] = AVG_CAMERA_PIVOT, device: torch.device | str | None = None) -> torch.Tensor:
    """Camera vectors [N, 25] for yaw/pitch offsets (radians) from the frontal view, as the original scripts build them.
    """
    if device is None:
        device = yaw.device if isinstance(yaw, torch.Tensor) else "cpu"
    yaw_t, pitch_t = _as_batch(yaw, device), _as_batch(pitch, device)
    if yaw_t.numel() != pitch_t.numel():
        if yaw_t.numel() == 1:
            yaw_t = yaw_t.expand_as(pitch_t)
        elif pitch_t.numel() == 1:
            pitch_t = pitch_t.expand_as(yaw_t)
        else:
            raise ValueError(f"yaw and pitch must have the same length (or one of them 1), got "
                             f"{yaw_t.numel()} and {pitch_t.numel()}")
    pivot_t = torch.as_tensor(pivot, dtype=torch.float32, device=device)
    if pivot_t.shape != (3,):
        raise ValueError(f"pivot must be 3 numbers, got {list(pivot_t.shape)}")
    cam2world = lookat_pose(math.pi / 2 + yaw_t, math.pi / 2 + pitch_t, pivot_t, radius=radius)
    intrinsics = fov_to_intrinsics(fov_deg, device=device).reshape(1, 9).expand(cam2world.shape[0], 9)
    return torch.cat([cam2world.reshape(-1, 16), intrinsics], dim=1)
