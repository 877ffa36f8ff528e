"""Training of the world's identity network (``guide_core.world.identity.IdentityNet``): CosFace, in two stages.

Stage 1 trains on photos only: the generator's perceptual loss needs this net before any generator exists. Stage 2
retrains it from scratch once the generator is trained, with a share of every batch being the generator's renders of
the training people, each next to the photo it renders (``generator_renders`` says why).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from guide_core.files import atomic_path
from guide_core.world.identity import IdentityNet
from tools.world.data import WorldData, load_checkpoint, load_dataset, save_checkpoint, training_bar
from tools.world.evaluate import picture_rows, verification_tar

# Weight of the stage-2 term pulling a generator render's embedding onto its own photo's (see train_identity); the
# weights tried, and what they gave, are in docs/world.md.
LAMBDA_PAIR = 16.0


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts, scales, blur and colour jitter: the net must see generator outputs (blurrier, a little off)."""
    # The random draws come from the CPU generator (the same augmentations on any device), then move to x's device.
    b, dev = x.shape[0], x.device
    scale = 1 + (torch.rand(b, generator=gen) - 0.5) * 0.12
    shift = (torch.rand(b, 2, generator=gen) - 0.5) * 0.12
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sigma = torch.rand(b, generator=gen) * 1.2
    kernel_x = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-kernel_x[None] ** 2 / (2 * sigma[:, None].clamp(min=0.05) ** 2))
    k = (k / k.sum(1, keepdim=True)).to(dev)
    blurred = F.conv2d(F.pad(x.reshape(1, b * 3, *x.shape[-2:]), (2, 2, 0, 0), mode="replicate"),
                       k.repeat_interleave(3, 0)[:, None, None, :], groups=b * 3)
    blurred = F.conv2d(F.pad(blurred, (0, 0, 2, 2), mode="replicate"), k.repeat_interleave(3, 0)[:, None, :, None],
                       groups=b * 3)
    x = blurred.reshape(x.shape)
    gain = (1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2).to(dev)
    bias = ((torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.1).to(dev)
    return (x * gain + bias).clamp(-1, 1)


def render_rows(data: WorldData, per_person: int = 2, seed: int = 0) -> torch.Tensor:
    """The data rows the identity net sees rendered by the generator: ``per_person`` of each person's photos, seeded."""
    photos = int((data.person == data.person[0]).sum())
    gen = torch.Generator().manual_seed(seed)
    n_people = len(data) // photos
    pick = torch.argsort(torch.rand(n_people, photos, generator=gen), dim=1)[:, :per_person]
    return (torch.arange(n_people)[:, None] * photos + pick).reshape(-1)


@torch.no_grad()
def generator_renders(G: nn.Module, data: WorldData, per_person: int = 2, seed: int = 0,
                      batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's renders of the training people for the identity net, as uint8, with the rows they picture.

    G(mapping(z), c) of render_rows (their z and camera). ArcFace recognises EG3D renders of a person because EG3D is
    photorealistic; the tiny world generator is not (its renders are blurrier than the procedural photos and drop thin
    parts such as glasses rims), so the world net must see both domains to judge identity rather than rendering
    quality.
    """
    rows = render_rows(data, per_person, seed)
    images = []
    starts = range(0, len(rows), batch)
    bar = training_bar(len(starts), "generator renders")
    for i in starts:
        image = picture_rows(G, data, rows[i:i + batch]).cpu()
        images.append(((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        bar.update(1)
    bar.close()
    return torch.cat(images), rows


def _cached_generator_renders(generator_dir: Path, data: WorldData, out: Path, seed: int, log=print,
                              device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The renders of the generator checkpoint in ``generator_dir``, cached in ``out``.

    Rendered again when the checkpoint's step or the rows differ from the cached ones.
    """
    from guide_core.world.generator import generator_from_checkpoint
    state = torch.load(Path(generator_dir) / "ckpt.pt", weights_only=True)
    cache = out / "generator_renders.pt"
    rows = render_rows(data, seed=seed)
    if cache.exists():
        cached = torch.load(cache, weights_only=True)
        if int(cached["generator_step"]) == state["step"] and torch.equal(cached["person"], data.person[rows]):
            return cached["image"], rows
    log(f"rendering the generator (step {state['step']}) for the identity net")
    images, rows = generator_renders(generator_from_checkpoint(state).to(device), data, seed=seed)
    with atomic_path(cache) as tmp:
        torch.save({"image": images, "person": data.person[rows], "generator_step": torch.tensor(state["step"])}, tmp)
    return images, rows


@dataclass(frozen=True)
class IdentityTrainConfig:
    """How train_identity trains: the shipped identity net's settings (weights/default/metrics.json, model card).

    ``python -m tools.world train identity`` has one flag per field; ``dataclasses.replace(IdentityTrainConfig(),
    steps=2)`` gives another run.
    """

    # metrics.json identity.steps
    steps: int = field(default=3000, metadata={"help": "optimisation steps"})
    # model card: AdamW 2e-3 cosine, batch 128
    batch: int = field(default=128, metadata={"help": "photos (and renders) per step"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW's peak learning rate, cosine to zero"})
    # the `train` default; no shipped run records another
    seed: int = field(default=0, metadata={"help": "initialisation and data-order seed"})
    # model card: CosFace (s 32, m 0.3)
    margin: float = field(default=0.3, metadata={"help": "CosFace margin m"})
    scale: float = field(default=32.0, metadata={"help": "CosFace scale s"})
    # metrics.json identity.generator_mix
    generator_mix: float = field(default=0.25, metadata={
        "help": "fraction of each batch that are renders of the trained generator, within [0, 0.5] (used once "
                "there is a generator to render; 0 = photos only)"})
    # metrics.json identity.lambda_pair (LAMBDA_PAIR)
    lambda_pair: float = field(default=LAMBDA_PAIR, metadata={
        "help": "weight of the loss pulling a render's embedding onto its own photo's"})
    # bookkeeping, no effect on the weights: the trainer's own defaults
    ckpt_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    eval_every: int = field(default=500, metadata={"help": "steps between held-out evaluations"})

    def __post_init__(self):
        if not 0 <= self.generator_mix <= 0.5:  # every render's photo sits in the photo part of the batch
            raise ValueError(f"generator_mix must be within [0, 0.5], got {self.generator_mix}")


def train_identity(data_dir: Path, heldout_dir: Path, out: Path, config: IdentityTrainConfig = IdentityTrainConfig(),
                   *, generator_dir: Path | None = None, resume: bool = False, device: str = "cpu",
                   log=print) -> dict:
    """CosFace training with checkpoints every ``ckpt_every`` steps; ``resume`` continues from out/ckpt.pt.

    With ``generator_dir``, a fraction ``generator_mix`` of every batch are the generator's renders of the training
    people (see generator_renders); the first identity net, which the generator's perceptual loss needs, is trained
    without. Returns the last held-out evaluation.
    """
    cfg = config
    steps, batch, lr = cfg.steps, cfg.batch, cfg.lr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    data = load_dataset(data_dir)
    heldout = load_dataset(heldout_dir)
    n_classes = int(data.person.max()) + 1
    renders = (_cached_generator_renders(generator_dir, data, out, cfg.seed, log, device)
               if generator_dir is not None else None)
    n_renders = int(batch * cfg.generator_mix) if renders is not None else 0
    net = IdentityNet().to(device)
    classes = nn.Parameter((torch.randn(n_classes, net.config["embed_dim"]) * 0.01).to(device))
    opt = torch.optim.AdamW(list(net.parameters()) + [classes], lr=lr, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []
    ckpt = out / "ckpt.pt"
    state = load_checkpoint(ckpt, gen) if resume else None
    if state is not None:
        net.load_state_dict(state["net"])
        if state["classes"].shape == classes.shape:
            classes.data.copy_(state["classes"])
            opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        log(f"resumed identity training at step {step}")
    bar = training_bar(steps, "identity", initial=step)
    t0 = time.time()
    while step < steps:
        net.train()
        for group in opt.param_groups:  # cosine decay after a short warm-up
            group["lr"] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(data), (batch - n_renders,), generator=gen)
        if n_renders:  # the first photos of the batch are the ones the renders picture
            ridx = torch.randint(0, len(renders[1]), (n_renders,), generator=gen)
            idx[:n_renders] = renders[1][ridx]
        x, label = data.images(idx), data.person[idx]
        if n_renders:
            x = torch.cat([x, renders[0][ridx].float() / 127.5 - 1])
            label = torch.cat([label, data.person[renders[1][ridx]]])
        x, label = augment(x.to(device), gen), label.to(device)
        emb = F.normalize(net.head(net.features(x)[-1]), dim=1)
        cos = emb @ F.normalize(classes, dim=1).T
        logits = cfg.scale * (cos - cfg.margin * F.one_hot(label, n_classes))
        loss = F.cross_entropy(logits, label)
        if n_renders and cfg.lambda_pair > 0:
            # A render of a photo's own z and camera IS that photo, drawn less sharply: its embedding should match
            # the photo's (what ArcFace gives an EG3D render of the photo it inverts), not merely the same class.
            pair = 1 - (emb[:n_renders] * emb[-n_renders:]).sum(1).mean()
            loss = loss + cfg.lambda_pair * pair
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0 or step == steps:
            metrics = verification_tar(net, heldout)
            history.append({"step": step, "loss": loss.item(), "seconds": time.time() - t0, **metrics})
            log(json.dumps(history[-1]))
        if step % cfg.ckpt_every == 0 or step == steps:
            # generator_mix and lambda_pair as they acted (0 without renders); train_config as they were asked.
            save_checkpoint(ckpt, {"net": net.state_dict(), "classes": classes.data, "config": json.dumps(net.config),
                                   "generator_mix": torch.tensor(n_renders / batch),
                                   "lambda_pair": torch.tensor(cfg.lambda_pair if n_renders else 0.0),
                                   "train_config": json.dumps(asdict(cfg))},
                            opt, gen, step, history)
    bar.close()
    return history[-1] if history else {}
