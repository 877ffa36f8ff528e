"""`import`: a generator unlearned by another tool (e.g. the official GUIDE unlearn.py's last.pkl) becomes a run
directory that eval and audit measure."""
from __future__ import annotations

import argparse
from pathlib import Path

from guide_core.cli.common import Command, common_flags, device_of, photo_code

# LEGATO's G_u adds adapter modules the base architecture lacks; its own checkpoints hold them in classes of its code.
IMPORTABLE_METHODS = ("guide", "sugar")


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `import`: a generator unlearned elsewhere, the photo it erased, and the model it was made from."""
    from guide_core.config import LTUConfig

    parser.add_argument("generator", help="the unlearned generator: the official GUIDE unlearn.py's last.pkl "
                                          "({'G_ema': ...}), any EG3D network pickle, guide's .safetensors, or for a "
                                          "2D model a StyleGAN2 .pt ({'g_ema': ...}) or pSp / e4e file")
    parser.add_argument("--image", required=True, help="the photo whose identity it erased")
    parser.add_argument("--out", required=True, help="run directory to create (delta.safetensors + run.json)")
    parser.add_argument("--model", default="eg3d-ffhq-rebalanced", help="the generator it was unlearned from")
    parser.add_argument("--others", nargs="*", default=[], metavar="PHOTO",
                        help="other photos of the same person (for ID_others)")
    parser.add_argument("--d", type=float, default=LTUConfig().d, help="the UFO distance it was made with (for w_t)")
    parser.add_argument("--method", default="guide", choices=IMPORTABLE_METHODS,
                        help="the method that made it (recorded; methods whose G_u keeps the base architecture)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    common_flags(parser)


def _generator_tensors(path: Path) -> dict:
    """The tensors of an unlearned generator file, by state_dict name: an EG3D network pickle (read safely, G_ema),
    guide's .safetensors, or a StyleGAN2 / pSp / e4e .pt (its generator). Only the tensors are taken: they load onto the
    base model, whose architecture they must have.
    """
    from guide_core.eg3d.io import CheckpointError, read_generator_pickle
    from guide_core.weights import load_safetensors, read_inversion_checkpoint

    if not path.is_file():
        raise FileNotFoundError(f"generator {path} does not exist")
    if path.suffix.lower() == ".pkl":
        return dict(read_generator_pickle(path).state_dict)
    if path.suffix.lower() == ".safetensors":
        return load_safetensors(path)[0]
    if path.suffix.lower() in (".pt", ".pth"):
        return read_inversion_checkpoint(path).decoder
    raise CheckpointError(f"{path}: unknown generator format {path.suffix!r}; expected .pkl, .safetensors or .pt")


def _import_run(args: argparse.Namespace) -> int:
    """Turn an unlearned generator from another tool into a guide run, so `eval` and `audit` measure it like guide's
    own:
    it must have the base model's exact architecture; the tensors that differ become the run's delta.
    """
    import torch

    from guide_core.registry import load_bundle
    from guide_core.eg3d.legacy import TRAINING_ONLY_BUFFERS
    from guide_core.engine import Unlearning
    from guide_core.runs import changed_tensors, save_run, source_record
    from guide_core.weights import sha256_file

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"run directory {out} already exists and is not empty (use --overwrite)")
    bundle = load_bundle(args.model, device_of(args.device))
    tensors = {k: v for k, v in _generator_tensors(Path(args.generator)).items()
               if k.rsplit(".", 1)[-1] not in TRAINING_ONLY_BUFFERS}
    base = bundle.G.state_dict()
    strange = sorted(set(base) ^ set(tensors)) + [k for k in base if k in tensors and base[k].shape != tensors[k].shape]
    if strange:
        raise ValueError(f"{args.generator} is not an unlearned copy of model {args.model!r}: its architecture differs "
                         f"({len(strange)} tensors, e.g. {', '.join(strange[:3])})")
    _, w_u, info = photo_code(bundle, args.image)
    others = [(info_o, w_o) for _, w_o, info_o in (photo_code(bundle, p) for p in args.others)]
    source = source_record(info["name"], info["sha256"], info["path"], others)
    from guide_core.engine.method import method_config
    from guide_core.methods.guide import ufo_target

    w_u = w_u.to(bundle.device)
    run = Unlearning(bundle, w_u, ufo_target(w_u, bundle.w_avg, args.d), cfg=method_config(args.method, d=args.d),
                     sources=[source], method=args.method)
    with torch.no_grad():
        run.G_u.load_state_dict({k: v.to(base[k].dtype) for k, v in tensors.items()})
    run.completed = True  # made elsewhere: guide ran no iteration of it (steps_done 0)
    run.extra["imported_from"] = {"path": str(Path(args.generator).resolve()),
                                  "sha256": sha256_file(Path(args.generator)),
                                  "changed_tensors": len(changed_tensors(run.G_u, bundle.G))}
    save_run(out, run, overwrite=args.overwrite)
    print(f"imported {args.generator} as run {out} ({run.extra['imported_from']['changed_tensors']} tensors differ "
          f"from {args.model}); next: python -m guide_core eval {out}")
    return 0


command = Command(_import_arguments, _import_run)
