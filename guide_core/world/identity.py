# The world's identity network (the face-recognition role that ArcFace IR-SE50 plays for real photos in GUIDE,
# Seo et al. CVPR 2024): a small residual CNN mapping a 64 px render to an L2-normalised embedding, trained with the
# CosFace large-margin loss (Wang et al. CVPR 2018) across identities, poses, expressions, lighting and glasses.
# Its intermediate feature maps also serve as the world's perceptual distance and its embeddings as the world's
# FID-style features (stated in weights/default/MODEL_CARD.md and wherever a metric is shown).
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
from guide_core.world.data import WorldData, load_checkpoint, load_dataset, save_checkpoint

INPUT_SIZE = 64
# Weight of the stage-2 term pulling a generator render's embedding onto its own photo's (see train_identity): render
# vs own photo 0.80 / 0.88 / 0.92 at weights 1 / 8 / 16, photo TAR 1.000 / 0.995 / 0.995 (README).
LAMBDA_PAIR = 16.0


# Residual block with a strided projection shortcut (the IR block of ArcFace backbones, shrunk).
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


# Image [-1,1] -> unit embedding; `features` exposes the stage maps used as the world's perceptual features.
class IdentityNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), embed_dim: int = 128):
        super().__init__()
        self.config = {"widths": list(widths), "embed_dim": embed_dim}
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.PReLU(widths[0]))
        self.stages = nn.ModuleList(_Block(a, b) for a, b in zip(widths[:-1], widths[1:]))
        side = INPUT_SIZE // 2 ** len(widths)
        self.head = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.Flatten(), nn.Dropout(0.1),
                                  nn.Linear(widths[-1] * side * side, embed_dim), nn.BatchNorm1d(embed_dim))

    # Bring any image batch to the network's input size (bilinear, antialiased when shrinking).
    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(self.prepare(x))
        maps = [h]
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(x)[-1]), dim=1)


# Cosine similarity of the identities in two image batches (the GUIDE ID metric's role).
def identity_similarity(net: IdentityNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (net(a) * net(b)).sum(1)


# The world's perceptual distance: channel-normalised feature maps of the identity net, squared differences averaged
# over positions and stages (LPIPS's recipe, Zhang et al. CVPR 2018, with unit channel weights), divided by 4 (the
# largest squared distance of unit vectors) so that it spans [0, 1] like LPIPS and GUIDE's lambda_per keeps its scale.
class WorldPerceptual(nn.Module):
    def __init__(self, net: IdentityNet, stages: int = 3):
        super().__init__()
        self.net, self.stages = net, stages

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.net.features(a), self.net.features(b)
        total = a.new_zeros(a.shape[0])
        for x, y in list(zip(fa, fb))[: self.stages]:
            x = x / (x.norm(dim=1, keepdim=True) + 1e-8)
            y = y / (y.norm(dim=1, keepdim=True) + 1e-8)
            total = total + (x - y).pow(2).sum(1).mean((1, 2))
        return total / (4 * self.stages)


# Random shifts, scales, blur and colour jitter: the network must see generator outputs (blurrier, slightly misplaced).
def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
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


# G's picture of data rows `rows`: their z through the mapping network, rendered from their own cameras.
def _render_rows(G: nn.Module, data: WorldData, rows: torch.Tensor) -> torch.Tensor:
    device = next(G.parameters()).device  # data may sit on the CPU while G renders on a GPU
    z, c = data.z[rows].to(device), data.c[rows].to(device)
    return G.synthesis(G.mapping(z, c), c, noise_mode="const", deterministic=True)["image"]


# The data rows the identity net sees rendered by the generator: `per_person` of each person's photos, seeded.
def render_rows(data: WorldData, per_person: int = 2, seed: int = 0) -> torch.Tensor:
    photos = int((data.person == data.person[0]).sum())
    gen = torch.Generator().manual_seed(seed)
    n_people = len(data) // photos
    pick = torch.argsort(torch.rand(n_people, photos, generator=gen), dim=1)[:, :per_person]
    return (torch.arange(n_people)[:, None] * photos + pick).reshape(-1)


# The generator's renders of the training people for the identity net: G(mapping(z), c) of render_rows (their z and
# camera), as uint8, with the rows they picture. ArcFace recognises EG3D renders of a person because EG3D is
# photorealistic; the tiny world generator is not (its renders are blurrier than the procedural photos and drop thin
# parts such as glasses rims), so the world net must see both domains to judge identity rather than rendering quality.
@torch.no_grad()
def generator_renders(G: nn.Module, data: WorldData, per_person: int = 2, seed: int = 0,
                      batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm import tqdm
    rows = render_rows(data, per_person, seed)
    images = []
    for i in tqdm(range(0, len(rows), batch), desc="generator renders", mininterval=10):
        image = _render_rows(G, data, rows[i:i + batch]).cpu()
        images.append(((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    return torch.cat(images), rows


# The renders of the generator checkpoint in `generator_dir`, cached in `out` (re-rendered when the checkpoint's step
# or the rows differ from the cached ones).
def _cached_generator_renders(generator_dir: Path, data: WorldData, out: Path, seed: int, log=print,
                              device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
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


# Embeddings of the first `n` photos of a data set (all by default), in batches.
@torch.no_grad()
def _photo_embeddings(net: IdentityNet, data: WorldData, n: int | None = None, batch: int = 256) -> torch.Tensor:
    n = len(data) if n is None else min(n, len(data))
    device = next(net.parameters()).device
    return torch.cat([net(data.images(torch.arange(i, min(i + batch, n))).to(device)).cpu()
                      for i in range(0, n, batch)])


# The similarity that a fraction `far` of impostor pairs exceed (torch.quantile refuses inputs of 16M or more).
def _threshold_at_far(impostor: torch.Tensor, far: float) -> float:
    if impostor.numel() < 16_000_000:
        return torch.quantile(impostor, 1 - far).item()
    return impostor.kthvalue(int(impostor.numel() * (1 - far))).values.item()


# Verification on held-out people: TAR at the threshold where FAR equals `far` over all impostor pairs.
@torch.no_grad()
def verification_tar(net: IdentityNet, data: WorldData, far: float = 0.01, batch: int = 256) -> dict[str, float]:
    net.eval()
    emb = _photo_embeddings(net, data, batch=batch)
    sims = emb @ emb.T
    same = data.person[:, None] == data.person[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)
    genuine = sims[same & upper]
    impostor = sims[~same & upper]
    threshold = _threshold_at_far(impostor, far)
    return {"tar": (genuine > threshold).float().mean().item(), "far": far, "threshold": threshold,
            "genuine_mean": genuine.mean().item(), "impostor_mean": impostor.mean().item(),
            "pairs_genuine": genuine.numel(), "pairs_impostor": impostor.numel()}


# How the net sees the generator: similarity of G's render of a held-out photo's own z and camera to that photo (the
# best any inversion can do), and whether it still tells people apart there: TAR at FAR `far` of render-vs-photo
# pairs (genuine: the render and its photo; impostor: the render and every photo of another person).
@torch.no_grad()
def render_verification(net: IdentityNet, G: nn.Module, data: WorldData, n: int = 256, far: float = 0.01,
                        batch: int = 32) -> dict[str, float]:
    net.eval()
    n = min(n, len(data))
    rendered = torch.cat([net(_render_rows(G, data, torch.arange(i, min(i + batch, n)))) for i in range(0, n, batch)])
    photos = _photo_embeddings(net, data, n, batch)
    sims = rendered @ photos.T
    genuine = sims.diagonal()
    impostor = sims[data.person[:n, None] != data.person[None, :n]]
    threshold = _threshold_at_far(impostor, far)
    return {"render_similarity": genuine.mean().item(), "render_similarity_min": genuine.min().item(),
            "render_tar": (genuine > threshold).float().mean().item(), "render_impostor_mean": impostor.mean().item()}


# How train_identity trains (`train identity`'s flags; `dataclasses.replace(IdentityTrainConfig(), steps=2)` for
# another run): the shipped identity net's settings, from weights/default/metrics.json and its model card.
@dataclass(frozen=True)
class IdentityTrainConfig:
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


# CosFace training with checkpoints every `ckpt_every` steps; `resume` continues from out/ckpt.pt. With
# `generator_dir`, a fraction `generator_mix` of every batch are the generator's renders of the training people
# (see generator_renders); the first identity net, which the generator's perceptual loss needs, is trained without.
def train_identity(data_dir: Path, heldout_dir: Path, out: Path, config: IdentityTrainConfig = IdentityTrainConfig(),
                   *, generator_dir: Path | None = None, resume: bool = False, device: str = "cpu",
                   log=print) -> dict:
    from tqdm import tqdm
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
    bar = tqdm(total=steps, initial=step, desc="identity", mininterval=10)
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


# Build the network from a state dict saved by training or export (config travels alongside as JSON).
def load_identity_net(state: dict[str, torch.Tensor], config: dict) -> IdentityNet:
    net = IdentityNet(tuple(config["widths"]), config["embed_dim"])
    net.load_state_dict(state)
    return net.eval()
