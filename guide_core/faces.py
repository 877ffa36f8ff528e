"""Faces in the wild: detect a face and its five landmarks (MTCNN), then warp it to the 512² crop EG3D and GOAE were
trained on. The crop convention is EG3D's FFHQ preprocessing (Chan et al., CVPR 2022, dataset_preprocessing/ffhq),
which GOAE and GUIDE reuse without extra offset: a weak-perspective fit of the five landmarks to a 3D mean face
gives a scale and a centre (the projected origin of the 3D face); the photo is scaled so the face measures
`rescale_factor` px per unit on a 1024² canvas centred there, whose central 700² is resized to 512².
We additionally remove in-plane roll (as FFHQ's own alignment did for EG3D's training photos), because the
cameras we condition on have no roll, and average the landmarks over jittered copies so the crop is repeatable.
"""
from __future__ import annotations

import functools
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, np.ndarray]

OUTPUT_SIZE = 512  # EG3D / GOAE input resolution
ENCODER_SIZE = 256  # the GOAE encoder's input resolution
MAX_PIXELS = 80_000_000  # refuse larger photos before decoding them (an 80 MP RGB decode is ~240 MB)
DETECT_LONG_SIDE = 2048  # detection runs on a copy no larger than this; landmarks are scaled back
MIN_FACE_PX = 64.0  # smallest usable face: eye-midpoint to mouth-midpoint distance in source pixels
MIN_CONFIDENCE = 0.9  # EG3D's batch_mtcnn.py keeps detections above this probability
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)  # the three stage thresholds MTCNN ships with
MTCNN_FACTOR = 0.709  # MTCNN's image-pyramid step
_DETECT_BOX = 24.0  # detection-copy size of the smallest face box searched for
_ONET_SIZE = 48  # MTCNN's last stage looks at 48² patches
_TTA_ZOOMS = (0.9, 1.0, 1.1)  # landmark averaging: box scales ...
_TTA_SHIFTS = (-0.05, 0.0, 0.05)  # ... and box shifts (fractions of its side), each also mirrored
_MIRROR = [1, 0, 2, 4, 3]  # landmark order after a horizontal flip

# EG3D crop constants (dataset_preprocessing/ffhq/crop_images_in_the_wild.py with Deep3DFaceRecon's align_img).
EG3D_RESCALE_FACTOR = 300.0  # canvas pixels per unit of the 3D mean face after the weak-perspective fit
EG3D_CANVAS = 1024.0  # the scaled photo is cropped to this square around the projected face origin ...
EG3D_CENTER_CROP = 700.0  # ... then its central square of this side is resized to OUTPUT_SIZE
CROP_PX_PER_UNIT = OUTPUT_SIZE / EG3D_CENTER_CROP * EG3D_RESCALE_FACTOR  # output px per mean-face unit (≈219.4)

# Five landmarks of the BFM mean face used by Deep3DFaceRecon (similarity_Lm3D_all.mat, reduced from 68 points:
# eye centres are the means of the two eye corners). Axes: x to the image right, y up, z toward the camera.
# Order matches MTCNN: eye on the image left, eye on the image right, nose tip, mouth corner left, mouth corner right.
MEAN_FACE_3D = np.array([
    [-0.311487, 0.290361, 0.133780],
    [0.309799, 0.289720, 0.131795],
    [0.003253, -0.046179, 0.552442],
    [-0.252169, -0.381339, 0.224057],
    [0.248466, -0.381282, 0.222358],
], dtype=np.float64)

# Where a frontal, upright face's landmarks land in the output crop (pixel-index coordinates, y down).
CANONICAL_LANDMARKS = np.stack([MEAN_FACE_3D[:, 0], -MEAN_FACE_3D[:, 1]], axis=1) * CROP_PX_PER_UNIT \
    + (OUTPUT_SIZE / 2 - 0.5)



class FaceError(Exception):
    """A face that could not be detected or aligned; the message is meant for the person who uploaded the photo."""
    pass


@dataclass(frozen=True, eq=False)
class Detection:
    """One MTCNN detection in source-image pixel coordinates."""
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    landmarks: np.ndarray  # 5×2: eye (image left), eye (image right), nose, mouth left, mouth right
    confidence: float

    @property
    def face_px(self) -> float:
        """Eye-midpoint to mouth-midpoint distance: the face size that limits crop quality."""
        eyes = self.landmarks[:2].mean(axis=0)
        mouth = self.landmarks[3:].mean(axis=0)
        return float(np.linalg.norm(mouth - eyes))


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """The aligned crop and what was learnt on the way."""
    image: Image.Image  # OUTPUT_SIZE² RGB, the EG3D/GOAE crop
    image256: Image.Image  # ENCODER_SIZE² RGB, the same crop for the encoder
    landmarks: np.ndarray  # 5×2 landmarks in `image` (pixel-index coordinates)
    n_faces: int  # faces with confidence ≥ MIN_CONFIDENCE and a box ≥ min_face_px; the largest was aligned
    box: tuple[float, float, float, float]  # the aligned face's box in the (EXIF-upright) source photo
    confidence: float
    # Rough head pose from the same five-point fit, radians in EG3D's camera convention (LookAtPoseSampler at
    # π/2 + yaw, π/2 + pitch): yaw > 0 when the nose points to the image's left (camera moved to the subject's
    # left), pitch > 0 when the nose points up (camera below the face). None when the fit is implausible. MTCNN's
    # nose point sits lower than the mean face's nose tip, so pitch reads ~10° low on ordinary portraits.
    yaw: float | None
    pitch: float | None
    roll: float  # radians of in-plane rotation that was removed (> 0: the face was turned clockwise on screen)
    transform: np.ndarray  # 2×3 affine, source pixel → output pixel
    source_size: tuple[int, int]  # (width, height) of the upright source photo


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Fail with the user-facing message if `source` is not a decodable image of acceptable size; return upright RGB."""
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    image = source if isinstance(source, Image.Image) else _open(source)
    _check_pixels(image.size, max_pixels)
    if getattr(image, "tile", None) and ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone enabled PIL's global "pad truncated files with grey": a cut-off upload would decode silently.
        raise FaceError("cannot check the photo for truncation: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is enabled")
    try:
        image.load()  # decodes (and detects truncation) for opened files; a no-op for images already in memory
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise FaceError(f"the photo is damaged or truncated and cannot be decoded ({err})") from None
    try:
        image = ImageOps.exif_transpose(image)  # phones store portraits sideways plus an orientation tag
    except Exception:  # a malformed EXIF block should not make an otherwise good photo unusable
        pass
    return _to_rgb(image)


def _open(source: ImageInput) -> Image.Image:
    """Open lazily (header only) so the pixel limit is checked before any decoding."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: Any = io.BytesIO(bytes(source))
        name = "the uploaded bytes"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FaceError(f"no such image file: {path}")
        stream, name = path, str(path)
    elif hasattr(source, "read"):
        stream, name = source, getattr(source, "name", "the uploaded file")
    else:
        raise FaceError(f"unsupported image input of type {type(source).__name__}; give a path, bytes, a file, "
                        "a PIL image or a numpy array")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own, lower limit
            return Image.open(stream)
    except Image.DecompressionBombError as err:
        raise FaceError(f"the photo is too large to process ({err}); the limit is {MAX_PIXELS / 1e6:.0f} MP") from None
    except UnidentifiedImageError:
        raise FaceError(f"{name} is not an image file that can be read (JPEG, PNG, WebP, ... expected)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise FaceError(f"{name} could not be opened as an image ({err})") from None


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse empty or oversized images using only their header size."""
    width, height = size
    if width < 1 or height < 1:
        raise FaceError(f"the image is empty ({width}×{height} pixels)")
    if width * height > max_pixels:
        raise FaceError(f"the photo is {width}×{height} = {width * height / 1e6:.0f} MP, more than the "
                        f"{max_pixels / 1e6:.0f} MP limit; please downscale it first")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB: transparency over white, 16/32-bit and float rescaled, CMYK/palette converted.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _array_to_rgb(np.asarray(image), max_pixels=None)
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _array_to_rgb(array: np.ndarray, max_pixels: int | None) -> Image.Image:
    """A numpy image (H×W, H×W×1/3/4; uint8, uint16, other ints, bool or float) to 8-bit RGB."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise FaceError(f"an image array must be H×W, H×W×3 or H×W×4, got shape {tuple(array.shape)}")
    if max_pixels is not None:
        _check_pixels((array.shape[1], array.shape[0]), max_pixels)
    if array.dtype == np.uint8:
        data = array
    elif array.dtype == np.bool_:
        data = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise FaceError("the image contains NaN or infinite values")
        top = values.max(initial=0.0)
        if np.issubdtype(array.dtype, np.floating) and top <= 1.0:
            scale = 255.0  # float images in [0, 1]
        elif top <= 255.0:
            scale = 1.0  # 8-bit values stored in a wider type
        elif top <= 65535.0:
            scale = 255.0 / 65535.0  # 16-bit
        else:
            scale = 255.0 / top
        data = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    else:
        raise FaceError(f"unsupported image array dtype {array.dtype}")
    if data.ndim == 2:
        data = np.repeat(data[:, :, None], 3, axis=2)
    image = Image.fromarray(np.ascontiguousarray(data))
    return _to_rgb(image) if image.mode == "RGBA" else image


@functools.lru_cache(maxsize=1)
def _mtcnn() -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, Any]:
    """The three MTCNN stages from facenet-pytorch, weights read from its wheel as plain tensors (weights_only=True)."""
    try:
        # facenet_pytorch/__init__ also imports its InceptionResnetV1 (needs `requests`) and torchvision (for NMS).
        import facenet_pytorch.models.mtcnn as mtcnn_module
        from facenet_pytorch.models.utils.detect_face import detect_face
    except ImportError as err:
        raise FaceError(f"face detection needs the facenet-pytorch package (pip install --no-deps "
                        f"facenet-pytorch==2.6.0): {err}") from None
    data = Path(mtcnn_module.__file__).resolve().parent.parent / "data"
    nets = []
    for name, cls in (("pnet", mtcnn_module.PNet), ("rnet", mtcnn_module.RNet), ("onet", mtcnn_module.ONet)):
        net = cls(pretrained=False)
        net.load_state_dict(torch.load(data / f"{name}.pt", map_location="cpu", weights_only=True))
        nets.append(net.eval())
    return nets[0], nets[1], nets[2], detect_face


def detect_faces(image: Image.Image, min_size: float = 20.0, long_side: int = DETECT_LONG_SIDE,
                 min_confidence: float = MIN_CONFIDENCE) -> list[Detection]:
    """All faces with a box of at least `min_size` source pixels, largest first. MTCNN runs on a copy shrunk so that
    such a
    box measures ~24 px (and no longer than `long_side`): its stage-2/3 resampling dominates the cost, and the landmarks
    are re-measured at full resolution afterwards anyway (refine_landmarks).
    """
    pnet, rnet, onet, detect_face = _mtcnn()
    scale = min(1.0, long_side / max(image.size), _DETECT_BOX / max(min_size, 1.0))
    small = image
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.BILINEAR, reducing_gap=2.0)
    if min(small.size) < 12:  # smaller than MTCNN's first-stage window: nothing can be found
        return []
    pixels = torch.from_numpy(np.asarray(small, dtype=np.uint8).copy())
    try:
        with torch.inference_mode():
            boxes, points = detect_face(pixels, max(12.0, min_size * scale), pnet, rnet, onet,
                                        list(MTCNN_THRESHOLDS), MTCNN_FACTOR, "cpu")
    except RuntimeError as err:  # e.g. an extreme aspect ratio leaves a stage with nothing to stack
        raise FaceError(f"face detection failed on this {image.width}×{image.height} image ({err})") from None
    boxes, points = np.asarray(boxes[0], dtype=np.float64), np.asarray(points[0], dtype=np.float64)
    found = []
    for box, pts in zip(boxes.reshape(-1, 5), points.reshape(-1, 5, 2)):
        if box[4] >= min_confidence:
            found.append(Detection(box=tuple(float(v) for v in box[:4] / scale), landmarks=pts / scale,
                                   confidence=float(box[4])))
    found.sort(key=lambda d: (d.box[2] - d.box[0]) * (d.box[3] - d.box[1]), reverse=True)
    return found


def _rotation(angle: float) -> np.ndarray:
    """2D rotation matrix."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _ffhq_orientation(points: np.ndarray) -> float:
    """In-plane angle of a face as FFHQ's alignment measures it: eye-to-eye plus the eye-to-mouth vector turned by 90°
    (Karras et al., CVPR 2019, ffhq-dataset's recreate_aligned_images); 0 for a level face, > 0 turned clockwise.
    """
    eye_left, eye_right, _, mouth_left, mouth_right = points
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) / 2 - (eye_left + eye_right) / 2
    axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    return math.atan2(axis[1], axis[0])


def eg3d_crop_transform(landmarks: np.ndarray, size: int = OUTPUT_SIZE) -> tuple[np.ndarray, float | None,
                                                                                  float | None, float]:
    """EG3D's crop for five landmarks: source→output affine (2×3), yaw, pitch (None if not estimable) and removed roll.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.isfinite(points).all():
        raise FaceError(f"five finite (x, y) landmarks are needed, got an array of shape {points.shape}")
    # Roll as FFHQ's alignment defines it (EG3D's training photos were de-rolled that way before EG3D's crop).
    roll = _ffhq_orientation(points) - _ffhq_orientation(CANONICAL_LANDMARKS)
    upright = points @ _rotation(-roll).T
    # Weak-perspective fit (Deep3DFaceRecon's POS): upright ≈ A · X + t for the 3D mean face X; t is where the 3D
    # origin projects (the crop centre) and the mean row norm of A is the face scale.
    design = np.concatenate([MEAN_FACE_3D, np.ones((5, 1))], axis=1)
    solution, _, rank, _ = np.linalg.lstsq(design, upright, rcond=None)
    A, t = solution[:3].T, solution[3]
    face_scale = 0.5 * (np.linalg.norm(A[0]) + np.linalg.norm(A[1]))
    if rank < 4 or face_scale <= 1e-6:
        raise FaceError("the detected landmarks are degenerate (all in one line); try a clearer, more frontal photo")
    zoom = CROP_PX_PER_UNIT * size / OUTPUT_SIZE / face_scale
    linear = zoom * _rotation(-roll)
    offset = (size / 2 - 0.5) - zoom * t
    transform = np.concatenate([linear, offset[:, None]], axis=1)
    # Pose from the same fit: the z column of A is how far the nose (the only point well off the eye/mouth plane)
    # moved sideways / vertically, relative to the in-plane axes.
    yaw = math.atan2(-A[0, 2], A[0, 0])
    pitch = math.atan2(-A[1, 2], -A[1, 1])
    plausible = A[0, 0] > 0 and -A[1, 1] > 0 and abs(yaw) < math.radians(70) and abs(pitch) < math.radians(60)
    return transform, (yaw if plausible else None), (pitch if plausible else None), roll


def warp_to_crop(image: Image.Image, transform: np.ndarray, size: int = OUTPUT_SIZE) -> Image.Image:
    """Apply `transform` (source → output pixel indices): bicubic onto a 2× canvas, then Lanczos down to `size`, as EG3D
    resizes bicubically before its Lanczos resample to 512. Outside the photo, edge pixels repeat.
    """
    linear, offset = transform[:, :2], transform[:, 2]
    inverse = np.linalg.inv(linear)
    zoom = math.sqrt(abs(np.linalg.det(linear)))
    # Block-average r×r source pixels first when the face is larger than the crop, so the bicubic step only enlarges.
    reduce = max(1, int(math.floor(1.0 / zoom))) if zoom < 1.0 else 1
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    footprint = (corners - offset) @ inverse.T  # the output square in source pixel indices
    x0 = int(np.clip(math.floor(footprint[:, 0].min()) - 2 * reduce, 0, image.width - 1))
    y0 = int(np.clip(math.floor(footprint[:, 1].min()) - 2 * reduce, 0, image.height - 1))
    x1 = int(np.clip(math.ceil(footprint[:, 0].max()) + 2 * reduce + 1, x0 + 1, image.width))
    y1 = int(np.clip(math.ceil(footprint[:, 1].max()) + 2 * reduce + 1, y0 + 1, image.height))
    region = image.crop((x0, y0, x1, y1))
    if reduce > 1:
        region = region.reduce(reduce)
    # Source index p → region index q = (p - (x0, y0) + ½) / r - ½, then edge-pad the region to cover the footprint.
    q = (footprint - [x0, y0] + 0.5) / reduce - 0.5
    before = np.maximum(0, np.ceil(-q.min(axis=0)).astype(int) + 3)
    after = np.maximum(0, np.ceil(q.max(axis=0) - [region.width - 1, region.height - 1]).astype(int) + 3)
    pixels = np.pad(np.asarray(region), ((before[1], after[1]), (before[0], after[0]), (0, 0)), mode="edge")
    # Canvas index u → output index (u + ½)/2 - ½ → source index → padded region index; PIL wants the inverse map
    # between continuous coordinates (pixel centres at +½).
    supersample = 2
    to_output = np.array([[1 / supersample, 0, 0.5 / supersample - 0.5], [0, 1 / supersample, 0.5 / supersample - 0.5],
                          [0, 0, 1]])
    to_source = np.vstack([np.hstack([inverse, -(inverse @ offset)[:, None]]), [0, 0, 1]])
    to_region = np.array([[1 / reduce, 0, (0.5 - x0) / reduce - 0.5 + before[0]],
                          [0, 1 / reduce, (0.5 - y0) / reduce - 0.5 + before[1]], [0, 0, 1]])
    index_map = to_region @ to_source @ to_output
    centre = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    continuous = centre @ index_map @ np.linalg.inv(centre)
    canvas = Image.fromarray(pixels).transform((supersample * size, supersample * size), Image.AFFINE,
                                               tuple(continuous[:2].ravel()), resample=Image.BICUBIC)
    return canvas.resize((size, size), Image.LANCZOS)


def refine_landmarks(image: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """Average ONet's landmarks over shifted, rescaled and mirrored copies of the face box. A single MTCNN pass puts the
    landmarks a few pixels off depending on which pyramid level won, which moves the crop by 1-2 % of its width.
    """
    onet = _mtcnn()[2]
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0)  # MTCNN squares its boxes before the last stage
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # Work on a region around the face (black outside the photo, as MTCNN pads), block-averaged to ~2× ONet's input.
    reduce = max(1, int(side // (2 * _ONET_SIZE)))
    margin = 0.75 * side
    left, top = math.floor(cx - margin), math.floor(cy - margin)
    region = image.crop((left, top, math.ceil(cx + margin), math.ceil(cy + margin)))
    if reduce > 1:
        region = region.reduce(reduce)
    patches, frames = [], []
    for zoom in _TTA_ZOOMS:
        for dx in _TTA_SHIFTS:
            for dy in _TTA_SHIFTS:
                width = side * zoom
                bx, by = cx + dx * side - width / 2, cy + dy * side - width / 2
                extent = ((bx - left) / reduce, (by - top) / reduce, (bx - left + width) / reduce,
                          (by - top + width) / reduce)
                patch = np.asarray(region.transform((_ONET_SIZE, _ONET_SIZE), Image.EXTENT, extent, Image.BILINEAR),
                                   dtype=np.float32)
                patches += [patch, patch[:, ::-1]]
                frames += [(bx, by, width, False), (bx, by, width, True)]
    batch = torch.from_numpy((np.stack(patches) - 127.5) / 128.0).permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        _, points, _ = onet(batch)  # points: 5 x-fractions then 5 y-fractions of the patch
    estimates = []
    for (bx, by, width, mirrored), p in zip(frames, points.numpy().astype(np.float64)):
        px, py = p[:5], p[5:]
        if mirrored:  # undo the flip and swap the left/right points back
            px, py = (1.0 - px)[_MIRROR], py[_MIRROR]
        estimates.append(np.stack([bx + px * width - 0.5, by + py * width - 0.5], axis=1))
    return np.mean(estimates, axis=0)


def _landmarks_in_crop(image: Image.Image, transform: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Re-measure the landmarks inside the current crop (upright and at a fixed scale, where ONet is most reliable)."""
    crop = warp_to_crop(image, transform)
    found = detect_faces(crop, min_size=OUTPUT_SIZE / 4)  # an aligned face's box is ~OUTPUT_SIZE / 2
    if not found:
        return fallback
    centre = OUTPUT_SIZE / 2 - 0.5
    face = min(found, key=lambda d: math.hypot((d.box[0] + d.box[2]) / 2 - centre, (d.box[1] + d.box[3]) / 2 - centre))
    inside = refine_landmarks(crop, face.box)
    inverse = np.linalg.inv(np.vstack([transform, [0.0, 0.0, 1.0]]))[:2]
    return inside @ inverse[:, :2].T + inverse[:, 2]


def main_face(image: ImageInput, min_face_px: float = MIN_FACE_PX,
              max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, list[Detection], np.ndarray]:
    """The upright photo, every detection (largest first) and the refined landmarks of the largest face; a FaceError
    saying what to change when the photo is too small or holds no usable face. The first step of every crop."""
    rgb = load_image(image, max_pixels=max_pixels)
    if min(rgb.size) < 2 * min_face_px:  # a usable face box is about twice its eye-to-mouth distance
        raise FaceError(f"the photo is only {rgb.width}×{rgb.height} pixels; a usable face needs about "
                        f"{2 * min_face_px:.0f}×{2 * min_face_px:.0f}, so please use a larger photo")
    # Look for faces down to half the usable size (an MTCNN box is ~2× the eye-to-mouth distance), so a face that
    # is too small gets that message rather than "no face", without searching the pyramid for specks.
    detections = detect_faces(rgb, min_size=max(20.0, min_face_px))
    if not detections:
        raise FaceError(f"no face found in the {rgb.width}×{rgb.height} photo; use a photo where one face is clearly "
                        f"visible, roughly frontal and at least {2 * min_face_px:.0f} px tall")
    face = detections[0]
    if face.face_px < min_face_px:
        raise FaceError(f"the face is too small ({face.face_px:.0f} px from eyes to mouth, at least {min_face_px:.0f} "
                        f"needed); use a larger or closer photo")
    return rgb, detections, refine_landmarks(rgb, face.box)


def align_face(image: ImageInput, *, min_face_px: float = MIN_FACE_PX, max_pixels: int = MAX_PIXELS) -> AlignedFace:
    """Detect the largest face in a photo and return it in EG3D/GOAE's 512² crop."""
    rgb, detections, landmarks = main_face(image, min_face_px, max_pixels)
    face = detections[0]
    strongly_tilted = abs(eg3d_crop_transform(landmarks)[3]) > math.radians(10)
    for _ in range(2 if strongly_tilted else 1):  # a tilted face needs one more look once it is upright
        landmarks = _landmarks_in_crop(rgb, eg3d_crop_transform(landmarks)[0], landmarks)
    transform, yaw, pitch, roll = eg3d_crop_transform(landmarks)
    crop = warp_to_crop(rgb, transform)
    return AlignedFace(image=crop, image256=crop.resize((ENCODER_SIZE, ENCODER_SIZE), Image.LANCZOS),
                       landmarks=landmarks @ transform[:, :2].T + transform[:, 2], n_faces=len(detections),
                       box=face.box, confidence=face.confidence, yaw=yaw, pitch=pitch, roll=roll,
                       transform=transform, source_size=rgb.size)
