# Tests for guide_core.faces: the EG3D crop geometry on exact points, alignment of the real photos in ../shared/data
# (already-aligned, FFHQ-style, rotated / mirrored / padded / EXIF-rotated copies) and every bad-input path.
from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from guide_core import faces
from guide_core.faces import CANONICAL_LANDMARKS, MEAN_FACE_3D, OUTPUT_SIZE, FaceError, align_face

WIDTH = float(OUTPUT_SIZE)


# Source→crop mapping of points with an AlignedFace's 2×3 transform.
def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ transform[:, :2].T + transform[:, 2]


# Image-plane landmarks of the mean face turned by EG3D-convention yaw/pitch, tilted by roll, scaled and shifted.
def posed_mean_face(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, scale: float = 300.0,
                    shift=(700.0, 500.0)) -> np.ndarray:
    x, y, z = MEAN_FACE_3D.T
    x, z = x * math.cos(yaw) - z * math.sin(yaw), x * math.sin(yaw) + z * math.cos(yaw)  # nose to image left
    y, z = y * math.cos(pitch) + z * math.sin(pitch), -y * math.sin(pitch) + z * math.cos(pitch)  # nose up
    flat = np.stack([x, -y], axis=1) * scale
    c, s = math.cos(roll), math.sin(roll)
    return flat @ np.array([[c, -s], [s, c]]).T + np.asarray(shift)


# Largest landmark displacement between two 5×2 sets, as a fraction of the crop width.
def max_move(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b), axis=1).max() / WIDTH)


# ---------------------------------------------------------------- geometry on exact points (no photos, no detector)

def test_canonical_landmarks_are_a_fixed_point():
    transform, yaw, pitch, roll = faces.eg3d_crop_transform(CANONICAL_LANDMARKS)
    err = np.abs(transform - np.array([[1, 0, 0], [0, 1, 0]])).max()
    assert err < 1e-9, f"the canonical crop must map to itself, max |T - I| = {err:.2e}"
    assert abs(yaw) < 1e-9 and abs(pitch) < 1e-9 and abs(roll) < 1e-9


def test_canonical_landmarks_follow_eg3d_constants():
    # 512/700 of a 1024 canvas on which the mean face measures 300 px per unit, centred on the 3D origin.
    expected_eye_distance = (MEAN_FACE_3D[1, 0] - MEAN_FACE_3D[0, 0]) * 512 / 700 * 300
    got = CANONICAL_LANDMARKS[1, 0] - CANONICAL_LANDMARKS[0, 0]
    assert abs(got - expected_eye_distance) < 1e-9 and abs(got - 136.33) < 0.01, got
    assert abs(CANONICAL_LANDMARKS[:, 0].mean() - 255.5) < 0.5  # the face is horizontally centred


@pytest.mark.parametrize("yaw_deg,pitch_deg,roll_deg", [(20, 0, 0), (-25, 0, 0), (0, 15, 0), (0, -10, 0),
                                                        (20, 0, 30), (0, 12, -30)])
def test_pose_and_roll_recovered_from_exact_points(yaw_deg, pitch_deg, roll_deg):
    points = posed_mean_face(math.radians(yaw_deg), math.radians(pitch_deg), math.radians(roll_deg))
    transform, yaw, pitch, roll = faces.eg3d_crop_transform(points)
    assert yaw is not None and pitch is not None
    errors = np.degrees(np.abs([yaw - math.radians(yaw_deg), pitch - math.radians(pitch_deg)]))
    assert errors.max() < 1.0, f"yaw/pitch error {errors} deg"  # FFHQ roll of a turned face leaks ~0.75° into pitch
    assert abs(math.degrees(roll) - roll_deg) < 2.0, f"roll {math.degrees(roll):.2f} vs {roll_deg}"
    # The crop is upright: eyes level (FFHQ's roll measure tilts a turned face's eye line by ~1.4° at 20° yaw).
    out = apply(transform, points)
    assert abs(out[0, 1] - out[1, 1]) < 0.5 + 0.2 * abs(yaw_deg), out


def test_yaw_moves_the_crop_centre_toward_the_head():
    # EG3D centres the projected 3D origin (behind the face), so a face turned to the image left sits right of centre.
    _, yaw, _, _ = faces.eg3d_crop_transform(posed_mean_face(math.radians(20)))
    transform, _, _, _ = faces.eg3d_crop_transform(posed_mean_face(math.radians(20)))
    out = apply(transform, posed_mean_face(math.radians(20)))
    assert yaw > 0 and out[:, 0].mean() < CANONICAL_LANDMARKS[:, 0].mean() - 5, out[:, 0].mean()


def test_degenerate_and_malformed_landmarks_are_rejected():
    with pytest.raises(FaceError, match="five"):
        faces.eg3d_crop_transform(np.zeros((4, 2)))
    with pytest.raises(FaceError, match="degenerate"):
        faces.eg3d_crop_transform(np.zeros((5, 2)))
    with pytest.raises(FaceError, match="five finite"):
        faces.eg3d_crop_transform(np.full((5, 2), np.nan))


@pytest.mark.parametrize("angle,zoom", [(0.0, 1.0), (0.3, 0.7), (-0.5, 2.3), (0.2, 0.23)])
def test_warp_puts_a_point_where_the_transform_says(angle, zoom):
    # A bright square centred on pixel (700, 600) must come out centred on transform((700, 600)), to a fraction of a
    # pixel, whether the crop enlarges, shrinks (block-average path) or turns the photo.
    height, width, centre, half = 1100, 1400, np.array([700.0, 600.0]), max(2, int(3 / zoom))
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[600 - half:600 + half + 1, 700 - half:700 + half + 1] = 255
    linear = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    transform = np.hstack([linear, (np.array([230.0, 270.0]) - linear @ centre)[:, None]])
    out = np.asarray(faces.warp_to_crop(Image.fromarray(pixels), transform), dtype=np.float64)[..., 0]
    rows, cols = np.mgrid[0:512, 0:512]
    got = np.array([(out * cols).sum(), (out * rows).sum()]) / out.sum()
    err = np.abs(got - [230.0, 270.0]).max()
    assert err < 0.1, f"warped point off by {err:.3f} px"


def test_warp_repeats_edge_pixels_outside_the_photo():
    image = Image.fromarray(np.tile(np.array([10, 200], dtype=np.uint8).repeat(50)[None, :, None], (100, 1, 3)))
    shift = np.array([[1.0, 0.0, 206.0], [0.0, 1.0, 206.0]])  # the 100² photo lands in the middle of the crop
    crop = np.asarray(faces.warp_to_crop(image, shift))
    assert crop.shape == (512, 512, 3)
    assert np.abs(crop[:, :150].astype(int) - 10).max() <= 1 and np.abs(crop[:, 400:].astype(int) - 200).max() <= 1


# ------------------------------------------------------------------------------------------- input decoding

def test_modes_become_rgb():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert faces.load_image(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent → white
    half = Image.new("LA", (8, 8), (0, 128))
    assert abs(faces.load_image(half).getpixel((0, 0))[0] - 127) <= 1  # 50 % black over white
    palette = Image.new("P", (8, 8), 3)
    palette.info["transparency"] = 3
    assert faces.load_image(palette).getpixel((0, 0)) == (255, 255, 255)
    assert faces.load_image(Image.new("L", (8, 8), 77)).getpixel((0, 0)) == (77, 77, 77)
    cmyk = faces.load_image(Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    assert cmyk.mode == "RGB" and cmyk.getpixel((0, 0)) == (255, 0, 0)
    sixteen = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))  # I;16
    assert faces.load_image(sixteen).getpixel((0, 0)) == (255, 255, 255)
    wide = Image.fromarray(np.full((8, 8), 32896, dtype=np.int32))  # I, a 16-bit value stored in 32 bits
    assert faces.load_image(wide).getpixel((0, 0)) == (128, 128, 128)
    assert faces.load_image(np.full((4, 4, 3), 0.5, dtype=np.float32)).getpixel((0, 0)) == (128, 128, 128)
    assert faces.load_image(np.full((4, 4), 257 * 200, dtype=np.uint16)).getpixel((0, 0)) == (200, 200, 200)


def test_sixteen_bit_png_round_trip(tmp_path: Path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(path)
    rgb = faces.load_image(path)
    assert rgb.mode == "RGB" and rgb.getpixel((63, 63))[0] == round(4095 * 16 / 257)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height but carries almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(10_000, 9_000), (60_000, 60_000)])
def test_huge_image_refused_before_decoding(size):
    with pytest.raises(FaceError, match="MP"):
        align_face(png_header(*size))


def test_non_image_and_bad_arguments():
    with pytest.raises(FaceError, match="not an image"):
        align_face(b"name,age\nada,36\n")
    with pytest.raises(FaceError, match="no such image file"):
        align_face("/nonexistent/photo.jpg")
    with pytest.raises(FaceError, match="unsupported image input"):
        align_face(12345)
    with pytest.raises(FaceError, match="H×W"):
        align_face(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(FaceError, match="empty"):
        align_face(np.zeros((0, 5, 3), dtype=np.uint8))


def test_text_file_path(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo")
    with pytest.raises(FaceError, match="not an image"):
        align_face(path)


def test_tiny_image_is_a_clear_error():
    with pytest.raises(FaceError, match="only 90×60 pixels"):
        align_face(Image.new("RGB", (90, 60), (128, 128, 128)))


def test_blank_image_has_no_face():
    with pytest.raises(FaceError, match="no face"):
        align_face(Image.new("RGB", (640, 480), (128, 128, 128)))


# ------------------------------------------------------------------------------------------------ real photos

@pytest.fixture(scope="module")
def aligned_paths(data_dir: Path) -> list[Path]:
    paths = sorted((data_dir / "celebahq_aligned").glob("*.jpg"))
    assert len(paths) == 5, paths
    return paths


@pytest.fixture(scope="module")
def wild_paths(data_dir: Path) -> list[Path]:
    paths = sorted((data_dir / "celebahq_1024").glob("*.jpg"))
    assert len(paths) == 10, paths
    return paths


@pytest.fixture(scope="module")
def aligned_results(aligned_paths) -> list[faces.AlignedFace]:
    return [align_face(p) for p in aligned_paths]


@pytest.fixture(scope="module")
def wild_results(wild_paths) -> list[faces.AlignedFace]:
    return [align_face(p) for p in wild_paths]


def test_already_aligned_photos_realign_to_nearly_the_same_crop(aligned_results):
    moves, means = [], []
    for result in aligned_results:
        assert result.n_faces == 1 and result.image.size == (512, 512) and result.image256.size == (256, 256)
        source_points = apply(np.linalg.inv(np.vstack([result.transform, [0, 0, 1]]))[:2], result.landmarks)
        moves.append(max_move(result.landmarks, source_points))
        means.append(float(np.linalg.norm(result.landmarks - source_points, axis=1).mean() / WIDTH))
        zoom = math.sqrt(abs(np.linalg.det(result.transform[:, :2])))
        assert abs(zoom - 1) < 0.04, f"re-alignment rescaled an aligned photo by {zoom:.3f}"
    print(f"\nre-alignment landmark move, max per photo (% of width): {np.round(np.array(moves) * 100, 2)}; "
          f"mean per photo: {np.round(np.array(means) * 100, 2)}")
    assert max(moves) < 0.015, f"a landmark moved {max(moves) * 100:.2f}% ≥ 1.5% of the width"


def test_wild_photos_put_the_eyes_where_the_aligned_set_has_them(aligned_results, wild_results):
    eyes = np.stack([r.landmarks[:2] for r in aligned_results])  # 5×2×2
    low, high = eyes.min(axis=0) - 0.02 * WIDTH, eyes.max(axis=0) + 0.02 * WIDTH
    eye_distance = np.mean([r.landmarks[1, 0] - r.landmarks[0, 0] for r in aligned_results])
    worst = 0.0
    for result in wild_results:
        assert result.n_faces >= 1 and result.image.size == (512, 512)
        e = result.landmarks[:2]
        outside = np.maximum(np.maximum(low - e, e - high), 0).max()
        worst = max(worst, float(np.maximum(np.maximum(eyes.min(0) - e, e - eyes.max(0)), 0).max()) / WIDTH)
        assert outside == 0, f"eyes at {e.round(1).tolist()} outside the aligned set's range ± 2%: {low}..{high}"
        assert abs((e[1, 0] - e[0, 0]) - eye_distance) < 0.02 * WIDTH  # same face scale
        assert result.yaw is not None and abs(result.yaw) < math.radians(25)  # FFHQ-style portraits are near-frontal
    print(f"\nwild photos: eyes at most {worst * 100:.2f}% of the width outside the aligned set's range")


@pytest.mark.parametrize("angle", [30, -30])
def test_rotated_copy_aligns_to_the_same_crop(wild_paths, wild_results, angle):
    index = 1
    original = faces.load_image(wild_paths[index])
    rotated = original.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    result = align_face(rotated)
    # Where the original photo's points land: rotate them the way PIL did (about the centre, counter-clockwise).
    reference = wild_results[index]
    points = apply(np.linalg.inv(np.vstack([reference.transform, [0, 0, 1]]))[:2], reference.landmarks)
    theta = math.radians(angle)
    centre_in, centre_out = np.array(original.size) / 2, np.array(rotated.size) / 2
    d = points + 0.5 - centre_in
    moved = np.stack([d[:, 0] * math.cos(theta) + d[:, 1] * math.sin(theta),
                      -d[:, 0] * math.sin(theta) + d[:, 1] * math.cos(theta)], axis=1) + centre_out - 0.5
    move = max_move(apply(result.transform, moved), reference.landmarks)
    roll = math.degrees(result.roll)
    print(f"\nrotated {angle:+d}°: crop differs by {move * 100:.2f}% of the width, roll {roll:.1f}°")
    assert abs(roll + angle) < 3.0  # PIL turns counter-clockwise; our roll is clockwise-positive
    assert move < 0.015, f"rotated copy moves the crop by {move * 100:.2f}%"


# A copy of a photo aligns to the reference crop: its landmarks (`points`, in the copy) land within 1.5% of the width of
# the reference's, and the face pixels agree on average.
def assert_same_crop(result, reference, points, name: str) -> None:
    move = max_move(apply(result.transform, points), reference.landmarks)
    assert move < 0.015, f"{name} moves the crop by {move * 100:.2f}%"
    diff = np.abs(np.asarray(result.image, dtype=int) - np.asarray(reference.image, dtype=int))[128:448, 128:448]
    assert diff.mean() < 6, f"{name}'s face pixels differ by {diff.mean():.1f}/255 on average"


def test_mirrored_copy_aligns_to_the_mirrored_crop(wild_paths, wild_results):
    for index in (2, 7):
        original = faces.load_image(wild_paths[index])
        result = align_face(original.transpose(Image.FLIP_LEFT_RIGHT))
        reference = wild_results[index]
        points = apply(np.linalg.inv(np.vstack([reference.transform, [0, 0, 1]]))[:2], reference.landmarks)
        mirrored = np.stack([original.width - 1 - points[:, 0], points[:, 1]], axis=1)
        expected = np.stack([OUTPUT_SIZE - 1 - reference.landmarks[:, 0], reference.landmarks[:, 1]], axis=1)
        move = max_move(apply(result.transform, mirrored), expected)
        assert move < 0.015, f"mirrored copy of photo {index} moves the crop by {move * 100:.2f}%"
        assert result.yaw is not None and abs(result.yaw + reference.yaw) < math.radians(2), (result.yaw, reference.yaw)
        assert abs(result.pitch - reference.pitch) < math.radians(2)


def test_padded_copy_aligns_to_the_same_crop(wild_paths, wild_results):
    index = 4
    original = faces.load_image(wild_paths[index])
    canvas = Image.new("RGB", (original.width + 700, original.height + 300), (40, 90, 160))
    canvas.paste(original, (500, 100))
    result = align_face(canvas)
    reference = wild_results[index]
    points = apply(np.linalg.inv(np.vstack([reference.transform, [0, 0, 1]]))[:2], reference.landmarks)
    assert_same_crop(result, reference, points + [500, 100], "padded copy")


def test_large_photo_is_detected_on_a_reduced_copy(wild_paths, wild_results):
    # 3200×2600: above DETECT_LONG_SIDE, and the face is larger than the crop, so the warp block-averages first.
    index = 8
    original = faces.load_image(wild_paths[index])
    canvas = Image.new("RGB", (3200, 2600), (90, 90, 90))
    canvas.paste(original.resize((2048, 2048), Image.BICUBIC), (900, 300))
    result = align_face(canvas)
    reference = wild_results[index]
    points = apply(np.linalg.inv(np.vstack([reference.transform, [0, 0, 1]]))[:2], reference.landmarks)
    assert_same_crop(result, reference, (points + 0.5) * 2 - 0.5 + [900, 300], "2× enlarged copy")


def test_exif_orientation_is_applied(wild_paths, wild_results):
    index = 0
    original = faces.load_image(wild_paths[index])
    stored = original.transpose(Image.ROTATE_90)  # what a phone writes: pixels sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... plus "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    result = align_face(buffer.getvalue())
    assert result.source_size == original.size
    reference = wild_results[index]
    points = apply(np.linalg.inv(np.vstack([reference.transform, [0, 0, 1]]))[:2], reference.landmarks)
    move = max_move(apply(result.transform, points), reference.landmarks)
    assert move < 0.015, f"EXIF-rotated copy moves the crop by {move * 100:.2f}%"


def test_input_kinds_agree(aligned_paths, aligned_results):
    path = aligned_paths[0]
    data = path.read_bytes()
    # Paths and PIL images are exercised by every other test; here the upload-shaped inputs.
    for source in (io.BytesIO(data), np.asarray(Image.open(path).convert("RGB"))):
        result = align_face(source)
        assert max_move(result.landmarks, aligned_results[0].landmarks) < 1e-3, type(source)


def test_16_bit_grayscale_and_cmyk_photos_align(aligned_paths, aligned_results):
    photo = Image.open(aligned_paths[1]).convert("RGB")
    gray16 = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    for variant in (gray16, photo.convert("CMYK")):  # RGBA/LA/P conversions: test_modes_become_rgb
        result = align_face(variant)
        assert max_move(result.landmarks, aligned_results[1].landmarks) < 0.01, variant.mode


def test_truncated_jpeg_is_a_clear_error(aligned_paths, tmp_path: Path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    data = aligned_paths[2].read_bytes()[: aligned_paths[2].stat().st_size * 6 // 10]
    with pytest.raises(FaceError, match="truncated|damaged"):
        align_face(data)
    (tmp_path / "cut.jpg").write_bytes(data)
    with pytest.raises(FaceError, match="truncated|damaged"):
        align_face(Image.open(tmp_path / "cut.jpg"))  # a lazily opened PIL image is checked the same way
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # another library asking PIL to pad cut-off files silently
    try:
        with pytest.raises(FaceError, match="LOAD_TRUNCATED_IMAGES"):
            align_face(data)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_several_faces_take_the_largest(aligned_paths, wild_paths):
    big = Image.open(aligned_paths[0]).convert("RGB")
    small = Image.open(wild_paths[3]).convert("RGB").resize((340, 340), Image.LANCZOS)
    canvas = Image.new("RGB", (1000, 620), (255, 255, 255))
    canvas.paste(small, (20, 140))
    canvas.paste(big, (440, 40))
    result = align_face(canvas)
    assert result.n_faces == 2, result.n_faces
    centre = ((result.box[0] + result.box[2]) / 2, (result.box[1] + result.box[3]) / 2)
    assert 440 < centre[0] < 952 and 40 < centre[1] < 552, f"aligned the smaller face (box {result.box})"


def test_tiny_face_is_a_clear_error(aligned_paths):
    tiny = Image.open(aligned_paths[0]).convert("RGB").resize((128, 128), Image.LANCZOS)
    with pytest.raises(FaceError, match="too small"):
        align_face(tiny)
