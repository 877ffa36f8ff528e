"""`python -m guide_core convert-eg3d IN.pkl OUT.safetensors`: turn an original EG3D network pickle into guide's
.safetensors + JSON format without executing anything stored in the pickle.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guide_core.eg3d.io import CheckpointError, generator_from_checkpoint, read_generator_pickle, save_generator
from guide_core.eg3d.legacy import UnsafePickleError

# Exit codes: 1 a file that cannot be read or written, 2 a bad command line, 3 a pickle refused as unsafe.
EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `convert-eg3d`: the pickle to read and the .safetensors to write."""
    parser.add_argument("input", type=Path, help="original EG3D network pickle (e.g. ffhq512-128.pkl)")
    parser.add_argument("output", type=Path, help="where to write the .safetensors (a sibling .json is written too)")
    parser.add_argument("--dry-run", action="store_true", help="read and check the pickle, print what would be written")


def _one_line(exc: BaseException) -> str:
    """A message on one line, whatever the exception text holds."""
    return " ".join(str(exc).split()) or type(exc).__name__


def main(args: argparse.Namespace) -> int:
    """Convert without executing the pickle's code; one line on stderr and exit 2 for a refused or broken file."""
    if args.output.suffix.lower() != ".safetensors":
        print(f"error: output must end in .safetensors, got {args.output}", file=sys.stderr)
        return EXIT_USAGE
    try:
        ckpt = read_generator_pickle(args.input)
        G = generator_from_checkpoint(ckpt, args.input)
    except UnsafePickleError as exc:
        print(f"refused: {args.input}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_REFUSED
    except (OSError, CheckpointError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    n_params = sum(v.numel() for v in ckpt.state_dict.values())
    sr = str(ckpt.rendering_kwargs.get("superresolution_module", "?")).rsplit(".", 1)[-1]
    print(f"{args.input}: {ckpt.entry}, {len(ckpt.state_dict)} tensors, {n_params / 1e6:.2f} M values, "
          f"img_resolution {ckpt.init_kwargs.get('img_resolution')}, neural_rendering_resolution "
          f"{ckpt.neural_rendering_resolution}, {sr}")
    json_path = args.output.with_suffix(".json")
    if args.dry_run:
        print(f"dry run: would write {args.output} ({n_params * 4 / 2**20:.1f} MiB float32) and {json_path}")
        print(json.dumps({"init_kwargs": ckpt.init_kwargs}, indent=1, sort_keys=True, default=str)[:2000])
        return 0
    try:
        save_generator(G, args.output)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.output} and {json_path}")
    return 0
