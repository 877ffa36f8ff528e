"""Procedural 3D heads: the embedded world's "people", rendered from EG3D-convention cameras.

Each head is a signed distance field of smoothly unioned primitives (cranium, jaw, cheeks, neck, nose, ears, a hair
shell, optional glasses), sphere-traced in a fixed number of steps, with colour regions (eyes, brows, lips, beard) that
live on the 3D surface so every view of one person agrees. Identity is exact: the identity parameters alone fix the
person; per-photo parameters (expression, lighting, glasses) change only one picture.

A FIXED map z in R^Z_DIM -> parameters ties the world to a generator's latent space (GUIDE, Seo et al. CVPR 2024, needs
w_avg, truncation and UFO extrapolation to act on a generator that was trained on this map): z dims 0..N_ID-1 are
identity, the next N_PHOTO dims are per-photo; each dim goes through the normal CDF to a value in (0, 1) and then
linearly to its physical range. Every z dim means something: ignored dims would dominate the mapping network, and the
generator would learn only blurred average heads (docs/world.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from guide_core.world.cameras import camera_rays

BACKGROUND = (0.70, 0.74, 0.80)
RAY_FAR = 3.3  # EG3D's ray_end for FFHQ; background depth is reported as this distance
# Heads are modelled in a local frame (face towards +z, about 0.5 tall) and placed like an FFHQ crop in EG3D's world:
# scaled up and moved forward so that the face sits near the camera pivot (0, 0, 0.2) and fills the frame.
HEAD_SCALE = 1.1
HEAD_OFFSET = (0.0, -0.02, 0.08)

# Identity parameters: (name, low, high) in world units (the head spans about 0.5 of EG3D's unit cube) or unit ranges.
IDENTITY_SPEC: list[tuple[str, float, float]] = [
    ("head_width", 0.165, 0.215),
    ("head_height", 0.205, 0.255),
    ("head_depth", 0.20, 0.245),
    ("jaw_width", 0.105, 0.165),
    ("chin_length", 0.0, 0.06),
    ("cheek_size", 0.035, 0.07),
    ("neck_radius", 0.075, 0.11),
    ("skin_tone", 0.0, 1.0),
    ("skin_warmth", -1.0, 1.0),
    ("hair_colour", 0.0, 1.0),
    ("hair_volume", 0.004, 0.05),
    ("hair_length", 0.0, 0.28),
    ("hairline", 0.09, 0.20),
    ("eye_spacing", 0.050, 0.072),
    ("eye_height", 0.015, 0.055),
    ("eye_width", 0.022, 0.033),
    ("iris_colour", 0.0, 1.0),
    ("brow_thickness", 0.006, 0.018),
    ("brow_tilt", -0.35, 0.35),
    ("nose_length", 0.06, 0.11),
    ("nose_width", 0.018, 0.036),
    ("nose_protrusion", 0.035, 0.075),
    ("mouth_width", 0.035, 0.062),
    ("lip_thickness", 0.006, 0.016),
    ("lip_colour", 0.0, 1.0),
    ("ear_size", 0.035, 0.065),
    ("beard", -1.5, 1.0),  # <= 0 means clean-shaven, so most people have no beard
]
# Per-photo parameters: expression, lighting and accessories.
PHOTO_SPEC: list[tuple[str, float, float]] = [
    ("smile", -0.4, 1.0),
    ("mouth_open", 0.0, 0.022),
    ("brow_raise", -0.006, 0.012),
    ("eye_openness", 0.45, 1.0),
    ("light_azimuth", -1.0, 1.0),
    ("light_elevation", -0.2, 0.9),
    ("light_intensity", 0.55, 1.0),
    ("ambient", 0.25, 0.5),
    ("glasses", 0.0, 1.0),  # glasses are worn when this is below GLASSES_RATE
    ("glasses_colour", 0.0, 1.0),
]
GLASSES_RATE = 0.3
N_ID = len(IDENTITY_SPEC)
N_PHOTO = len(PHOTO_SPEC)
IDENTITY_DIMS = list(range(N_ID))
PHOTO_DIMS = list(range(N_ID, N_ID + N_PHOTO))
Z_DIM = N_ID + N_PHOTO

_SKIN = torch.tensor([[0.97, 0.82, 0.71], [0.91, 0.71, 0.56], [0.79, 0.58, 0.43], [0.60, 0.42, 0.30],
                      [0.38, 0.26, 0.18]])
_HAIR = torch.tensor([[0.07, 0.06, 0.05], [0.24, 0.15, 0.08], [0.45, 0.30, 0.16], [0.62, 0.27, 0.11],
                      [0.88, 0.72, 0.42], [0.74, 0.74, 0.74]])
_IRIS = torch.tensor([[0.28, 0.16, 0.07], [0.46, 0.35, 0.14], [0.24, 0.46, 0.24], [0.22, 0.44, 0.72],
                      [0.52, 0.56, 0.62]])
_GLASSES = torch.tensor([[0.05, 0.05, 0.05], [0.35, 0.20, 0.08], [0.65, 0.08, 0.08], [0.10, 0.20, 0.60],
                         [0.75, 0.75, 0.78]])


@dataclass
class HeadParams:
    """Parameters of a batch of heads: identity and per-photo values in their physical ranges, one row per head."""

    identity: torch.Tensor  # [B, N_ID]
    photo: torch.Tensor  # [B, N_PHOTO]

    def __post_init__(self) -> None:
        if self.identity.ndim != 2 or self.identity.shape[1] != N_ID:
            raise ValueError(f"identity parameters must be [B, {N_ID}], got {tuple(self.identity.shape)}")
        if self.photo.shape != (self.identity.shape[0], N_PHOTO):
            raise ValueError(f"photo parameters must be [B, {N_PHOTO}], got {tuple(self.photo.shape)}")

    def __len__(self) -> int:
        return self.identity.shape[0]

    def get(self, name: str) -> torch.Tensor:
        """One parameter's values [B] by name (identity or per-photo)."""
        for i, (key, _, _) in enumerate(IDENTITY_SPEC):
            if key == name:
                return self.identity[:, i]
        for i, (key, _, _) in enumerate(PHOTO_SPEC):
            if key == name:
                return self.photo[:, i]
        raise KeyError(f"unknown head parameter {name!r}")


@dataclass
class HeadRender:
    """One rendered batch: image in [-1, 1] (EG3D's range), ray distance of the surface, coverage of the head."""

    image: torch.Tensor  # [B, 3, H, W]
    depth: torch.Tensor  # [B, 1, H, W], RAY_FAR on the background
    mask: torch.Tensor  # [B, 1, H, W] in [0, 1]


def _to_range(u: torch.Tensor, spec: list[tuple[str, float, float]]) -> torch.Tensor:
    low = torch.tensor([s[1] for s in spec])
    high = torch.tensor([s[2] for s in spec])
    return low + (high - low) * u


def params_from_z(z: torch.Tensor) -> HeadParams:
    """The fixed z -> parameters map: normal CDF of the designated dims, then each parameter's range."""
    if z.ndim != 2 or z.shape[1] != Z_DIM:
        raise ValueError(f"z must have shape [B, {Z_DIM}], got {tuple(z.shape)}")
    u = 0.5 * (1 + torch.erf(z.float() / math.sqrt(2)))
    return HeadParams(_to_range(u[:, IDENTITY_DIMS], IDENTITY_SPEC), _to_range(u[:, PHOTO_DIMS], PHOTO_SPEC))


def random_z(n: int, seed: int) -> torch.Tensor:
    """Seeded standard-normal latents, the generator's prior."""
    return torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))


def same_identity_z(z: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Other "photos" of the person behind z: the same identity dims, fresh per-photo dims."""
    z = z.reshape(-1, Z_DIM) if z.numel() == Z_DIM else z
    if z.ndim != 2 or z.shape != (1, Z_DIM):
        raise ValueError(f"same_identity_z takes one latent of {Z_DIM} values, got shape {tuple(z.shape)}")
    others = random_z(n, seed)
    others[:, IDENTITY_DIMS] = z[0, IDENTITY_DIMS]
    return others


def _palette(colours: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Interpolate a colour palette [K,3] at positions t in [0,1] -> [B,3]."""
    x = t.clamp(0, 1) * (len(colours) - 1)
    i = x.floor().long().clamp(max=len(colours) - 2)
    f = (x - i)[:, None]
    return colours[i] * (1 - f) + colours[i + 1] * f


class _Geometry:
    """Per-head derived geometry and albedos, packed as named columns so that rays can gather them with one index op."""

    def __init__(self, p: HeadParams):
        g = {}
        hw, hh, hd = p.get("head_width"), p.get("head_height"), p.get("head_depth")
        g["cr"] = torch.stack((hw, hh, hd), 1)  # cranium radii; centre fixed at (0, 0.06, -0.02)
        chin = p.get("chin_length")
        g["jc_y"] = (-0.09 - chin / 2)[:, None]
        g["jr"] = torch.stack((p.get("jaw_width"), 0.12 + chin / 2, torch.full_like(hw, 0.14)), 1)
        g["cheek"] = p.get("cheek_size")[:, None]
        g["neck"] = p.get("neck_radius")[:, None]
        # The face front along x=0 at height y: the larger of the cranium's and the jaw's front surfaces.
        nose_len = p.get("nose_length")
        nose_y = p.get("eye_height") - 0.015 - nose_len / 2
        front = torch.maximum(self._front(-0.02, 0.06, hd, hh, nose_y),
                              self._front(0.03, g["jc_y"][:, 0], g["jr"][:, 2], g["jr"][:, 1], nose_y))
        g["nose_c"] = torch.stack((torch.zeros_like(hw), nose_y, front - 0.025), 1)
        g["nose_r"] = torch.stack((p.get("nose_width"), nose_len / 2, p.get("nose_protrusion")), 1)
        ear_size = p.get("ear_size")
        ear_y = torch.full_like(hw, 0.0)
        ear_x = hw * torch.sqrt((1 - ((ear_y - 0.06) / hh) ** 2).clamp(min=0.05)) - 0.012
        g["ear_c"] = torch.stack((ear_x, ear_y, torch.full_like(hw, -0.02)), 1)
        g["ear_r"] = torch.stack((torch.full_like(hw, 0.02), ear_size, ear_size * 0.6), 1)
        vol, length = p.get("hair_volume"), p.get("hair_length")
        g["hair_c"] = torch.stack((torch.zeros_like(hw), 0.06 - length * 0.5, -0.02 - vol * 0.5 - length * 0.15), 1)
        g["hair_r"] = torch.stack((hw + vol + length * 0.15, hh + vol + length * 0.5, hd + vol), 1)
        g["hairline"] = p.get("hairline")[:, None]
        g["hair_back"] = (0.02 - length * 1.3)[:, None]
        ex, ey, ew = p.get("eye_spacing"), p.get("eye_height"), p.get("eye_width")
        g["eye"] = torch.stack((ex, ey, ew, ew * 0.55 * p.get("eye_openness")), 1)
        g["brow"] = torch.stack((p.get("brow_thickness"), p.get("brow_tilt"), p.get("brow_raise")), 1)
        mouth_y = nose_y - nose_len / 2 - 0.035
        g["mouth"] = torch.stack((mouth_y, p.get("mouth_width"), p.get("lip_thickness"), p.get("smile"),
                                  p.get("mouth_open")), 1)
        g["beard"] = p.get("beard").clamp(0, 1)[:, None]
        eye_front = self._front(-0.02, 0.06, hd, hh, ey) * torch.sqrt((1 - (ex / hw) ** 2).clamp(min=0.1))
        glasses_on = (p.get("glasses") < GLASSES_RATE).float()
        g["glasses"] = torch.stack((glasses_on, eye_front + 0.035, ew * 1.55), 1)
        skin = _palette(_SKIN, p.get("skin_tone"))
        skin = (skin + p.get("skin_warmth")[:, None] * torch.tensor([0.04, 0.0, -0.04])).clamp(0, 1)
        hair = _palette(_HAIR, p.get("hair_colour"))
        g["skin_rgb"] = skin
        g["hair_rgb"] = hair
        g["iris_rgb"] = _palette(_IRIS, p.get("iris_colour"))
        lip = skin * (0.78 + 0.1 * p.get("lip_colour")[:, None]) * torch.tensor([1.0, 0.62, 0.62])
        g["lip_rgb"] = lip
        g["glasses_rgb"] = _palette(_GLASSES, p.get("glasses_colour"))
        az, el = p.get("light_azimuth"), p.get("light_elevation")
        g["light"] = torch.stack((torch.sin(az) * torch.cos(el), torch.sin(el), torch.cos(az) * torch.cos(el)), 1)
        g["shade"] = torch.stack((p.get("light_intensity"), p.get("ambient")), 1)
        self.slices: dict[str, slice] = {}
        cols, start = [], 0
        for key, value in g.items():
            self.slices[key] = slice(start, start + value.shape[1])
            start += value.shape[1]
            cols.append(value.float())
        self.packed = torch.cat(cols, 1)

    @staticmethod
    def _front(cz: float, cy, rz, ry, y):
        return cz + rz * torch.sqrt((1 - ((y - cy) / ry) ** 2).clamp(min=0.0))


class _Rays:
    """Gathered per-ray view of the packed geometry: g["name"] -> [M, k]."""

    def __init__(self, geom: _Geometry, rows: torch.Tensor):
        self.geom, self.data = geom, rows

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.data[:, self.geom.slices[key]]


def _ellipsoid(p: torch.Tensor, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Signed distance to an ellipsoid (the common bound-preserving approximation k0 (k0 - 1) / k1)."""
    q = (p - c) / r
    k0 = q.norm(dim=-1)
    k1 = (q / r).norm(dim=-1).clamp(min=1e-6)
    return k0 * (k0 - 1) / k1


def _smin(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum: blends two surfaces over a band of width k (a soft union)."""
    h = (k - (a - b).abs()).clamp(min=0) / k
    return torch.minimum(a, b) - h * h * k * 0.25


def _capsule(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, r: float) -> torch.Tensor:
    pa, ba = p - a, b - a
    h = ((pa * ba).sum(-1) / (ba * ba).sum(-1).clamp(min=1e-9)).clamp(0, 1)
    return (pa - ba * h[:, None]).norm(dim=-1) - r


def _sdf_parts(p: torch.Tensor, g: _Rays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's distance fields: (skin surface, hair shell, glasses); the union is their minimum."""
    head, hair, glasses = _sdf_local((p - p.new_tensor(HEAD_OFFSET)) / HEAD_SCALE, g)
    return head * HEAD_SCALE, hair * HEAD_SCALE, glasses * HEAD_SCALE


def _sdf_local(p: torch.Tensor, g: _Rays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = p.shape[0]
    pm = torch.cat((p[:, :1].abs(), p[:, 1:]), 1)  # mirrored: symmetric features are modelled once
    zero = p.new_zeros(m, 1)
    head = _ellipsoid(p, p.new_tensor([0.0, 0.06, -0.02]), g["cr"])
    jaw = _ellipsoid(p, torch.cat((zero, g["jc_y"], zero + 0.03), 1), g["jr"])
    head = _smin(head, jaw, 0.08)
    cheek = g["cheek"]
    cheeks = _ellipsoid(pm, torch.cat((zero + 0.075, zero - 0.05, zero + 0.075), 1),
                        torch.cat((cheek, cheek * 0.9, cheek), 1))
    head = _smin(head, cheeks, 0.04)
    radial = torch.sqrt(p[:, 0] ** 2 + ((p[:, 2] + 0.04) / 1.1) ** 2) - g["neck"][:, 0]
    neck = torch.maximum(radial, torch.maximum(p[:, 1] + 0.12, -0.62 - p[:, 1]))
    head = _smin(head, neck, 0.06)
    head = _smin(head, _ellipsoid(p, g["nose_c"], g["nose_r"]), 0.025)
    head = _smin(head, _ellipsoid(pm, g["ear_c"], g["ear_r"]), 0.015)
    # Hair: a shell around the cranium, kept above the hairline in front and above the hair length at the back.
    # The cut height changes with z, so its distance is divided by the steepest slope to stay a safe tracing bound.
    blend = ((p[:, 2] + 0.15) / 0.3).clamp(0, 1)
    blend = blend * blend * (3 - 2 * blend)
    rise = g["hairline"][:, 0] - g["hair_back"][:, 0]
    y_cut = g["hair_back"][:, 0] + rise * blend
    cut = (y_cut - p[:, 1]) / torch.sqrt(1 + (rise.abs() * 1.5 / 0.3) ** 2)
    hair = torch.maximum(_ellipsoid(p, g["hair_c"], g["hair_r"]), cut)
    # Glasses: two rims (tori in the x-y plane), a bridge and two arms towards the ears.
    on, gz, rim = g["glasses"][:, 0], g["glasses"][:, 1], g["glasses"][:, 2]
    ex, ey = g["eye"][:, 0], g["eye"][:, 1]
    ring = torch.sqrt((pm[:, 0] - ex) ** 2 + (pm[:, 1] - ey) ** 2) - rim
    rims = torch.sqrt(ring ** 2 + (pm[:, 2] - gz) ** 2) - 0.007
    bridge = _capsule(pm, torch.stack((zero[:, 0], ey + 0.005, gz), 1), torch.stack((ex - rim, ey, gz), 1), 0.006)
    arm = _capsule(pm, torch.stack((ex + rim, ey, gz), 1),
                   torch.stack((g["ear_c"][:, 0] + 0.01, ey + 0.01, zero[:, 0] - 0.03), 1), 0.006)
    glasses = torch.minimum(torch.minimum(rims, bridge), arm)
    glasses = torch.where(on > 0.5, glasses, torch.full_like(glasses, 1.0))
    return head, hair, glasses


def _sdf(p: torch.Tensor, g: _Rays) -> torch.Tensor:
    head, hair, glasses = _sdf_parts(p, g)
    return torch.minimum(torch.minimum(head, hair), glasses)


def _albedo(p: torch.Tensor, g: _Rays) -> torch.Tensor:
    """Surface colour (albedo) of hit points: glasses, hair, then skin with eyes, brows, lips and beard painted on."""
    head, hair, glasses = _sdf_parts(p, g)
    p = (p - p.new_tensor(HEAD_OFFSET)) / HEAD_SCALE
    x, y, z = p[:, 0].abs(), p[:, 1], p[:, 2]
    front = z > 0.02
    colour = g["skin_rgb"].clone()
    ex, ey, ew, eh = g["eye"].unbind(1)
    # Eyes: an almond opening (lids) with the iris and pupil looking straight ahead.
    eye_open = (((x - ex) / ew) ** 2 + ((y - ey) / eh.clamp(min=1e-4)) ** 2 < 1) & front
    iris_d2 = (x - ex) ** 2 + (y - ey) ** 2
    eye_rgb = torch.where((iris_d2 < (ew * 0.5) ** 2)[:, None], g["iris_rgb"], p.new_tensor([0.95, 0.95, 0.93]))
    eye_rgb = torch.where((iris_d2 < (ew * 0.22) ** 2)[:, None], p.new_tensor([0.04, 0.04, 0.05]), eye_rgb)
    colour = torch.where(eye_open[:, None], eye_rgb, colour)
    # Brows: a tilted band above each eye, darker than the hair.
    thick, tilt, raise_ = g["brow"].unbind(1)
    brow_y = ey + eh + 0.014 + raise_ + tilt * (x - ex) * 0.5
    brow = ((x - ex).abs() < ew * 1.25) & ((y - brow_y).abs() < thick / 2) & front
    colour = torch.where(brow[:, None], g["hair_rgb"] * 0.75, colour)
    # Mouth: lips along a curve bent by the smile, dark where the mouth is open.
    my, mw, lip, smile, open_ = g["mouth"].unbind(1)
    across = (x / mw).clamp(max=1.0)
    curve = my + smile * 0.022 * across ** 2
    profile = torch.sqrt((1 - across ** 2).clamp(min=0))
    in_mouth = (x < mw) & front
    lips = in_mouth & ((y - curve).abs() < (lip + open_ / 2) * profile)
    inner = in_mouth & ((y - curve).abs() < (open_ / 2) * profile)
    colour = torch.where(lips[:, None], g["lip_rgb"], colour)
    colour = torch.where(inner[:, None], p.new_tensor([0.18, 0.05, 0.06]), colour)
    # Beard: hair colour over the chin and jaw, and a moustache above the lips.
    beard = g["beard"][:, 0]
    chin = (y < curve - lip - 0.004) & (y > g["jc_y"][:, 0] - 0.85 * g["jr"][:, 1]) & (z > 0.0)
    moustache = (x < mw * 1.1) & (y > curve + lip + 0.003) & (y < curve + lip + 0.02) & front
    beard_mask = ((chin | moustache) & ~lips).float() * beard
    colour = colour * (1 - beard_mask[:, None]) + g["hair_rgb"] * 0.85 * beard_mask[:, None]
    colour = torch.where((hair <= head + 1e-3)[:, None], g["hair_rgb"], colour)
    colour = torch.where((glasses <= torch.minimum(head, hair) + 1e-3)[:, None], g["glasses_rgb"], colour)
    return colour


def _normals(p: torch.Tensor, g: _Rays, h: float = 1e-3) -> torch.Tensor:
    """Outward normals by the tetrahedron finite-difference stencil (four SDF evaluations)."""
    k = p.new_tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]])
    n = sum(k[i] * _sdf(p + k[i] * h, g)[:, None] for i in range(4))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-8)


def _trace(origins: torch.Tensor, dirs: torch.Tensor, rows: torch.Tensor, geom: _Geometry,
           steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere tracing of every ray from its entry into the bounding sphere, in a fixed number of steps.

    The working set is compacted as rays converge or leave, so late steps only pay for the few rays still grazing the
    head. Returns the ray distance of each hit and whether the ray hit.
    """
    centre = origins.new_tensor([0.0, -0.05 * HEAD_SCALE, 0.0]) + origins.new_tensor(HEAD_OFFSET)
    radius = 0.6 * HEAD_SCALE
    oc = origins - centre
    b = (oc * dirs).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - radius * radius)
    t = (-b - disc.clamp(min=0).sqrt()).clamp(min=0)
    hit = torch.zeros_like(t, dtype=torch.bool)
    active = torch.nonzero(disc > 0).squeeze(1)
    o, d_, ta = origins[active], dirs[active], t[active]
    t_exit = (-b + disc.clamp(min=0).sqrt())[active]
    g = geom.packed[rows[active]]
    dist = ta.new_zeros(0)
    for _ in range(steps):
        if active.numel() == 0:
            break
        dist = _sdf(o + d_ * ta[:, None], _Rays(geom, g))
        ta = ta + dist * 0.85
        done = dist.abs() < 4e-4 * ta
        t[active[done]] = ta[done]
        hit[active[done]] = True
        keep = torch.nonzero(~done & (ta < t_exit)).squeeze(1)
        if keep.numel() < active.numel():
            active, o, d_, ta, t_exit, g, dist = (x[keep] for x in (active, o, d_, ta, t_exit, g, dist))
    if active.numel():  # rays still grazing the surface after the last step count as hits
        near = dist.abs() < 4e-3
        t[active[near]] = ta[near]
        hit[active[near]] = True
    return t, hit


@torch.no_grad()
def render_heads(params: HeadParams, c: torch.Tensor, resolution: int = 64, supersample: int = 2,
                 steps: int = 64, chunk: int = 16) -> HeadRender:
    """Render heads from cameras c [B,25]: image in [-1,1], ray depth and coverage, anti-aliased by supersampling."""
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f"camera parameters must be [B, 25], got {tuple(c.shape)}")
    if c.shape[0] != len(params):
        raise ValueError(f"{len(params)} heads but {c.shape[0]} cameras")
    if not 8 <= resolution <= 512:
        raise ValueError(f"resolution must be in [8, 512], got {resolution}")
    outputs = [_render_chunk(HeadParams(params.identity[i:i + chunk], params.photo[i:i + chunk]), c[i:i + chunk],
                             resolution, supersample, steps) for i in range(0, len(params), chunk)]
    return HeadRender(*(torch.cat(parts, 0) for parts in zip(*outputs)))


def _render_chunk(params: HeadParams, c: torch.Tensor, resolution: int, supersample: int,
                  steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    geom = _Geometry(params)
    res = resolution * supersample
    origins, dirs = camera_rays(c.float(), res)
    n = c.shape[0]
    rows = torch.arange(n).repeat_interleave(res * res)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t, hit = _trace(origins, dirs, rows, geom, steps)
    rgb = origins.new_tensor(BACKGROUND).repeat(origins.shape[0], 1)
    idx = torch.nonzero(hit).squeeze(1)
    if idx.numel():
        p = origins[idx] + dirs[idx] * t[idx, None]
        g = _Rays(geom, geom.packed[rows[idx]])
        normal = _normals(p, g)
        intensity, ambient = g["shade"].unbind(1)
        lambert = (normal * g["light"]).sum(-1).clamp(min=0)
        shade = ambient + (1 - ambient) * intensity * lambert
        rgb[idx] = (_albedo(p, g) * shade[:, None]).clamp(0, 1)
    depth = torch.where(hit, t, torch.full_like(t, RAY_FAR))
    image = rgb.reshape(n, res, res, 3).permute(0, 3, 1, 2)
    depth = depth.reshape(n, 1, res, res)
    mask = hit.float().reshape(n, 1, res, res)
    if supersample > 1:
        image, depth, mask = (torch.nn.functional.avg_pool2d(x, supersample) for x in (image, depth, mask))
    return image * 2 - 1, depth, mask


def render_z(z: torch.Tensor, c: torch.Tensor, resolution: int = 64, **kwargs) -> HeadRender:
    """Convenience: render the people behind latents z from yaw/pitch offsets."""
    return render_heads(params_from_z(z), c, resolution, **kwargs)
