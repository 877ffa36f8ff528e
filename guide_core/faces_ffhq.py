"""The FFHQ face crop (Karras et al., CVPR 2019, the ffhq-dataset's alignment), from MTCNN's five points.

StyleGAN2 FFHQ and its encoders (pSp, e4e) expect this crop. FFHQ defines it by the eye centres and the mouth corners
(dlib's 68 landmarks in the original; MTCNN gives the same five points): with eye_avg and mouth_avg the midpoints,
x is the eye-to-eye vector plus the eye-to-mouth vector turned by 90°, normalised and scaled to
max(2 |eye_to_eye|, 1.8 |eye_to_mouth|); y is x turned by 90°; the crop is the square of side 2 |x| centred at
eye_avg + 0.1 eye_to_mouth. Detection, landmark refinement and resampling are guide_core.faces'.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from guide_core.faces import MAX_PIXELS, MIN_FACE_PX, FaceError, ImageInput, main_face, warp_to_crop

FFHQ_ENCODER_SIZE = 256  # pSp / e4e input side


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FFHQ's crop square for five landmarks: its centre c and half-axes x (to the right) and y (down)."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise FaceError(f"five finite (x, y) landmarks are needed, got an array of shape {points.shape}")
    eye_left, eye_right, _, mouth_left, mouth_right = points
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    norm = math.hypot(*x)
    if norm < 1e-6:
        raise FaceError("the detected landmarks are degenerate; try a clearer, more frontal photo")
    x = x / norm * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    return eye_avg + eye_to_mouth * 0.1, x, y


def ffhq_crop_transform(landmarks: np.ndarray, size: int = FFHQ_ENCODER_SIZE) -> np.ndarray:
    """Source pixel index -> output pixel index (2x3) of FFHQ's crop at ``size``²: the square's corners c - x - y,
    c + x - y, c - x + y land on the output's corners (as FFHQ's quad transform places them)."""
    c, x, y = ffhq_quad(landmarks)
    linear = size / 2 * np.linalg.inv(np.stack([x, y], axis=1))
    corner = c - x - y
    # FFHQ's quad is in continuous coordinates (pixel centres at +1/2) on both sides.
    offset = -linear @ (corner - 0.5) - 0.5
    return np.concatenate([linear, offset[:, None]], axis=1)


@dataclass(frozen=True, eq=False)
class FFHQFace:
    """An FFHQ-aligned crop, the five landmarks inside it and the source -> crop transform."""

    image: Image.Image
    landmarks: np.ndarray
    transform: np.ndarray
    n_faces: int
    box: tuple[float, float, float, float]


def align_face_ffhq(image: ImageInput, size: int = FFHQ_ENCODER_SIZE, *, min_face_px: float = MIN_FACE_PX,
                    max_pixels: int = MAX_PIXELS) -> FFHQFace:
    """Detect the largest face in a photo and return it in FFHQ's crop at ``size``² (pSp / e4e take 256²)."""
    rgb, detections, landmarks = main_face(image, min_face_px, max_pixels)
    transform = ffhq_crop_transform(landmarks, size)
    return FFHQFace(image=warp_to_crop(rgb, transform, size), landmarks=landmarks @ transform[:, :2].T + transform[:, 2],
                    transform=transform, n_faces=len(detections), box=detections[0].box)
