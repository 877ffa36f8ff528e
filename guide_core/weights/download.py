# Fetching one weight file: each source of its chain in turn (guide_core.hub), a resumable HTTP download into
# `<file>.part`, and the hash check that alone lets a `.part` become the file.
from __future__ import annotations

import os
import re
from pathlib import Path

from guide_core.weights.catalogue import entry, install_hint, path_of
from guide_core.weights.errors import FetchError, HashMismatchError, NoSourceError, OfflineError
from guide_core.weights.hashes import expected_hash, judge_hash, progress_bar, record_hash, remember_check, sha256_file
from guide_core.weights.inventory import verify_one

CHUNK = 64 << 10  # small reads: a cut connection loses at most one chunk of what arrived


# Download a name into weights_dir(): each source of its chain in turn (guide_core.hub), every one landing as
# `<file>.part`, SHA-256 checked, renamed into place atomically. A source that fails or delivers the wrong bytes
# (deleted) hands over to the next; the error names every attempt. Files whose licence needs acceptance are refused
# until it is accepted (accept_licence=True or GUIDE_ACCEPT_LICENCE=1).
def fetch(name: str, url: str | None = None, hf_repo: str | None = None, hf_filename: str | None = None, *,
          gdrive: str | None = None, force: bool = False, progress: bool = True, timeout: float = 60.0,
          accept_licence: bool | None = None, sources: str | list[str] | None = None) -> Path:
    from guide_core import hub

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
    chain = hub.sources_for(name, url=url, hf_repo=hf_repo, hf_filename=hf_filename, gdrive=gdrive, kinds=sources)
    if not chain:
        chosen = f" after {hub.ENV_SOURCES}/--sources={sources or os.environ.get(hub.ENV_SOURCES)}" \
            if (sources or os.environ.get(hub.ENV_SOURCES)) and item.get("sources") else ""
        raise NoSourceError(f"no download source known for {name!r} ({item['file']}){chosen}. {install_hint(name)}")
    hub.require_licence([name], accept_licence)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    failures: list[tuple[dict, Exception]] = []
    for source in chain:
        try:
            origin = hub.download(source, part, progress=progress, timeout=timeout)
            return _install_part(name, part, target, origin, progress=progress)
        except (FetchError, HashMismatchError) as exc:
            failures.append((source, exc))
    raise hub.combined_error(name, failures)


# Stream a URL into `part`, continuing an earlier partial download with an HTTP Range request.
def download_http(url: str, part: Path, progress: bool, timeout: float) -> None:
    import requests

    if not re.match(r"^https?://", url):
        raise FetchError(f"only http(s) URLs can be fetched, got {url!r}")
    have = part.stat().st_size if part.is_file() else 0
    # identity encoding: Content-Length then counts the file's own bytes, so a cut stream is always detected
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.ConnectionError as exc:  # no answer at all: offline, DNS, firewall, proxy
        from guide_core.hub import network_reason

        host = re.sub(r"^https?://([^/]+).*$", r"\1", url)
        raise OfflineError(f"could not reach {host} for {url} ({network_reason(exc)})", host=host) from None
    except requests.RequestException as exc:
        raise FetchError(f"could not reach {url}: {exc}") from exc
    with response:
        if response.status_code == 416 and have:
            # The server has nothing past what we hold: the .part is already complete; the hash check decides.
            return
        if response.status_code not in (200, 206):
            raise FetchError(f"download of {url} failed: HTTP {response.status_code} {response.reason}")
        start, total = _content_range(response, have)
        bar = progress_bar(total, part.name[:-len(".part")], enabled=progress, initial=start, bytes_=True)
        written = start
        try:
            # A fresh download (start 0) truncates: a server that ignored Range must not append a second copy.
            with open(part, "ab" if start else "wb") as handle:
                _lock(handle)
                for block in response.iter_content(chunk_size=CHUNK):
                    handle.write(block)
                    written += len(block)
                    bar.update(len(block))
                handle.flush()
                os.fsync(handle.fileno())
        except (requests.RequestException, OSError) as exc:
            raise FetchError(f"download of {url} was interrupted after {written} bytes ({exc}); the partial file "
                             f"{part} was kept: run the same fetch again to resume") from exc
        finally:
            bar.close()
    if total is not None and written != total:
        raise FetchError(f"download of {url} ended after {written} of {total} bytes; the partial file {part} was kept: "
                         f"run the same fetch again to resume")


# Where a response's body starts in the file and the file's total size (None when the server does not say).
def _content_range(response, have: int) -> tuple[int, int | None]:
    length = response.headers.get("Content-Length")
    if response.status_code != 206:
        return 0, int(length) if length is not None else None
    match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != have:
        raise FetchError(f"the server answered the resume request with an unexpected range "
                         f"{response.headers.get('Content-Range')!r}; delete the .part file and fetch again")
    total = None if match.group(3) == "*" else int(match.group(3))
    return have, total


# Guard a .part file against two fetches writing it at once (advisory lock; Linux/macOS).
def _lock(handle) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock, a concurrent fetch there is the user's responsibility
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise FetchError(f"{handle.name} is being written by another fetch; wait for it to finish") from exc


# Check a finished `.part` and move it into place; a bad one is deleted, never renamed.
def _install_part(name: str, part: Path, target: Path, origin: str, progress: bool) -> Path:
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
