"""Transports: bringing the bytes of one source (see guide_core.weights.sources) to `<file>.part`.

Plain HTTP(S) with Range resume, the Hugging Face Hub through huggingface_hub (its local cache first), and Google
Drive through gdown (resumed from a staging folder). Each either leaves the complete file as `part` or raises
FetchError (OfflineError when the host cannot be reached at all), keeping what can be resumed. Hashing and renaming
the `.part` into place is guide_core.weights.download's job.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
import tempfile
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

from guide_core.progress import progress_bar, silent_tqdm_class
from guide_core.weights.catalogue import entry
from guide_core.weights.errors import FetchError, OfflineError, WeightsError
from guide_core.weights.sources import describe

CHUNK = 64 << 10                         # small reads: a cut connection loses at most one chunk of what arrived
PROBE_TIMEOUT = 10.0
# gdown's own retries of a cut transfer (each resumes with a Range request) before the error reaches the user.
GDRIVE_RETRIES = 2
# gdown keeps Google's cookies here (None: gdown's default, ~/.cache/gdown/cookies.txt).
GDOWN_COOKIES: str | None = None
INCOMING = ".incoming"                   # per-file staging folders of gdown, inside weights_dir()

# Hosts found unreachable during one batch of fetches, so an offline machine is told once instead of waiting per file.
_UNREACHABLE: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("guide_unreachable", default=None)
_DRIVE_LISTINGS: dict[str, list[Any]] = {}


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, shortened (huggingface_hub and gdown write paragraphs)."""
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")


def network_reason(exc: BaseException) -> str:
    """The cause inside a connection error ("[Errno 111] Connection refused", "Name or service not known", ...)."""
    text = " ".join(str(exc).split())
    found = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    return found.group(0).strip() if found else one_line(exc)


@contextlib.contextmanager
def unreachable_hosts() -> Iterator[set[str]]:
    """Within the block, every host found unreachable is remembered in the yielded set, and a later probe of it
    fails at once (one `fetch --all` on an offline machine then waits once, not once per file)."""
    token = _UNREACHABLE.set(set())
    try:
        yield _UNREACHABLE.get()
    finally:
        _UNREACHABLE.reset(token)


def probe(url: str, what: str) -> None:
    """Fail fast with OfflineError when the host of `url` cannot be reached at all (clients would otherwise retry for
    tens of seconds per file). Any HTTP answer, even an error status, means the host is reachable."""
    import requests

    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    seen = _UNREACHABLE.get()
    if seen is not None and parts.netloc in seen:
        raise OfflineError(f"cannot reach {what} at {origin} (unreachable earlier in this run)", host=parts.netloc)
    try:
        requests.head(origin + "/", timeout=PROBE_TIMEOUT, allow_redirects=False).close()
    except requests.RequestException as exc:
        if not isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return  # the host answered in some way; the download itself reports what is wrong
        if seen is not None:
            seen.add(parts.netloc)
        raise OfflineError(f"cannot reach {what} at {origin} ({network_reason(exc)})", host=parts.netloc) from None


def hf_endpoint() -> str:
    """The Hugging Face Hub endpoint, read when called (huggingface_hub reads HF_ENDPOINT once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


# ---------------------------------------------------------------------------------------------------------------------
# Plain HTTP(S)
# ---------------------------------------------------------------------------------------------------------------------

def download_http(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Stream a URL into `part`, continuing an earlier partial download with an HTTP Range request."""
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


def _content_range(response, have: int) -> tuple[int, int | None]:
    """Where a response's body starts in the file and the file's total size (None when the server does not say)."""
    length = response.headers.get("Content-Length")
    if response.status_code != 206:
        return 0, int(length) if length is not None else None
    match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != have:
        raise FetchError(f"the server answered the resume request with an unexpected range "
                         f"{response.headers.get('Content-Range')!r}; delete the .part file and fetch again")
    total = None if match.group(3) == "*" else int(match.group(3))
    return have, total


def _lock(handle) -> None:
    """Guard a .part file against two fetches writing it at once (advisory lock; Linux/macOS)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock, a concurrent fetch there is the user's responsibility
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise FetchError(f"{handle.name} is being written by another fetch; wait for it to finish") from exc


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face Hub
# ---------------------------------------------------------------------------------------------------------------------

def download_hf(source: dict[str, Any], part: Path, progress: bool = True, timeout: float = 60.0) -> str:
    """One file of a Hugging Face repository as `part`; returns its origin.

    From the local Hugging Face cache when it is there (a Space's preload_from_hub puts files there at build time),
    else through hf_hub_download into a private folder beside `part`. huggingface_hub resumes a cut stream itself
    (Range requests, a few tries); a download killed outright restarts, because huggingface_hub discards its
    temporary file when it fails."""
    try:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError as exc:
        raise FetchError("huggingface_hub is not installed; `pip install huggingface_hub` or use --url") from exc
    repo, filename, revision, repo_type = source["repo"], source["filename"], source.get("revision"), \
        source.get("repo_type") or "model"
    origin = describe(source)
    try:
        cached = try_to_load_from_cache(repo, filename, revision=revision, repo_type=repo_type)
    except (ValueError, OSError):  # a malformed repo id is reported by the download below
        cached = None
    if isinstance(cached, str) and os.path.isfile(cached):
        shutil.copyfile(cached, part)
        return f"{origin} (local Hugging Face cache)"
    endpoint = hf_endpoint()
    probe(endpoint, "the Hugging Face Hub")
    with tempfile.TemporaryDirectory(prefix=".hf-", dir=part.parent) as tmp:
        try:
            local = hf_hub_download(repo_id=repo, filename=filename, revision=revision, repo_type=repo_type,
                                    local_dir=tmp, endpoint=endpoint, etag_timeout=timeout,
                                    tqdm_class=None if progress else silent_tqdm_class())
        except hf_errors.GatedRepoError:
            raise FetchError(f"{repo} on {endpoint} is gated: accept its terms on its Hub page, then log in "
                             f"(`hf auth login` or HF_TOKEN)") from None
        except hf_errors.RepositoryNotFoundError:
            raise FetchError(f"no Hugging Face repository {repo} on {endpoint} (or it is private: log in with "
                             f"`hf auth login` or set HF_TOKEN)") from None
        except hf_errors.RevisionNotFoundError:
            raise FetchError(f"{repo} on {endpoint} has no revision {revision!r}") from None
        except hf_errors.RemoteEntryNotFoundError:
            raise FetchError(f"{repo} on {endpoint} has no file {filename} (HTTP 404)") from None
        except (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError) as exc:
            # huggingface_hub folds every failed metadata request into LocalEntryNotFoundError; its cause says
            # whether the Hub was unreachable or answered something unusable.
            cause = exc.__cause__ or exc
            if isinstance(exc, hf_errors.OfflineModeIsEnabled) or _is_connection_error(cause):
                raise OfflineError(f"cannot reach the Hugging Face Hub at {endpoint} for {filename} "
                                   f"({network_reason(cause)})", host=urllib.parse.urlsplit(endpoint).netloc) \
                    from None
            raise FetchError(f"the Hugging Face Hub at {endpoint} did not serve {repo}/{filename}: "
                             f"{one_line(cause)}") from None
        except hf_errors.HFValidationError as exc:
            raise FetchError(f"{repo!r} is not a Hugging Face repository id (owner/name): {one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises httpx, OS and its own types mid-stream
            raise FetchError(f"Hugging Face download of {origin} failed ({type(exc).__name__}: {one_line(exc)}); "
                             f"run the same fetch again to retry") from None
        os.replace(local, part)
    return origin


def _is_connection_error(exc: BaseException) -> bool:
    """Whether an exception means no connection at all: huggingface_hub's offline mode (a ConnectionError), or its
    HTTP client's connect / timeout errors (httpx2 in current releases, httpx before)."""
    import importlib

    kinds: list[type] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        kinds += [module.ConnectError, module.TimeoutException]
    return isinstance(exc, tuple(kinds))


# ---------------------------------------------------------------------------------------------------------------------
# Google Drive (gdown)
# ---------------------------------------------------------------------------------------------------------------------

def incoming_dir(target: Path) -> Path:
    """gdown's staging folder of one target file: its partial download survives here between runs."""
    return target.parent / INCOMING / target.name


def drive_file_id(folder_id: str, filename: str, timeout: float = 60.0) -> str:
    """The Drive file id of `filename` inside a public folder, from gdown's folder listing (one request per folder
    and process; Google's page is scraped by gdown, so a changed page shows up here as a clear FetchError)."""
    import gdown
    import requests

    if folder_id not in _DRIVE_LISTINGS:
        probe("https://drive.google.com", "Google Drive")
        try:
            _DRIVE_LISTINGS[folder_id] = list(gdown.download_folder(id=folder_id, skip_download=True, quiet=True,
                                                                    timeout=timeout, cookies_file=GDOWN_COOKIES))
        except (gdown.exceptions.DownloadError, gdown.exceptions.FileURLRetrievalError, requests.RequestException,
                ValueError) as exc:
            raise FetchError(f"could not list the Google Drive folder {folder_id}: {one_line(exc)}") from None
    return pick_drive_file(_DRIVE_LISTINGS[folder_id], filename, folder_id)


def pick_drive_file(listing: Iterable[Any], filename: str, folder_id: str = "?") -> str:
    """The id of `filename` in a gdown folder listing (GoogleDriveFileToDownload records: id, path, local_path)."""
    listing = list(listing)
    ids = [f.id for f in listing if PurePosixPath(f.path).name == filename]
    if not ids:
        names = ", ".join(sorted(PurePosixPath(f.path).name for f in listing)) or "nothing"
        raise FetchError(f"the Google Drive folder {folder_id} has no {filename} (it lists: {names})")
    if len(set(ids)) > 1:
        raise FetchError(f"the Google Drive folder {folder_id} holds {len(ids)} files named {filename}; pass the "
                         f"one to use with --gdrive FILE_ID")
    return ids[0]


def download_gdrive(source: dict[str, Any], part: Path, progress: bool = True, timeout: float = 60.0) -> str:
    """A Drive file (by id, link or folder + name) as `part`, through gdown with resume; returns its origin.

    gdown's partial file stays in incoming_dir(target) when the transfer is cut, and the next run continues it."""
    try:
        import gdown
        import requests
    except ImportError as exc:
        raise FetchError("gdown is not installed; `pip install gdown` or use --url / --hf-repo") from exc
    if source.get("url"):
        url = source["url"]
    else:
        file_id = source.get("id") or drive_file_id(source["folder"], source["name"], timeout)
        url = f"https://drive.google.com/uc?id={file_id}"
    probe(url, "Google Drive" if "google.com" in url else "the download server")
    target = part.with_name(part.name[:-len(".part")])
    staging = incoming_dir(target)
    staging.mkdir(parents=True, exist_ok=True)
    output = staging / target.name
    try:
        gdown.download(url=url, output=str(output), quiet=not progress, resume=True, timeout=timeout,
                       retries=GDRIVE_RETRIES, cookies_file=GDOWN_COOKIES)
    except gdown.exceptions.FileURLRetrievalError as exc:
        raise FetchError(f"Google Drive would not serve {target.name} ({one_line(exc)}); it may be over its "
                         f"download quota: try again later, or use another source") from None
    except (gdown.exceptions.DownloadError, requests.RequestException, OSError) as exc:
        raise FetchError(f"download of {target.name} through gdown was interrupted ({one_line(exc)}); what "
                         f"arrived is kept in {staging}: run the same fetch again to resume") from None
    os.replace(output, part)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.parent.rmdir()  # the shared staging folder goes once no other download is pending in it
    except OSError:
        pass
    return describe(source)


# ---------------------------------------------------------------------------------------------------------------------
# Any source
# ---------------------------------------------------------------------------------------------------------------------

def download(source: dict[str, Any], part: Path, progress: bool = True, timeout: float = 60.0) -> str:
    """Bring one source's bytes to `part`; returns the origin recorded with the hash."""
    if source["kind"] == "url":
        if not re.match(r"^https?://", source["url"]):
            raise FetchError(f"only http(s) URLs can be fetched, got {source['url']!r}")
        probe(source["url"], "the download server")
        download_http(source["url"], part, progress=progress, timeout=timeout)
        return source["url"]
    if source["kind"] == "hf":
        return download_hf(source, part, progress=progress, timeout=timeout)
    if source["kind"] == "gdrive":
        return download_gdrive(source, part, progress=progress, timeout=timeout)
    raise WeightsError(f"unknown source kind {source['kind']!r}")


def combined_error(name: str, failures: list[tuple[dict[str, Any], Exception]]) -> Exception:
    """One error for a file that no source delivered: the single failure itself, else all of them (OfflineError
    when every source was unreachable)."""
    if len(failures) == 1:
        return failures[0][1]
    text = "; ".join(f"{describe(s)}: {one_line(e)}" for s, e in failures)
    if all(isinstance(e, OfflineError) for _, e in failures):
        hosts = sorted({e.host for _, e in failures if getattr(e, "host", None)})
        return OfflineError(f"{name}: every source is unreachable ({text})", host=", ".join(hosts))
    return FetchError(f"{name}: no source delivered {entry(name)['file']} ({text})")
