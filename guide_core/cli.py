# The GUIDE commands of `python -m guide_core`: unlearn (UFO + Latent Target Unlearning of one photo's identity,
# GUIDE Sec. 3), eval (ID / ID_others / FID_pre / dFID_real, GUIDE Sec. 5), audit (re-inversion attack) and import
# (a generator unlearned by another tool becomes a run that eval and audit measure).
# Every LTUConfig field becomes an `unlearn` flag, so a default lives only in guide_core.guide.LTUConfig.
# Expected failures (no face, missing weights, bad run directory, bad settings) print one line on stderr, exit code 2.
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


# One subcommand: how it declares its flags and what it runs (the shape guide_core.__main__ expects).
@dataclass(frozen=True)
class Command:
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]

    # Entry point called by guide_core.__main__: run, turning expected failures into exit code 2.
    def main(self, args: argparse.Namespace) -> int:
        return _guarded(self.run, args)


# Failures a user can fix (bad input, missing files or weights, no face): everything else keeps its traceback.
def _expected(exc: BaseException) -> bool:
    import pickle

    # UnpicklingError: a checkpoint refused by the restricted reader (its message names what was refused).
    kinds: list[type] = [ValueError, OSError, RuntimeError, LookupError, pickle.UnpicklingError]
    for module, name in (("guide_core.faces", "FaceError"), ("guide_core.weights", "WeightsError")):
        try:
            kinds.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return isinstance(exc, tuple(kinds))


# Turn expected failures into one stderr line + exit 2; GUIDE_DEBUG=1 shows the traceback instead.
def _guarded(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except KeyboardInterrupt:
        print("interrupted: no run was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("GUIDE_DEBUG") or not _expected(exc):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_ERROR


# `auto` -> CUDA when available, else CPU.
def _device(name: str) -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# Shared flags of all commands.
def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="torch device (auto = cuda when available)")


# LTUConfig fields -> argparse flags (`alpha_max` -> `--alpha-max`), typed by their defaults, help from metadata.
# Flags that are not given stay absent from the namespace, so a model's own defaults (bundle.extras["ltu_defaults"],
# e.g. the tiny world's shorter schedule) can fill them; an explicit flag always wins.
def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from guide_core.guide import LTUConfig

    group = parser.add_argument_group("Latent Target Unlearning settings (GUIDE defaults; a model may set its own)")
    for f in dataclasses.fields(LTUConfig):
        flag = "--" + f.name.replace("_", "-")
        shown = round(f.default, 6) if isinstance(f.default, float) else f.default
        help_text = f"{f.metadata.get('help', f.name)} (default: {shown})"
        if isinstance(f.default, bool):
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, action=argparse.BooleanOptionalAction,
                               help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=type(f.default), default=argparse.SUPPRESS, help=help_text,
                               choices=f.metadata.get("choices"), metavar=None if "choices" in f.metadata else "X")


# The LTUConfig the parsed flags describe: given flags, else the model's own defaults, else the paper's.
def config_from_args(args: argparse.Namespace, model_defaults: dict[str, Any] | None = None):
    from guide_core.guide import LTUConfig

    values = dict(model_defaults or {})
    values.update({f.name: getattr(args, f.name) for f in dataclasses.fields(LTUConfig) if hasattr(args, f.name)})
    return LTUConfig.from_dict({**LTUConfig().to_dict(), **values})


# Open a photo (EXIF-upright RGB) with a clear error for a missing, unreadable or oversized file.
def _open_photo(path: str):
    from guide_core.faces import load_image

    if not Path(path).is_file():
        raise FileNotFoundError(f"photo {path} does not exist")
    return load_image(path)


# Photo path -> the bundle's aligned crop as a [-1, 1] tensor [1, 3, H, W].
def _aligned_photo(bundle, path: str):
    from guide_core.bundle import pil_to_tensor

    aligned = bundle.align(_open_photo(path))
    return aligned if not hasattr(aligned, "convert") else pil_to_tensor(aligned)


# Photo path -> (aligned crop [1,3,H,W], absolute w+ [1,num_ws,512] from the bundle's encoder, {path, sha256}).
def _photo_code(bundle, path: str):
    from guide_core.guide import sha256_file

    image = _aligned_photo(bundle, path)
    w = bundle.invert(image)
    return image, w, {"path": str(Path(path).resolve()), "sha256": sha256_file(path)}


# ---- unlearn ---------------------------------------------------------------------------------------------------------

# Flags of `unlearn`: photo, run directory, world, other photos, and every LTUConfig setting.
def _unlearn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="photo of the identity to erase")
    parser.add_argument("--out", required=True, help="run directory to create (delta.safetensors + run.json)")
    parser.add_argument("--model", default="default", help="world: default, eg3d-ffhq, eg3d-ffhq-rebalanced or a path")
    parser.add_argument("--others", nargs="*", default=[], metavar="PHOTO",
                        help="other photos of the same person (for ID_others)")
    parser.add_argument("--dry-run", action="store_true", help="align, invert and print the plan; train nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--no-eval", dest="skip_eval", action="store_true",
                        help="skip the ID / ID_others numbers at the end")
    _common(parser)
    add_config_flags(parser)


# Align + invert the photo, UFO target, Latent Target Unlearning with a progress bar, ID numbers, atomic save.
def _unlearn_run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from guide_core import metrics
    from guide_core.bundle import load_bundle
    from guide_core.guide import Unlearning, save_run, ufo_target

    config_from_args(args)  # bad settings fail before any model is loaded
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite and not args.dry_run:
        raise FileExistsError(f"run directory {out} already exists and is not empty (use --overwrite)")
    bundle = load_bundle(args.model, _device(args.device))
    cfg = config_from_args(args, bundle.extras.get("ltu_defaults"))
    _, w_u, source = _photo_code(bundle, args.image)
    others = [_photo_code(bundle, p) for p in args.others]
    w_others = torch.cat([w for _, w, _ in others]) if others else None
    source["others"] = [info for _, _, info in others]
    if args.dry_run:
        w_t = ufo_target(w_u, bundle.w_avg, cfg.d)
        plan = {"model": bundle.name, "device": str(bundle.device), "image": source, "config": cfg.to_dict(),
                "|w_u - w_avg|": float((w_u - bundle.w_avg).flatten(1).norm(dim=1)[0]),
                "|w_t - w_avg|": float((w_t - bundle.w_avg).flatten(1).norm(dim=1)[0]), "out": str(out)}
        print(json.dumps(plan, indent=1))
        return 0
    unlearning = Unlearning(bundle, w_u, cfg=cfg, source=source)
    if w_others is not None:
        unlearning.extra["w_others"] = w_others.cpu().tolist()
    with tqdm(total=cfg.iters, desc="unlearning", unit="it", file=sys.stderr) as bar:
        for progress in unlearning.run():
            if not progress.done:
                bar.set_postfix({k: f"{progress.losses[k]:.4f}" for k in ("total", "local", "adjacency", "global")},
                                refresh=False)
                bar.update(1)
    if not args.skip_eval:
        unlearning.metrics["id"] = float(metrics.id_similarity(bundle, bundle.G, unlearning.G_u, unlearning.w_u).mean())
        if w_others is not None:
            unlearning.metrics["id_others"] = float(
                metrics.id_similarity(bundle, bundle.G, unlearning.G_u, w_others).mean())
    save_run(out, unlearning, overwrite=args.overwrite)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in unlearning.metrics.items())
    summary = f"{unlearning.steps_done} iterations, {unlearning.seconds:.1f} s" + (f"; {shown}" if shown else "")
    print(f"saved {out} ({summary})")
    return 0


unlearn = Command(_unlearn_arguments, _unlearn_run)


# ---- eval ------------------------------------------------------------------------------------------------------------

# Bundle + G_u + record of a run directory (the model recorded in the run unless --model overrides it).
def _load_run_dir(args: argparse.Namespace):
    from guide_core.bundle import load_bundle
    from guide_core.guide import load_run, read_run

    record = read_run(args.run_dir)
    bundle = load_bundle(args.model or record["model"], _device(args.device))
    return record, bundle, load_run(args.run_dir, bundle)


# Flags of `eval`.
def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `unlearn`")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--model", default=None, help="override the model recorded in run.json")
    parser.add_argument("--n-fid", type=int, default=None,
                        help="samples per generator for FID (default: the paper's 5000 on a GPU; on a CPU 500 for "
                             "models up to 128 px, 64 for 512 px models)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the FID latents and cameras")
    parser.add_argument("--others", nargs="*", default=None, metavar="PHOTO",
                        help="other photos of the person (default: the codes stored in the run)")
    parser.add_argument("--real-stats", default=None, help=".npz {mu, sigma} or .npy real features for dFID_real")
    parser.add_argument("--no-save", action="store_true", help="do not write the metrics to run.json")
    _common(parser)


# ID / ID_others / FID_pre / dFID_real of a run, printed as a table or one JSON object.
def _eval_run(args: argparse.Namespace) -> int:
    import torch

    from guide_core import metrics
    from guide_core.guide import run_codes, update_run

    record, bundle, G_u = _load_run_dir(args)
    w_u, _ = run_codes(record, bundle.device)
    if args.others is not None:
        w_others = torch.cat([_photo_code(bundle, p)[1] for p in args.others]) if args.others else None
    else:
        stored = record.get("extra", {}).get("w_others")
        w_others = torch.tensor(stored, dtype=torch.float32) if stored else None
    n_fid = metrics.default_n_fid(bundle) if args.n_fid is None else args.n_fid
    if args.n_fid is None and n_fid != metrics.N_FID_PAPER:
        print(f"FID on {n_fid} samples per generator on {bundle.device} (the paper uses {metrics.N_FID_PAPER}: "
              f"pass --n-fid {metrics.N_FID_PAPER} to match it)", file=sys.stderr)
    result = metrics.evaluate(bundle, G_u, w_u, w_others, n_fid=n_fid, seed=args.seed, real_stats=args.real_stats,
                              progress=True)
    values = result.to_dict()
    if not args.no_save:
        update_run(args.run_dir, metrics=values)
    if args.json:
        print(json.dumps(values))
        return 0
    rows = [("ID (lower = identity erased)", values["id"]), ("ID_others (lower = erasure generalises)",
                                                            values["id_others"]),
            ("FID_pre (lower = G_u close to G_s)", values["fid_pre"]),
            ("dFID_real (lower = no drift from real faces)", values["delta_fid_real"])]
    print(f"run {args.run_dir}  model {bundle.name}")
    for label, value in rows:
        print(f"  {label:<46} {'n/a' if value is None else f'{value:.4f}'}")
    print(f"  FID features: {values['feature_note']} (n = {values['n_fid']}, seed {values['seed']})")
    for note in values["notes"]:
        print(f"  note: {note}")
    return 0


evaluate = Command(_eval_arguments, _eval_run)


# ---- audit -----------------------------------------------------------------------------------------------------------

# Flags of `audit`.
def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory written by `unlearn`")
    parser.add_argument("--image", default=None, help="the source photo (default: the path recorded in run.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--model", default=None, help="override the model recorded in run.json")
    parser.add_argument("--steps", type=int, default=200, help="attacker's optimisation steps")
    parser.add_argument("--lr", type=float, default=0.01, help="attacker's Adam learning rate on w+")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attack")
    parser.add_argument("--no-save", action="store_true", help="do not write the result to run.json")
    _common(parser)


# The photo an audit attacks: --image, else the recorded path when its SHA-256 still matches.
def _audit_photo(args: argparse.Namespace, record: dict[str, Any]) -> str:
    from guide_core.guide import sha256_file

    if args.image:
        return args.image
    source = record.get("source", {})
    path = source.get("path")
    if not path or not Path(path).is_file():
        raise FileNotFoundError(f"the run's source photo {path or '(not recorded)'} is not available; pass --image")
    recorded = source.get("sha256") or source.get("image_sha256")  # the studio records the hash as image_sha256
    if recorded and sha256_file(path) != recorded:
        raise ValueError(f"{path} changed since the run was made (SHA-256 differs); pass --image")
    return path


# Re-inversion attack against G_s and G_u from the encoder's code of the source photo.
def _audit_run(args: argparse.Namespace) -> int:
    from guide_core import metrics
    from guide_core.guide import update_run

    record, bundle, G_u = _load_run_dir(args)
    photo = _aligned_photo(bundle, _audit_photo(args, record))
    result = metrics.erasure_audit(bundle, G_u, photo, None, steps=args.steps, lr=args.lr, seed=args.seed,
                                   progress=True)
    values = result.to_dict()
    if not args.no_save:
        update_run(args.run_dir, metrics={"audit": {k: values[k] for k in
                                                    ("best_id_before", "best_id_after", "erased", "steps")}})
    if args.json:
        print(json.dumps(values))
        return 0
    print(f"re-inversion attack on run {args.run_dir} ({args.steps} steps from the {result.start}'s code)")
    print(f"  best identity similarity to the photo   before (G_s) {result.before.best_id:.4f}"
          f"   after (G_u) {result.after.best_id:.4f}")
    print(f"  erased fraction of the attacker's similarity: {result.erased:.3f}")
    return 0


audit = Command(_audit_arguments, _audit_run)


# ---- import ----------------------------------------------------------------------------------------------------------

# Flags of `import`: a generator unlearned elsewhere, the photo it erased, and the model it was made from.
def _import_arguments(parser: argparse.ArgumentParser) -> None:
    from guide_core.guide import LTUConfig

    parser.add_argument("generator", help="the unlearned generator: the official GUIDE unlearn.py's last.pkl "
                                          "({'G_ema': ...}), any EG3D network pickle, or guide's .safetensors")
    parser.add_argument("--image", required=True, help="the photo whose identity it erased")
    parser.add_argument("--out", required=True, help="run directory to create (delta.safetensors + run.json)")
    parser.add_argument("--model", default="eg3d-ffhq-rebalanced", help="the generator it was unlearned from")
    parser.add_argument("--others", nargs="*", default=[], metavar="PHOTO",
                        help="other photos of the same person (for ID_others)")
    parser.add_argument("--d", type=float, default=LTUConfig().d, help="the UFO distance it was made with (for w_t)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    _common(parser)


# The tensors of an unlearned generator file, by state_dict name: an EG3D network pickle (read safely, G_ema) or
# guide's .safetensors. Only the tensors are taken: they load onto the base model, whose architecture they must have.
def _generator_tensors(path: Path) -> dict:
    from guide_core.eg3d.io import CheckpointError, read_generator_pickle
    from guide_core.weights import load_safetensors

    if not path.is_file():
        raise FileNotFoundError(f"generator {path} does not exist")
    if path.suffix.lower() == ".pkl":
        return dict(read_generator_pickle(path).state_dict)
    if path.suffix.lower() == ".safetensors":
        return load_safetensors(path)[0]
    raise CheckpointError(f"{path}: unknown generator format {path.suffix!r}; expected .pkl or .safetensors")


# Turn an unlearned generator from another tool into a guide run, so `eval` and `audit` measure it like guide's own:
# it must have the base model's exact architecture; the tensors that differ become the run's delta.
def _import_run(args: argparse.Namespace) -> int:
    import torch

    from guide_core.bundle import load_bundle
    from guide_core.eg3d.legacy import TRAINING_ONLY_BUFFERS
    from guide_core.guide import LTUConfig, Unlearning, changed_tensors, save_run, sha256_file

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"run directory {out} already exists and is not empty (use --overwrite)")
    bundle = load_bundle(args.model, _device(args.device))
    tensors = {k: v for k, v in _generator_tensors(Path(args.generator)).items()
               if k.rsplit(".", 1)[-1] not in TRAINING_ONLY_BUFFERS}
    base = bundle.G.state_dict()
    strange = sorted(set(base) ^ set(tensors)) + [k for k in base if k in tensors and base[k].shape != tensors[k].shape]
    if strange:
        raise ValueError(f"{args.generator} is not an unlearned copy of model {args.model!r}: its architecture differs "
                         f"({len(strange)} tensors, e.g. {', '.join(strange[:3])})")
    _, w_u, source = _photo_code(bundle, args.image)
    others = [_photo_code(bundle, p) for p in args.others]
    source["others"] = [info for _, _, info in others]
    run = Unlearning(bundle, w_u, cfg=LTUConfig(d=args.d), source=source)
    with torch.no_grad():
        run.G_u.load_state_dict({k: v.to(base[k].dtype) for k, v in tensors.items()})
    run.completed = True  # made elsewhere: guide ran no iteration of it (steps_done 0)
    run.extra["imported_from"] = {"path": str(Path(args.generator).resolve()), "sha256": sha256_file(args.generator),
                                  "changed_tensors": len(changed_tensors(run.G_u, bundle.G))}
    if others:
        run.extra["w_others"] = torch.cat([w for _, w, _ in others]).cpu().tolist()
    save_run(out, run, overwrite=args.overwrite)
    print(f"imported {args.generator} as run {out} ({run.extra['imported_from']['changed_tensors']} tensors differ "
          f"from {args.model}); next: python -m guide_core eval {out}")
    return 0


import_run = Command(_import_arguments, _import_run)
