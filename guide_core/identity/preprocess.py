"""How images in [-1,1] become the 112x112 faces the identity backbones read. Two conventions exist in GUIDE:
the identity LOSS (IDLoss of pSp, reused by GUIDE §4's local loss) takes a fixed crop of an FFHQ-style image, and
the identity METRIC (id_sim.py, GUIDE §5) aligns each image with MTCNN's five landmarks to the ArcFace template.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

FACE_SIZE = 112

# IDLoss's fixed crop of the 256x256 image (rows 35..222, columns 32..219): a 188x188 window centred on the face of
# an FFHQ/EG3D-aligned image, one pixel lower and two pixels further left than the image centre.
IDLOSS_RESIZE = 256
IDLOSS_ROWS = (35, 223)
IDLOSS_COLS = (32, 220)

# The five-point ArcFace reference in a 112x112 face (left eye, right eye, nose tip, left and right mouth corner;
# pixel-centre coordinates): the 96x112 template of the MTCNN alignment code shifted right by 8 pixels to make the
# crop square, which is what id_sim.py's `mtcnn.align` warps to.
ARCFACE_TEMPLATE_112 = torch.tensor([
    [38.29459953, 51.69630051],
    [73.53179932, 51.50139999],
    [56.02519989, 71.73660278],
    [41.54930115, 92.3655014],
    [70.72990036, 92.20410156],
], dtype=torch.float64)

# Where MTCNN finds the five landmarks in an EG3D/GOAE-aligned 512x512 crop, in pixel-centre coordinates: the mean of
# facenet-pytorch's MTCNN on the five aligned CelebA-HQ samples of the GUIDE repository (spread 3-7 px per point),
# with the nose x set to the eye/mouth midline because the measured nose follows each photo's head yaw.
# Used when no per-image landmarks are at hand; it scales to any square crop size.
EG3D_CROP_LANDMARKS_512 = torch.tensor([
    [182.1, 204.1],
    [314.5, 206.3],
    [248.4, 283.4],
    [182.3, 339.5],
    [315.1, 341.8],
], dtype=torch.float64)


def _check_images(images: torch.Tensor, who: str) -> None:
    """Check that a batch is [N,3,H,W] floating point; the message names the caller."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: expected a torch.Tensor [N,3,H,W] in [-1,1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{who}: expected images of shape [N,3,H,W], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{who}: expected floating-point images in [-1,1], got dtype {images.dtype}")


def idloss_face_input(images: torch.Tensor) -> torch.Tensor:
    """IDLoss preprocessing: bilinear resize to 256 (no antialias), fixed crop, adaptive average pool to 112, no value
    normalisation (the [-1,1] image goes straight into IR-SE50).
    """
    _check_images(images, "idloss_face_input")
    if tuple(images.shape[2:]) != (IDLOSS_RESIZE, IDLOSS_RESIZE):
        images = F.interpolate(images, size=(IDLOSS_RESIZE, IDLOSS_RESIZE), mode="bilinear", align_corners=False)
    crop = images[:, :, IDLOSS_ROWS[0]:IDLOSS_ROWS[1], IDLOSS_COLS[0]:IDLOSS_COLS[1]]
    return F.adaptive_avg_pool2d(crop, (FACE_SIZE, FACE_SIZE))


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares non-reflective similarity (scale, rotation, translation) taking `src` points onto `dst` points, as
    the
    MTCNN alignment code fits it ([N,K,2] each -> [N,2,3] matrices acting on column vectors (x, y, 1)).
    """
    if src.shape != dst.shape or src.ndim != 3 or src.shape[-1] != 2 or src.shape[1] < 2:
        raise ValueError(f"similarity_transform: expected matching [N,K>=2,2] point sets, got {tuple(src.shape)} "
                         f"and {tuple(dst.shape)}")
    src, dst = src.to(torch.float64), dst.to(torch.float64)
    x, y = src[..., 0], src[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # Unknowns (a, b, tx, ty) with x' = a x - b y + tx and y' = b x + a y + ty: two linear equations per point.
    rows_x = torch.stack([x, -y, one, zero], dim=-1)
    rows_y = torch.stack([y, x, zero, one], dim=-1)
    design = torch.cat([rows_x, rows_y], dim=1)
    target = torch.cat([dst[..., 0], dst[..., 1]], dim=1).unsqueeze(-1)
    a, b, tx, ty = torch.linalg.lstsq(design, target).solution.squeeze(-1).unbind(-1)
    return torch.stack([torch.stack([a, -b, tx], -1), torch.stack([b, a, ty], -1)], dim=1)


def arcface_align(images: torch.Tensor, landmarks: torch.Tensor, size: int = FACE_SIZE) -> torch.Tensor:
    """Warp each image so that its five landmarks (pixel-centre coordinates, MTCNN order) land on the ArcFace template,
    sampling bilinearly like cv2.warpAffine in id_sim.py's alignment (no antialiasing); differentiable in the images.
    """
    _check_images(images, "arcface_align")
    landmarks = torch.as_tensor(landmarks, dtype=torch.float64, device=images.device)
    if landmarks.ndim == 2:
        landmarks = landmarks.unsqueeze(0).expand(images.shape[0], -1, -1)
    if tuple(landmarks.shape) != (images.shape[0], 5, 2):
        raise ValueError(f"arcface_align: expected landmarks [N,5,2] or [5,2] for {images.shape[0]} images, "
                         f"got {tuple(landmarks.shape)}")
    template = ARCFACE_TEMPLATE_112.to(images.device) * (size / FACE_SIZE)
    forward = similarity_transform(landmarks, template.expand_as(landmarks))
    # grid_sample needs the inverse map: output pixel -> input pixel.
    linear, shift = forward[:, :, :2], forward[:, :, 2:]
    inv_linear = torch.linalg.inv(linear)
    inv_shift = -inv_linear @ shift
    height, width = images.shape[2:]
    # Compose: normalised output u -> output pixel o = (size*(u+1) - 1)/2 -> input pixel p -> normalised input.
    to_pixel = torch.tensor([[size / 2, 0, (size - 1) / 2], [0, size / 2, (size - 1) / 2], [0, 0, 1]],
                            dtype=torch.float64, device=images.device)
    to_norm = torch.tensor([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]],
                           dtype=torch.float64, device=images.device)
    inverse = torch.cat([torch.cat([inv_linear, inv_shift], dim=2),
                         torch.tensor([0, 0, 1], dtype=torch.float64, device=images.device).expand(
                             images.shape[0], 1, 3)], dim=1)
    theta = (to_norm @ inverse @ to_pixel)[:, :2].to(images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    # Outside the image cv2 fills black, which is -1 here: sample (images + 1) with zero padding, then shift back.
    return F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def eg3d_crop_face_input(images: torch.Tensor) -> torch.Tensor:
    """The ID metric's input for square EG3D/GOAE-aligned crops without per-image landmarks: the ArcFace warp of the
    canonical landmark positions (EG3D_CROP_LANDMARKS_512 scaled to the crop size), i.e. one fixed similarity for all.
    A 112x112 input is taken as an already aligned face.
    """
    _check_images(images, "eg3d_crop_face_input")
    height, width = images.shape[2:]
    if height != width:
        raise ValueError(f"eg3d_crop_face_input: expected a square EG3D crop, got {height}x{width}")
    if height == FACE_SIZE:
        return images
    landmarks = (EG3D_CROP_LANDMARKS_512 + 0.5) * (width / 512) - 0.5
    return arcface_align(images, landmarks)
