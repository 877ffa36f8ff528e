# The GUIDE commands of `python -m guide_core`: unlearn (UFO + Latent Target Unlearning of one photo's identity,
# GUIDE Sec. 3), eval (ID / ID_others / FID_pre / dFID_real, GUIDE Sec. 5), audit (re-inversion attack) and import
# (a generator unlearned by another tool becomes a run that eval and audit measure).
# Every LTUConfig field becomes an `unlearn` flag, so a default lives only in guide_core.config.LTUConfig.
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
# Flags that are not given stay absent from the namespace, so a model's own defaults (bundle.ltu_defaults, e.g. the
# tiny world's shorter schedule) can fill them; an explicit flag always wins.
def add_config_flags(parser: argparse.ArgumentParser) -> None:
    from guide_core.config import LTUConfig

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
def config_from_args(args: argparse.Namespace, model_defaults=None):
    from guide_core.config import LTUConfig

    base = model_defaults or LTUConfig()
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(LTUConfig) if hasattr(args, f.name)}
    return LTUConfig.from_dict({**base.to_dict(), **given})


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


# Photo path -> (aligned crop [1,3,H,W], absolute w+ [1,num_ws,512] from the bundle's encoder, its run.json record).
def _photo_code(bundle, path: str, name: str | None = None):
    from guide_core.runs import photo_record

    image = _aligned_photo(bundle, path)
    w = bundle.invert(image)
    return image, w, photo_record(path, name)


# ---- unlearn ---------------------------------------------------------------------------------------------------------

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


# Flags of `unlearn`: photos (one identity each, or a folder per person), run directory, world, the run to continue
# from, and every LTUConfig setting.
def _unlearn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", nargs="+", default=[], metavar="PHOTO",
                        help="photo(s) of the identities to erase: each photo is one person, all forgotten in one run")
    parser.add_argument("--images-dir", default=None, metavar="DIR",
                        help="one folder per person (DIR/PERSON/*.jpg): the first photo of each folder (by name) is "
                             "unlearned, the others are that person's other photos (ID_others)")
    parser.add_argument("--out", required=True, help="run directory to create (delta.safetensors + run.json)")
    parser.add_argument("--model", default=None,
                        help="world: default, eg3d-ffhq, eg3d-ffhq-rebalanced or a path (default: the base run's "
                             "model, else default)")
    parser.add_argument("--others", nargs="*", default=[], metavar="PHOTO",
                        help="other photos of the same person, with a single --image (for ID_others)")
    parser.add_argument("--base-run", default=None, metavar="RUN",
                        help="continue from this run's unlearned generator (sequential unlearning); metrics still "
                             "compare against the original model at the root of the chain")
    parser.add_argument("--dry-run", action="store_true", help="align, invert and print the plan; train nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--no-eval", dest="skip_eval", action="store_true",
                        help="skip the ID / ID_others numbers at the end")
    _common(parser)
    add_config_flags(parser)


# The photos of a folder, sorted by name (the first one is the person's source photo).
def _photos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


# The identities `unlearn` was asked to forget: [(name, source photo, other photos)], checked before any model loads.
def _identities(args: argparse.Namespace) -> list[tuple[str, Path, list[Path]]]:
    people = [(Path(p).stem, Path(p), []) for p in args.image]
    if args.others:
        if len(people) != 1 or args.images_dir:
            raise ValueError("--others belongs to a single --image; for several people give each one a folder with "
                             "--images-dir DIR (DIR/PERSON/*.jpg: the first photo is unlearned, the rest are others)")
        people[0][2].extend(Path(p) for p in args.others)
    if args.images_dir:
        root = Path(args.images_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"--images-dir {root} is not a folder")
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if not folders:
            loose = _photos_in(root)
            raise ValueError(f"--images-dir {root} has no person folders" + (
                f" ({len(loose)} photos lie directly in it): put each person's photos in a folder of their own, "
                f"DIR/PERSON/*.jpg" if loose else ": expected DIR/PERSON/*.jpg"))
        for folder in folders:
            photos = _photos_in(folder)
            if not photos:
                raise ValueError(f"{folder} holds no photo ({', '.join(PHOTO_SUFFIXES)})")
            people.append((folder.name, photos[0], photos[1:]))
    if not people:
        raise ValueError("nothing to forget: give --image PHOTO [PHOTO ...] or --images-dir DIR")
    for _, photo, others in people:
        for path in (photo, *others):
            if not path.is_file():
                raise FileNotFoundError(f"photo {path} does not exist")
    return people


# The parent run of `--base-run` from its record: (its G_u, what the new run records about it); the chain's root
# model must be the loaded one (load_run checks the fingerprint and every parent still on disk).
def _base_run(args: argparse.Namespace, record: dict[str, Any] | None, bundle):
    from guide_core.runs import base_run_record, load_run

    if record is None:
        return None, None
    if not record.get("completed"):
        raise ValueError(f"base run {args.base_run} did not complete ({record.get('steps_done')} of "
                         f"{record['config']['iters']} iterations); continue only from a finished run")
    G_parent = load_run(args.base_run, bundle)
    return G_parent, base_run_record(args.base_run, record, G_parent)


# Align + invert every photo, UFO targets, Latent Target Unlearning of all identities in one run (optionally
# continuing from a base run) with a progress bar, ID numbers per identity, atomic save.
def _unlearn_run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from guide_core import metrics
    from guide_core.registry import load_bundle
    from guide_core.engine import Unlearning
    from guide_core.methods.guide import ufo_target
    from guide_core.runs import chain_sources, forgotten_codes, read_run, run_sources, save_run, source_record

    config_from_args(args)  # bad settings fail before any model is loaded
    people = _identities(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite and not args.dry_run:
        raise FileExistsError(f"run directory {out} already exists and is not empty (use --overwrite)")
    if args.base_run and out.resolve() == Path(args.base_run).resolve():
        raise ValueError(f"--out {out} is the base run itself: write the continued run to a new folder")
    parent = read_run(args.base_run) if args.base_run else None
    bundle = load_bundle(args.model or (parent["model"] if parent else "default"), _device(args.device))
    cfg = config_from_args(args, bundle.ltu_defaults)
    G_parent, base_run = _base_run(args, parent, bundle)
    codes, sources, photos = [], [], []
    for name, photo, other_photos in people:
        image, w, info = _photo_code(bundle, str(photo), name)
        coded = [_photo_code(bundle, str(p)) for p in other_photos]
        others = [(info_o, w_o) for _, w_o, info_o in coded]
        codes.append(w)
        sources.append(source_record(info["name"], info["sha256"], info["path"], others))
        # robust unlearning attacks the source photo and the person's other photos
        photos.append(torch.cat([image, *(image_o for image_o, _, _ in coded)]))
    hashes = [s["sha256"] for s in sources]
    if len(set(hashes)) != len(hashes):
        raise ValueError("the same photo is given for two identities: each person needs a photo of their own")
    w_u = torch.cat(codes)
    if args.dry_run:
        w_t = ufo_target(w_u, bundle.w_avg, cfg.d)
        distance = lambda w: (w - bundle.w_avg).flatten(1).norm(dim=1).tolist()  # noqa: E731
        identities = [{"name": s["name"], "photo": s["path"], "sha256": s["sha256"],
                       "others": [o["path"] for o in s["others"]], "|w_u - w_avg|": du, "|w_t - w_avg|": dt}
                      for s, du, dt in zip(sources, distance(w_u), distance(w_t))]
        plan = {"model": bundle.name, "device": str(bundle.device), "identities": identities,
                "base_run": args.base_run and str(Path(args.base_run).resolve()),
                "forgotten_before": [s["name"] for s in chain_sources(parent)] if parent else [],
                "config": cfg.to_dict(), "out": str(out)}
        print(json.dumps(plan, indent=1))
        return 0
    unlearning = Unlearning(bundle, w_u, cfg=cfg, sources=sources, base=G_parent, base_run=base_run, photos=photos,
                            forgotten=forgotten_codes(base_run))
    with tqdm(total=cfg.iters, desc=f"unlearning {len(sources)} identit{'y' if len(sources) == 1 else 'ies'}",
              unit="it", file=sys.stderr) as bar:
        for progress in unlearning.run():
            if not progress.done:
                bar.set_postfix({k: f"{progress.losses[k]:.4f}" for k in ("total", "local", "adjacency", "global")},
                                refresh=False)
                bar.update(1)
    if not args.skip_eval:
        chain = chain_sources({"sources": run_sources(unlearning), "base_run": base_run})
        unlearning.metrics.update(metrics.identity_summary(metrics.identity_rows(bundle, unlearning.G_u, chain)))
    save_run(out, unlearning, overwrite=args.overwrite)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in unlearning.metrics.items() if isinstance(v, float))
    summary = f"{unlearning.steps_done} iterations, {unlearning.seconds:.1f} s" + (f"; {shown}" if shown else "")
    print(f"saved {out} ({summary})")
    rows = unlearning.metrics.get("per_identity", [])
    for row in rows if len(rows) > 1 else []:
        others = "" if row["id_others"] is None else f", ID_others {row['id_others']:.4f}"
        print(f"  {row['name']}{' (earlier run)' if row['earlier'] else ''}: ID {row['id']:.4f}{others}")
    return 0


unlearn = Command(_unlearn_arguments, _unlearn_run)


# ---- eval ------------------------------------------------------------------------------------------------------------

# Bundle + G_u + record of a run directory (the model recorded in the run unless --model overrides it).
def _load_run_dir(args: argparse.Namespace):
    from guide_core.registry import load_bundle
    from guide_core.runs import load_run, read_run

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
                        help="other photos of the person, for a run of one identity (default: the codes stored in "
                             "the run)")
    parser.add_argument("--real-stats", default=None, help=".npz {mu, sigma} or .npy real features for dFID_real")
    parser.add_argument("--no-save", action="store_true", help="do not write the metrics to run.json")
    _common(parser)


# ID / ID_others (per identity, every identity of a chain included) / FID_pre / dFID_real of a run against the root
# model, printed as a table or one JSON object.
def _eval_run(args: argparse.Namespace) -> int:
    from guide_core import metrics
    from guide_core.runs import chain_sources, other_record, update_run

    record, bundle, G_u = _load_run_dir(args)
    identities = chain_sources(record)
    if args.others is not None:
        if len(record["sources"]) != 1:
            raise ValueError(f"--others names one person's photos, but run {args.run_dir} forgot "
                             f"{len(record['sources'])} identities; their other photos are stored in the run")
        identities[-1]["others"] = [other_record(info, w) for _, w, info in (_photo_code(bundle, p)
                                                                              for p in args.others)]
    n_fid = metrics.default_n_fid(bundle) if args.n_fid is None else args.n_fid
    if args.n_fid is None and n_fid != metrics.N_FID_PAPER:
        print(f"FID on {n_fid} samples per generator on {bundle.device} (the paper uses {metrics.N_FID_PAPER}: "
              f"pass --n-fid {metrics.N_FID_PAPER} to match it)", file=sys.stderr)
    result = metrics.evaluate(bundle, G_u, n_fid=n_fid, seed=args.seed, real_stats=args.real_stats, progress=True,
                              identities=identities)
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
    if len(values["per_identity"]) > 1:
        print("  per identity (ID / ID_others against the original model):")
        for row in values["per_identity"]:
            others = "n/a" if row["id_others"] is None else f"{row['id_others']:.4f}"
            print(f"    {row['name']:<30} {row['id']:.4f} / {others}"
                  + (f"   (forgotten in earlier run {row['run'] + 1})" if row["earlier"] else ""))
    print(f"  FID features: {values['feature_note']} (n = {values['n_fid']}, seed {values['seed']})")
    for note in values["notes"]:
        print(f"  note: {note}")
    return 0


evaluate = Command(_eval_arguments, _eval_run)


# ---- audit -----------------------------------------------------------------------------------------------------------

# Flags of `audit`.
def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    from guide_core import audit

    parser.add_argument("run_dir", help="a run directory written by `unlearn`")
    parser.add_argument("--image", default=None,
                        help="the source photo, for a run of one identity (default: the paths recorded in run.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--model", default=None, help="override the model recorded in run.json")
    parser.add_argument("--steps", type=int, default=200, help="optimisation steps of each attack")
    parser.add_argument("--lr", type=float, default=0.01, help="attacker's Adam learning rate on w+")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacks (their random starts included)")
    parser.add_argument("--attacks", nargs="+", choices=audit.ATTACKS, default=list(audit.ATTACKS),
                        help="attacks to run: the encoder refined on each generator's renders, and w+ optimisation "
                             "from the encoder's code, from w̄ and from random starts")
    parser.add_argument("--random-starts", type=int, default=audit.RANDOM_STARTS,
                        help="random starts of the 'random' attack")
    parser.add_argument("--no-save", action="store_true", help="do not write the result to run.json")
    _common(parser)


# A source's photo for the audit: the recorded path when its SHA-256 still matches, else None with the reason.
def _recorded_photo(source: dict[str, Any]) -> tuple[str | None, str]:
    from guide_core.weights import sha256_file

    path = source.get("path")
    if not path or not Path(path).is_file():
        return None, f"its photo {path or '(not recorded)'} is not available"
    if source.get("sha256") and sha256_file(Path(path)) != source["sha256"]:
        return None, f"{path} changed since the run was made (SHA-256 differs)"
    return path, ""


# Re-inversion attacks against G_s and G_u for every identity the run (chain included) forgot whose photo is at hand;
# the headline is the identity the attacker recovers best from G_u.
def _audit_run(args: argparse.Namespace) -> int:
    from guide_core import audit
    from guide_core.runs import chain_sources, update_run

    record, bundle, G_u = _load_run_dir(args)
    identities = chain_sources(record)
    if args.image:
        if len(identities) != 1:
            raise ValueError(f"--image names one photo, but run {args.run_dir} forgot {len(identities)} identities; "
                             "the audit attacks each with the photo recorded for it")
        photos = [(identities[0], args.image)]
    else:
        photos, missing = [], []
        for source in identities:
            path, why = _recorded_photo(source)
            if path:
                photos.append((source, path))
            else:
                missing.append(f"{source['name']}: {why}")
        if not photos:
            raise FileNotFoundError("no identity of the run can be attacked: " + "; ".join(missing)
                                    + (" (pass --image)" if len(identities) == 1 else ""))
        for line in missing:
            print(f"skipped {line}", file=sys.stderr)
    results = []
    for source, path in photos:
        result = audit.erasure_audit(bundle, G_u, _aligned_photo(bundle, path), None, steps=args.steps, lr=args.lr,
                                     seed=args.seed, attacks=tuple(args.attacks), random_starts=args.random_starts,
                                     progress=True)
        results.append((source, result))
    values = audit.audit_summary(results)
    if not args.no_save:
        update_run(args.run_dir, metrics={"audit": {k: values[k] for k in audit.RECORDED_KEYS}})
    if args.json:
        print(json.dumps(values))
        return 0
    print(f"re-inversion attacks on run {args.run_dir} ({args.steps} steps each; {values['objective']})")
    print("  best identity similarity to the photo the attacker reaches: before (G_s) / after (G_u)")
    for source, result in results:
        print(f"  {source['name']}:")
        for pair in result.attacks:
            print(f"    {pair.name:<9} from {pair.start:<40} {pair.before.best_id:7.4f} / {pair.after.best_id:7.4f}")
        print(f"    {'best':<9} {'':<45} {result.before.best_id:7.4f} / {result.after.best_id:7.4f}"
              f"   erased fraction {result.erased:.3f}")
    return 0


audit = Command(_audit_arguments, _audit_run)


# ---- import ----------------------------------------------------------------------------------------------------------

# Flags of `import`: a generator unlearned elsewhere, the photo it erased, and the model it was made from.
def _import_arguments(parser: argparse.ArgumentParser) -> None:
    from guide_core.config import LTUConfig

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

    from guide_core.registry import load_bundle
    from guide_core.eg3d.legacy import TRAINING_ONLY_BUFFERS
    from guide_core.config import LTUConfig
    from guide_core.engine import Unlearning
    from guide_core.runs import changed_tensors, save_run, source_record
    from guide_core.weights import sha256_file

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
    _, w_u, info = _photo_code(bundle, args.image)
    others = [(info_o, w_o) for _, w_o, info_o in (_photo_code(bundle, p) for p in args.others)]
    source = source_record(info["name"], info["sha256"], info["path"], others)
    run = Unlearning(bundle, w_u, cfg=LTUConfig(d=args.d), sources=[source])
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


import_run = Command(_import_arguments, _import_run)
