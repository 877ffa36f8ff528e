# The model bundle: everything one GUIDE unlearning needs from "a world" (generator, mean latent, cameras, encoder,
# identity / perceptual / feature networks, face alignment), so the engine, CLI and studio never care whether it is
# the embedded tiny world or the released EG3D FFHQ generator with GOAE, ArcFace, CurricularFace, LPIPS and Inception.
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

# Released-model worlds: bundle name -> (generator weight name, what it is). GUIDE's experiments use the rebalanced
# FFHQ checkpoint (unlearn.py's default `ffhqrebalanced512-128.pkl`).
EG3D_MODELS: dict[str, tuple[str, str]] = {
    "eg3d-ffhq": ("eg3d-ffhq", "EG3D FFHQ 512 (ffhq512-128) with GOAE, ArcFace, CurricularFace, LPIPS, Inception"),
    "eg3d-ffhq-rebalanced": ("eg3d-ffhq-rebalanced",
                             "EG3D FFHQ-rebalanced 512 (ffhqrebalanced512-128), the generator of the GUIDE paper"),
}
# Weight files the released-model bundle needs besides the generator (names known to guide_core.weights).
NET_WEIGHTS: dict[str, str] = {"encoder": "goae", "id_loss_net": "ir_se50", "id_metric_net": "curricularface",
                               "perceptual": "vgg16", "feature_net": "inception"}
INCEPTION_NOTE = "Inception-v3 pool features (pytorch-fid architecture, FID weights)"

# Test hook / plug-in point: extra bundle factories by name, e.g. a tiny seeded model for CLI tests.
_REGISTRY: dict[str, tuple[Callable[[str], "ModelBundle"], str]] = {}


# Align a photo when the bundle has no face aligner: say so instead of guessing a crop.
def _no_alignment(image: Any) -> Any:
    raise RuntimeError("this model bundle has no face alignment; pass an already aligned 512x512 crop")


# One world, ready for unlearning. G is the SOURCE generator G_s (eval mode, frozen); w_avg is its mean latent
# ([512] or [num_ws, 512]); cond_c the frontal conditioning camera [1, 25]; camera geometry for `camera(yaw, pitch)`.
# encoder: aligned images in [-1, 1] [N,3,H,W] -> ABSOLUTE w+ [N,num_ws,512] (w_avg + offset), or None.
# id_loss_net (ArcFace role) / id_metric_net (CurricularFace role): `.embed(images in [-1,1]) -> unit [N, 512]`.
# perceptual: (x, y) -> [N] (LPIPS role). feature_net: images in [-1, 1] -> [N, F] for FID, described by feature_note
# wherever a FID is shown. align: PIL photo -> aligned 512x512 PIL crop (raises a clear error when no face is found).
@dataclass
class ModelBundle:
    name: str
    G: torch.nn.Module
    w_avg: torch.Tensor
    cond_c: torch.Tensor
    id_loss_net: Any
    id_metric_net: Any
    perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
    encoder_resolution: int = 256
    feature_net: Callable[[torch.Tensor], torch.Tensor] | None = None
    feature_note: str = "no feature network: FID not computable"
    align: Callable[[Any], Any] = _no_alignment
    radius: float = 2.7
    fov_deg: float = 18.837
    pivot: tuple[float, float, float] = (0.0, 0.0, 0.2)
    real_stats: Path | None = None
    description: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    # The source generator is frozen and in eval mode; codes and cameras live on its device.
    def __post_init__(self) -> None:
        self.G.eval().requires_grad_(False)
        self.w_avg = self.w_avg.detach().to(self.device, torch.float32)
        self.cond_c = self.cond_c.detach().to(self.device, torch.float32).reshape(1, 25)

    # Device of the generator (every tensor the bundle hands out is put there).
    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    # Number of w rows the synthesis network takes (14 for EG3D FFHQ 512).
    @property
    def num_ws(self) -> int:
        backbone = self.G.backbone
        return int(getattr(backbone, "num_ws", None) or backbone.mapping.num_ws)

    # Dimension of the mapping network's input z.
    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    # Camera parameters [N, 25] for yaw / pitch offsets (radians) from the frontal view, on the bundle's device.
    def camera(self, yaw: float | torch.Tensor, pitch: float | torch.Tensor) -> torch.Tensor:
        from guide_core.eg3d import camera_params
        return camera_params(yaw, pitch, radius=self.radius, fov_deg=self.fov_deg,
                             pivot=self.pivot).to(self.device, torch.float32)

    # Mean latent as a full code [num_ws, 512].
    def w_avg_code(self) -> torch.Tensor:
        return self.w_avg.expand(self.num_ws, -1) if self.w_avg.ndim == 1 else self.w_avg

    # Aligned image(s) -> absolute w+ [N, num_ws, 512] through the bundle's encoder (GOAE role).
    def invert(self, images: Any) -> torch.Tensor:
        if self.encoder is None:
            raise RuntimeError(f"model {self.name!r} has no inversion encoder: a photo cannot be turned into w_u")
        if not isinstance(images, torch.Tensor):
            images = pil_to_tensor(images)
        with torch.no_grad():
            ws = self.encoder(images.to(self.device))
        if ws.ndim != 3 or ws.shape[1] != self.num_ws:
            raise RuntimeError(f"encoder of {self.name!r} returned {tuple(ws.shape)}, expected [N, {self.num_ws}, 512]")
        return ws

    # Render codes [N, num_ws, 512] with a generator at yaw/pitch offsets: images in [-1, 1].
    def render(self, G: torch.nn.Module, ws: torch.Tensor, yaw: float | torch.Tensor = 0.0, pitch: float = 0.0,
               noise_mode: str = "const") -> torch.Tensor:
        c = self.camera(yaw, pitch)
        c = c.expand(ws.shape[0], -1) if c.shape[0] == 1 else c
        with torch.no_grad():
            return G.synthesis(ws, c, noise_mode=noise_mode, deterministic=True)["image"]


# PIL image(s) -> float tensor [N, 3, H, W] in [-1, 1] (the 8-bit levels / 127.5 - 1 convention of GUIDE's loader).
def pil_to_tensor(images: Any) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    items = images if isinstance(images, (list, tuple)) else [images]
    out = []
    for image in items:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or an image tensor, got {type(image).__name__}")
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()
        out.append(torch.from_numpy(pixels).float() / 127.5 - 1)
    if len({tuple(t.shape) for t in out}) > 1:
        raise ValueError("images to invert together must have the same size")
    return torch.stack(out)


# Register an extra world by name (plug-ins and tests); `factory(device)` builds its bundle.
def register_model(name: str, factory: Callable[[str], ModelBundle], description: str = "") -> None:
    _REGISTRY[name] = (factory, description)


# Remove a registered world (tests clean up after themselves).
def unregister_model(name: str) -> None:
    _REGISTRY.pop(name, None)


# Names the studio can offer, with one line each.
def available_models() -> dict[str, str]:
    models = {"default": "the embedded tiny world (procedural heads, small networks, runs on a CPU)"}
    models.update({name: text for name, (_, text) in EG3D_MODELS.items()})
    models.update({name: text or "registered model" for name, (_, text) in _REGISTRY.items()})
    return models


# Load a world by name: "default" (embedded tiny world), "eg3d-ffhq" / "eg3d-ffhq-rebalanced" (released weights),
# a registered name, or a path to a generator file (used with the released networks). Unknown names fail loudly.
def load_bundle(name: str = "default", device: str | torch.device = "cpu") -> ModelBundle:
    device = str(device)
    if name in _REGISTRY:
        bundle = _REGISTRY[name][0](device)
        bundle.name = name  # runs record the name the model is loaded by
        return bundle
    if name == "default":
        try:
            import guide_core.world as world
            loader = world.load_bundle
        except (ImportError, AttributeError) as exc:
            raise RuntimeError(f"the embedded default world is not available in this installation ({exc})") from None
        return loader(device)
    if name in EG3D_MODELS:
        return _released_bundle(name, EG3D_MODELS[name][0], None, device)
    path = Path(os.path.expanduser(name))
    if path.suffix in (".pkl", ".safetensors", ".pt", ".pth") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"generator file {path} does not exist")
        return _released_bundle(path.name, None, path, device)
    known = ", ".join(available_models())
    raise ValueError(f"unknown model {name!r}; known models: {known} (or a path to a generator file)")


# The weight name that fills a released generator: guide's converted .safetensors of it when installed (the same
# weights with no pickle to read; `weights publish` and a host's mirror provide it), else the original pickle. Only a
# manifest entry that declares itself converted from this very generator qualifies.
def released_generator_name(generator_name: str) -> str:
    from guide_core import weights
    from guide_core.hub import converted_name

    converted = converted_name(generator_name)
    return converted if converted is not None and weights.is_installed(converted) else generator_name


# Every weight name a released model needs, its generator resolved as above (what "installed" means for a model).
def required_weights(model: str) -> list[str]:
    return [released_generator_name(EG3D_MODELS.get(model, (model, ""))[0]), *NET_WEIGHTS.values()]


# Resolve every weight file a released-model bundle needs; one error names all that are missing.
def _require_all(names: dict[str, str]) -> dict[str, Path]:
    from guide_core import weights

    found, missing = {}, []
    for role, weight_name in names.items():
        try:
            found[role] = Path(weights.require(weight_name))
        except Exception:  # noqa: BLE001 - every failure becomes one item of the combined message
            try:
                file = weights.entry(weight_name).get("file", "?")
            except Exception:  # noqa: BLE001 - an unknown name still gets listed
                file = "?"
            missing.append(f"{weight_name} ({file}, {role})")
    if missing:
        raise FileNotFoundError(f"missing weight files: {', '.join(missing)}; put them in {weights.weights_dir()} or "
                                "run `python -m guide_core weights fetch NAME` (how to get each: "
                                "`python -m guide_core weights status`)")
    return found


# The released EG3D generator with the real networks (GOAE encoder, IR-SE50 loss net, IR-101 metric net, LPIPS-VGG,
# Inception for FID, the EG3D face crop). Pivot (0, 0, 0): GUIDE's scripts read a rendering key that EG3D does not
# define (`avg_cam_pivot`) and so fall back to the origin; the paper's numbers were made with that camera.
def _released_bundle(name: str, generator_name: str | None, generator_path: Path | None, device: str) -> ModelBundle:
    from guide_core import weights

    needed = dict(NET_WEIGHTS)
    if generator_name is not None:
        needed = {"generator": released_generator_name(generator_name), **needed}
    files = _require_all(needed)
    G = weights.load_generator(files.get("generator", generator_path), device=device)
    w_avg = weights.w_avg(G, generator_name or str(generator_path))

    from guide_core import faces
    from guide_core.encoders import load_goae
    from guide_core.identity import load_ir101, load_ir_se50
    from guide_core.perceptual import Perceptual

    goae = load_goae(files["encoder"], device=device)
    w_avg = torch.as_tensor(w_avg, dtype=torch.float32, device=device)

    # GOAE predicts an offset from the mean latent; the bundle's encoder returns absolute codes.
    def encode(images: torch.Tensor) -> torch.Tensor:
        return goae.invert(images) + w_avg

    from guide_core.eg3d import camera_params
    cond_c = camera_params(0.0, 0.0, radius=2.7, fov_deg=18.837, pivot=(0.0, 0.0, 0.0))
    return ModelBundle(
        name=name, G=G, w_avg=w_avg, cond_c=cond_c,
        id_loss_net=load_ir_se50(files["id_loss_net"], device=device).eval(),
        id_metric_net=load_ir101(files["id_metric_net"], device=device).eval(),
        perceptual=Perceptual(weights_dir=files["perceptual"].parent, device=device),
        encoder=encode, encoder_resolution=256,
        feature_net=InceptionFeatures(files["feature_net"], device), feature_note=INCEPTION_NOTE,
        align=lambda image: faces.align_face(image).image,
        pivot=(0.0, 0.0, 0.0), real_stats=_optional_weight("ffhq-real-feat"),
        description=EG3D_MODELS.get(name, ("", f"generator {generator_path}"))[1])


# A weight file that improves a bundle but is not required (e.g. the real-image FID statistics).
def _optional_weight(name: str) -> Path | None:
    from guide_core import weights
    try:
        return Path(weights.require(name))
    except Exception:  # noqa: BLE001 - optional: absence only disables the metric that needs it
        return None


# Inception-v3 pool features for FID, with pytorch-fid's architecture and the FID weights loaded from a LOCAL file.
# pytorch-fid fetches its weights by URL inside its constructor; it is handed the verified local state_dict instead,
# so nothing is ever downloaded. Images in [-1, 1] are snapped to 8-bit levels first, as the official evaluation
# saves PNGs and reads them back.
class InceptionFeatures(torch.nn.Module):
    def __init__(self, weights_path: str | os.PathLike, device: str | torch.device = "cpu"):
        super().__init__()
        try:
            import pytorch_fid.inception as fid_inception
        except ImportError:
            raise RuntimeError("Inception features need the pytorch-fid package (pip install pytorch-fid==0.3.0)") \
                from None
        from guide_core.weights import load_torch_state_dict
        state = load_torch_state_dict(weights_path)
        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
        try:
            self.net = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        finally:
            fid_inception.load_state_dict_from_url = original
        self.net.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        levels = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).float() / 255.0
        return self.net(levels)[0].flatten(1)


# ---------------------------------------------------------------------------------------------------------------------
# Random-weight worlds for tests and timing only (never for results): an EG3D TriPlaneGenerator with seeded random
# weights plus small seeded conv nets in the identity / perceptual / feature / encoder roles ("small"), or the
# released architectures at full size with random weights ("paper", for timing the paper profile).

SMALL_RENDERING = {"image_resolution": 32, "disparity_space_sampling": False, "clamp_mode": "softplus",
                   "superresolution_module": "SuperresolutionHybrid2X", "c_gen_conditioning_zero": False,
                   "c_scale": 1.0, "superresolution_noise_mode": "none", "decoder_lr_mul": 1.0, "sr_antialias": True,
                   "depth_resolution": 8, "depth_resolution_importance": 8, "ray_start": 2.25, "ray_end": 3.3,
                   "box_warp": 1, "avg_camera_radius": 2.7, "avg_camera_pivot": [0, 0, 0.2]}
PAPER_RENDERING = {**SMALL_RENDERING, "image_resolution": 512, "superresolution_module": "SuperresolutionHybrid8XDC",
                   "depth_resolution": 48, "depth_resolution_importance": 48}


# Small conv embedding in the identity-network role: images in [-1, 1] -> unit vectors [N, dim].
class RandomEmbedding(torch.nn.Module):
    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.LeakyReLU(0.2),
                                        torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.LeakyReLU(0.2),
                                        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(256, dim))

    # Per-image mean colour removed first, so the shared face colour does not dominate every cosine.
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.body(images - images.mean(dim=(2, 3), keepdim=True))
        return torch.nn.functional.normalize(features - self.body[-1].bias, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


# LPIPS-shaped distance on random conv features: channel-normalised features of two layers, squared difference,
# spatial mean -> [N] (Zhang et al. CVPR 2018 without the learned linear heads).
class RandomPerceptual(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 1, 1), torch.nn.ReLU()),
                                           torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.ReLU())])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, y = layer(x), layer(y)
            fx = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            fy = y / (y.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + (fx - fy).pow(2).sum(dim=1).mean(dim=(1, 2))
        return total


# Small conv encoder in the GOAE role: image -> w_avg + a small offset per ws row.
class RandomEncoder(torch.nn.Module):
    def __init__(self, num_ws: int, w_avg: torch.Tensor, seed: int = 0, scale: float = 1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.num_ws, self.scale = num_ws, scale
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.LeakyReLU(0.2),
                                        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(),
                                        torch.nn.Linear(128, num_ws * 512))
        self.register_buffer("w_avg", w_avg.expand(num_ws, 512).clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        offset = self.body(images).view(-1, self.num_ws, 512)
        return self.w_avg + self.scale * offset


# Square centre crop resized to `size` (the random worlds have no face detector).
def _center_crop(size: int) -> Callable[[Any], Any]:
    def align(image: Any) -> Any:
        from PIL import Image
        w, h = image.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return image.convert("RGB").crop(box).resize((size, size), Image.BICUBIC)
    return align


# A random-weight bundle: "small" (32^2 tri-planes, 32 px images, 16 px neural rendering, 8+8 depth samples, reduced
# widths; well under a second per LTU iteration on a CPU) or "paper" (the ffhq512-128 architecture at full size:
# 512 px, 128 px neural rendering, 48+48 depth samples).
def random_bundle(profile: str = "small", device: str | torch.device = "cpu", seed: int = 0) -> ModelBundle:
    from guide_core.eg3d import TriPlaneGenerator, camera_params

    if profile not in ("small", "paper"):
        raise ValueError(f"unknown random-bundle profile {profile!r}; use 'small' or 'paper'")
    small = profile == "small"
    rendering = dict(SMALL_RENDERING if small else PAPER_RENDERING)
    widths = dict(channel_base=1024, channel_max=32) if small else dict(channel_base=32768, channel_max=512)
    torch.manual_seed(seed)
    G = TriPlaneGenerator(z_dim=512, c_dim=25, w_dim=512, img_resolution=rendering["image_resolution"],
                          img_channels=3, sr_num_fp16_res=0, mapping_kwargs={"num_layers": 2},
                          rendering_kwargs=rendering,
                          sr_kwargs={**widths, "fused_modconv_default": "inference_only"} if not small else
                          {"channel_base": 1024, "channel_max": 32, "fused_modconv_default": "inference_only"},
                          num_fp16_res=0, conv_clamp=None, fused_modconv_default="inference_only", **widths)
    if small:
        # Tri-planes of 32^2 instead of EG3D's fixed 256^2: the same generator family, ~60x less work per code.
        from guide_core.eg3d.networks import StyleGAN2Backbone
        G.backbone = StyleGAN2Backbone(512, 25, 512, img_resolution=32, img_channels=96,
                                       mapping_kwargs={"num_layers": 2}, num_fp16_res=0, conv_clamp=None,
                                       fused_modconv_default="inference_only", **widths)
    G.neural_rendering_resolution = 16 if small else 128
    G = G.to(device)
    cond_c = camera_params(0.0, 0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        z = torch.randn(2000, 512, generator=gen).to(device)
        w_avg = G.mapping(z, cond_c.to(device).expand(2000, -1)).mean(dim=0)
    num_ws = int(G.backbone.mapping.num_ws)
    if small:
        id_loss, id_metric = RandomEmbedding(seed=seed + 2), RandomEmbedding(seed=seed + 3)
        perceptual: Any = RandomPerceptual(seed=seed + 4)
    else:
        from guide_core.identity import IdentityNet, IRBackbone
        torch.manual_seed(seed + 2)
        id_loss = IdentityNet(IRBackbone(num_layers=50, mode="ir_se", drop_ratio=0.6, affine_output=True), "idloss")
        id_metric = IdentityNet(IRBackbone(num_layers=100, mode="ir", drop_ratio=0.4, affine_output=False),
                                "eg3d_crop")
        perceptual = _random_lpips()
    feature = RandomEmbedding(dim=16, seed=seed + 5)
    encoder = RandomEncoder(num_ws, w_avg, seed=seed + 6)
    for net in (id_loss, id_metric, perceptual, feature, encoder):
        net.to(device).eval().requires_grad_(False)
    return ModelBundle(name=f"random-{profile}", G=G, w_avg=w_avg, cond_c=cond_c, id_loss_net=id_loss,
                       id_metric_net=id_metric, perceptual=perceptual, encoder=encoder,
                       encoder_resolution=rendering["image_resolution"], feature_net=feature,
                       feature_note="random conv features (random test world, not Inception)",
                       align=_center_crop(rendering["image_resolution"]),
                       description=f"random weights ({profile}): tests and timing only")


# LPIPS-VGG with random VGG weights (the lpips package's own linear heads; nothing is downloaded).
def _random_lpips() -> torch.nn.Module:
    import lpips

    net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)

    # The lpips module returns [N,1,1,1]; the bundle contract is [N].
    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(x, y).reshape(-1)

    return Flat()
