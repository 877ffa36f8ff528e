# The world's tri-plane generator: guide_core.eg3d.TriPlaneGenerator (EG3D, Chan et al. CVPR 2022) at tiny widths,
# trained SUPERVISED so that G(mapping(z), c) reproduces the procedural render of params_from_z(z) from camera c.
# Because G is the real EG3D class, GUIDE (Seo et al. CVPR 2024) runs on it unchanged: w_avg is tracked by the
# mapping network during training, truncation and UFO extrapolation move along the same w space.
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from guide_core.eg3d import TriPlaneGenerator
from guide_core.eg3d.superresolution import SUPERRESOLUTION_MODULES, SuperresolutionHybrid2X
from guide_core.world.cameras import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS
from guide_core.world.data import WorldData, load_checkpoint, load_dataset, load_exported, save_checkpoint
from guide_core.world.heads import Z_DIM


# EG3D's 2X super-resolution (32 -> 64 px) with narrow blocks: the released widths (128, 64) would cost most of a
# CPU training step at this size.
class WorldSuperresolution2X(SuperresolutionHybrid2X):
    widths = (32, 32)


SUPERRESOLUTION_MODULES.setdefault("WorldSuperresolution2X", WorldSuperresolution2X)

NEURAL_RENDERING_RESOLUTION = 32
# Tri-plane resolution of the world generator. EG3D's planes are 256^2; at 64 px output and 32 px neural rendering,
# 64^2 planes carry the same detail and cut the CPU cost of a training step several times (same classes, fewer
# synthesis blocks).
PLANE_RESOLUTION = 64
# Layers of the mapping network (StyleGAN's 8). The mapping is where this world's PSNR is lost (one w fitted per person
# beats mapping(z) by 2-3 dB on unseen views, README); trained from scratch, 8 layers ended 0.1-0.15 dB above 4 with z
# normalised, and reading z as it is, with longer polishing, reached 23.95 dB (a 4-layer net after 22,000 steps:
# 23.36). Read back from saved weights.
MAPPING_LAYERS = 8
# Whether the mapping network divides z by its RMS first, as EG3D's does. The world's z -> parameters map
# (heads.params_from_z) reads z's length too, so that division loses a common stretch of all 37 parameters (about
# +-12 %): its best guess renders at only 32.6 dB from the truth, and a generator trained with it stalls lower
# (README). World generators read z as it is; saved configs without the key are EG3D's (they were trained that way).
NORMALIZE_Z = False
# Synthesis widths (EG3D's channel_base / channel_max): the block at resolution r has min(base // r, max) channels, so
# 1024 / 64 gives 64 channels up to 16², 32 at 32² and 16 at 64². `train generator --channel-base --channel-max
# --widen` grows a trained generator to larger widths without changing what it draws (widen_state).
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


# GENERATOR_KWARGS (a deep copy) with the mapping options and synthesis widths a world generator may vary.
def _init_kwargs(mapping_layers: int, normalize_z: bool, channel_base: int = CHANNEL_BASE,
                 channel_max: int = CHANNEL_MAX) -> dict:
    kwargs = json.loads(json.dumps(GENERATOR_KWARGS))
    kwargs["mapping_kwargs"].update(num_layers=mapping_layers, normalize_z=normalize_z)
    kwargs.update(channel_base=channel_base, channel_max=channel_max)
    return kwargs


# A fresh world generator (seeded initialisation).
def build_generator(seed: int = 0, plane_resolution: int = PLANE_RESOLUTION, mapping_layers: int = MAPPING_LAYERS,
                    normalize_z: bool = NORMALIZE_Z, channel_base: int = CHANNEL_BASE,
                    channel_max: int = CHANNEL_MAX) -> TriPlaneGenerator:
    torch.manual_seed(seed)
    G = TriPlaneGenerator(**_init_kwargs(mapping_layers, normalize_z, channel_base, channel_max),
                          plane_resolution=plane_resolution)
    G.neural_rendering_resolution = NEURAL_RENDERING_RESOLUTION
    return G


# The tri-plane resolution a saved generator was built with: its last synthesis block (backbone.synthesis.b<res>).
def plane_resolution_of(state: dict[str, torch.Tensor]) -> int:
    blocks = [int(k.split(".")[2][1:]) for k in state if k.startswith("backbone.synthesis.b")]
    if not blocks:
        raise ValueError("not a world generator state dict: no backbone.synthesis.b<res> keys")
    return max(blocks)


# The mapping depth a saved generator was built with: its backbone.mapping.fc<i> layers.
def mapping_layers_of(state: dict[str, torch.Tensor]) -> int:
    layers = {k.split(".")[2] for k in state if k.startswith("backbone.mapping.fc")}
    if not layers:
        raise ValueError("not a world generator state dict: no backbone.mapping.fc<i> keys")
    return len(layers)


# The synthesis widths (channel_base, channel_max) a saved generator was built with, from its blocks' channel counts
# (min(base // r, max) at resolution r; when no block is below the maximum, any base from max * r_last up fits).
def synthesis_channels_of(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    last = plane_resolution_of(state)
    channels = {r: state[f"backbone.synthesis.b{r}.conv1.weight"].shape[0]
                for r in (2 ** i for i in range(2, int(math.log2(last)) + 1))}
    channel_max = max(channels.values())
    narrower = [r * c for r, c in channels.items() if c < channel_max]
    return (min(narrower) if narrower else channel_max * last), channel_max


# The weights of a wider generator (channel_base / channel_max) that draws exactly what `state` draws (growth as in
# Net2Net, Chen et al. ICLR 2016): each synthesis layer keeps its weights, its new output channels start from the
# fresh initialisation of `seed`, and every weight reading a new channel starts at zero, so the new channels add
# nothing until training moves those weights. Demodulation is unchanged by zero weights; the tRGB layers, which are not
# demodulated, scale their kept weights by sqrt(new / old inputs) to cancel their larger fan-in gain.
def widen_state(state: dict[str, torch.Tensor], channel_base: int, channel_max: int, normalize_z: bool,
                seed: int = 0) -> dict[str, torch.Tensor]:
    fresh = build_generator(seed, plane_resolution_of(state), mapping_layers_of(state), normalize_z, channel_base,
                            channel_max).state_dict()
    wide = {}
    for key, old in state.items():
        new = fresh[key].clone()
        if new.shape == old.shape:
            wide[key] = old.clone()
            continue
        if new.ndim != old.ndim or any(n < o for n, o in zip(new.shape, old.shape)):
            raise ValueError(f"cannot widen {key} from {list(old.shape)} to {list(new.shape)}: the new widths "
                             f"({channel_base} / {channel_max}) are narrower than the saved generator's")
        if old.ndim == 4:  # [out, in, k, k]: kept outputs must not read the new inputs
            new[:old.shape[0], old.shape[1]:] = 0
            if key.endswith("torgb.weight"):
                old = old * math.sqrt(new.shape[1] / old.shape[1])
        new[tuple(slice(0, n) for n in old.shape)] = old
        wide[key] = new
    return wide


# The JSON config saved beside a world generator's weights (weights/default/generator.json, training checkpoints).
def generator_config(G: TriPlaneGenerator) -> dict:
    mapping = G.backbone.mapping
    widths = synthesis_channels_of(G.state_dict())
    return {"init_kwargs": _init_kwargs(mapping.num_layers, mapping.normalize_z, *widths),
            "plane_resolution": G.backbone.synthesis.img_resolution,
            "neural_rendering_resolution": NEURAL_RENDERING_RESOLUTION}


# The generator config inside a training checkpoint ({} for one written before checkpoints carried it).
def checkpoint_config(ckpt: dict) -> dict:
    return json.loads(ckpt.get("config", "{}"))


# Whether a saved world generator divides z by its RMS: configs written before the option are EG3D's (yes).
def normalize_z_of(config: dict) -> bool:
    return bool(config.get("init_kwargs", {}).get("mapping_kwargs", {}).get("normalize_z", True))


# Peak signal-to-noise ratio of images in [-1, 1] (peak-to-peak 2), per image.
def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).pow(2).mean((1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(4.0 / mse)


# Held-out quality: PSNR of G(mapping(z), c) against the procedural renders of unseen people and poses.
@torch.no_grad()
def evaluate_generator(G: TriPlaneGenerator, data: WorldData, n: int = 64, batch: int = 16) -> dict[str, float]:
    G.eval()
    values, raw_values = [], []
    for i in range(0, min(n, len(data)), batch):
        idx = torch.arange(i, min(i + batch, n, len(data)), device=data.z.device)
        out = G(data.z[idx], data.c[idx], noise_mode="const", deterministic=True)
        target = data.images(idx)
        values.append(psnr(out["image"], target))
        raw_values.append(psnr(out["image_raw"], F.adaptive_avg_pool2d(target, out["image_raw"].shape[-1])))
    v, r = torch.cat(values), torch.cat(raw_values)
    return {"psnr": v.mean().item(), "psnr_min": v.min().item(), "psnr_raw": r.mean().item(), "n": len(v)}


# Views of one latent agree across cameras: PSNR of G against the anti-aliased procedural render (2x2 supersampled)
# of the same held-out people at several yaws, per yaw; a 3D-consistent generator scores alike at every yaw.
@torch.no_grad()
def multiview_psnr(G: TriPlaneGenerator, n_people: int = 6, yaws: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5),
                   seed: int = 31337) -> dict[str, float]:
    from guide_core.world.cameras import camera_params
    from guide_core.world.heads import random_z, render_z
    G.eval()
    z = random_z(n_people, seed).repeat_interleave(len(yaws), 0)
    c = camera_params(torch.tensor(yaws).repeat(n_people), torch.zeros(n_people * len(yaws)))
    target = render_z(z, c, 64).image
    image = G(z, c, noise_mode="const", deterministic=True)["image"]
    per_view = psnr(image, target).view(n_people, len(yaws)).mean(0)
    return {f"psnr_yaw{y:+.2f}": v.item() for y, v in zip(yaws, per_view)}


# The world's perceptual loss during training: the identity net the run started with (kept in the generator's own
# checkpoint, since the identity net is later retrained on this generator's renders), else the one in identity_dir
# when trained, else None.
def _perceptual(identity_dir: Path | None, resumed: dict | None = None, device: str = "cpu"):
    from guide_core.world.identity import WorldPerceptual, load_identity_net
    if resumed is not None and "perceptual_net" in resumed:
        net_state, config = resumed["perceptual_net"], resumed["perceptual_config"]
    elif identity_dir is not None and (Path(identity_dir) / "ckpt.pt").exists():
        state = torch.load(Path(identity_dir) / "ckpt.pt", weights_only=True)
        net_state, config = state["net"], state["config"]
    else:
        return None
    net = load_identity_net(net_state, json.loads(config)).requires_grad_(False)
    return WorldPerceptual(net).to(device)


def _perceptual_state(perceptual) -> dict:
    if perceptual is None:
        return {}
    return {"perceptual_net": perceptual.net.state_dict(), "perceptual_config": json.dumps(perceptual.net.config)}


def _chunks(folder: Path) -> int:
    return len(list(Path(folder).glob("chunk_*.pt")))


# The GeneratorTrainConfig fields a training leg records (the schedule the model card lists as each call's flags).
LEG_KEYS = ("steps", "polish_steps", "lr", "polish_lr", "batch", "normalize_z")
# Keys of a training leg that mark how it started rather than its schedule: a run resumed with the same schedule
# continues that leg.
LEG_MARKS = ("init_from", "widened_from", "widened_to")
# Steps of the polish phase of the shipped generator's first leg (GeneratorTrainConfig.polish_steps).
POLISH_STEPS = 5000
# Adam's peak learning rates of the main and polish phases (GeneratorTrainConfig; `train generator --lr --polish-lr`).
LR = 2e-3
POLISH_LR = 2e-4
# Weight of the squared error in the polish phase: 10 * MSE is about the size of the L1 term it replaces.
MSE_WEIGHT = 10.0


# One supervised step's loss: image error (64 px) + raw neural render error (32 px) + depth L1 on the head +
# perceptual. The image error is L1 (`pixel="l1"`, the main phase) or MSE (`pixel="mse"`, the polish phase).
def generator_loss(G: TriPlaneGenerator, data: WorldData, idx: torch.Tensor, perceptual=None,
                   lambda_depth: float = 1.0, lambda_per: float = 1.0,
                   pixel: str = "l1") -> tuple[torch.Tensor, dict[str, float]]:
    if pixel not in ("l1", "mse"):
        raise ValueError(f"pixel loss must be 'l1' or 'mse', got {pixel!r}")
    z, c = data.z[idx], data.c[idx]
    ws = G.mapping(z, c, update_emas=True)
    out = G.synthesis(ws, c, noise_mode="const")
    target = data.images(idx)
    size = out["image_raw"].shape[-1]
    target_raw = F.adaptive_avg_pool2d(target, size)
    depth = F.adaptive_avg_pool2d(data.depth[idx].float(), size)
    head = (F.adaptive_avg_pool2d((data.depth[idx].float() < 3.2).float(), size) > 0.99).float()
    error = (lambda a, b: (a - b).abs().mean()) if pixel == "l1" else (lambda a, b: MSE_WEIGHT * (a - b).pow(2).mean())
    l_img = error(out["image"], target)
    l_raw = error(out["image_raw"], target_raw)
    l_depth = ((out["image_depth"] - depth).abs() * head).sum() / head.sum().clamp(min=1)
    loss = l_img + l_raw + lambda_depth * l_depth
    parts = {"img": l_img.item(), "raw": l_raw.item(), "depth": l_depth.item()}
    if perceptual is not None:
        l_per = perceptual(out["image"], target).mean()
        loss = loss + lambda_per * l_per
        parts["per"] = l_per.item()
    return loss, parts


# The learning rate at `step` of a schedule: main phase warm-up, then cosine decay to a tenth; polish phase warm-up,
# then cosine decay to zero (a longer polish resumed mid-way restarts at this rate).
def learning_rate(step: int, steps: int, polish_steps: int, lr: float, polish_lr: float) -> float:
    if step >= steps:
        k = step - steps
        return polish_lr * min(1.0, (k + 1) / 200) * 0.5 * (1 + math.cos(math.pi * k / polish_steps))
    return lr * min(1.0, (step + 1) / 200) * (0.55 + 0.45 * math.cos(math.pi * step / steps))


# How train_generator trains (`train generator`'s flags; `dataclasses.replace(GeneratorTrainConfig(), steps=2)` for
# another run): the shipped generator's settings, from its training legs in weights/default/metrics.json and its model
# card. The architecture fields are a fresh run's (build_generator's): the shipped net was built at these widths with a
# 4-layer mapping and widened to 4096 / 128 later, and the model card names every call's architecture as the flags that
# differ from these defaults (`--mapping-layers 4 --channel-base 4096 --channel-max 128`).
@dataclass(frozen=True)
class GeneratorTrainConfig:
    # main phase: the shipped generator's first leg, the one from scratch (metrics.json legs[0]); later legs polished
    steps: int = field(default=17000, metadata={"help": "steps of the main phase (L1 + perceptual)"})
    # legs[0] (POLISH_STEPS)
    polish_steps: int = field(default=POLISH_STEPS, metadata={
        "help": "steps after --steps with MSE and no perceptual loss (a longer polish resumed mid-way restarts its "
                "learning rate)"})
    # every leg of the shipped generator (metrics.json)
    batch: int = field(default=8, metadata={"help": "photos per step"})
    # the `train` default; no shipped run records another
    seed: int = field(default=0, metadata={"help": "initialisation and data-order seed"})
    # every leg (LR)
    lr: float = field(default=LR, metadata={"help": "Adam's peak learning rate in the main phase, cosine to a tenth"})
    # legs 0-3 (POLISH_LR); the last leg's 3e-4 restarted a polish that had already ended
    polish_lr: float = field(default=POLISH_LR, metadata={
        "help": "Adam's peak learning rate in the polish phase, cosine to zero"})
    # model card: the first 30 % of the steps at 16² neural rendering
    coarse_fraction: float = field(default=0.3, metadata={
        "help": "share of --steps rendered at half the neural rendering resolution (coarse-to-fine)"})
    # model card: depth L1 and perceptual terms unweighted (generator_loss)
    lambda_depth: float = field(default=1.0, metadata={"help": "weight of the depth L1 on the head (main phase)"})
    lambda_per: float = field(default=1.0, metadata={"help": "weight of the perceptual term (main phase)"})
    # weights/default/generator.json
    plane_resolution: int = field(default=PLANE_RESOLUTION, metadata={
        "help": "tri-plane resolution (EG3D: 256)"})
    # a fresh run's depth (see above; the shipped net: 4)
    mapping_layers: int = field(default=MAPPING_LAYERS, metadata={
        "help": "depth of the mapping network (StyleGAN: 8; the shipped net: 4)"})
    # legs 1-4 and weights/default/generator.json
    normalize_z: bool = field(default=NORMALIZE_Z, metadata={
        "help": "divide z by its RMS before the mapping, as EG3D does (the world's parameters depend on z's length, "
                "so by default z goes in as it is)"})
    # a fresh run's widths (see above; the shipped net: 4096 / 128, widened)
    channel_base: int = field(default=CHANNEL_BASE, metadata={
        "help": "synthesis width, EG3D's channel_base (a block at resolution r has min(base // r, max) channels; the "
                "shipped net: 4096, widened)"})
    channel_max: int = field(default=CHANNEL_MAX, metadata={
        "help": "synthesis width cap, EG3D's channel_max (the shipped net: 128, widened)"})
    # bookkeeping, no effect on the weights: the trainer's own defaults
    ckpt_every: int = field(default=100, metadata={"help": "steps between checkpoints"})
    eval_every: int = field(default=500, metadata={"help": "steps between held-out evaluations"})


# Supervised training with checkpoints (resumable); reloads the data folder as background rendering adds chunks.
# Two phases. Main (`config.steps`): L1 + perceptual, cosine decay from `lr` to a tenth. Polish (`polish_steps` more):
# MSE without the perceptual term at a small learning rate decaying to zero. PSNR scores the squared error, and under
# L1 + perceptual the net draws an uncertain edge sharp but misplaced; MSE moves it to the mean (a 4-layer generator:
# 23.07 dB after 17,000 main steps, where L1 had stopped gaining; 23.38 dB after 5,000 polish steps). `identity_dir`:
# the perceptual loss's identity net; `init_from`: exported weights to start from when there is no checkpoint to
# resume; `widen`: grow a resumed or exported generator to the config's synthesis widths.
def train_generator(data_dir: Path, heldout_dir: Path, out: Path, config: GeneratorTrainConfig = GeneratorTrainConfig(),
                    *, identity_dir: Path | None = None, init_from: Path | None = None, widen: bool = False,
                    resume: bool = False, device: str = "cpu", log=print) -> dict:
    from tqdm import tqdm
    cfg = config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    coarse_steps = int(cfg.steps * cfg.coarse_fraction)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history, widened = 0, [], False
    ckpt = out / "ckpt.pt"
    state = load_checkpoint(ckpt, gen) if resume else None
    exported = state is None and init_from is not None
    if exported:
        state = exported_generator_state(Path(init_from))
        log(f"starting from the exported generator in {init_from} (step {state['step']}, fresh optimiser)")
    if state is not None:
        saved = (f"{plane_resolution_of(state['G'])}² tri-planes and a {mapping_layers_of(state['G'])}-layer mapping")
        asked = f"{cfg.plane_resolution}² tri-planes and a {cfg.mapping_layers}-layer mapping"
        if saved != asked:
            raise ValueError(f"{ckpt} holds a generator with {saved}, not {asked}: resume it with those or train into "
                             "another folder")
        widths = synthesis_channels_of(state["G"])
        if widths != (cfg.channel_base, cfg.channel_max):
            if not widen:
                raise ValueError(f"the saved generator has synthesis widths {widths[0]} / {widths[1]}, not "
                                 f"{cfg.channel_base} / {cfg.channel_max}: pass those, or widen=True (--widen) to "
                                 "grow it")
            state["G"] = widen_state(state["G"], cfg.channel_base, cfg.channel_max,
                                     normalize_z_of(checkpoint_config(state)), cfg.seed)
            state.pop("opt", None)  # Adam's moments do not fit the new shapes; the warm-up covers a fresh start
            log(f"widened the synthesis from {widths[0]} / {widths[1]} to {cfg.channel_base} / {cfg.channel_max} "
                "(same pictures; the new channels start silent)")
            widened = True
    G = build_generator(cfg.seed, cfg.plane_resolution, cfg.mapping_layers, cfg.normalize_z, cfg.channel_base,
                        cfg.channel_max).to(device)
    opt = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    if state is not None:
        G.load_state_dict(state["G"])
        if "opt" in state:  # exported weights carry none: Adam starts afresh (the learning-rate warm-up covers it)
            opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        if not exported:
            log(f"resumed generator training at step {step}")
        # Same weights either way: a run trained with EG3D's normalisation goes on without it (README: +0.4 dB in
        # 500 steps on the 8-layer run).
        if normalize_z_of(checkpoint_config(state)) != cfg.normalize_z:
            log(f"z normalisation {'on' if cfg.normalize_z else 'off'} from step {step}")
    # Each call's schedule from the step it started at: a resumed run may change it (a longer polish restarts the
    # learning rate), and the model card says how the shipped weights were trained.
    legs = json.loads(state.get("legs", "[]")) if state is not None else []
    leg = {k: getattr(cfg, k) for k in LEG_KEYS}
    marks = {**({"init_from": str(init_from)} if exported else {}),
             **({"widened_from": list(widths), "widened_to": [cfg.channel_base, cfg.channel_max]} if widened else {})}
    if not legs or {k: v for k, v in legs[-1].items() if k not in ("from_step", *LEG_MARKS)} != leg or marks:
        legs.append({"from_step": step, **leg, **marks})
    heldout = load_dataset(heldout_dir).to(device)
    data = load_dataset(data_dir).to(device)
    chunks = _chunks(data_dir)
    perceptual = _perceptual(identity_dir, state, device)
    total = cfg.steps + cfg.polish_steps
    bar = tqdm(total=total, initial=step, desc="generator", mininterval=10)
    t0 = time.time()
    while step < total:
        polishing = step >= cfg.steps
        if step % 500 == 0:
            rendered = _chunks(data_dir)
            if rendered != chunks:  # background rendering added some
                data, chunks = load_dataset(data_dir).to(device), rendered
            perceptual = perceptual or _perceptual(identity_dir, device=device)
        G.train()
        # Coarse-to-fine: the first part of training renders the volume at half resolution (4x fewer rays; the
        # super-resolution input is resized to 32 px either way), then at the full neural rendering resolution.
        G.neural_rendering_resolution = NEURAL_RENDERING_RESOLUTION // (2 if step < coarse_steps else 1)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, cfg.steps, cfg.polish_steps, cfg.lr, cfg.polish_lr)
        idx = torch.randint(0, len(data), (cfg.batch,), generator=gen).to(device)
        loss, parts = generator_loss(G, data, idx, None if polishing else perceptual, lambda_depth=cfg.lambda_depth,
                                     lambda_per=cfg.lambda_per, pixel="mse" if polishing else "l1")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()})
        if step % cfg.eval_every == 0 or step in (cfg.steps, total):
            G.neural_rendering_resolution = NEURAL_RENDERING_RESOLUTION
            metrics = evaluate_generator(G, heldout)
            history.append({"step": step, "phase": "polish" if polishing else "main", "loss": loss.item(), **parts,
                            "seconds": time.time() - t0,
                            "data": len(data), **metrics})
            log(json.dumps(history[-1]))
        if step % cfg.ckpt_every == 0 or step == total:
            save_checkpoint(ckpt, {"G": G.state_dict(), "config": json.dumps(generator_config(G)),
                                   "legs": json.dumps(legs), "train_config": json.dumps(asdict(cfg)),
                                   **_perceptual_state(perceptual)}, opt, gen, step, history)
    bar.close()
    return history[-1] if history else {}


# Exported generator weights as the start of a training run (train_generator's checkpoint layout without optimiser
# state): tensors, config, step count and training legs.
def exported_generator_state(weights_dir: Path) -> dict:
    tensors, config, metrics = load_exported(weights_dir, "generator")
    return {"G": tensors, "config": config, "step": int(metrics.get("steps", 0)), "history": [],
            "legs": json.dumps(metrics.get("legs", []))}


# A generator from a saved state dict and its config (generator_config; {} for one saved without it).
def load_world_generator(state: dict[str, torch.Tensor], config: dict) -> TriPlaneGenerator:
    channel_base, channel_max = synthesis_channels_of(state)
    G = build_generator(plane_resolution=plane_resolution_of(state), mapping_layers=mapping_layers_of(state),
                        normalize_z=normalize_z_of(config), channel_base=channel_base, channel_max=channel_max)
    G.load_state_dict(state)
    return G.eval().requires_grad_(False)


# The generator of a training checkpoint (runs/world/generator/ckpt.pt, loaded).
def generator_from_checkpoint(ckpt: dict) -> TriPlaneGenerator:
    return load_world_generator(ckpt["G"], checkpoint_config(ckpt))
