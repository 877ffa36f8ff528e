# Seconds per Latent Target Unlearning iteration (GUIDE Sec. 3.3) on the paper's architecture: guide's engine with the
# model's own defaults (batched losses + LTUConfig's speed settings: precision, channels_last, fused_sr,
# compile_renderer) against the one-image-at-a-time formulation at the original's arithmetic (ltu_losses_reference:
# the shape of the official unlearn.py, fp32, unfused, eager), on the same model, device and draws. Prints s/iteration,
# where the time goes (tri-planes, rendering, super-resolution, LPIPS, identity net, backward, optimizer), peak memory
# and a whole run. Goals: engine / one-at-a-time <= 0.5 on a CPU; the paper's 1000 iterations <= 90 s on a GPU.
#   python benchmarks/ltu_step.py --compile-renderer               # ffhq512-128 architecture, random weights, CPU
#   python benchmarks/ltu_step.py --device cuda --compile-renderer --full-run   # + a whole 1000-iteration run
#   python benchmarks/ltu_step.py --profile small --precision fp32  # any LTUConfig flag overrides the engine's defaults
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide_core.cli import add_config_flags, config_from_args  # noqa: E402
from guide_core.config import LTUConfig  # noqa: E402
from guide_core.engine import Unlearning  # noqa: E402
from guide_core.engine.draws import sample_draws  # noqa: E402
from guide_core.engine.losses import LossNets, ltu_losses  # noqa: E402
from guide_core.engine.reference import ltu_losses_reference  # noqa: E402
from guide_core.precision import autocast_dtype  # noqa: E402
from guide_core.testing import random_bundle  # noqa: E402

PARTS = ("tri-planes", "rendering", "super-resolution", "LPIPS", "identity net", "forward, rest", "backward",
         "optimizer")


# Wait for queued device work so wall-clock times mean something on CUDA.
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Wall-clock seconds spent inside chosen modules' forward passes, from forward hooks (outermost call only).
class ForwardTimer:
    def __init__(self, device: torch.device):
        self.device, self.seconds, self._open = device, defaultdict(float), {}

    def watch(self, part: str, module: torch.nn.Module) -> None:
        def before(mod, args):
            sync(self.device)
            self._open.setdefault(id(mod), time.perf_counter())

        def after(mod, args, out):
            sync(self.device)
            self.seconds[part] += time.perf_counter() - self._open.pop(id(mod))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


# Peak resident memory of this process while a block runs (CPU: /proc/self/statm sampled every 20 ms) or the peak
# CUDA allocation; in GiB.
class PeakMemory:
    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0.0, threading.Event()

    @staticmethod
    def rss_gib() -> float:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * 4096 / 2 ** 30

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self._stop.clear()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss_gib())
                time.sleep(0.02)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device) / 2 ** 30)
        else:
            self._stop.set()
            self._thread.join()


# One formulation's training state (its own G_u copy, Adam, draw stream) and a step that times one iteration.
class Stepper:
    def __init__(self, bundle, w_u, cfg: LTUConfig, batched: bool):
        self.run = Unlearning(bundle, w_u, cfg=cfg)
        self.run.G_u.train()
        self.bundle, self.cfg, self.batched = bundle, cfg, batched
        self.nets = LossNets.of(bundle, cfg)
        self.optimizer = torch.optim.Adam([p for p in self.run.G_u.parameters() if p.requires_grad], lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.planes_t = self.run._target_structure() if batched else None
        self.timer = ForwardTimer(bundle.device)
        for G in (self.run.G_u, self.run.G_s):
            self.timer.watch("tri-planes", G.backbone.synthesis)
            self.timer.watch("rendering", G.renderer)
            self.timer.watch("super-resolution", G.superresolution)
        self.timer.watch("LPIPS", bundle.perceptual)
        self.timer.watch("identity net", getattr(bundle.id_loss_net, "backbone", bundle.id_loss_net))
        self.memory = PeakMemory(bundle.device)
        self.steps = 0

    # Losses + backward + Adam step; returns {part: seconds} of this iteration, "total" included.
    def step(self) -> dict[str, float]:
        run, cfg, device = self.run, self.cfg, self.bundle.device
        self.timer.seconds.clear()
        with self.memory:
            sync(device)
            start = time.perf_counter()
            draws = sample_draws(self.gen, cfg, run.w_u.shape[0], self.bundle.z_dim, self.steps)
            c = self.bundle.camera(draws.yaw, cfg.pitch)
            if self.batched:
                total, _ = ltu_losses(run.G_u, run.G_s, run.w_u, run.w_t, self.planes_t, draws, self.nets, cfg, c)
            else:
                total, _ = ltu_losses_reference(run.G_u, run.G_s, run.w_u, run.w_t, draws, self.nets, cfg, c)
            sync(device)
            forward_done = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            sync(device)
            backward_done = time.perf_counter()
            self.optimizer.step()
            sync(device)
            end = time.perf_counter()
        self.steps += 1
        parts = dict(self.timer.seconds)
        parts["forward, rest"] = forward_done - start - sum(parts.values())
        parts.update({"backward": backward_done - forward_done, "optimizer": end - backward_done, "total": end - start})
        return parts


# Per-part medians of both formulations, measured alternately (engine, reference, engine, ...) so a shared machine's
# changing load hits both alike; `warmup` untimed iterations each first (the engine's compiles happen there).
def measure(bundle, w_u, cfg: LTUConfig, iters: int, warmup: int) -> tuple[dict, dict, float]:
    engine = Stepper(bundle, w_u, cfg, batched=True)
    reference = Stepper(bundle, w_u, cfg.original_arithmetic(), batched=False)
    start = time.perf_counter()
    for _ in range(warmup):
        engine.step()
    warm_s = time.perf_counter() - start
    for _ in range(warmup):
        reference.step()
    runs: dict[str, list[dict[str, float]]] = {"engine": [], "reference": []}
    for i in range(iters):
        runs["engine"].append(engine.step())
        runs["reference"].append(reference.step())
        print(f"  timed iteration {i + 1}/{iters}: engine {runs['engine'][-1]['total']:.2f} s, "
              f"one at a time {runs['reference'][-1]['total']:.2f} s", flush=True)
    medians = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in runs.items()}
    medians["engine"]["peak_memory_gib"] = engine.memory.peak
    medians["reference"]["peak_memory_gib"] = reference.memory.peak
    return medians["engine"], medians["reference"], warm_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--profile", choices=("small", "paper"), default="paper",
                        help="the ffhq512-128 architecture with random weights, or a small random world")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--timed", type=int, default=2, help="timed iterations per formulation")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations of each formulation first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    parser.add_argument("--full-run", action="store_true", help="also time one whole run of the engine (cfg.iters)")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="print the model and settings, time nothing")
    add_config_flags(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    bundle = random_bundle(args.profile, device=args.device, seed=0)
    cfg = config_from_args(args, dataclasses.replace(bundle.ltu_defaults, preview_every=0))
    gen = torch.Generator().manual_seed(5)
    w_u = (bundle.w_avg_code().cpu() + 0.8 * torch.randn(bundle.num_ws, 512, generator=gen)).unsqueeze(0)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    dtype = autocast_dtype(cfg.precision, device)
    print(f"model: random-{args.profile} ({bundle.G.img_resolution} px, neural rendering "
          f"{bundle.G.neural_rendering_resolution} px, {bundle.G.rendering_kwargs['depth_resolution']} + "
          f"{bundle.G.rendering_kwargs['depth_resolution_importance']} samples), device: {name}, N_a = {cfg.n_adj}, "
          f"N_g = {cfg.n_glob}")
    print(f"engine: precision {cfg.precision} ({dtype or 'fp32'}), channels_last {cfg.channels_last}, fused_sr "
          f"{cfg.fused_sr}, compile_renderer {cfg.compile_renderer}; one at a time: fp32, unfused, eager")
    if args.dry_run:
        return 0
    engine, reference, warm_s = measure(bundle, w_u, cfg, args.timed, args.warmup)
    ratio = engine["total"] / reference["total"]
    heading = f"seconds per iteration (median of {args.timed})"
    print(f"\n{heading:<40}{'engine':>10}{'one at a time':>16}")
    for part in PARTS + ("total",):
        print(f"{part:<40}{engine.get(part, 0.0):>10.2f}{reference.get(part, 0.0):>16.2f}")
    memory = "GPU max allocated" if device.type == "cuda" else "CPU peak RSS"
    print(f"{memory + ' (GiB)':<40}{engine['peak_memory_gib']:>10.2f}{reference['peak_memory_gib']:>16.2f}")
    print(f"ratio engine / one at a time = {ratio:.3f} (goal <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'})")
    first_s = warm_s / max(args.warmup, 1)
    projected = warm_s + (cfg.iters - args.warmup) * engine["total"]
    print(f"engine warm-up: {warm_s:.1f} s for {args.warmup} iteration(s) (compiles included); whole run of "
          f"{cfg.iters} iterations projected: {projected:.0f} s")
    result = {"profile": args.profile, "device": name, "config": cfg.to_dict(), "engine": engine,
              "reference": reference, "ratio": ratio, "warmup_s": warm_s, "first_iteration_s": first_s,
              "projected_run_s": projected}
    if args.full_run:
        run = Unlearning(bundle, w_u, cfg=cfg)
        sync(device)
        start = time.perf_counter()
        run.run_all()
        sync(device)
        result["full_run_s"] = time.perf_counter() - start
        print(f"whole run, {cfg.iters} iterations: {result['full_run_s']:.1f} s (goal on a GPU: <= 90 s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
