"""`eval`: ID / ID_others / FID_pre / dFID_real of a run directory (GUIDE Sec. 5)."""
from __future__ import annotations

import argparse
import json
import sys

from guide_core.cli.common import Command, common_flags, load_run_dir, photo_code


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `eval`."""
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
    common_flags(parser)


def _eval_run(args: argparse.Namespace) -> int:
    """ID / ID_others (per identity, every identity of a chain included) / FID_pre / dFID_real of a run against the root
    model, printed as a table or one JSON object.
    """
    from guide_core import metrics
    from guide_core.runs import chain_sources, other_record, update_run

    record, bundle, G_u = load_run_dir(args)
    identities = chain_sources(record)
    if args.others is not None:
        if len(record["sources"]) != 1:
            raise ValueError(f"--others names one person's photos, but run {args.run_dir} forgot "
                             f"{len(record['sources'])} identities; their other photos are stored in the run")
        identities[-1]["others"] = [other_record(info, w) for _, w, info in (photo_code(bundle, p)
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
    print(f"run {args.run_dir}  model {bundle.name}")
    headline, per_identity = result.tables()
    print(headline.text())
    if len(per_identity.rows) > 1:
        print(per_identity.text())
    for note in result.notes_text():
        print(f"  {note}")
    return 0


command = Command(_eval_arguments, _eval_run)
