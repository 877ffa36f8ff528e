"""Seconds per unlearning iteration of each method on each generator family, from one script: the EG3D paper profile
(ffhq512-128 architecture) and GUIDE-SG2 (StyleGAN2 FFHQ config-f at 1024 px, renders pooled to 256 as pSp does),
both with random weights, the engine's own defaults (N_a = N_g = 2, the model's speed settings), each method's own
settings at their defaults, and the same code (guide_core.engine.Unlearning). Prints a table: the method's setup
before the first iteration (SUGAR's trigger network and Fisher information), s/iteration (median of the timed
iterations), the first iteration, peak memory (setup included), and the projected 1000-iteration run.
    python benchmarks/generator_step.py                                    # CPU, GUIDE on both profiles
    python benchmarks/generator_step.py --device cuda --timed 49 --profiles paper --methods guide legato sugar
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from guide_core.devices import pick_device  # noqa: E402
from guide_core.engine import Unlearning  # noqa: E402
from guide_core.engine.method import available_methods, method_config  # noqa: E402
from guide_core.tables import Table  # noqa: E402
from guide_core.testing import random_bundle  # noqa: E402
from ltu_step import PeakMemory, sync  # noqa: E402

PROFILES = {"paper": "EG3D ffhq512-128 (3D, 512 px)", "sg2-paper": "GUIDE-SG2: StyleGAN2 FFHQ config-f (2D, 1024 px)",
            "small": "EG3D, small random (smoke test)", "sg2-small": "StyleGAN2, small random (smoke test)"}


def time_profile(profile: str, device: str, warmup: int, timed: int, method: str = "guide") -> dict:
    """Setup and iteration times of one unlearning by `method` on a random-weight bundle of `profile`."""
    bundle = random_bundle(profile, device=device, seed=0)
    cfg = method_config(method, dataclasses.replace(bundle.ltu_defaults, iters=warmup + timed, preview_every=0))
    gen = torch.Generator().manual_seed(5)
    w_u = (bundle.w_avg_code().cpu() + 0.8 * torch.randn(bundle.num_ws, 512, generator=gen)).unsqueeze(0)
    stamps, memory, setup = [], PeakMemory(torch.device(device)), None
    with memory:
        sync(torch.device(device))
        begin = time.perf_counter()
        run = Unlearning(bundle, w_u, cfg=cfg, method=method)
        for progress in run.run():
            if not progress.done:
                sync(torch.device(device))
                if setup is None:  # everything before the loop's clock started: targets, the method's start
                    setup = time.perf_counter() - begin - progress.seconds
                stamps.append(progress.seconds)
    steps = [b - a for a, b in zip([0.0] + stamps, stamps)]
    per_iteration = statistics.median(steps[warmup:]) if timed else steps[-1]
    return {"profile": profile, "what": PROFILES[profile], "method": method,
            "resolution": bundle.backend.resolution(bundle.G), "generator_px": int(bundle.G.img_resolution),
            "setup_s": setup, "first_s": steps[0], "per_iteration_s": per_iteration, "peak_memory_gib": memory.peak,
            "projected_1000_s": setup + steps[0] + 999 * per_iteration, "precision": cfg.precision}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--profiles", nargs="+", choices=tuple(PROFILES), default=["paper", "sg2-paper"])
    parser.add_argument("--methods", nargs="+", choices=available_methods(), default=["guide"])
    parser.add_argument("--device", default="auto", help="torch device (auto = cuda when available)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--timed", type=int, default=2, help="timed iterations per profile")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="print what would be timed, time nothing")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"CPU x{torch.get_num_threads()}"
    print(f"device: {name}; profiles: {', '.join(args.profiles)}; methods: {', '.join(args.methods)}; "
          f"{args.warmup} warm-up + {args.timed} timed iteration(s) each")
    if args.dry_run:
        return 0
    results = [time_profile(p, device, args.warmup, args.timed, m) for p in args.profiles for m in args.methods]
    memory = "GPU max allocated (GiB)" if device.startswith("cuda") else "CPU peak RSS (GiB)"
    table = Table(("generator", "method", "renders seen by the losses", "setup (s)", "s / iteration",
                   "first iteration (s)", memory, "1000 iterations (projected, s)"),
                  [(r["what"], r["method"], f"{r['resolution']} px", f"{r['setup_s']:.2f}",
                    f"{r['per_iteration_s']:.2f}", f"{r['first_s']:.2f}", f"{r['peak_memory_gib']:.1f}",
                    f"{r['projected_1000_s']:.0f}") for r in results])
    print(table.text())
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
