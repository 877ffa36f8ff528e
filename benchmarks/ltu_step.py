# Seconds per Latent Target Unlearning iteration (GUIDE Sec. 3.3): the batched engine (guide_core.guide.ltu_losses:
# one synthesis + one render pass per generator, G_s's planes at w_t cached) against the one-image-at-a-time
# formulation of the same losses (ltu_losses_reference, the shape of the official unlearn.py), on the same model,
# device and draws. Each timed iteration = losses + backward + Adam step. Goal: batched / reference <= 0.5.
#   python benchmarks/ltu_step.py                      # small random world on the CPU (seconds)
#   python benchmarks/ltu_step.py --profile paper --device cuda --full-run
#       # ffhq512-128 architecture (random weights), plus one whole paper run (1000 iterations; target < 90 s)
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide_core.testing import random_bundle  # noqa: E402
from guide_core.guide import (LossNets, LTUConfig, Unlearning, ltu_losses, ltu_losses_reference,  # noqa: E402
                              sample_draws)


# Wait for queued device work so wall-clock times mean something on CUDA.
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# One formulation's training state (its own G_u copy, Adam, draw stream) and a step that times one iteration.
class Stepper:
    def __init__(self, bundle, w_u, cfg: LTUConfig, batched: bool):
        self.run = Unlearning(bundle, w_u, cfg=cfg)
        self.run.G_u.train()
        self.bundle, self.cfg, self.batched = bundle, cfg, batched
        self.nets = LossNets(bundle.perceptual, bundle.id_loss_net, bundle.cond_c)
        self.optimizer = torch.optim.Adam([p for p in self.run.G_u.parameters() if p.requires_grad], lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.planes_t = self.run._target_planes() if batched else None

    # Losses + backward + Adam step; returns the wall-clock seconds it took.
    def step(self) -> float:
        run, cfg, device = self.run, self.cfg, self.bundle.device
        sync(device)
        start = time.perf_counter()
        draws = sample_draws(self.gen, cfg, run.w_u.shape[0], self.bundle.z_dim)
        c = self.bundle.camera(draws.yaw, cfg.pitch)
        if self.batched:
            total, _ = ltu_losses(run.G_u, run.G_s, run.w_u, run.w_t, self.planes_t, draws, self.nets, cfg, c)
        else:
            total, _ = ltu_losses_reference(run.G_u, run.G_s, run.w_u, run.w_t, draws, self.nets, cfg, c)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        sync(device)
        return time.perf_counter() - start


# Median seconds per iteration of both formulations, measured alternately (batched, reference, batched, ...) so a
# shared machine's changing load hits both alike; `warmup` untimed iterations each first.
def seconds_per_iteration(bundle, w_u, cfg: LTUConfig, iters: int, warmup: int) -> tuple[float, float]:
    batched, reference = Stepper(bundle, w_u, cfg, True), Stepper(bundle, w_u, cfg, False)
    for _ in range(warmup):
        batched.step()
        reference.step()
    times_b, times_r = [], []
    for _ in range(iters):
        times_b.append(batched.step())
        times_r.append(reference.step())
    return statistics.median(times_b), statistics.median(times_r)


# Build the random world, time both formulations, print the table and the ratio.
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--profile", choices=("small", "paper"), default="small",
                        help="small random world, or the ffhq512-128 architecture with random weights")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per formulation")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--full-run", action="store_true", help="also time one whole run of LTUConfig().iters")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    bundle = random_bundle(args.profile, device=args.device, seed=0)
    gen = torch.Generator().manual_seed(5)
    w_u = (bundle.w_avg_code().cpu() + 0.8 * torch.randn(bundle.num_ws, 512, generator=gen)).unsqueeze(0)
    cfg = LTUConfig(preview_every=0)
    on_gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(args.device) if on_gpu else f"CPU x{torch.get_num_threads()}"
    print(f"model: random-{args.profile} ({bundle.G.img_resolution} px, neural {bundle.G.neural_rendering_resolution} "
          f"px), device: {name}, N_a = {cfg.n_adj}, N_g = {cfg.n_glob}, {args.iters} timed iterations")
    batched, reference = seconds_per_iteration(bundle, w_u, cfg, args.iters, args.warmup)
    ratio = batched / reference
    print(f"{'formulation':<28}{'s / iteration (median)':>24}")
    print(f"{'batched (guide_core)':<28}{batched:>24.4f}")
    print(f"{'one image at a time':<28}{reference:>24.4f}")
    print(f"ratio batched / one-at-a-time = {ratio:.3f} (goal <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'})")
    result = {"profile": args.profile, "device": name, "batched_s": batched, "reference_s": reference, "ratio": ratio}
    if args.full_run:
        run = Unlearning(bundle, w_u, cfg=cfg)
        sync(bundle.device)
        start = time.perf_counter()
        run.run_all()
        sync(bundle.device)
        result["full_run_s"] = time.perf_counter() - start
        result["full_run_iters"] = cfg.iters
        print(f"whole run, {cfg.iters} iterations: {result['full_run_s']:.1f} s (target < 90 s on a GPU)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
