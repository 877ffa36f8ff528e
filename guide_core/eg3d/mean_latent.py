"""w̄, the mean latent of a generator's mapping network: GUIDE's UFO target (Seo et al. CVPR 2024 §3.2), taken from a
released file, the mapping's trained running mean, or seeded samples cached beside the weights."""
from __future__ import annotations

import re

import torch

from guide_core.eg3d.camera import AVG_CAMERA_RADIUS, camera_params
from guide_core.files import state_fingerprint
from guide_core.weights import catalogue
from guide_core.weights.catalogue import install_hint, is_installed, path_of, weights_dir
from guide_core.weights.errors import MissingWeightsError, UnsafeCheckpointError, WeightsError
from guide_core.weights.safe_load import load_safetensors, load_torch, save_safetensors


def conditioning_camera(G) -> torch.Tensor:
    """The frontal conditioning camera of GUIDE's scripts. They look up rendering_kwargs "avg_cam_pivot" /
    "avg_cam_radius" with defaults (0, 0, 0) / 2.7, while the released checkpoints store "avg_camera_pivot" /
    "avg_camera_radius": so for the released models the effective camera looks at the origin (not AVG_CAMERA_PIVOT)
    from AVG_CAMERA_RADIUS. The same lookup is kept here on purpose."""
    kwargs = getattr(G, "rendering_kwargs", None) or {}
    pivot = tuple(float(v) for v in kwargs.get("avg_cam_pivot", (0.0, 0.0, 0.0)))
    radius = float(kwargs.get("avg_cam_radius", AVG_CAMERA_RADIUS))
    return camera_params(0.0, 0.0, radius=radius, pivot=pivot)


@torch.no_grad()
def mean_of_mapping(G, n: int = 10000, seed: int = 0, c: torch.Tensor | None = None, batch: int = 1000) -> torch.Tensor:
    """The mean of n mapping outputs for seeded z under one camera: w̄ as "the average latent code" of the GUIDE
    release."""
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    c = conditioning_camera(G) if c is None else c
    device = next(G.parameters()).device
    c = c.reshape(1, -1).to(device)
    # One CPU draw of all z: the same codes on every device and for every batch size.
    z_all = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    total = None
    for start in range(0, n, batch):
        z = z_all[start:start + batch].to(device)
        ws = G.mapping(z, c.expand(len(z), -1), truncation_psi=1.0).to(torch.float64)
        total = ws.sum(dim=0) if total is None else total + ws.sum(dim=0)
    return (total / n).to(torch.float32)


def w_avg_with_source(G, name: str | None = None, n: int = 10000, seed: int = 0, source: str = "auto",
                      c: torch.Tensor | None = None, cache: bool = True) -> tuple[torch.Tensor, str]:
    """w̄ of a generator as [num_ws, 512], and where it came from.

    Order for source="auto": (1) a released w̄ file for `name` (the GUIDE authors' w_avg_ffhqrebalanced512-128.pt,
    what the paper used) when installed; (2) the mapping network's trained `w_avg` buffer (the running mean kept by
    StyleGAN2/EG3D training), when it is not all zeros; (3) the mean of n mapping samples (ψ = 1) under the
    conditioning camera `c` (default `conditioning_camera(G)`, GUIDE's), cached in
    weights/cache/<name>-w_avg.safetensors keyed by n, seed, the camera and a fingerprint of the mapping weights.
    source="file" | "buffer" | "samples" forces one of them."""
    if source not in ("auto", "file", "buffer", "samples"):
        raise ValueError(f"source must be auto, file, buffer or samples, got {source!r}")
    mapping = G.backbone.mapping
    num_ws, w_dim = int(mapping.num_ws), int(mapping.w_dim)
    device = next(G.parameters()).device

    def shaped(t: torch.Tensor, origin: str) -> torch.Tensor:
        t = t.detach().to(device, torch.float32)
        if t.shape == (w_dim,):
            return t.expand(num_ws, w_dim).clone()
        if t.dim() == 3 and t.shape[0] == 1:
            t = t[0]
        if t.shape != (num_ws, w_dim):
            raise WeightsError(f"w̄ from {origin} has shape {tuple(t.shape)}; this generator needs [{num_ws}, {w_dim}] "
                               f"or [{w_dim}]")
        return t.clone()

    if source in ("auto", "file"):
        released = [k for k, v in catalogue.manifest().items() if name and v.get("w_avg_for") == name]
        for key in released:
            if is_installed(key):
                value = load_torch(path_of(key))
                if not isinstance(value, torch.Tensor):
                    raise UnsafeCheckpointError(f"{path_of(key)} should hold one tensor, found {type(value).__name__}")
                return shaped(value, str(path_of(key))), f"file:{path_of(key)}"
        if source == "file":
            raise MissingWeightsError(f"no released w̄ file is installed for {name!r}" +
                                      (f": {install_hint(released[0])}" if released else ""))
    buffer = getattr(mapping, "w_avg", None)
    if source in ("auto", "buffer"):
        if buffer is not None and bool(buffer.abs().sum() > 0):
            return shaped(buffer, "the mapping's w_avg buffer"), "buffer"
        if source == "buffer":
            raise WeightsError("the mapping network's w_avg buffer is absent or all zeros (untrained)")

    # A name may be a generator path: keep only a safe file stem (the fingerprint guards against collisions).
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")[-120:] if name else ""
    cache_path = weights_dir() / "cache" / f"{stem}-w_avg.safetensors" if (stem and cache) else None
    c = conditioning_camera(G) if c is None else c
    key = {"n": n, "seed": seed, "mapping_sha256": state_fingerprint(mapping),
           "camera": [round(float(v), 6) for v in c.reshape(-1).tolist()]}
    if cache_path is not None and cache_path.is_file():
        tensors, meta = load_safetensors(cache_path)
        if all(meta.get(k) == v for k, v in key.items()) and "w_avg" in tensors:
            return shaped(tensors["w_avg"], str(cache_path)), f"cache:{cache_path}"
    value = mean_of_mapping(G, n=n, seed=seed, c=c)
    if cache_path is not None:
        save_safetensors(cache_path, {"w_avg": value.cpu().contiguous()}, {**key, "truncation_psi": 1.0})
    return shaped(value, "mapping samples"), f"samples:n={n},seed={seed}"


def w_avg(G, name: str | None = None, n: int = 10000, seed: int = 0, source: str = "auto",
          c: torch.Tensor | None = None, cache: bool = True) -> torch.Tensor:
    """w̄ of a generator as [num_ws, 512] (see w_avg_with_source for which source is used)."""
    return w_avg_with_source(G, name=name, n=n, seed=seed, source=source, c=c, cache=cache)[0]
