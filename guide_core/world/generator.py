"""The world's tri-plane generator: its architecture, and loading it back from saved weights.

``guide_core.eg3d.TriPlaneGenerator`` (EG3D, Chan et al. CVPR 2022) at tiny widths, trained supervised so that
``G(mapping(z), c)`` reproduces the procedural render of ``params_from_z(z)`` from camera ``c``. Because G is the real
EG3D class, GUIDE (Seo et al. CVPR 2024) runs on it unchanged: w_avg is tracked by the mapping network during
training, and truncation and UFO extrapolation move along the same w space. The trainer is ``tools.world.generator``;
how the shipped weights were trained, and the measurements behind the choices below, are in docs/world.md.
"""
from __future__ import annotations

import json
import math

import torch

from guide_core.eg3d import TriPlaneGenerator
from guide_core.eg3d.superresolution import SUPERRESOLUTION_MODULES, SuperresolutionHybrid2X
from guide_core.world.cameras import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS
from guide_core.world.heads import Z_DIM


class WorldSuperresolution2X(SuperresolutionHybrid2X):
    """EG3D's 2X super-resolution (32 -> 64 px) with narrow blocks.

    The released widths (128, 64) would cost most of a CPU training step at this size.
    """

    widths = (32, 32)


SUPERRESOLUTION_MODULES.setdefault("WorldSuperresolution2X", WorldSuperresolution2X)

NEURAL_RENDERING_RESOLUTION = 32
# Tri-plane resolution of the world generator. EG3D's planes are 256^2; at 64 px output and 32 px neural rendering,
# 64^2 planes carry the same detail and cut the CPU cost of a training step several times (same classes, fewer
# synthesis blocks).
PLANE_RESOLUTION = 64
# Layers of the mapping network (StyleGAN's 8), a fresh run's depth. The mapping is where this world's PSNR is lost
# (docs/world.md), so its depth is a training option; saved weights say their own depth.
MAPPING_LAYERS = 8
# Whether the mapping network divides z by its RMS first, as EG3D's does. The world's z -> parameters map
# (heads.params_from_z) reads z's length too, so that division loses a common stretch of all 37 parameters, an error
# floor no generator built that way can pass (docs/world.md). World generators read z as it is; saved configs without
# the key are EG3D's (they were trained that way).
NORMALIZE_Z = False
# Synthesis widths (EG3D's channel_base / channel_max): the block at resolution r has min(base // r, max) channels, so
# 1024 / 64 gives 64 channels up to 16², 32 at 32² and 16 at 64². A trained generator can be grown to larger widths
# without changing what it draws (tools.world.generator.widen_state).
CHANNEL_BASE = 1024
CHANNEL_MAX = 64
# Constructor arguments of the world's generator (the original's init_kwargs layout).
GENERATOR_KWARGS: dict = {
    "z_dim": Z_DIM, "c_dim": 25, "w_dim": 512, "img_resolution": 64, "img_channels": 3, "sr_num_fp16_res": 0,
    # lr_multiplier 0.25 instead of StyleGAN's 0.01: supervised regression has no GAN instability to damp.
    "mapping_kwargs": {"num_layers": MAPPING_LAYERS, "lr_multiplier": 0.25, "normalize_z": NORMALIZE_Z},
    "channel_base": CHANNEL_BASE, "channel_max": CHANNEL_MAX, "num_fp16_res": 0, "conv_clamp": None,
    "rendering_kwargs": {
        "image_resolution": 64, "disparity_space_sampling": False, "clamp_mode": "softplus",
        "superresolution_module": "WorldSuperresolution2X", "c_gen_conditioning_zero": True, "gpc_reg_prob": 0.0,
        "c_scale": 1.0, "superresolution_noise_mode": "none", "density_reg": 0.0, "density_reg_p_dist": 0.004,
        "reg_type": "l1", "decoder_lr_mul": 1.0, "sr_antialias": True, "depth_resolution": 12,
        "depth_resolution_importance": 12, "ray_start": 2.25, "ray_end": 3.3, "box_warp": 1.0,
        "avg_camera_radius": AVG_CAMERA_RADIUS, "avg_camera_pivot": list(AVG_CAMERA_PIVOT)},
    "sr_kwargs": {},
}


def _init_kwargs(mapping_layers: int, normalize_z: bool, channel_base: int = CHANNEL_BASE,
                 channel_max: int = CHANNEL_MAX) -> dict:
    """GENERATOR_KWARGS (a deep copy) with the mapping options and synthesis widths a world generator may vary."""
    kwargs = json.loads(json.dumps(GENERATOR_KWARGS))
    kwargs["mapping_kwargs"].update(num_layers=mapping_layers, normalize_z=normalize_z)
    kwargs.update(channel_base=channel_base, channel_max=channel_max)
    return kwargs


def build_generator(seed: int = 0, plane_resolution: int = PLANE_RESOLUTION, mapping_layers: int = MAPPING_LAYERS,
                    normalize_z: bool = NORMALIZE_Z, channel_base: int = CHANNEL_BASE,
                    channel_max: int = CHANNEL_MAX) -> TriPlaneGenerator:
    """A fresh world generator (seeded initialisation)."""
    torch.manual_seed(seed)
    G = TriPlaneGenerator(**_init_kwargs(mapping_layers, normalize_z, channel_base, channel_max),
                          plane_resolution=plane_resolution)
    G.neural_rendering_resolution = NEURAL_RENDERING_RESOLUTION
    return G


def plane_resolution_of(state: dict[str, torch.Tensor]) -> int:
    """The tri-plane resolution a saved generator was built with: its last block (backbone.synthesis.b<res>)."""
    blocks = [int(k.split(".")[2][1:]) for k in state if k.startswith("backbone.synthesis.b")]
    if not blocks:
        raise ValueError("not a world generator state dict: no backbone.synthesis.b<res> keys")
    return max(blocks)


def mapping_layers_of(state: dict[str, torch.Tensor]) -> int:
    """The mapping depth a saved generator was built with: its backbone.mapping.fc<i> layers."""
    layers = {k.split(".")[2] for k in state if k.startswith("backbone.mapping.fc")}
    if not layers:
        raise ValueError("not a world generator state dict: no backbone.mapping.fc<i> keys")
    return len(layers)


def synthesis_channels_of(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """The synthesis widths (channel_base, channel_max) a saved generator was built with.

    Read from its blocks' channel counts (min(base // r, max) at resolution r; when no block is below the maximum, any
    base from max * r_last up fits).
    """
    last = plane_resolution_of(state)
    channels = {r: state[f"backbone.synthesis.b{r}.conv1.weight"].shape[0]
                for r in (2 ** i for i in range(2, int(math.log2(last)) + 1))}
    channel_max = max(channels.values())
    narrower = [r * c for r, c in channels.items() if c < channel_max]
    return (min(narrower) if narrower else channel_max * last), channel_max


def generator_config(G: TriPlaneGenerator) -> dict:
    """The JSON config saved beside a world generator's weights (weights/default/generator.json, checkpoints)."""
    mapping = G.backbone.mapping
    widths = synthesis_channels_of(G.state_dict())
    return {"init_kwargs": _init_kwargs(mapping.num_layers, mapping.normalize_z, *widths),
            "plane_resolution": G.backbone.synthesis.img_resolution,
            "neural_rendering_resolution": NEURAL_RENDERING_RESOLUTION}


def checkpoint_config(ckpt: dict) -> dict:
    """The generator config inside a training checkpoint ({} for one written before checkpoints carried it)."""
    return json.loads(ckpt.get("config", "{}"))


def normalize_z_of(config: dict) -> bool:
    """Whether a saved world generator divides z by its RMS: configs written before the option are EG3D's (yes)."""
    return bool(config.get("init_kwargs", {}).get("mapping_kwargs", {}).get("normalize_z", True))


def load_world_generator(state: dict[str, torch.Tensor], config: dict) -> TriPlaneGenerator:
    """A generator from a saved state dict and its config (generator_config; {} for one saved without it)."""
    channel_base, channel_max = synthesis_channels_of(state)
    G = build_generator(plane_resolution=plane_resolution_of(state), mapping_layers=mapping_layers_of(state),
                        normalize_z=normalize_z_of(config), channel_base=channel_base, channel_max=channel_max)
    G.load_state_dict(state)
    return G.eval().requires_grad_(False)


def generator_from_checkpoint(ckpt: dict) -> TriPlaneGenerator:
    """The generator of a training checkpoint (runs/world/generator/ckpt.pt, loaded)."""
    return load_world_generator(ckpt["G"], checkpoint_config(ckpt))
