"""`audit`: the attacker ladder on a run's G_u and on G_s, with strangers as the baseline (guide_core.ladder)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from guide_core.cli.common import Command, aligned_photo, common_flags, load_run_dir


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `audit`."""
    from guide_core import ladder

    parser.add_argument("run_dir", help="a run directory written by `unlearn`")
    parser.add_argument("--image", default=None,
                        help="the source photo, for a run of one identity (default: the paths recorded in run.json)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--model", default=None, help="override the model recorded in run.json")
    parser.add_argument("--tiers", nargs="+", choices=ladder.TIERS, default=list(ladder.TIERS),
                        help="tiers of the ladder to run, weakest to strongest: the best of sampled codes, the "
                             "encoder, the refined encoder, W and w+ optimisation inside the 99 %% typical ball, and "
                             "unconstrained W and w+ optimisation")
    parser.add_argument("--strangers", type=int, default=3,
                        help="people never forgotten to compare with (seeded world persons, or renders of seeded "
                             "random people)")
    parser.add_argument("--stranger-photos", nargs="+", default=None, metavar="PHOTO",
                        help="photos of strangers to use instead")
    budget = ladder.LadderBudget()
    parser.add_argument("--steps", type=int, default=budget.steps, help="Adam steps of each optimisation tier")
    parser.add_argument("--samples", type=int, default=budget.samples, help="codes of the sample tier")
    parser.add_argument("--refine-steps", type=int, default=budget.refine_steps,
                        help="refinements of the encoder_refine tier")
    parser.add_argument("--lr", type=float, default=budget.lr, help="attacker's Adam learning rate on the code")
    parser.add_argument("--impostor-people", type=int, default=budget.impostor_people,
                        help="random people whose pairs set the impostor threshold, where the model states none")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacks (the sampled codes included)")
    parser.add_argument("--no-save", action="store_true", help="do not write the result to run.json")
    common_flags(parser)


def _recorded_photo(source: dict[str, Any]) -> tuple[str | None, str]:
    """A source's photo for the audit: the recorded path when its SHA-256 still matches, else None with the reason."""
    from guide_core.weights import sha256_file

    path = source.get("path")
    if not path or not Path(path).is_file():
        return None, f"its photo {path or '(not recorded)'} is not available"
    if source.get("sha256") and sha256_file(Path(path)) != source["sha256"]:
        return None, f"{path} changed since the run was made (SHA-256 differs)"
    return path, ""


def _audit_run(args: argparse.Namespace) -> int:
    """The attacker ladder against G_s and G_u for every identity the run (chain included) forgot whose photo is at
    hand, all in one batch with the strangers; each tier's headline is the identity the attacker recovers best from
    G_u."""
    from guide_core import ladder
    from guide_core.runs import chain_sources, load_encoder, update_run

    record, bundle, G_u = load_run_dir(args)
    identities = chain_sources(record)
    if args.strangers < 1 and not args.stranger_photos:
        raise ValueError("--strangers must be >= 1: the ladder compares the forgotten with people never forgotten")
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
    import torch

    forgotten = torch.cat([aligned_photo(bundle, path) for _, path in photos])
    if args.stranger_photos:
        strangers = torch.cat([aligned_photo(bundle, path) for path in args.stranger_photos])
        stranger_names = [Path(path).stem for path in args.stranger_photos]
    else:
        strangers, stranger_names = ladder.default_strangers(bundle, args.strangers)
    budget = ladder.LadderBudget(samples=args.samples, refine_steps=args.refine_steps, steps=args.steps, lr=args.lr,
                                 impostor_people=args.impostor_people)
    result = ladder.attack_ladder(bundle, G_u, forgotten, strangers, [source["name"] for source, _ in photos],
                                  stranger_names, tiers=tuple(args.tiers), budget=budget, seed=args.seed,
                                  progress=True, encoder_u=load_encoder(args.run_dir, bundle))
    values = result.to_dict()
    if not args.no_save:
        update_run(args.run_dir, metrics={"audit": values})
    if args.json:
        print(json.dumps(values))
        return 0
    print(f"attacker ladder on run {args.run_dir}: {len(photos)} forgotten, strangers {', '.join(stranger_names)}; "
          f"held = the forgotten person below {values['threshold']:.2f} in G_u, strangers within "
          f"{values['stranger_tolerance']:.2f} of G_s")
    print(ladder.ladder_table(values).text())
    print(values["sentence"])
    return 0


command = Command(_audit_arguments, _audit_run)
