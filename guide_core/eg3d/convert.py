# `python -m guide_core convert-eg3d IN.pkl OUT.safetensors`: turn an original EG3D network pickle into guide's
# .safetensors + JSON format without executing anything stored in the pickle.
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guide_core.eg3d.io import CheckpointError, build_generator, save_generator
from guide_core.eg3d.legacy import UnsafePickleError, load_generator_checkpoint


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="original EG3D network pickle (e.g. ffhq512-128.pkl)")
    parser.add_argument("output", type=Path, help="where to write the .safetensors (a sibling .json is written too)")
    parser.add_argument("--dry-run", action="store_true", help="read and check the pickle, print what would be written")


def main(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() != ".safetensors":
        print(f"error: output must end in .safetensors, got {args.output}", file=sys.stderr)
        return 2
    try:
        ckpt = load_generator_checkpoint(args.input)
        G = build_generator(ckpt.init_kwargs, ckpt.state_dict, ckpt.neural_rendering_resolution,
                            ckpt.rendering_kwargs, source=f"{args.input} [{ckpt.entry}]")
    except UnsafePickleError as exc:
        print(f"refused: {args.input}: {exc}", file=sys.stderr)
        return 3
    except (OSError, CheckpointError, ValueError, EOFError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
    save_generator(G, args.output)
    print(f"wrote {args.output} and {json_path}")
    return 0
