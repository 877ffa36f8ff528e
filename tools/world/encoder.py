"""Training of the world's inversion encoder (``guide_core.world.encoder.WorldEncoder``) through the frozen generator.

Most steps regress codes directly: a rendered photo of latent z has the code mapping(z). Every few steps the predicted
code is also rendered through the frozen generator and compared with the photo (L1 and, with the world identity net,
identity: the re-render losses that GOAE-style encoders optimise).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from guide_core.world.encoder import WorldEncoder
from guide_core.world.identity import IdentityNet
from tools.world.data import load_checkpoint, load_dataset, load_exported, save_checkpoint, training_bar
from tools.world.evaluate import evaluate_encoder


def default_rerender_batch(batch: int) -> int:
    """Photos re-rendered through the generator on a re-render step: an eighth of the batch (4 at the default 32)."""
    return batch // 8 or 1


@dataclass(frozen=True)
class EncoderTrainConfig:
    """How train_encoder trains: the shipped encoder's settings (weights/default/metrics.json, its model card).

    ``python -m tools.world train encoder`` has one flag per field; ``dataclasses.replace(EncoderTrainConfig(),
    steps=2)`` gives another run.
    """

    # metrics.json encoder.steps
    steps: int = field(default=16000, metadata={"help": "optimisation steps"})
    # batch and lr: the trainer's own defaults from the start (the model card names no others)
    batch: int = field(default=32, metadata={"help": "photos per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam's peak learning rate, cosine to zero"})
    # the trainer's schedule from the start: 4 of the 32 photos re-rendered every 4th step
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


def train_encoder(out: Path, generator_dir: Path, identity_dir: Path, config: EncoderTrainConfig = EncoderTrainConfig(),
                  *, data_dir: Path | None = None, heldout_dir: Path | None = None, init_from: Path | None = None,
                  resume: bool = False, device: str = "cpu", log=print) -> dict:
    """Encoder training: code regression on rendered photos, plus re-render L1 and identity loss every few steps.

    ``data_dir`` / ``heldout_dir`` default to the data folders beside ``generator_dir``; ``init_from``: exported weights
    to start from when there is no checkpoint to resume. Returns the last held-out evaluation.
    """
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
    bar = training_bar(steps, "encoder", initial=step)
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


@torch.no_grad()
def _codes(G, data) -> torch.Tensor:
    """The codes every training photo stands for: mapping(z) of the generator (its camera conditioning is zeroed)."""
    return torch.cat([G.mapping(data.z[i:i + 512], data.c[i:i + 512]) for i in range(0, len(data), 512)])


def _load_identity(identity_dir: Path, exported: Path | None = None) -> IdentityNet | None:
    """The identity net of the encoder's identity loss, or None (no identity loss).

    The training checkpoint in identity_dir, else the one exported in ``exported`` (a run started from exported
    weights without a runs/ folder).
    """
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
