"""The `weights` command: python -m guide_core weights status | fetch NAME | fetch --all | verify | path | publish."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from guide_core.fetching import DEFAULT_MODEL
from guide_core.weights.catalogue import install_hint, install_steps, require, weights_dir
from guide_core.weights.download import fetch
from guide_core.weights.errors import LicenceNotAcceptedError, NoSourceError, UnknownWeightsError, WeightsError
from guide_core.weights.hashes import cached_verdict
from guide_core.weights.inventory import WeightStatus, record, status, status_table, verify
from guide_core.weights.licences import licence_line

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


# Colours of the table's cells that call for attention (the cells themselves come from weights.status_table).
_CELL_STYLES = {"yes": "green", "no": "red", "MISMATCH": "red", "partial (.part)": "yellow"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-commands of `weights` and their options."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p_status = sub.add_parser("status", help="table of every weight file (exit 1 when something is missing)")
    p_status.add_argument("--check", action="store_true", help="hash installed files now (slow for large files)")
    p_status.add_argument("--json", action="store_true", help="print the rows as JSON")
    p_fetch = sub.add_parser("fetch", help="download NAME, or with --all every file of a model bundle (resumable, "
                                           "hash-verified, atomic)")
    p_fetch.add_argument("name", nargs="?")
    p_fetch.add_argument("--all", action="store_true",
                         help="every file the --model bundle needs (generator, networks, optional w̄ / FID "
                              "statistics)")
    p_fetch.add_argument("--model", default=None,
                         help=f"bundle whose files --all fetches; alone it implies --all (default: {DEFAULT_MODEL})")
    p_fetch.add_argument("--accept-licence", "--accept-license", dest="accept_licence", action="store_true",
                         help="accept the licences that must be accepted before download (NVIDIA's EG3D licence: "
                              "non-commercial); same as GUIDE_ACCEPT_LICENCE=1")
    p_fetch.add_argument("--url", help="download from this http(s) URL instead of the manifest's sources")
    p_fetch.add_argument("--hf-repo", help="download from this Hugging Face repository (owner/name); with --all, "
                                           "every file comes from it (a host's mirror, like GUIDE_HF_REPO)")
    p_fetch.add_argument("--hf-filename", help="file name inside --hf-repo (default: the manifest's file name)")
    p_fetch.add_argument("--gdrive", metavar="ID_OR_LINK",
                         help="download this Google Drive file (id or link) with gdown")
    p_fetch.add_argument("--sources", help="source kinds to try, in order, e.g. hf,url (default: all: hf,url,gdrive; "
                                           "or GUIDE_SOURCES)")
    p_fetch.add_argument("--force", action="store_true", help="download again even when installed")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    p_verify = sub.add_parser("verify", help="hash installed files against the known hashes (exit 1 on a mismatch)")
    p_verify.add_argument("name", nargs="?")
    p_verify.add_argument("--record", action="store_true",
                          help="pin the hash of installed files that have none yet (files downloaded by hand)")
    p_path = sub.add_parser("path", help="print where NAME is (exit 1 when it is missing)")
    p_path.add_argument("name")
    p_pub = sub.add_parser("publish", help="convert the EG3D pickle to .safetensors and upload every file of a "
                                           "bundle to your own Hugging Face model repository (for a Space)")
    p_pub.add_argument("--repo", required=True,
                       help="your Hugging Face model repository, OWNER/NAME (created if absent)")
    p_pub.add_argument("--model", default=DEFAULT_MODEL, help="bundle whose files are uploaded")
    p_pub.add_argument("--dry-run", action="store_true",
                       help="print what would be converted and uploaded; touch nothing")
    p_pub.add_argument("--private", action="store_true", help="create the repository private")
    p_pub.add_argument("--token", help="Hugging Face token with write access (default: `hf auth login` / HF_TOKEN)")
    p_pub.add_argument("--add", action="append", default=[], metavar="FILE",
                       help="upload this file too (e.g. the EG3D LICENSE.txt); repeatable")
    p_pub.add_argument("--accept-licence", "--accept-license", dest="accept_licence", action="store_true",
                       help="accept the licences of the files redistributed (same as GUIDE_ACCEPT_LICENCE=1)")


def _print_status(rows: list[WeightStatus], out=None) -> None:
    """Print the status table (rich) and, when something is missing, what is missing and where it goes."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    stream = out or sys.stdout
    # Piped output (CI logs, tests) gets a wide fixed width so rows are not folded into unreadable columns.
    console = Console(file=stream, width=None if stream.isatty() else 160)
    table = Table(title=f"guide weights in {weights_dir()}")
    header, cells = status_table(rows)
    for column in header:
        table.add_column(column, overflow="fold")
    highlighted = {header.index("installed"), header.index("verified")}
    for row in cells:
        table.add_row(*(Text(cell, style=_CELL_STYLES.get(cell, "") if i in highlighted else "")
                        for i, cell in enumerate(row)))
    console.print(table)
    missing = [r for r in rows if not r.installed]
    if missing:
        console.print(f"\n[bold]{len(missing)} missing[/] (the app falls back to the embedded default world where "
                      f"it can):", highlight=False)
        for row in missing:
            console.print(f"  [bold]{row.name}[/] ({row.file})", highlight=False)
            for step in install_steps(row.name):
                console.print(f"      {step}", highlight=False, markup=False)
        console.print("everything the paper's bundle needs, in one command: python -m guide_core weights fetch --all "
                      "--accept-licence", highlight=False, markup=False)


def main(args: argparse.Namespace) -> int:
    """Entry point of `python -m guide_core weights ...`; returns the exit code (0 ok, 1 a file problem, 2 usage)."""
    action = getattr(args, "action", None)
    try:
        if action in (None, "status"):
            rows = status(check_hashes=getattr(args, "check", False))
            if getattr(args, "json", False):
                print(json.dumps([asdict(r) for r in rows], indent=2))
            else:
                _print_status(rows)
            if any(r.verified == "mismatch" for r in rows):
                return EXIT_PROBLEM
            return EXIT_OK if all(r.installed for r in rows) else EXIT_PROBLEM
        if action == "fetch":
            return _main_fetch(args)
        if action == "publish":
            from guide_core.publish import publish

            publish(args.repo, model=args.model, dry_run=args.dry_run, token=args.token, private=args.private,
                        accept_licence=args.accept_licence, extra=args.add)
            return EXIT_OK
        if action == "verify":
            results = verify(args.name, progress=True)
            if args.record:
                results = [record(r.name) if r.verdict == "no reference" else r for r in results]
            if not results:
                print("nothing installed to verify; see `python -m guide_core weights status`")
                return EXIT_OK
            for r in results:
                print(f"{r.name:24s} {r.verdict:13s} {r.sha256 or '':64s} {r.path}")
                if r.verdict == "missing":
                    print(f"  {install_hint(r.name)}")
            if any(r.verdict in ("mismatch", "missing") for r in results):
                return EXIT_PROBLEM
            return EXIT_OK
        if action == "path":
            path = require(args.name)
            print(path)
            return EXIT_OK
    except WeightsError as exc:  # a name, source or licence to fix is a usage error; the rest are file problems
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, (UnknownWeightsError, NoSourceError, LicenceNotAcceptedError)) \
            else EXIT_PROBLEM
    except KeyboardInterrupt:
        print("interrupted: what was downloaded is kept; run the same command again to resume", file=sys.stderr)
        return 130
    print(f"error: unknown action {action!r}; use status, fetch, verify, path or publish", file=sys.stderr)
    return EXIT_USAGE


def _main_fetch(args: argparse.Namespace) -> int:
    """`weights fetch NAME` (licence printed first) or `weights fetch --all` (licences of every file first, one line
    per file after, one line in all when no host answers)."""
    from guide_core.fetching import fetch_all

    args.all = args.all or (args.model is not None and not args.name)
    model = args.model or DEFAULT_MODEL
    if args.all == bool(args.name):
        print("error: give a weights NAME or --all (not both)", file=sys.stderr)
        return EXIT_USAGE
    if not args.all:
        print(f"licence of {args.name}: {licence_line(args.name)}")
        path = fetch(args.name, url=args.url, hf_repo=args.hf_repo, hf_filename=args.hf_filename, gdrive=args.gdrive,
                     force=args.force, progress=not args.quiet, accept_licence=args.accept_licence,
                     sources=args.sources)
        print(f"{args.name}: {path} ({cached_verdict(args.name, path)})")   # hashed during the fetch
        return EXIT_OK
    if args.url or args.gdrive or args.hf_filename:
        print("error: --url, --gdrive and --hf-filename name one file; with --all use --hf-repo or --sources",
              file=sys.stderr)
        return EXIT_USAGE
    report = fetch_all(model, host_repo=args.hf_repo, accept_licence=args.accept_licence,
                       kinds=args.sources, progress=not args.quiet, force=args.force)
    if report.offline:
        print(f"error: offline: cannot reach {', '.join(report.offline_hosts) or 'any download host'}; nothing was "
              f"downloaded (check the network or proxy, then run the same command again)", file=sys.stderr)
        return EXIT_PROBLEM
    for name, why in report.optional_failed.items():
        print(f"optional {name} not fetched: {why}", file=sys.stderr)
    for name, why in report.failed.items():
        print(f"error: {name} not fetched: {why}", file=sys.stderr)
    if report.ok:
        print(f"all files of {model} are installed in {weights_dir()}")
    return EXIT_OK if report.ok else EXIT_PROBLEM
