"""The whole world trained in one call on one accelerator within a wall-clock budget (``train-all``).

Data, identity net (stage 1), generator, identity net (stage 2, on the generator's renders), encoder. The generator's
and the encoder's step counts are sized from their step time measured on the device itself, and the plan is printed
and saved (runs/world/plan.json) before either trains, so a run is repeatable with the plain ``train`` commands it
names.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from tools.world.encoder import EncoderTrainConfig
from tools.world.generator import GeneratorTrainConfig
from tools.world.identity import IdentityTrainConfig

# Share of the generator's steps in its main (L1 + perceptual) phase; the rest is the MSE polish (train_generator).
MAIN_FRACTION = 0.7
# Share of the sized time the encoder gets, up to ENCODER_MAX_STEPS; the generator gets the rest.
ENCODER_SHARE = 0.2
# The encoder's default length (`train encoder`): more steps than that are given to the generator instead.
ENCODER_MAX_STEPS = EncoderTrainConfig().steps
# The generator and encoder settings of a plan: the shipped networks' (the trainers' configs) at batches that fill an
# accelerator better than the CPU's 8 and 32, with fewer checkpoints; their steps stay 0 until sized (size_plan).
PLAN_GENERATOR = replace(GeneratorTrainConfig(), steps=0, polish_steps=0, batch=32, ckpt_every=500)
PLAN_ENCODER = replace(EncoderTrainConfig(), steps=0, batch=64, ckpt_every=1000)


@dataclass
class WorldPlan:
    """What train_world will do: one trainer config per network (both identity stages share one).

    The generator's and the encoder's step counts stay 0 until sized from measured step times (size_plan). The flat
    properties name the numbers a plan is summed up by (plan.json, ``train-all --dry-run``, commands()).
    """

    device: str
    minutes: float
    identity: IdentityTrainConfig = field(default_factory=IdentityTrainConfig)
    generator: GeneratorTrainConfig = PLAN_GENERATOR
    encoder: EncoderTrainConfig = PLAN_ENCODER
    seconds_per_step: dict = field(default_factory=dict)

    @property
    def identity_steps(self) -> int:
        """Steps of each identity stage."""
        return self.identity.steps

    @property
    def generator_steps(self) -> int:
        """Steps of the generator's main phase."""
        return self.generator.steps

    @property
    def polish_steps(self) -> int:
        """Steps of the generator's polish phase."""
        return self.generator.polish_steps

    @property
    def encoder_steps(self) -> int:
        """Steps of the encoder."""
        return self.encoder.steps

    @property
    def generator_batch(self) -> int:
        """The generator's batch."""
        return self.generator.batch

    @property
    def encoder_batch(self) -> int:
        """The encoder's batch."""
        return self.encoder.batch

    def record(self) -> dict:
        """The plan as plan.json and ``train-all --dry-run`` show it.

        The summary numbers under their flat names (the layout plan.json had before the configs were saved beside
        them), then each trainer's full config.
        """
        return {"device": self.device, "minutes": self.minutes, "generator_batch": self.generator_batch,
                "encoder_batch": self.encoder_batch, "identity_steps": self.identity_steps,
                "generator_steps": self.generator_steps, "polish_steps": self.polish_steps,
                "encoder_steps": self.encoder_steps, "seconds_per_step": self.seconds_per_step,
                **{name: asdict(getattr(self, name)) for name in ("identity", "generator", "encoder")}}

    def commands(self) -> list[str]:
        """The ``python -m tools.world`` commands that repeat this plan one network at a time."""
        dev = f" --device {self.device}"
        return ["render-data --workers N",
                f"train identity --steps {self.identity_steps}{dev}",
                f"train generator --steps {self.generator_steps} --polish-steps {self.polish_steps} "
                f"--batch {self.generator_batch}{dev}",
                f"train identity --steps {self.identity_steps}{dev}",
                f"train encoder --steps {self.encoder_steps} --batch {self.encoder_batch}{dev}"]


def size_plan(plan: WorldPlan, seconds: float, generator_step_s: float, encoder_step_s: float) -> WorldPlan:
    """Step counts for ``seconds`` of training, set in ``plan`` (returned).

    The encoder gets ENCODER_SHARE of the time up to ENCODER_MAX_STEPS, the generator the rest (split MAIN_FRACTION
    main, the rest polish).
    """
    if seconds <= 0:
        raise ValueError(f"no time left to train the generator and the encoder ({seconds:.0f} s): raise --minutes")
    encoder_steps = min(ENCODER_MAX_STEPS, int(seconds * ENCODER_SHARE / encoder_step_s))
    total = int((seconds - encoder_steps * encoder_step_s) / generator_step_s)
    main = int(total * MAIN_FRACTION)
    plan.generator = replace(plan.generator, steps=main, polish_steps=total - main)
    plan.encoder = replace(plan.encoder, steps=encoder_steps)
    plan.seconds_per_step = {"generator": generator_step_s, "encoder": encoder_step_s}
    return plan


def _seconds_per_step(step, n: int, device: str) -> float:
    """Mean seconds of ``n`` calls of ``step`` after three warm-up calls, synchronised on a GPU."""
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


def measure_step_times(data, perceptual, plan: WorldPlan, n: int = 20) -> tuple[float, float]:
    """Measured seconds per training step of the generator and of the encoder, on throwaway networks.

    The generator at full neural-rendering resolution with the perceptual loss on (its dearest phase), the encoder
    averaged over one re-render cycle.
    """
    from guide_core.world.encoder import WorldEncoder
    from guide_core.world.generator import build_generator
    from tools.world.encoder import default_rerender_batch
    from tools.world.generator import generator_loss
    g = plan.generator
    G = build_generator(12345, g.plane_resolution, g.mapping_layers, g.normalize_z, g.channel_base,
                        g.channel_max).to(plan.device)
    opt = torch.optim.Adam(G.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)

    def generator_step():
        idx = torch.randint(0, len(data), (plan.generator_batch,), generator=gen).to(plan.device)
        loss, _ = generator_loss(G, data, idx, perceptual, lambda_depth=g.lambda_depth, lambda_per=g.lambda_per)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    generator_s = _seconds_per_step(generator_step, n, plan.device)
    G.requires_grad_(False)
    enc = WorldEncoder(G.backbone.num_ws).to(plan.device)
    enc_opt = torch.optim.Adam(enc.parameters(), lr=1e-5)
    rerender = plan.encoder.rerender_batch or default_rerender_batch(plan.encoder_batch)

    def encoder_cycle():  # one re-render step and three code-only steps, as train_encoder does by default
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


def train_world(runs: Path, plan: WorldPlan, workers: int = 1, datasets: dict | None = None, log=print) -> dict:
    """Train the world into ``runs`` within plan.minutes of wall clock, each network with its config in the plan.

    Returns the sized plan (WorldPlan.record) with the final metrics of each network.
    """
    from tools.world.data import DATASETS, load_dataset, render_dataset
    from tools.world.encoder import train_encoder
    from tools.world.generator import perceptual_net, train_generator
    from tools.world.identity import train_identity
    start = time.time()
    deadline = start + plan.minutes * 60
    runs = Path(runs)
    data_dir, heldout_dir = runs / "data" / "train", runs / "data" / "heldout"
    for name, (n_ids, photos, seed, supersample) in (datasets or DATASETS).items():
        render_dataset(runs / "data" / name, n_ids, photos, seed, supersample, workers=workers)
    log(f"data rendered in {time.time() - start:.0f} s")
    result: dict = {}
    t = time.time()
    result["identity_stage1"] = train_identity(data_dir, heldout_dir, runs / "identity", plan.identity,
                                               device=plan.device, log=log)
    identity_s = time.time() - t
    data = load_dataset(data_dir).to(plan.device)
    generator_s, encoder_s = measure_step_times(data, perceptual_net(runs / "identity", device=plan.device), plan)
    del data
    # Stage 2 costs stage 1 plus the generator's renders of the training people; evaluations and checkpoints take
    # about a tenth on top of the measured steps.
    left = (deadline - time.time() - 1.5 * identity_s) / 1.1
    size_plan(plan, left, generator_s, encoder_s)
    (runs / "plan.json").write_text(json.dumps(plan.record(), indent=2) + "\n")
    log("plan: " + json.dumps(plan.record()))
    result["generator"] = train_generator(data_dir, heldout_dir, runs / "generator", plan.generator,
                                          identity_dir=runs / "identity", device=plan.device, log=log)
    result["identity"] = train_identity(data_dir, heldout_dir, runs / "identity", plan.identity,
                                        generator_dir=runs / "generator", device=plan.device, log=log)
    result["encoder"] = train_encoder(runs / "encoder", runs / "generator", runs / "identity", plan.encoder,
                                      device=plan.device, log=log)
    result["seconds"] = time.time() - start
    log(f"world trained in {result['seconds']:.0f} s (budget {plan.minutes * 60:.0f} s)")
    return {"plan": plan.record(), **result}
