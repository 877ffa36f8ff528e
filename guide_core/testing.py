"""Random-weight worlds for tests and timing only (never for results): an EG3D TriPlaneGenerator with seeded random
weights plus small seeded conv nets in the identity / perceptual / feature / encoder roles ("small"), or the
released architectures at full size with random weights ("paper", for timing the paper profile); "sg2-small" and
"sg2-paper" are the same for the 2D StyleGAN2 family (GUIDE-SG2).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from guide_core.bundle import ModelBundle
from guide_core.eg3d.camera import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS

SMALL_RENDERING = {"image_resolution": 32, "disparity_space_sampling": False, "clamp_mode": "softplus",
                   "superresolution_module": "SuperresolutionHybrid2X", "c_gen_conditioning_zero": False,
                   "c_scale": 1.0, "superresolution_noise_mode": "none", "decoder_lr_mul": 1.0, "sr_antialias": True,
                   "depth_resolution": 8, "depth_resolution_importance": 8, "ray_start": 2.25, "ray_end": 3.3,
                   "box_warp": 1, "avg_camera_radius": AVG_CAMERA_RADIUS,
                   "avg_camera_pivot": list(AVG_CAMERA_PIVOT)}
PAPER_RENDERING = {**SMALL_RENDERING, "image_resolution": 512, "superresolution_module": "SuperresolutionHybrid8XDC",
                   "depth_resolution": 48, "depth_resolution_importance": 48}


class RandomEmbedding(torch.nn.Module):
    """Small conv embedding in the identity-network role: images in [-1, 1] -> unit vectors [N, dim]."""
    def __init__(self, dim: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.LeakyReLU(0.2),
                                        torch.nn.Conv2d(8, 16, 3, 2, 1), torch.nn.LeakyReLU(0.2),
                                        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(256, dim))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image mean colour removed first, so the shared face colour does not dominate every cosine."""
        features = self.body(images - images.mean(dim=(2, 3), keepdim=True))
        return torch.nn.functional.normalize(features - self.body[-1].bias, dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)


class RandomPerceptual(torch.nn.Module):
    """LPIPS-shaped distance on random conv features: channel-normalised features of two layers, squared difference,
    spatial mean -> [N] (Zhang et al. CVPR 2018 without the learned linear heads).
    """
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


class RandomEncoder(torch.nn.Module):
    """Small conv encoder in the GOAE role: image -> w_avg + a small offset per ws row."""
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


def _center_crop(size: int) -> Callable[[Any], Any]:
    """Square centre crop resized to `size` (the random worlds have no face detector)."""
    def align(image: Any) -> Any:
        from PIL import Image
        w, h = image.size
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        return image.convert("RGB").crop(box).resize((size, size), Image.BICUBIC)
    return align


def random_bundle(profile: str = "small", device: str | torch.device = "cpu", seed: int = 0) -> ModelBundle:
    """A random-weight bundle: "small" (32^2 tri-planes, 32 px images, 16 px neural rendering, 8+8 depth samples,
    reduced
    widths; well under a second per LTU iteration on a CPU) or "paper" (the ffhq512-128 architecture at full size:
    512 px, 128 px neural rendering, 48+48 depth samples).
    """
    from guide_core.eg3d import TriPlaneGenerator, camera_params
    from guide_core.config import LTUConfig
    from guide_core.released import RELEASED_LTU_DEFAULTS

    if profile in ("sg2-small", "sg2-paper"):
        return random_sg2_bundle(profile, device, seed)
    if profile not in ("small", "paper"):
        raise ValueError(f"unknown random-bundle profile {profile!r}; use small, paper, sg2-small or sg2-paper")
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
    id_loss, id_metric, perceptual, feature = _loss_nets(small, seed, "eg3d_crop", device)
    encoder = RandomEncoder(num_ws, w_avg, seed=seed + 6).to(device).eval().requires_grad_(False)
    return ModelBundle(name=f"random-{profile}", G=G, w_avg=w_avg, cond_c=cond_c, id_loss_net=id_loss,
                       id_metric_net=id_metric, perceptual=perceptual, encoder=encoder,
                       encoder_resolution=rendering["image_resolution"], feature_net=feature,
                       feature_note="random conv features (random test world, not Inception)",
                       align=_center_crop(rendering["image_resolution"]),
                       description=f"random weights ({profile}): tests and timing only",
                       ltu_defaults=LTUConfig() if small else RELEASED_LTU_DEFAULTS)


def random_sg2_bundle(profile: str = "sg2-small", device: str | torch.device = "cpu", seed: int = 0) -> ModelBundle:
    """A random-weight 2D bundle: "sg2-small" (a 32 px StyleGAN2 of width 32 with a 2-layer mapping, the small nets
    of "small") or "sg2-paper" (FFHQ config-f at 1024 px, renders pooled to 256 as pSp does, IR-SE50 / IR-101 /
    LPIPS-VGG at full size)."""
    from guide_core.backends import StyleGAN2Backend
    from guide_core.config import LTUConfig
    from guide_core.stylegan2 import StyleGAN2Generator

    small = profile == "sg2-small"
    torch.manual_seed(seed)
    G = (StyleGAN2Generator(size=32, n_mlp=2, max_channels=32) if small else StyleGAN2Generator(size=1024)).to(device)
    with torch.no_grad():
        w_avg = G.mean_latent(2000, generator=torch.Generator().manual_seed(seed + 1)).expand(G.num_ws, -1).clone()
    id_loss, id_metric, perceptual, feature = _loss_nets(small, seed, "idloss", device)
    encoder = RandomEncoder(G.num_ws, w_avg[0], seed=seed + 6).to(device).eval().requires_grad_(False)
    size = 32 if small else 256
    return ModelBundle(name=f"random-{profile}", G=G, w_avg=w_avg, cond_c=None, backend=StyleGAN2Backend(size),
                       id_loss_net=id_loss, id_metric_net=id_metric, perceptual=perceptual, encoder=encoder,
                       encoder_resolution=size, feature_net=feature,
                       feature_note="random conv features (random test world, not Inception)",
                       align=_center_crop(size), description=f"random weights ({profile}): tests and timing only",
                       ltu_defaults=LTUConfig(checkpoint_synthesis=not small))


def _loss_nets(small: bool, seed: int, metric_preprocessing: str, device: str | torch.device) -> tuple:
    """Identity loss net, identity metric net, perceptual distance and feature net of a random world, frozen: small
    seeded conv nets, or (paper size) IR-SE50 / IR-101 with random weights and LPIPS-VGG on a random VGG."""
    if small:
        id_loss, id_metric = RandomEmbedding(seed=seed + 2), RandomEmbedding(seed=seed + 3)
        perceptual: Any = RandomPerceptual(seed=seed + 4)
    else:
        from guide_core.identity import IdentityNet, IRBackbone
        torch.manual_seed(seed + 2)
        id_loss = IdentityNet(IRBackbone(num_layers=50, mode="ir_se", drop_ratio=0.6, affine_output=True), "idloss")
        id_metric = IdentityNet(IRBackbone(num_layers=100, mode="ir", drop_ratio=0.4, affine_output=False),
                                metric_preprocessing)
        perceptual = _random_lpips()
    nets = (id_loss, id_metric, perceptual, RandomEmbedding(dim=16, seed=seed + 5))
    return tuple(net.to(device).eval().requires_grad_(False) for net in nets)


def _random_lpips() -> torch.nn.Module:
    """LPIPS-VGG with random VGG weights (the lpips package's own linear heads; nothing is downloaded)."""
    import lpips

    net = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)

    class Flat(torch.nn.Module):
        """The lpips module returns [N,1,1,1]; the bundle contract is [N]."""
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(x, y).reshape(-1)

    return Flat()
