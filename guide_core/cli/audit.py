"""`audit`: re-inversion attacks on a run's G_u and on G_s (guide_core.audit)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from guide_core.cli.common import Command, aligned_photo, common_flags, load_run_dir


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `audit`."""
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
    """Re-inversion attacks against G_s and G_u for every identity the run (chain included) forgot whose photo is at
    hand;
    the headline is the identity the attacker recovers best from G_u.
    """
    from guide_core import audit
    from guide_core.runs import chain_sources, update_run

    record, bundle, G_u = load_run_dir(args)
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
        result = audit.erasure_audit(bundle, G_u, aligned_photo(bundle, path), None, steps=args.steps, lr=args.lr,
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
    print(audit.audit_table(results).text())
    return 0


command = Command(_audit_arguments, _audit_run)
