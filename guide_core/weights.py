# Weights manager: the manifest of every file guide can use, where each lives, safe fetching (resumable, hash-verified,
# atomic), safe loading (no code from checkpoints ever runs), the generator entry point, and w̄ (the mean latent of
# GUIDE's UFO target, Seo et al. CVPR 2024 §3.2). Nothing here touches the network unless `fetch` is called. Where
# files come from (Hugging Face, HTTP, Google Drive), licence acceptance, `fetch --all` and `publish` live in
# guide_core.hub.
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import pickle
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

REPO = Path(__file__).resolve().parents[1]
REPO_WEIGHTS = REPO / "weights"
SHIPPED_ROOT = REPO_WEIGHTS  # shipped folders (the default world) always load from the repository
MANIFEST_FILE = "manifest.json"
HASHES_FILE = "hashes.json"
CHUNK = 64 << 10  # small reads: a cut connection loses at most one chunk of what arrived
_HASH_CHUNK = 8 << 20


# Errors a user can act on: each message names the file, where it goes and the command that fixes it.
class WeightsError(Exception):
    """Base class of the weights manager's errors."""


# An unknown manifest name (a typo in --model, a stale config).
class UnknownWeightsError(WeightsError, ValueError):
    """Raised for a name the manifest does not know; the message lists the known names."""


# A required file is absent.
class MissingWeightsError(WeightsError, FileNotFoundError):
    """Raised by `require` when the file is not installed; the message says where to put it and how to fetch it."""


# A download failed or was cut; the partial `.part` file stays for a resume.
class FetchError(WeightsError, RuntimeError):
    """Raised when a download cannot complete."""


# Nothing says where a file can be downloaded from (manual download needed, or --url / --hf-repo).
class NoSourceError(FetchError):
    """Raised by `fetch` when neither arguments, environment nor manifest give a source."""


# No connection to a download host at all (offline, DNS failure, firewall): nothing was downloaded.
class OfflineError(FetchError):
    """Raised when a host cannot be reached; `host` names it (host:port)."""

    def __init__(self, message: str, host: str | None = None):
        super().__init__(message)
        self.host = host


# A file whose licence must be accepted first (the NVIDIA EG3D licence): nothing was downloaded.
class LicenceNotAcceptedError(WeightsError):
    """Raised before downloading a file whose manifest entry has license_accept, until the licence is accepted."""


# The downloaded (or installed) bytes are not the expected file.
class HashMismatchError(WeightsError, ValueError):
    """Raised when a file's SHA-256 (or size) disagrees with the known value; the bad file is removed first."""


# A checkpoint that is not plain tensors (pickled code, wrong structure).
class UnsafeCheckpointError(WeightsError, ValueError):
    """Raised when a checkpoint would need arbitrary code to load, or is not the structure asked for."""


# ---------------------------------------------------------------------------------------------------------------------
# Locations and manifest
# ---------------------------------------------------------------------------------------------------------------------

# The folder the downloaded weights live in: $GUIDE_WEIGHTS_DIR, else <repo>/weights.
def weights_dir() -> Path:
    override = os.environ.get("GUIDE_WEIGHTS_DIR")
    return Path(override).expanduser().resolve() if override else REPO_WEIGHTS


_MANIFEST_CACHE: dict[str, Any] = {}


# The manifest always comes from the repository (it describes the code's needs), whatever weights_dir() is.
# Parsed once per file version: status/require call it for every row.
def manifest() -> dict[str, dict[str, Any]]:
    path = REPO_WEIGHTS / MANIFEST_FILE
    try:
        stamp = path.stat().st_mtime_ns
        if _MANIFEST_CACHE.get("stamp") == stamp:
            return _MANIFEST_CACHE["entries"]
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"the weights manifest {path} is missing; restore it with `git checkout weights/manifest.json`") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"the weights manifest {path} is not valid JSON: {exc}") from exc
    entries = data.get("weights")
    if not isinstance(entries, dict) or not entries:
        raise WeightsError(f"the weights manifest {path} has no 'weights' table")
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not (entry.get("file") or entry.get("dir")):
            raise WeightsError(f"manifest entry {name!r} needs a 'file' (or 'dir' for a shipped folder)")
    _MANIFEST_CACHE.update(stamp=stamp, entries=entries)
    return entries


# One manifest entry, with a clear error naming the known entries.
def entry(name: str) -> dict[str, Any]:
    entries = manifest()
    if name not in entries:
        raise UnknownWeightsError(f"unknown weights name {name!r}; known names: {', '.join(entries)}")
    return entries[name]


# Where a name's file (or folder, for shipped entries) lives, whether or not it is installed.
def path_of(name: str) -> Path:
    item = entry(name)
    if item.get("dir"):
        # Shipped folders travel with the repository, and their loaders read them there, whatever weights_dir() is.
        return SHIPPED_ROOT / item["dir"]
    return weights_dir() / item["file"]


# Whether the file (or every required file of a shipped folder) is present.
def is_installed(name: str) -> bool:
    item = entry(name)
    path = path_of(name)
    if item.get("dir"):
        if not path.is_dir():
            return False
        return all((path / f).is_file() for f in item.get("files", []))
    return path.is_file()


# The environment variable names that override a name's download source (e.g. GUIDE_URL_IR_SE50).
def env_names(name: str) -> dict[str, str]:
    key = re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    return {"url": f"GUIDE_URL_{key}", "hf_repo": f"GUIDE_HF_REPO_{key}", "hf_filename": f"GUIDE_HF_FILENAME_{key}",
            "gdrive": f"GUIDE_GDRIVE_{key}"}


# The human instructions for a missing file: where it goes, the command that fetches it, where it comes from.
def install_steps(name: str) -> list[str]:
    item = entry(name)
    target = path_of(name)
    source = item.get("source", "see weights/README.md").rstrip(". ")
    if item.get("shipped"):
        return [f"{target}/ ships with the repository: restore it with `git checkout -- weights/{item['dir']}`",
                f"source: {source}"]
    envs = env_names(name)
    steps = [f"put {item['file']} at {target}"]
    if item.get("converted_from"):
        original = entry(item["converted_from"])["file"]
        steps.append(f"or convert the original: python -m guide_core convert-eg3d {path_of(item['converted_from'])} "
                     f"{target}  (or fetch {original}: python -m guide_core weights fetch {item['converted_from']})")
    elif item.get("sources") or item.get("url") or item.get("hf_repo"):
        steps.append(f"or run: python -m guide_core weights fetch {name}" +
                     ("  (its licence must be accepted: add --accept-licence)" if item.get("license_accept") else ""))
    else:
        steps.append(f"or run: python -m guide_core weights fetch {name} --url URL  (or --hf-repo OWNER/REPO; "
                     f"or set {envs['url']} / {envs['hf_repo']})")
    steps.append(f"source: {source}")
    return steps


# The same instructions as one string.
def install_hint(name: str) -> str:
    return "; ".join(install_steps(name))


# The installed path of a name, or a MissingWeightsError saying exactly what to do.
def require(name: str) -> Path:
    item = entry(name)
    if is_installed(name):
        return path_of(name)
    if item.get("dir"):
        absent = [f for f in item.get("files", []) if not (path_of(name) / f).is_file()]
        what = f"folder {item['dir']}/ lacks {', '.join(absent)}"
    else:
        what = item["file"]
    raise MissingWeightsError(f"missing weights {name!r} ({what}), needed for {item.get('feature', name)}:\n  " +
                              "\n  ".join(install_steps(name)))


# ---------------------------------------------------------------------------------------------------------------------
# Hashes: manifest values, the local record (trust on first use) and a cache of checks keyed by size + mtime
# ---------------------------------------------------------------------------------------------------------------------

# SHA-256 of a file, streamed (weights are hundreds of MB).
def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    bar = _progress_bar(size, f"hashing {path.name}", enabled=progress and size > 64 * CHUNK)
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_CHUNK):
            digest.update(block)
            bar.update(len(block))
    bar.close()
    return digest.hexdigest()


# The local hash record, weights/hashes.json (never in git: it describes this machine's files).
def _read_hashes() -> dict[str, Any]:
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


# Write the hash record atomically, so a crash never leaves half a JSON file.
def _write_hashes(data: dict[str, Any]) -> None:
    _atomic_write_text(weights_dir() / HASHES_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")


# Write a text file through a temp file + os.replace.
def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The reference a file is judged against: manifest full hash > manifest prefix > locally recorded hash.
def expected_hash(name: str) -> tuple[str | None, str]:
    item = entry(name)
    if item.get("sha256"):
        return item["sha256"].lower(), "sha256"
    if item.get("sha256_prefix"):
        return item["sha256_prefix"].lower(), "prefix"
    recorded = _read_hashes()["recorded"].get(name)
    if recorded and recorded.get("file") == item.get("file"):
        return recorded["sha256"], "recorded"
    return None, "none"


# Compare a digest with a name's reference: returns the verdict word used by status/verify.
def judge_hash(name: str, digest: str, size: int | None = None) -> str:
    item = entry(name)
    if size is not None and item.get("size") and int(item["size"]) != size:
        return "mismatch"
    reference, kind = expected_hash(name)
    if reference is None:
        return "no reference"
    matched = digest.startswith(reference) if kind == "prefix" else digest == reference
    return kind if matched else "mismatch"


# ---------------------------------------------------------------------------------------------------------------------
# Status and verification
# ---------------------------------------------------------------------------------------------------------------------

# One row of `weights status`.
@dataclass
class WeightStatus:
    name: str
    file: str
    path: str
    installed: bool
    size: int | None
    verified: str          # sha256 | prefix | recorded | no reference | mismatch | unchecked | shipped | missing | partial
    feature: str
    license: str
    kind: str
    shipped: bool
    hint: str              # what to do when missing, else ""


# Size of a file or the total of a folder.
def _disk_size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# The cached verdict of a file whose size and mtime have not changed since it was last hashed.
def _cached_verdict(name: str, path: Path) -> str:
    checked = _read_hashes()["checked"].get(name)
    if not checked:
        return "unchecked"
    stat = path.stat()
    if checked.get("size") != stat.st_size or checked.get("mtime_ns") != stat.st_mtime_ns:
        return "unchecked"
    return judge_hash(name, checked["sha256"], stat.st_size)


# Remember a computed hash for this exact file state, so `status` can show it without re-hashing.
def _remember_check(name: str, path: Path, digest: str) -> None:
    data = _read_hashes()
    stat = path.stat()
    data["checked"][name] = {"file": path.name, "sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _write_hashes(data)


# The table of every manifest entry. With check_hashes, hashes installed files now (slow for the big ones).
def status(check_hashes: bool = False) -> list[WeightStatus]:
    rows = []
    for name, item in manifest().items():
        path = path_of(name)
        installed = is_installed(name)
        shipped = bool(item.get("shipped"))
        partial = _partial_size(path) if not installed and not shipped else None
        if partial is not None:
            verdict, size = "partial", partial      # an interrupted fetch: the same command resumes it
        elif not installed:
            verdict, size = "missing", item.get("size")
        elif shipped:
            verdict, size = "shipped", _disk_size(path)
        else:
            size = _disk_size(path)
            verdict = verify_one(name).verdict if check_hashes else _cached_verdict(name, path)
        rows.append(WeightStatus(
            name=name, file=(item["dir"] + "/") if item.get("dir") else item["file"], path=str(path),
            installed=installed, size=size, verified=verdict, feature=item.get("feature", ""),
            license=item.get("license", ""), kind=item.get("kind", ""), shipped=shipped,
            hint="" if installed else install_hint(name)))
    return rows


# Bytes of an interrupted download of `path` (its `.part`, or gdown's partial file in the staging folder), else None.
def _partial_size(path: Path) -> int | None:
    part = path.with_name(path.name + ".part")
    if part.is_file():
        return part.stat().st_size
    from guide_core.hub import incoming_dir

    staging = incoming_dir(path)
    found = [p for p in staging.glob("*") if p.is_file()] if staging.is_dir() else []
    return sum(p.stat().st_size for p in found) if found else None


# The result of verifying one name.
@dataclass
class VerifyResult:
    name: str
    path: str
    verdict: str           # sha256 | prefix | recorded | no reference | mismatch | missing | shipped
    sha256: str | None

    @property
    def ok(self) -> bool:
        return self.verdict in ("sha256", "prefix", "recorded", "no reference", "shipped")


# Hash one installed file against its reference (shipped folders: presence of their files).
def verify_one(name: str, progress: bool = False) -> VerifyResult:
    item = entry(name)
    path = path_of(name)
    if not is_installed(name):
        return VerifyResult(name, str(path), "missing", None)
    if item.get("shipped"):
        return VerifyResult(name, str(path), "shipped", None)
    digest = sha256_file(path, progress=progress)
    _remember_check(name, path, digest)
    return VerifyResult(name, str(path), judge_hash(name, digest, path.stat().st_size), digest)


# Pin the current hash of an installed file that has no reference yet (a file downloaded by hand): trust on first use.
def record(name: str) -> VerifyResult:
    result = verify_one(name)
    if result.verdict != "no reference":
        return result
    record_hash(name, Path(result.path), result.sha256, "recorded by hand (weights verify --record)")
    return VerifyResult(name, result.path, "recorded", result.sha256)


# Pin a file's hash in the local record (trust on first use): later fetches and `verify` compare against it.
def record_hash(name: str, path: Path, digest: str, source: str) -> None:
    data = _read_hashes()
    data["recorded"][name] = {"file": path.name, "sha256": digest, "size": path.stat().st_size, "source": source,
                              "recorded_at": _now()}
    _write_hashes(data)


# UTC timestamp for the hash record.
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# Verify one name, or every installed one when name is None.
def verify(name: str | None = None, progress: bool = False) -> list[VerifyResult]:
    if name is not None:
        return [verify_one(name, progress=progress)]
    return [verify_one(n, progress=progress) for n in manifest() if is_installed(n)]


# ---------------------------------------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------------------------------------

# A progress bar on stderr (tqdm), or a no-op one.
def _progress_bar(total: int | None, desc: str, enabled: bool = True, initial: int = 0):
    if enabled:
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                    file=sys.stderr, leave=False)

    class _Silent:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass
    return _Silent()


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
def _download_http(url: str, part: Path, progress: bool, timeout: float) -> None:
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
        bar = _progress_bar(total, part.name[:-len(".part")], enabled=progress, initial=start)
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
    _remember_check(name, target, digest)
    return target


# ---------------------------------------------------------------------------------------------------------------------
# Safe loaders
# ---------------------------------------------------------------------------------------------------------------------

# torch.load restricted to tensors and plain containers (weights_only=True); pickled code is refused with a clear error.
def load_torch(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False; only the line naming the refused global is useful here.
        found = re.search(r"[^\n]*(GLOBAL|global)[^\n]*", str(exc))
        reason = found.group(0).strip() if found else "it references Python objects beyond tensors"
        raise UnsafeCheckpointError(
            f"{path} is not a plain tensor checkpoint: loading it would need code stored in the file, which guide "
            f"never runs ({reason}). If it is an original EG3D network pickle, load it with "
            f"guide_core.weights.load_generator.") from exc
    except (RuntimeError, EOFError, ValueError) as exc:
        raise UnsafeCheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or another format): "
                                    f"{exc}") from exc


# A state_dict ({name: tensor}) from a .pt/.pth file; `key` picks a nested dict such as "state_dict".
def load_torch_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                          key: str | None = None) -> dict[str, torch.Tensor]:
    obj = load_torch(path, map_location)
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise UnsafeCheckpointError(f"{path} has no entry {key!r}")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise UnsafeCheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict (a name → tensor mapping)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        nested = [k for k in bad if isinstance(obj.get(k), Mapping)]
        hint = f"; it looks like a wrapper: pass key={nested[0]!r}" if nested else ""
        raise UnsafeCheckpointError(f"{path} is not a flat state_dict: entries {bad[:5]} are not tensors{hint}")
    return dict(obj)


# Tensors of a .safetensors file plus its metadata (JSON values decoded where they parse).
def load_safetensors(path: str | os.PathLike, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as handle:
            raw = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise UnsafeCheckpointError(f"{path} is not a valid .safetensors file: {exc}") from exc
    metadata: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            metadata[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            metadata[k] = v
    return tensors, metadata


# A .npy array without pickle (e.g. the real-image Inception features of ΔFID_real).
def load_npy(path: str | os.PathLike):
    import numpy as np

    try:
        return np.load(Path(path), allow_pickle=False)
    except ValueError as exc:
        raise UnsafeCheckpointError(f"{path} holds pickled Python objects, which guide never loads: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------------
# Generator and w̄
# ---------------------------------------------------------------------------------------------------------------------

# A TriPlaneGenerator (eval mode) from a manifest name or a path to an original .pkl or our .safetensors.
def load_generator(path_or_name: str | os.PathLike, device: str | torch.device = "cpu"):
    if isinstance(path_or_name, str) and path_or_name in manifest():
        path = require(path_or_name)
    else:
        path = Path(path_or_name)
        if not path.exists():
            raise FileNotFoundError(f"generator not found: {path} (and {str(path_or_name)!r} is not a weights name; "
                                    f"known names: {', '.join(manifest())})")
    from guide_core.eg3d.io import load_generator_file  # lazy: the EG3D package is heavy and optional for this module

    return load_generator_file(path, device)


# A fingerprint of the mapping network's weights, so a cached w̄ is never reused for a different generator.
def _mapping_fingerprint(mapping: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(mapping.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# The frontal conditioning camera of GUIDE's scripts. They look up rendering_kwargs "avg_cam_pivot" / "avg_cam_radius"
# with defaults (0, 0, 0) / 2.7, while the released checkpoints store "avg_camera_pivot" / "avg_camera_radius": so for
# the released models the effective camera looks at the origin from radius 2.7. The same lookup is kept here on purpose.
def conditioning_camera(G) -> torch.Tensor:
    from guide_core.eg3d import camera_params  # lazy

    kwargs = getattr(G, "rendering_kwargs", None) or {}
    pivot = tuple(float(v) for v in kwargs.get("avg_cam_pivot", (0.0, 0.0, 0.0)))
    radius = float(kwargs.get("avg_cam_radius", 2.7))
    return camera_params(0.0, 0.0, radius=radius, pivot=pivot)


# The mean of n mapping outputs for seeded z under one camera: w̄ as "the average latent code" of the GUIDE release.
@torch.no_grad()
def mean_of_mapping(G, n: int = 10000, seed: int = 0, c: torch.Tensor | None = None, batch: int = 1000) -> torch.Tensor:
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    c = conditioning_camera(G) if c is None else c
    device = next(G.parameters()).device
    c = c.reshape(1, -1).to(device)
    # One CPU draw of all z: the same codes on every device and for every batch size.
    z_all = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    total = None
    for start in range(0, n, batch):
        z = z_all[start:start + batch].to(device)
        ws = G.mapping(z, c.expand(len(z), -1), truncation_psi=1.0).to(torch.float64)
        total = ws.sum(dim=0) if total is None else total + ws.sum(dim=0)
    return (total / n).to(torch.float32)


# w̄ of a generator as [num_ws, 512], and where it came from.
def w_avg_with_source(G, name: str | None = None, n: int = 10000, seed: int = 0, source: str = "auto",
                      c: torch.Tensor | None = None, cache: bool = True) -> tuple[torch.Tensor, str]:
    """Order for source="auto": (1) a released w̄ file for `name` (the GUIDE authors' w_avg_ffhqrebalanced512-128.pt,
    what the paper used) when installed; (2) the mapping network's trained `w_avg` buffer (the running mean kept by
    StyleGAN2/EG3D training), when it is not all zeros; (3) the mean of n mapping samples (ψ = 1) under the
    conditioning camera `c` (default `conditioning_camera(G)`, GUIDE's), cached in weights/cache/<name>-w_avg.safetensors
    keyed by n, seed, the camera and a fingerprint of the mapping weights.
    source="file" | "buffer" | "samples" forces one of them."""
    if source not in ("auto", "file", "buffer", "samples"):
        raise ValueError(f"source must be auto, file, buffer or samples, got {source!r}")
    mapping = G.backbone.mapping
    num_ws, w_dim = int(mapping.num_ws), int(mapping.w_dim)
    device = next(G.parameters()).device

    def shaped(t: torch.Tensor, origin: str) -> torch.Tensor:
        t = t.detach().to(device, torch.float32)
        if t.shape == (w_dim,):
            return t.expand(num_ws, w_dim).clone()
        if t.dim() == 3 and t.shape[0] == 1:
            t = t[0]
        if t.shape != (num_ws, w_dim):
            raise WeightsError(f"w̄ from {origin} has shape {tuple(t.shape)}; this generator needs [{num_ws}, {w_dim}] "
                               f"or [{w_dim}]")
        return t.clone()

    if source in ("auto", "file"):
        released = [k for k, v in manifest().items() if name and v.get("w_avg_for") == name]
        for key in released:
            if is_installed(key):
                value = load_torch(path_of(key))
                if not isinstance(value, torch.Tensor):
                    raise UnsafeCheckpointError(f"{path_of(key)} should hold one tensor, found {type(value).__name__}")
                return shaped(value, str(path_of(key))), f"file:{path_of(key)}"
        if source == "file":
            raise MissingWeightsError(f"no released w̄ file is installed for {name!r}" +
                                      (f": {install_hint(released[0])}" if released else ""))
    buffer = getattr(mapping, "w_avg", None)
    if source in ("auto", "buffer"):
        if buffer is not None and bool(buffer.abs().sum() > 0):
            return shaped(buffer, "the mapping's w_avg buffer"), "buffer"
        if source == "buffer":
            raise WeightsError("the mapping network's w_avg buffer is absent or all zeros (untrained)")

    # A name may be a generator path: keep only a safe file stem (the fingerprint guards against collisions).
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")[-120:] if name else ""
    cache_path = weights_dir() / "cache" / f"{stem}-w_avg.safetensors" if (stem and cache) else None
    c = conditioning_camera(G) if c is None else c
    key = {"n": n, "seed": seed, "mapping_sha256": _mapping_fingerprint(mapping),
           "camera": [round(float(v), 6) for v in c.reshape(-1).tolist()]}
    if cache_path is not None and cache_path.is_file():
        tensors, meta = load_safetensors(cache_path)
        if all(meta.get(k) == v for k, v in key.items()) and "w_avg" in tensors:
            return shaped(tensors["w_avg"], str(cache_path)), f"cache:{cache_path}"
    value = mean_of_mapping(G, n=n, seed=seed, c=c)
    if cache_path is not None:
        _save_safetensors_atomic(cache_path, {"w_avg": value.cpu().contiguous()}, {**key, "truncation_psi": 1.0})
    return shaped(value, "mapping samples"), f"samples:n={n},seed={seed}"


# w̄ of a generator as [num_ws, 512] (see w_avg_with_source for which source is used).
def w_avg(G, name: str | None = None, n: int = 10000, seed: int = 0, source: str = "auto",
          c: torch.Tensor | None = None, cache: bool = True) -> torch.Tensor:
    return w_avg_with_source(G, name=name, n=n, seed=seed, source=source, c=c, cache=cache)[0]


# Write a .safetensors file through a temp file + os.replace (metadata values stored as JSON strings).
def _save_safetensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in metadata.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------------------
# CLI: python -m guide_core weights status | fetch NAME | fetch --all | verify [NAME] | path NAME | publish --repo R
# ---------------------------------------------------------------------------------------------------------------------

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


# Sub-commands and their options.
def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    p_fetch.add_argument("--model", default="eg3d-ffhq-rebalanced", help="bundle whose files --all fetches")
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
    p_pub.add_argument("--model", default="eg3d-ffhq-rebalanced", help="bundle whose files are uploaded")
    p_pub.add_argument("--dry-run", action="store_true",
                       help="print what would be converted and uploaded; touch nothing")
    p_pub.add_argument("--private", action="store_true", help="create the repository private")
    p_pub.add_argument("--token", help="Hugging Face token with write access (default: `hf auth login` / HF_TOKEN)")
    p_pub.add_argument("--add", action="append", default=[], metavar="FILE",
                       help="upload this file too (e.g. the EG3D LICENSE.txt); repeatable")
    p_pub.add_argument("--accept-licence", "--accept-license", dest="accept_licence", action="store_true",
                       help="accept the licences of the files redistributed (same as GUIDE_ACCEPT_LICENCE=1)")


# Human-readable byte count.
def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# Print the status table (rich) and, when offline or incomplete, what is missing and where it goes.
def _print_status(rows: list[WeightStatus], out=None) -> None:
    from rich.console import Console
    from rich.table import Table

    stream = out or sys.stdout
    # Piped output (CI logs, tests) gets a wide fixed width so rows are not folded into unreadable columns.
    console = Console(file=stream, width=None if stream.isatty() else 160)
    table = Table(title=f"guide weights in {weights_dir()}")
    for column in ("name", "file", "installed", "size", "verified", "feature"):
        table.add_column(column, overflow="fold")
    for row in rows:
        installed = "[green]yes[/]" if row.installed else "[red]no[/]"
        verified = {"mismatch": "[red]MISMATCH[/]", "missing": "-",
                    "partial": "[yellow]partial (.part)[/]"}.get(row.verified, row.verified)
        table.add_row(row.name, row.file, installed, _human(row.size), verified, row.feature)
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


# Entry point of `python -m guide_core weights ...`.
def main(args: argparse.Namespace) -> int:
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
            from guide_core import hub

            hub.publish(args.repo, model=args.model, dry_run=args.dry_run, token=args.token, private=args.private,
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


# `weights fetch NAME` (licence printed first) or `weights fetch --all` (licences of every file first, one line per
# file after, one line in all when no host answers).
def _main_fetch(args: argparse.Namespace) -> int:
    from guide_core import hub

    if args.all == bool(args.name):
        print("error: give a weights NAME or --all (not both)", file=sys.stderr)
        return EXIT_USAGE
    if not args.all:
        print(f"licence of {args.name}: {hub.licence_line(args.name)}")
        path = fetch(args.name, url=args.url, hf_repo=args.hf_repo, hf_filename=args.hf_filename, gdrive=args.gdrive,
                     force=args.force, progress=not args.quiet, accept_licence=args.accept_licence,
                     sources=args.sources)
        print(f"{args.name}: {path} ({_cached_verdict(args.name, path)})")   # hashed during the fetch
        return EXIT_OK
    if args.url or args.gdrive or args.hf_filename:
        print("error: --url, --gdrive and --hf-filename name one file; with --all use --hf-repo or --sources",
              file=sys.stderr)
        return EXIT_USAGE
    report = hub.fetch_all(args.model, host_repo=args.hf_repo, accept_licence=args.accept_licence,
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
        print(f"all files of {args.model} are installed in {weights_dir()}")
    return EXIT_OK if report.ok else EXIT_PROBLEM
