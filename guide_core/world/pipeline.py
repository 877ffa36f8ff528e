# The whole world trained in one call on one accelerator within a wall-clock budget (`train-all`): data, identity net
# (stage 1), generator, identity net (stage 2, on the generator's renders), encoder. The generator's and the encoder's
# step counts are sized from their step time measured on the device itself, and the plan is printed and saved
# (runs/world/plan.json) before either trains, so a run is repeatable with the plain `train` commands it names.
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# Share of the generator's steps in its main (L1 + perceptual) phase; the rest is the MSE polish (train_generator).
MAIN_FRACTION = 0.7
# Share of the sized time the encoder gets, up to ENCODER_MAX_STEPS; the generator gets the rest.
ENCODER_SHARE = 0.2
# The encoder's default length (`train encoder`): more steps than that are given to the generator instead.
ENCODER_MAX_STEPS = 16000


# What train_world will do; the step counts stay 0 until sized from measured step times (size_plan).
@dataclass
class WorldPlan:
    device: str
    minutes: float
    generator_batch: int = 32
    encoder_batch: int = 64
    identity_steps: int = 3000
    generator_steps: int = 0
    polish_steps: int = 0
    encoder_steps: int = 0
    seconds_per_step: dict = field(default_factory=dict)

    # The `python -m guide_core.world` commands that repeat this plan one network at a time.
    def commands(self) -> list[str]:
        dev = f" --device {self.device}"
        return [f"render-data --workers N",
                f"train identity --steps {self.identity_steps}{dev}",
                f"train generator --steps {self.generator_steps} --polish-steps {self.polish_steps} "
                f"--batch {self.generator_batch}{dev}",
                f"train identity --steps {self.identity_steps}{dev}",
                f"train encoder --steps {self.encoder_steps} --batch {self.encoder_batch}{dev}"]


# Step counts for `seconds` of training: the encoder gets ENCODER_SHARE of it up to ENCODER_MAX_STEPS, the generator
# the rest (split MAIN_FRACTION main, the rest polish).
def size_plan(plan: WorldPlan, seconds: float, generator_step_s: float, encoder_step_s: float) -> WorldPlan:
    if seconds <= 0:
        raise ValueError(f"no time left to train the generator and the encoder ({seconds:.0f} s): raise --minutes")
    encoder_steps = min(ENCODER_MAX_STEPS, int(seconds * ENCODER_SHARE / encoder_step_s))
    total = int((seconds - encoder_steps * encoder_step_s) / generator_step_s)
    plan.generator_steps = int(total * MAIN_FRACTION)
    plan.polish_steps = total - plan.generator_steps
    plan.encoder_steps = encoder_steps
    plan.seconds_per_step = {"generator": generator_step_s, "encoder": encoder_step_s}
    return plan


def _seconds_per_step(step, n: int, device: str) -> float:
    for _ in range(3):  # warm-up: allocator, cuDNN algorithm choice
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


# Measured seconds per training step of the generator (full neural-rendering resolution, perceptual loss on: its
# dearest phase) and of the encoder (averaged over one re-render cycle), on throwaway networks.
def measure_step_times(data, perceptual, plan: WorldPlan, n: int = 20) -> tuple[float, float]:
    from guide_core.world.encoder import WorldEncoder, default_rerender_batch
    from guide_core.world.generator import build_generator, generator_loss
    G = build_generator(seed=12345).to(plan.device)
    opt = torch.optim.Adam(G.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)

    def generator_step():
        idx = torch.randint(0, len(data), (plan.generator_batch,), generator=gen).to(plan.device)
        loss, _ = generator_loss(G, data, idx, perceptual)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    generator_s = _seconds_per_step(generator_step, n, plan.device)
    G.requires_grad_(False)
    enc = WorldEncoder(G.backbone.num_ws).to(plan.device)
    enc_opt = torch.optim.Adam(enc.parameters(), lr=1e-5)
    rerender = default_rerender_batch(plan.encoder_batch)

    def encoder_cycle():  # one re-render step and three code-only steps, as train_encoder does
        for k in range(4):
            idx = torch.randint(0, len(data), (plan.encoder_batch,), generator=gen).to(plan.device)
            x = data.images(idx)
            pred = enc(x)
            loss = pred.square().mean()
            if k == 0:
                image = G.synthesis(pred[:rerender], data.c[idx[:rerender]])["image"]
                loss = loss + (image - x[:rerender]).abs().mean()
            enc_opt.zero_grad(set_to_none=True)
            loss.backward()
            enc_opt.step()

    encoder_s = _seconds_per_step(encoder_cycle, max(1, n // 4), plan.device) / 4
    return generator_s, encoder_s


# Train the world into `runs` within plan.minutes of wall clock (the networks' own defaults otherwise: seeds, learning
# rates, schedules). Returns the sized plan with the final metrics of each network.
def train_world(runs: Path, plan: WorldPlan, workers: int = 1, datasets: dict | None = None, log=print) -> dict:
    from guide_core.world.data import DATASETS, load_dataset, render_dataset
    from guide_core.world.encoder import train_encoder
    from guide_core.world.generator import _perceptual, train_generator
    from guide_core.world.identity import train_identity
    start = time.time()
    deadline = start + plan.minutes * 60
    runs = Path(runs)
    data_dir, heldout_dir = runs / "data" / "train", runs / "data" / "heldout"
    for name, (n_ids, photos, seed, supersample) in (datasets or DATASETS).items():
        render_dataset(runs / "data" / name, n_ids, photos, seed, supersample, workers=workers)
    log(f"data rendered in {time.time() - start:.0f} s")
    result: dict = {}
    t = time.time()
    result["identity_stage1"] = train_identity(data_dir, heldout_dir, runs / "identity", steps=plan.identity_steps,
                                               device=plan.device, log=log)
    identity_s = time.time() - t
    data = load_dataset(data_dir).to(plan.device)
    generator_s, encoder_s = measure_step_times(data, _perceptual(runs / "identity", device=plan.device), plan)
    del data
    # Stage 2 costs stage 1 plus the generator's renders of the training people; evaluations and checkpoints take
    # about a tenth on top of the measured steps.
    left = (deadline - time.time() - 1.5 * identity_s) / 1.1
    size_plan(plan, left, generator_s, encoder_s)
    (runs / "plan.json").write_text(json.dumps(asdict(plan), indent=2) + "\n")
    log("plan: " + json.dumps(asdict(plan)))
    result["generator"] = train_generator(data_dir, heldout_dir, runs / "generator", steps=plan.generator_steps,
                                          polish_steps=plan.polish_steps, batch=plan.generator_batch,
                                          identity_dir=runs / "identity", ckpt_every=500, device=plan.device, log=log)
    result["identity"] = train_identity(data_dir, heldout_dir, runs / "identity", steps=plan.identity_steps,
                                        generator_dir=runs / "generator", device=plan.device, log=log)
    result["encoder"] = train_encoder(runs / "encoder", runs / "generator", runs / "identity",
                                      steps=plan.encoder_steps, batch=plan.encoder_batch, ckpt_every=1000,
                                      device=plan.device, log=log)
    result["seconds"] = time.time() - start
    log(f"world trained in {result['seconds']:.0f} s (budget {plan.minutes * 60:.0f} s)")
    return {"plan": asdict(plan), **result}
