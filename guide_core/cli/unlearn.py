"""`unlearn`: erase identities from a generator, all at once or continuing a run (UFO + Latent Target Unlearning,
GUIDE Sec. 3). Every LTUConfig field is a flag, so a default lives only in guide_core.config.LTUConfig."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from guide_core.cli.common import Command, add_config_flags, common_flags, config_from_args, device_of, photo_code
from guide_core.engine.method import DEFAULT_METHOD, available_methods


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def _unlearn_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `unlearn`: photos (one identity each, or a folder per person), run directory, world, the run to continue
    from, and every LTUConfig setting.
    """
    parser.add_argument("--image", nargs="+", default=[], metavar="PHOTO",
                        help="photo(s) of the identities to erase: each photo is one person, all forgotten in one run")
    parser.add_argument("--images-dir", default=None, metavar="DIR",
                        help="one folder per person (DIR/PERSON/*.jpg): the first photo of each folder (by name) is "
                             "unlearned, the others are that person's other photos (ID_others)")
    parser.add_argument("--out", required=True, help="run directory to create (delta.safetensors + run.json)")
    parser.add_argument("--model", default=None,
                        help="world: default, eg3d-ffhq, eg3d-ffhq-rebalanced, sg2-ffhq, sg2-ffhq-e4e or a path (default: "
                             "the base run's model, else default)")
    parser.add_argument("--others", nargs="*", default=[], metavar="PHOTO",
                        help="other photos of the same person, with a single --image (for ID_others)")
    parser.add_argument("--base-run", default=None, metavar="RUN",
                        help="continue from this run's unlearned generator (sequential unlearning); metrics still "
                             "compare against the original model at the root of the chain")
    parser.add_argument("--method", default=DEFAULT_METHOD, choices=sorted(available_methods()),
                        help="unlearning method (guide_core.methods)")
    parser.add_argument("--dry-run", action="store_true", help="align, invert and print the plan; train nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    parser.add_argument("--no-eval", dest="skip_eval", action="store_true",
                        help="skip the ID / ID_others numbers at the end")
    common_flags(parser)
    add_config_flags(parser)


def _photos_in(folder: Path) -> list[Path]:
    """The photos of a folder, sorted by name (the first one is the person's source photo)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def _identities(args: argparse.Namespace) -> list[tuple[str, Path, list[Path]]]:
    """The identities `unlearn` was asked to forget: [(name, source photo, other photos)], checked before any model
    loads.
    """
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


def _base_run(args: argparse.Namespace, record: dict[str, Any] | None, bundle):
    """The parent run of `--base-run` from its record: (its G_u, what the new run records about it); the chain's root
    model must be the loaded one (load_run checks the fingerprint and every parent still on disk).
    """
    from guide_core.runs import base_run_record, load_run

    if record is None:
        return None, None
    if not record.get("completed"):
        raise ValueError(f"base run {args.base_run} did not complete ({record.get('steps_done')} of "
                         f"{record['config']['iters']} iterations); continue only from a finished run")
    G_parent = load_run(args.base_run, bundle)
    return G_parent, base_run_record(args.base_run, record, G_parent)


def _unlearn_run(args: argparse.Namespace) -> int:
    """Align + invert every photo, UFO targets, Latent Target Unlearning of all identities in one run (optionally
    continuing from a base run) with a progress bar, ID numbers per identity, atomic save.
    """
    import torch

    from guide_core import metrics
    from guide_core.engine import Unlearning, make_method
    from guide_core.progress import progress_bar
    from guide_core.registry import load_bundle
    from guide_core.runs import (chain_sources, forgotten_codes, load_encoder, read_run, run_sources, save_run,
                                 source_record)

    config_from_args(args)  # bad settings fail before any model is loaded
    people = _identities(args)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite and not args.dry_run:
        raise FileExistsError(f"run directory {out} already exists and is not empty (use --overwrite)")
    if args.base_run and out.resolve() == Path(args.base_run).resolve():
        raise ValueError(f"--out {out} is the base run itself: write the continued run to a new folder")
    parent = read_run(args.base_run) if args.base_run else None
    bundle = load_bundle(args.model or (parent["model"] if parent else "default"), device_of(args.device))
    cfg = config_from_args(args, bundle.ltu_defaults)
    G_parent, base_run = _base_run(args, parent, bundle)
    codes, sources, photos = [], [], []
    for name, photo, other_photos in people:
        image, w, info = photo_code(bundle, str(photo), name)
        coded = [photo_code(bundle, str(p)) for p in other_photos]
        others = [(info_o, w_o) for _, w_o, info_o in coded]
        codes.append(w)
        sources.append(source_record(info["name"], info["sha256"], info["path"], others))
        # robust unlearning, bank then erase and encoder-side unlearning use the source photo and the other photos
        photos.append(torch.cat([image, *(image_o for image_o, _, _ in coded)]))
    hashes = [s["sha256"] for s in sources]
    if len(set(hashes)) != len(hashes):
        raise ValueError("the same photo is given for two identities: each person needs a photo of their own")
    w_u = torch.cat(codes)
    if args.dry_run:
        method = make_method(args.method)
        distance = lambda w: (w - bundle.w_avg).flatten(1).norm(dim=1).tolist()  # noqa: E731
        # A learned target (SUGAR's trigger network) is known only after training; its distance is d by construction.
        target = ([cfg.d] * len(sources) if method.learned_targets
                  else distance(method.targets(bundle, w_u.to(bundle.device), cfg)))
        identities = [{"name": s["name"], "photo": s["path"], "sha256": s["sha256"],
                       "others": [o["path"] for o in s["others"]], "|w_u - w_avg|": du, "|w_t - w_avg|": dt}
                      for s, du, dt in zip(sources, distance(w_u), target)]
        plan = {"model": bundle.name, "device": str(bundle.device), "identities": identities,
                "base_run": args.base_run and str(Path(args.base_run).resolve()),
                "forgotten_before": [s["name"] for s in chain_sources(parent)] if parent else [],
                "method": args.method, "config": cfg.to_dict(), "out": str(out)}
        print(json.dumps(plan, indent=1))
        return 0
    unlearning = Unlearning(bundle, w_u, cfg=cfg, sources=sources, base=G_parent, base_run=base_run, photos=photos,
                            forgotten=forgotten_codes(base_run), method=args.method,
                            base_encoder=load_encoder(args.base_run, bundle) if args.base_run else None)
    with progress_bar(cfg.iters, f"unlearning {len(sources)} identit{'y' if len(sources) == 1 else 'ies'}",
                      leave=True) as bar:
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


command = Command(_unlearn_arguments, _unlearn_run)
