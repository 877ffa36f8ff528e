"""Fetching one weight file: each source of its chain in turn (guide_core.weights.sources, brought by
guide_core.weights.transports) into `<file>.part`, and the hash check that alone lets a `.part` become the file."""
from __future__ import annotations

import os
from pathlib import Path

from guide_core.files import sha256_file
from guide_core.weights import transports
from guide_core.weights.catalogue import entry, install_hint, path_of
from guide_core.weights.errors import FetchError, HashMismatchError, NoSourceError
from guide_core.weights.hashes import expected_hash, judge_hash, record_hash, remember_check
from guide_core.weights.inventory import verify_one
from guide_core.weights.licences import require_licence
from guide_core.weights.sources import ENV_SOURCES, sources_for


def fetch(name: str, url: str | None = None, hf_repo: str | None = None, hf_filename: str | None = None, *,
          gdrive: str | None = None, force: bool = False, progress: bool = True, timeout: float = 60.0,
          accept_licence: bool | None = None, sources: str | list[str] | None = None) -> Path:
    """Download a name into weights_dir() and return its path.

    Each source of its chain is tried in turn, every one landing as `<file>.part`, SHA-256 checked and renamed into
    place atomically. A source that fails or delivers the wrong bytes (deleted) hands over to the next; the error
    names every attempt. Files whose licence needs acceptance are refused until it is accepted (accept_licence=True
    or GUIDE_ACCEPT_LICENCE=1). An installed file is returned as is unless its hash is known to mismatch."""
    item = entry(name)
    if item.get("shipped"):
        raise FetchError(f"{name!r} is not downloaded: {install_hint(name)}")
    target = path_of(name)
    if target.is_file() and not force:
        result = verify_one(name, progress=progress)
        if result.verdict != "mismatch":
            return target
        raise HashMismatchError(f"{target} is installed but its SHA-256 {result.sha256} does not match the known hash; "
                                f"remove it or run `python -m guide_core weights fetch {name} --force`")
    chain = sources_for(name, url=url, hf_repo=hf_repo, hf_filename=hf_filename, gdrive=gdrive, kinds=sources)
    if not chain:
        chosen = f" after {ENV_SOURCES}/--sources={sources or os.environ.get(ENV_SOURCES)}" \
            if (sources or os.environ.get(ENV_SOURCES)) and item.get("sources") else ""
        raise NoSourceError(f"no download source known for {name!r} ({item['file']}){chosen}. {install_hint(name)}")
    require_licence([name], accept_licence)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    failures: list[tuple[dict, Exception]] = []
    for source in chain:
        try:
            origin = transports.download(source, part, progress=progress, timeout=timeout)
            return _install_part(name, part, target, origin, progress=progress)
        except (FetchError, HashMismatchError) as exc:
            failures.append((source, exc))
    raise transports.combined_error(name, failures)


def _install_part(name: str, part: Path, target: Path, origin: str, progress: bool) -> Path:
    """Check a finished `.part` and move it into place; a bad one is deleted, never renamed."""
    item = entry(name)
    size = part.stat().st_size
    digest = sha256_file(part, progress=progress)
    verdict = judge_hash(name, digest, size)
    if verdict == "mismatch":
        part.unlink(missing_ok=True)
        reference, kind = expected_hash(name)
        expected = f"size {item['size']}" if item.get("size") and int(item["size"]) != size else f"{kind} {reference}"
        raise HashMismatchError(f"downloaded {item['file']} from {origin} is corrupt or not the expected file "
                                f"(got SHA-256 {digest}, {size} bytes; expected {expected}); it was deleted")
    os.replace(part, target)
    if verdict == "no reference":
        record_hash(name, target, digest, origin)
    remember_check(name, target, digest)
    return target
