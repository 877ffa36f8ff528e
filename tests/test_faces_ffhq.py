"""The FFHQ crop (StyleGAN2 FFHQ, pSp, e4e) from MTCNN's five points: geometry on exact points, and on real photos
that aligning an aligned crop again moves it by almost nothing."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from guide_core.faces import FaceError
from guide_core.faces_ffhq import align_face_ffhq, ffhq_crop_transform, ffhq_quad

# A level face: eyes 100 px apart at y = 200, mouth corners 120 px below the eye midpoint.
LEVEL = np.array([[250.0, 200.0], [350.0, 200.0], [300.0, 260.0], [265.0, 320.0], [335.0, 320.0]])


def rotate(points: np.ndarray, degrees: float, centre=(300.0, 260.0)) -> np.ndarray:
    angle = math.radians(degrees)
    matrix = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points - centre) @ matrix.T + centre


def test_the_quad_of_a_level_face_follows_ffhq_s_rule():
    c, x, y = ffhq_quad(LEVEL)
    # eye_to_eye (100, 0), eye_to_mouth (0, 120): x = (100, 0) + (120, 0) normalised, times max(200, 216)
    assert np.allclose(x, [216.0, 0.0]) and np.allclose(y, [0.0, 216.0])
    assert np.allclose(c, [300.0, 200.0 + 12.0])


def test_the_transform_puts_the_square_on_the_output_and_undoes_roll():
    for degrees in (0.0, 15.0, -30.0):
        points = rotate(LEVEL, degrees)
        transform = ffhq_crop_transform(points, 256)
        inside = points @ transform[:, :2].T + transform[:, 2]
        level = LEVEL @ ffhq_crop_transform(LEVEL, 256)[:, :2].T + ffhq_crop_transform(LEVEL, 256)[:, 2]
        # FFHQ reads landmarks as continuous coordinates, so rotating pixel indices shifts the crop by under a pixel
        assert np.abs(inside - level).max() < 0.25, degrees
        c, x, y = ffhq_quad(points)
        corners = np.stack([c - x - y, c + x - y, c - x + y]) - 0.5  # continuous corners as pixel indices
        mapped = corners @ transform[:, :2].T + transform[:, 2]
        assert np.allclose(mapped, [[-0.5, -0.5], [255.5, -0.5], [-0.5, 255.5]], atol=1e-6), degrees
    # the eyes sit level and centred left-right in the crop
    eyes = inside[:2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 and abs(eyes.mean(axis=0)[0] - 127.5) < 0.25


def test_degenerate_landmarks_are_refused():
    with pytest.raises(FaceError, match="five finite"):
        ffhq_quad(np.zeros((4, 2)))
    with pytest.raises(FaceError, match="degenerate"):
        ffhq_quad(np.tile([[10.0, 10.0]], (5, 1)))


def test_aligning_an_aligned_crop_again_moves_it_by_almost_nothing(data_dir):
    corners = np.array([[0, 0], [511, 0], [0, 511], [511, 511], [255.5, 255.5]], dtype=float)
    for path in sorted((data_dir / "celebahq_1024").glob("*.jpg"))[:3]:
        first = align_face_ffhq(path, 512)
        assert first.image.size == (512, 512) and first.n_faces >= 1
        again = align_face_ffhq(first.image, 512, min_face_px=32)
        moved = corners @ again.transform[:, :2].T + again.transform[:, 2] - corners
        scale = math.sqrt(abs(np.linalg.det(again.transform[:, :2])))
        assert np.abs(moved).max() < 4.0, f"{path.name}: re-alignment moved a corner by {np.abs(moved).max():.2f} px"
        assert abs(scale - 1) < 0.01, f"{path.name}: re-alignment rescaled by {scale:.4f}"


def test_a_photo_without_a_face_is_refused_with_a_reason():
    with pytest.raises(FaceError, match="no face"):
        align_face_ffhq(Image.new("RGB", (400, 400), (120, 130, 140)))
