"""Command-line entry point: `python -m guide_core COMMAND ...`.
Each command lives in the module that owns its concept; the module is imported only when its command runs,
so `--help` stays fast. A command module provides `add_arguments(parser)` and `main(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

COMMANDS = {
    "unlearn": ("guide_core.cli.unlearn", "command",
                "erase identities from a generator, all at once or continuing a run (Latent Target Unlearning)"),
    "eval": ("guide_core.cli.evaluate", "command", "ID / ID_others / FID_pre / dFID_real of a run directory"),
    "audit": ("guide_core.cli.audit", "command", "re-inversion attack on an unlearned generator"),
    "import": ("guide_core.cli.import_run", "command", "make a run directory of a generator unlearned by another tool "
                                              "(e.g. the official GUIDE unlearn.py's last.pkl)"),
    "weights": ("guide_core.cli.weights", "cli", "status | fetch NAME | fetch --all | verify | path | publish of the "
                                             "weight files"),
    "convert-eg3d": ("guide_core.eg3d.convert", "cli", "convert an official EG3D .pkl to .safetensors + JSON"),
}


def _load(name: str):
    module_name, attr, _ = COMMANDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr != "cli" else module


def main(argv: list[str] | None = None) -> int:
    """Parse the command name, import its module, parse its flags and run it; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Named as it was started: the `guide` script of an installed package, or `python -m guide_core`.
    prog = "guide" if Path(sys.argv[0]).name == "guide" else "python -m guide_core"
    parser = argparse.ArgumentParser(prog=prog, description="guide: generative identity unlearning")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, _, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser.print_help()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    name = argv[0]
    command = _load(name)
    cmd_parser = argparse.ArgumentParser(prog=f"{prog} {name}", description=COMMANDS[name][2],
                                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    command.add_arguments(cmd_parser)
    args = cmd_parser.parse_args(argv[1:])
    return int(command.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
