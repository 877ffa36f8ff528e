"""Licences of weight files: which ones must be accepted before download (the NVIDIA EG3D licence and its
derivatives), whether the user accepted them, and the one-line description printed before anything is fetched."""
from __future__ import annotations

import os
from typing import Iterable, TextIO

from guide_core.weights.catalogue import entry
from guide_core.weights.errors import LicenceNotAcceptedError

ENV_ACCEPT = "GUIDE_ACCEPT_LICENCE"      # 1 = the licences that need acceptance are accepted


def needs_acceptance(name: str) -> bool:
    """Whether a name's licence must be accepted before its file is downloaded."""
    return bool(entry(name).get("license_accept"))


def licence_accepted(flag: bool | None = None) -> bool:
    """Whether the user accepted those licences: the flag, else GUIDE_ACCEPT_LICENCE=1 (or true / yes)."""
    if flag:
        return True
    return os.environ.get(ENV_ACCEPT, "").strip().lower() in ("1", "true", "yes")


def licence_line(name: str) -> str:
    """One line naming a file's licence and where to read it."""
    item = entry(name)
    text = item.get("license", "licence unknown: see weights/README.md").rstrip(". ")
    link = f" ({item['license_url']})" if item.get("license_url") else ""
    return f"{text}{link}"


def require_licence(names: Iterable[str], accept: bool | None = None) -> None:
    """Refuse to download files whose licence needs acceptance until it is accepted; the message says how to accept.

    Raises LicenceNotAcceptedError naming every such file of `names`."""
    pending = [n for n in names if needs_acceptance(n)]
    if not pending or licence_accepted(accept):
        return
    lines = [f"  {n} ({entry(n)['file']}): {licence_line(n)}" for n in pending]
    raise LicenceNotAcceptedError(
        "these files may only be downloaded once their licence is accepted:\n" + "\n".join(lines) +
        f"\nread it, then run again with --accept-licence (or set {ENV_ACCEPT}=1); nothing was downloaded")


def print_licences(names: Iterable[str], out: TextIO) -> None:
    """The licence block printed before anything is downloaded or uploaded: one line per file, `*` marking those
    that must be accepted."""
    names = list(dict.fromkeys(names))
    print("Licences of these files (read them before use; * = must be accepted: --accept-licence or "
          f"{ENV_ACCEPT}=1):", file=out)
    width = max((len(n) for n in names), default=0)
    for name in names:
        mark = "*" if needs_acceptance(name) else " "
        print(f" {mark} {name:<{width}}  {entry(name)['file']}: {licence_line(name)}", file=out)
