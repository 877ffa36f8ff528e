"""Hashes of weight files: the manifest's reference values, the local record (trust on first use) and a cache of
checks keyed by size + mtime, so `status` can show a verdict without re-hashing hundreds of MB. The hashing itself
is guide_core.files.sha256_file, the project's one SHA-256 of a file."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from guide_core import files
from guide_core.weights.catalogue import entry, weights_dir

HASHES_FILE = "hashes.json"


def _read_hashes() -> dict[str, Any]:
    """The local hash record, weights/hashes.json (never in git: it describes this machine's files)."""
    path = weights_dir() / HASHES_FILE
    if not path.is_file():
        return {"format_version": 1, "recorded": {}, "checked": {}}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        # A damaged record loses only cached knowledge; the manifest remains the authority.
        return {"format_version": 1, "recorded": {}, "checked": {}}
    data.setdefault("recorded", {})
    data.setdefault("checked", {})
    return data


def _write_hashes(data: dict[str, Any]) -> None:
    """Written atomically, so a crash never leaves half a JSON file."""
    files.atomic_write(weights_dir() / HASHES_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")


def expected_hash(name: str) -> tuple[str | None, str]:
    """The reference a file is judged against: manifest full hash > manifest prefix > locally recorded hash."""
    item = entry(name)
    if item.get("sha256"):
        return item["sha256"].lower(), "sha256"
    if item.get("sha256_prefix"):
        return item["sha256_prefix"].lower(), "prefix"
    recorded = _read_hashes()["recorded"].get(name)
    if recorded and recorded.get("file") == item.get("file"):
        return recorded["sha256"], "recorded"
    return None, "none"


def judge_hash(name: str, digest: str, size: int | None = None) -> str:
    """Compare a digest with a name's reference: returns the verdict word used by status/verify."""
    item = entry(name)
    if size is not None and item.get("size") and int(item["size"]) != size:
        return "mismatch"
    reference, kind = expected_hash(name)
    if reference is None:
        return "no reference"
    matched = digest.startswith(reference) if kind == "prefix" else digest == reference
    return kind if matched else "mismatch"


def record_hash(name: str, path: Path, digest: str, source: str) -> None:
    """Pin a file's hash in the local record (trust on first use): later fetches and `verify` compare against it."""
    data = _read_hashes()
    data["recorded"][name] = {"file": path.name, "sha256": digest, "size": path.stat().st_size, "source": source,
                              "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _write_hashes(data)


def cached_verdict(name: str, path: Path) -> str:
    """The cached verdict of a file whose size and mtime have not changed since it was last hashed."""
    checked = _read_hashes()["checked"].get(name)
    if not checked:
        return "unchecked"
    stat = path.stat()
    if checked.get("size") != stat.st_size or checked.get("mtime_ns") != stat.st_mtime_ns:
        return "unchecked"
    return judge_hash(name, checked["sha256"], stat.st_size)


def remember_check(name: str, path: Path, digest: str) -> None:
    """Remember a computed hash for this exact file state, so `status` can show it without re-hashing."""
    data = _read_hashes()
    stat = path.stat()
    data["checked"][name] = {"file": path.name, "sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _write_hashes(data)
