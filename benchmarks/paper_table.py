# The GUIDE paper's own experiment as one command (Seo et al., CVPR 2024; the table of the official README): erase the
# person of the first of five CelebA-HQ photos of one identity from EG3D FFHQ-rebalanced with each method - the
# baseline (target w̄, local loss only), GUIDE (UFO target at d = 30, local + adjacency + global losses), LEGATO (ODE
# adapters on the frozen generator) and SUGAR (trigger-network targets, EWC) - then score ID (the unlearned photo),
# ID_others (the four other photos), FID_pre and ΔFID_real, printed beside the published numbers. Needs the released weights (`python -m guide_core weights fetch --all`) and, for the paper's
# 1,000 iterations and 5,000 FID samples in reasonable time, a GPU.
# The five photos are the official repository's sample data (data/CelebAHQ/512/aligned_{1..5}.jpg, already cropped the
# EG3D way): pass their folder with --photos or GUIDE_SAMPLE_PHOTOS.
# Usage: python benchmarks/paper_table.py --photos DIR [--model eg3d-ffhq-rebalanced] [--iters 1000] [--n-fid 5000]
#        [--out runs/paper] [--methods baseline guide] [--json] [--dry-run]
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide_core.__main__ import main as guide_main  # noqa: E402 (after the path)

# Published numbers on this protocol: ID, ID_others, FID_pre, ΔFID_real. Baseline and GUIDE from the official GUIDE
# README; LEGATO from its paper (arXiv 2601.04282, which reports GUIDE there at 0.02 / 0.23 / 7.44 / 3.36). SUGAR
# publishes no single-identity row of this protocol: its cells show "—".
PUBLISHED = {"baseline": {"id": 0.0818, "id_others": 0.4122, "fid_pre": 9.487, "delta_fid_real": 4.891},
             "guide": {"id": 0.0183, "id_others": 0.2797, "fid_pre": 7.497, "delta_fid_real": 3.331},
             "legato": {"id": 0.00, "id_others": 0.18, "fid_pre": 6.09, "delta_fid_real": 1.78},
             "sugar": {}}
# What each row changes from guide's defaults: the official baseline command targets the average latent
# (`--target average`, d = 0 in UFO's formula) with the local loss alone; the others are guide's methods at their own
# defaults.
METHODS = {"baseline": ["--d", "0", "--n-adj", "0", "--n-glob", "0", "--lambda-adj", "0", "--lambda-glob", "0"],
           "guide": [], "legato": ["--method", "legato"], "sugar": ["--method", "sugar"]}
METRICS = ("id", "id_others", "fid_pre", "delta_fid_real")
PHOTO_NAMES = [f"aligned_{i}.jpg" for i in range(1, 6)]


# The five photos in the official order (the first is unlearned, the other four score ID_others).
def sample_photos(folder: str | None) -> list[Path]:
    if not folder:
        raise SystemExit("error: pass --photos DIR (or set GUIDE_SAMPLE_PHOTOS): the folder holding the official sample "
                         f"photos {', '.join(PHOTO_NAMES)} (data/CelebAHQ/512 of the GUIDE repository)")
    root = Path(folder).expanduser()
    missing = [name for name in PHOTO_NAMES if not (root / name).is_file()]
    if missing:
        raise SystemExit(f"error: {root} lacks {', '.join(missing)}")
    return [root / name for name in PHOTO_NAMES]


# Run guide's CLI in this process; its stdout is returned, its exit code checked.
def run_cli(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = guide_main(argv)
    if code != 0:
        raise SystemExit(f"error: `python -m guide_core {' '.join(argv)}` exited with {code}")
    return out.getvalue()


# One method: unlearn (photos: the first as source, the others as --others), then eval --json.
def run_method(method: str, photos: list[Path], args: argparse.Namespace) -> dict:
    run_dir = Path(args.out) / method
    common = ["--model", args.model, "--device", args.device]
    unlearn = ["unlearn", "--image", str(photos[0]), "--others", *map(str, photos[1:]), "--out", str(run_dir),
               "--overwrite", "--no-eval", "--iters", str(args.iters), "--seed", str(args.seed), *METHODS[method],
               *common]
    evaluate = ["eval", str(run_dir), "--json", "--seed", str(args.seed), *common]
    if args.n_fid is not None:
        evaluate += ["--n-fid", str(args.n_fid)]
    if args.dry_run:
        print(f"{method}: python -m guide_core {' '.join(unlearn)}")
        print(f"{method}: python -m guide_core {' '.join(evaluate)}")
        return {}
    run_cli(unlearn)
    return json.loads(run_cli(evaluate))


# The table: measured beside published, one row per method.
def format_table(results: dict[str, dict]) -> str:
    def cell(value, missing: str = "n/a") -> str:
        return missing if value is None else f"{value:.4f}"

    header = f"| method | {' | '.join(f'{m} (guide / paper)' for m in METRICS)} |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for method, values in results.items():
        cells = [f"{cell(values.get(m))} / {cell(PUBLISHED[method].get(m), '—')}" for m in METRICS]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the GUIDE README table, reproduced with guide",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--photos", default=os.environ.get("GUIDE_SAMPLE_PHOTOS"),
                        help="folder with aligned_1.jpg .. aligned_5.jpg (env GUIDE_SAMPLE_PHOTOS)")
    parser.add_argument("--model", default="eg3d-ffhq-rebalanced", help="the generator the paper unlearns from")
    parser.add_argument("--device", default="auto", help="torch device (auto = cuda when available)")
    parser.add_argument("--iters", type=int, default=1000, help="Latent Target Unlearning iterations (paper: 1000)")
    parser.add_argument("--n-fid", type=int, default=None, help="FID samples per generator (eval's default: 5000 on "
                                                                "a GPU, fewer on a CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the unlearning and of the FID draws")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS),
                        help="rows to run (the baseline and guide's methods)")
    parser.add_argument("--out", default="runs/paper", help="where the run directories go")
    parser.add_argument("--json", action="store_true", help="print the measured numbers as JSON too")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    photos = sample_photos(args.photos)
    results = {method: run_method(method, photos, args) for method in args.methods}
    if args.dry_run:
        return 0
    print(f"GUIDE README table, model {args.model}, {args.iters} iterations, seed {args.seed}")
    print(format_table(results))
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
