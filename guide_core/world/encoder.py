# The world's inversion encoder (the role GOAE plays for EG3D FFHQ in GUIDE, Seo et al. CVPR 2024, Sec. 3.1): a small
# CNN mapping a 64 px photo of a world person to w+ = w_avg + offset [N, num_ws, 512]. It is trained where the answer
# is known: a rendered photo of latent z has the code mapping(z), so most steps regress codes directly (cheap); every
# few steps the predicted code is also rendered through the frozen generator and compared with the photo (the
# re-render losses that GOAE-style encoders optimise: L1 and, with the world identity net, identity).
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from guide_core.world.identity import IdentityNet, _Block


# Image [-1,1] -> offset from w_avg for every w+ row: a shared w (the person) plus small per-row refinements.
class WorldEncoder(nn.Module):
    def __init__(self, num_ws: int, w_dim: int = 512, widths: tuple[int, ...] = (32, 64, 96, 128), hidden: int = 256):
        super().__init__()
        self.config = {"num_ws": num_ws, "w_dim": w_dim, "widths": list(widths), "hidden": hidden}
        self.num_ws, self.w_dim = num_ws, w_dim
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.PReLU(widths[0]))
        self.stages = nn.Sequential(*(_Block(a, b) for a, b in zip(widths[:-1], widths[1:])))
        side = 64 // 2 ** len(widths)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, hidden), nn.LeakyReLU(0.2))
        self.shared = nn.Linear(hidden, w_dim)
        self.per_row = nn.Linear(hidden, num_ws * w_dim)
        nn.init.zeros_(self.per_row.weight)
        nn.init.zeros_(self.per_row.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.stages(self.stem(IdentityNet.prepare(x))))
        offset = self.shared(h)[:, None, :] + self.per_row(h).view(-1, self.num_ws, self.w_dim)
        return offset


# Photos re-rendered through the generator on a re-render step: an eighth of the batch (4 at the default 32).
def default_rerender_batch(batch: int) -> int:
    return batch // 8 or 1


# How train_encoder trains (`train encoder`'s flags; `dataclasses.replace(EncoderTrainConfig(), steps=2)` for another
# run): the shipped encoder's settings, from weights/default/metrics.json and its model card.
@dataclass(frozen=True)
class EncoderTrainConfig:
    # metrics.json encoder.steps
    steps: int = field(default=16000, metadata={"help": "optimisation steps"})
    # batch and lr: the trainer's defaults since its first version (the model card names no others)
    batch: int = field(default=32, metadata={"help": "photos per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam's peak learning rate, cosine to zero"})
    # the trainer's schedule since its first version: 4 of the 32 photos re-rendered every 4th step
    rerender_every: int = field(default=4, metadata={
        "help": "steps between re-render steps through the frozen generator (0 = code regression only)"})
    rerender_batch: int | None = field(default=None, metadata={
        "help": "photos re-rendered on a re-render step (default: an eighth of --batch)"})
    # model card: identity loss weight 0.5
    lambda_id: float = field(default=0.5, metadata={"help": "weight of the identity loss on the re-render"})
    # the `train` default; no shipped run records another
    seed: int = field(default=0, metadata={"help": "initialisation and data-order seed"})
    # bookkeeping, no effect on the weights: the trainer's own defaults
    ckpt_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    eval_every: int = field(default=500, metadata={"help": "steps between held-out evaluations"})
    refresh_every: int = field(default=500, metadata={
        "help": "steps between looks for a newer generator checkpoint (the generator may still be training)"})


# Encoder training: code regression on rendered photos (+ re-render L1 and identity loss through the frozen generator
# every k steps). `data_dir` / `heldout_dir` default to the data folders beside `generator_dir`; `init_from`: exported
# weights to start from when there is no checkpoint to resume.
def train_encoder(out: Path, generator_dir: Path, identity_dir: Path, config: EncoderTrainConfig = EncoderTrainConfig(),
                  *, data_dir: Path | None = None, heldout_dir: Path | None = None, init_from: Path | None = None,
                  resume: bool = False, device: str = "cpu", log=print) -> dict:
    from tqdm import tqdm
    from guide_core.world.data import load_checkpoint, load_dataset, load_exported, save_checkpoint
    from guide_core.world.generator import generator_from_checkpoint
    cfg = config
    steps, batch, lr = cfg.steps, cfg.batch, cfg.lr
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rerender_batch = cfg.rerender_batch or default_rerender_batch(batch)
    root = Path(generator_dir).parent
    data = load_dataset(data_dir or root / "data" / "train").to(device)
    heldout = load_dataset(heldout_dir or root / "data" / "heldout").to(device)
    G = generator_from_checkpoint(torch.load(Path(generator_dir) / "ckpt.pt", weights_only=True)).to(device)
    w_avg = G.backbone.mapping.w_avg.clone()
    idnet = _load_identity(identity_dir, init_from)
    idnet = idnet.to(device) if idnet is not None else None
    torch.manual_seed(cfg.seed)
    enc = WorldEncoder(G.backbone.num_ws).to(device)
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, history = 0, []
    ckpt = out / "ckpt.pt"
    state = load_checkpoint(ckpt, gen) if resume else None
    if state is not None:
        enc.load_state_dict(state["enc"])
        opt.load_state_dict(state["opt"])
        step, history = state["step"], state["history"]
        log(f"resumed encoder training at step {step}")
    elif init_from is not None:
        # Exported weights carry no optimiser state: Adam starts afresh at the cosine's rate for their step count.
        tensors, saved_config, metrics = load_exported(Path(init_from), "encoder")
        if json.loads(saved_config) != enc.config:
            raise ValueError(f"the encoder in {init_from} is a {json.loads(saved_config)}, not a {enc.config}")
        enc.load_state_dict(tensors)
        step = int(metrics.get("steps", 0))
        log(f"starting from the exported encoder in {init_from} (step {step}, fresh optimiser)")
    bar = tqdm(total=steps, initial=step, desc="encoder", mininterval=10)
    t0 = time.time()
    generator_ckpt = Path(generator_dir) / "ckpt.pt"
    seen_mtime = generator_ckpt.stat().st_mtime
    codes = _codes(G, data)
    while step < steps:
        # The generator may still be training: follow its newest checkpoint so the codes stay the ones it renders.
        if step % cfg.refresh_every == 0 and generator_ckpt.stat().st_mtime != seen_mtime:
            seen_mtime = generator_ckpt.stat().st_mtime
            G = generator_from_checkpoint(torch.load(generator_ckpt, weights_only=True)).to(device)
            w_avg = G.backbone.mapping.w_avg.clone()
            codes = _codes(G, data)
        enc.train()
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(data), (batch,), generator=gen).to(device)
        x = data.images(idx)
        pred = enc(x) + w_avg
        loss = F.mse_loss(pred, codes[idx]) * 10
        parts = {"code": loss.item()}
        if cfg.rerender_every and step % cfg.rerender_every == 0:
            sub = idx[:rerender_batch]
            image = G.synthesis(pred[:rerender_batch], data.c[sub], noise_mode="const")["image"]
            l_img = (image - x[:rerender_batch]).abs().mean()
            loss = loss + l_img
            parts["img"] = l_img.item()
            if idnet is not None and cfg.lambda_id > 0:
                l_id = 1 - (idnet(image) * idnet(x[:rerender_batch]).detach()).sum(1).mean()
                loss = loss + cfg.lambda_id * l_id
                parts["id"] = l_id.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.eval_every == 0 or step == steps:
            metrics = evaluate_encoder(enc, G, w_avg, idnet, heldout)
            history.append({"step": step, **parts, "seconds": time.time() - t0, **metrics})
            log(json.dumps(history[-1]))
        if step % cfg.ckpt_every == 0 or step == steps:
            save_checkpoint(ckpt, {"enc": enc.state_dict(), "config": json.dumps(enc.config), "w_avg": w_avg,
                                   "train_config": json.dumps(asdict(cfg))}, opt, gen, step, history)
    bar.close()
    return history[-1] if history else {}


# The codes every training photo stands for: mapping(z) of the generator (its camera conditioning is zeroed).
@torch.no_grad()
def _codes(G, data) -> torch.Tensor:
    return torch.cat([G.mapping(data.z[i:i + 512], data.c[i:i + 512]) for i in range(0, len(data), 512)])


# The identity net of the encoder's identity loss: the training checkpoint in identity_dir, else the one exported in
# `exported` (a run started from exported weights without a runs/ folder), else None (no identity loss).
def _load_identity(identity_dir: Path, exported: Path | None = None) -> IdentityNet | None:
    from guide_core.world.data import load_exported
    from guide_core.world.identity import load_identity_net
    path = Path(identity_dir) / "ckpt.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        net_state, config = state["net"], state["config"]
    elif exported is not None and (Path(exported) / "identity.safetensors").exists():
        net_state, config, _ = load_exported(Path(exported), "identity")
    else:
        return None
    return load_identity_net(net_state, json.loads(config)).requires_grad_(False)


# Held-out inversion quality: re-render PSNR (same camera as the photo) and identity similarity to the photo.
@torch.no_grad()
def evaluate_encoder(enc: WorldEncoder, G, w_avg: torch.Tensor, idnet: IdentityNet | None, data,
                     n: int = 32, batch: int = 64) -> dict[str, float]:
    from guide_core.world.generator import psnr
    enc.eval()
    values, similarities = [], []
    for i in range(0, min(n, len(data)), batch):
        idx = torch.arange(i, min(i + batch, n, len(data)), device=data.z.device)
        x = data.images(idx)
        image = G.synthesis(enc(x) + w_avg, data.c[idx], noise_mode="const", deterministic=True)["image"]
        values.append(psnr(image, x))
        if idnet is not None:
            similarities.append((idnet(image) * idnet(x)).sum(1))
    result = {"rerender_psnr": torch.cat(values).mean().item(), "n": len(torch.cat(values))}
    if idnet is not None:
        result["id_similarity"] = torch.cat(similarities).mean().item()
    return result


def load_world_encoder(state: dict[str, torch.Tensor], config: dict) -> WorldEncoder:
    enc = WorldEncoder(config["num_ws"], config["w_dim"], tuple(config["widths"]), config["hidden"])
    enc.load_state_dict(state)
    return enc.eval().requires_grad_(False)
