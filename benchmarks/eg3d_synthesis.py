# CPU timings of guide's EG3D on the parity fixture (reduced-width ffhq512-128 model): mapping, get_planes
# and full 512x512 synthesis, stochastic and deterministic rendering. Median of a few runs, batch 1 by default.
# Usage: python benchmarks/eg3d_synthesis.py [--runs 3] [--batch 1] [--threads N] [--fixtures tests/fixtures]
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from guide_core.eg3d import TriPlaneGenerator, camera_params

REPO = Path(__file__).resolve().parents[1]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Median wall time of fn over `runs` calls (after one warm-up call).
def timed(fn, runs: int) -> float:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--fixtures", type=Path,
                        default=REPO / "tests" / "fixtures")
    args = parser.parse_args()
    folder = args.fixtures / "eg3d"
    if not (folder / "config.json").is_file():
        print(f"fixture not found at {folder}; pass --fixtures")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    config = json.loads((folder / "config.json").read_text())
    G = TriPlaneGenerator(**config["init_kwargs"])
    G.load_state_dict(load_file(str(folder / "state_dict.safetensors")))
    G.neural_rendering_resolution = config["neural_rendering_resolution"]
    G.eval()
    n = args.batch
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(0))
    c = camera_params(torch.linspace(-0.3, 0.3, n), torch.zeros(n))
    with torch.no_grad():
        ws = G.mapping(z, c)
        planes = G.get_planes(ws)
        rows = [
            ("mapping", timed(lambda: G.mapping(z, c), args.runs)),
            ("get_planes (256^2 x 96)", timed(lambda: G.get_planes(ws), args.runs)),
            ("render_planes, no SR, stochastic", timed(lambda: G.render_planes(planes, c), args.runs)),
            ("render_planes, no SR, deterministic",
             timed(lambda: G.render_planes(planes, c, deterministic=True), args.runs)),
            ("synthesis 512^2, stochastic", timed(lambda: G.synthesis(ws, c), args.runs)),
            ("synthesis 512^2, deterministic", timed(lambda: G.synthesis(ws, c, deterministic=True), args.runs)),
        ]
    print(f"EG3D fixture model ({sum(p.numel() for p in G.parameters()) / 1e6:.2f} M params), batch {n}, "
          f"neural rendering {G.neural_rendering_resolution}^2, 48+48 samples/ray, median of {args.runs} runs")
    print(f"machine: {_cpu_name()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    print(f"| {'step':<38} | seconds |")
    print(f"|{'-' * 40}|---------|")
    for name, seconds in rows:
        print(f"| {name:<38} | {seconds:7.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
