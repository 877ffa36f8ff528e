"""Training of the world's tri-plane generator (``guide_core.world.generator``): supervised, resumable, widenable.

G(mapping(z), c) learns the procedural render of params_from_z(z) from camera c. Two phases: a main phase (L1 +
perceptual) and a polish phase (squared error, no perceptual term); ``train_generator`` says why.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from guide_core.eg3d import TriPlaneGenerator
from guide_core.world.generator import (CHANNEL_BASE, CHANNEL_MAX, MAPPING_LAYERS, NEURAL_RENDERING_RESOLUTION,
                                        NORMALIZE_Z, PLANE_RESOLUTION, build_generator, checkpoint_config,
                                        generator_config, mapping_layers_of, normalize_z_of, plane_resolution_of,
                                        synthesis_channels_of)
from tools.world.data import WorldData, load_checkpoint, load_dataset, load_exported, save_checkpoint, training_bar
from tools.world.evaluate import evaluate_generator

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


def widen_state(state: dict[str, torch.Tensor], channel_base: int, channel_max: int, normalize_z: bool,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """The weights of a wider generator (channel_base / channel_max) that draws exactly what ``state`` draws.

    Growth as in Net2Net (Chen et al. ICLR 2016): each synthesis layer keeps its weights, its new output channels start
    from the fresh initialisation of ``seed``, and every weight reading a new channel starts at zero, so the new
    channels add nothing until training moves those weights. Demodulation is unchanged by zero weights; the tRGB
    layers, which are not demodulated, scale their kept weights by sqrt(new / old inputs) to cancel their larger
    fan-in gain.
    """
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


def perceptual_net(identity_dir: Path | None, resumed: dict | None = None, device: str = "cpu"):
    """The perceptual loss of a generator run (a WorldPerceptual), or None.

    The identity net the run started with (kept in the generator's own checkpoint, since the identity net is later
    retrained on this generator's renders), else the one in identity_dir when trained, else None.
    """
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
    """The perceptual net's weights and config as a generator checkpoint keeps them ({} without one)."""
    if perceptual is None:
        return {}
    return {"perceptual_net": perceptual.net.state_dict(), "perceptual_config": json.dumps(perceptual.net.config)}


def _chunks(folder: Path) -> int:
    """How many data chunks a folder holds (background rendering may still be adding some)."""
    return len(list(Path(folder).glob("chunk_*.pt")))


def generator_loss(G: TriPlaneGenerator, data: WorldData, idx: torch.Tensor, perceptual=None,
                   lambda_depth: float = 1.0, lambda_per: float = 1.0,
                   pixel: str = "l1") -> tuple[torch.Tensor, dict[str, float]]:
    """One supervised step's loss and its parts.

    Image error (64 px) + raw neural render error (32 px) + depth L1 on the head + perceptual. The image error is L1
    (``pixel="l1"``, the main phase) or MSE (``pixel="mse"``, the polish phase).
    """
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


def learning_rate(step: int, steps: int, polish_steps: int, lr: float, polish_lr: float) -> float:
    """The learning rate at ``step`` of a schedule.

    Main phase: warm-up, then cosine decay to a tenth. Polish phase: warm-up, then cosine decay to zero (a longer
    polish resumed mid-way restarts at this rate).
    """
    if step >= steps:
        k = step - steps
        return polish_lr * min(1.0, (k + 1) / 200) * 0.5 * (1 + math.cos(math.pi * k / polish_steps))
    return lr * min(1.0, (step + 1) / 200) * (0.55 + 0.45 * math.cos(math.pi * step / steps))


@dataclass(frozen=True)
class GeneratorTrainConfig:
    """How train_generator trains: the shipped generator's settings (its legs in metrics.json, its model card).

    ``python -m tools.world train generator`` has one flag per field; ``dataclasses.replace(GeneratorTrainConfig(),
    steps=2)`` gives another run. The architecture fields are a fresh run's (build_generator's): the shipped net was
    built at these widths with a 4-layer mapping and widened to 4096 / 128 later, and the model card names every
    call's architecture as the flags that differ from these defaults (``--mapping-layers 4 --channel-base 4096
    --channel-max 128``).
    """

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


def _start_state(ckpt: Path, cfg: GeneratorTrainConfig, gen: torch.Generator, init_from: Path | None, widen: bool,
                 resume: bool, log) -> tuple[dict | None, bool, tuple[int, int] | None]:
    """Where a run starts: (state or None, started from exported weights, the widths it was widened from or None).

    The checkpoint to resume, else exported weights (``init_from``), checked against the config's architecture and
    widened to its synthesis widths when ``widen`` asks for it.
    """
    state = load_checkpoint(ckpt, gen) if resume else None
    exported = state is None and init_from is not None
    if exported:
        state = exported_generator_state(Path(init_from))
        log(f"starting from the exported generator in {init_from} (step {state['step']}, fresh optimiser)")
    if state is None:
        return None, exported, None
    saved = (f"{plane_resolution_of(state['G'])}² tri-planes and a {mapping_layers_of(state['G'])}-layer mapping")
    asked = f"{cfg.plane_resolution}² tri-planes and a {cfg.mapping_layers}-layer mapping"
    if saved != asked:
        raise ValueError(f"{ckpt} holds a generator with {saved}, not {asked}: resume it with those or train into "
                         "another folder")
    widths = synthesis_channels_of(state["G"])
    if widths == (cfg.channel_base, cfg.channel_max):
        return state, exported, None
    if not widen:
        raise ValueError(f"the saved generator has synthesis widths {widths[0]} / {widths[1]}, not "
                         f"{cfg.channel_base} / {cfg.channel_max}: pass those, or widen=True (--widen) to grow it")
    state["G"] = widen_state(state["G"], cfg.channel_base, cfg.channel_max, normalize_z_of(checkpoint_config(state)),
                             cfg.seed)
    state.pop("opt", None)  # Adam's moments do not fit the new shapes; the warm-up covers a fresh start
    log(f"widened the synthesis from {widths[0]} / {widths[1]} to {cfg.channel_base} / {cfg.channel_max} "
        "(same pictures; the new channels start silent)")
    return state, exported, widths


def train_generator(data_dir: Path, heldout_dir: Path, out: Path, config: GeneratorTrainConfig = GeneratorTrainConfig(),
                    *, identity_dir: Path | None = None, init_from: Path | None = None, widen: bool = False,
                    resume: bool = False, device: str = "cpu", log=print) -> dict:
    """Supervised training with checkpoints (resumable); reloads the data folder as background rendering adds chunks.

    Two phases. Main (``config.steps``): L1 + perceptual, cosine decay from ``lr`` to a tenth. Polish
    (``polish_steps`` more): MSE without the perceptual term at a small learning rate decaying to zero. PSNR scores
    the squared error, and under L1 + perceptual the net draws an uncertain edge sharp but misplaced; MSE moves it to
    the mean (measured in docs/world.md). ``identity_dir``: the perceptual loss's identity net; ``init_from``: exported
    weights to start from when there is no checkpoint to resume; ``widen``: grow a resumed or exported generator to the
    config's synthesis widths. Returns the last held-out evaluation.
    """
    cfg = config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    coarse_steps = int(cfg.steps * cfg.coarse_fraction)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []
    ckpt = out / "ckpt.pt"
    state, exported, widened_from = _start_state(ckpt, cfg, gen, init_from, widen, resume, log)
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
        # Same weights either way: a run trained with EG3D's normalisation goes on without it (docs/world.md).
        if normalize_z_of(checkpoint_config(state)) != cfg.normalize_z:
            log(f"z normalisation {'on' if cfg.normalize_z else 'off'} from step {step}")
    # Each call's schedule from the step it started at: a resumed run may change it (a longer polish restarts the
    # learning rate), and the model card says how the shipped weights were trained.
    legs = json.loads(state.get("legs", "[]")) if state is not None else []
    leg = {k: getattr(cfg, k) for k in LEG_KEYS}
    marks = {**({"init_from": str(init_from)} if exported else {}),
             **({"widened_from": list(widened_from), "widened_to": [cfg.channel_base, cfg.channel_max]}
                if widened_from else {})}
    if not legs or {k: v for k, v in legs[-1].items() if k not in ("from_step", *LEG_MARKS)} != leg or marks:
        legs.append({"from_step": step, **leg, **marks})
    heldout = load_dataset(heldout_dir).to(device)
    data = load_dataset(data_dir).to(device)
    chunks = _chunks(data_dir)
    perceptual = perceptual_net(identity_dir, state, device)
    total = cfg.steps + cfg.polish_steps
    bar = training_bar(total, "generator", initial=step)
    t0 = time.time()
    while step < total:
        polishing = step >= cfg.steps
        if step % 500 == 0:
            rendered = _chunks(data_dir)
            if rendered != chunks:  # background rendering added some
                data, chunks = load_dataset(data_dir).to(device), rendered
            perceptual = perceptual or perceptual_net(identity_dir, device=device)
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


def exported_generator_state(weights_dir: Path) -> dict:
    """Exported generator weights as the start of a training run.

    train_generator's checkpoint layout without optimiser state: tensors, config, step count and training legs.
    """
    tensors, config, metrics = load_exported(weights_dir, "generator")
    return {"G": tensors, "config": config, "step": int(metrics.get("steps", 0)), "history": [],
            "legs": json.dumps(metrics.get("legs", []))}
