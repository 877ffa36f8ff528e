# Where weight files come from and where a host puts them: the source chain of each manifest entry (Hugging Face Hub
# through huggingface_hub, plain HTTP(S), the GUIDE authors' Google Drive folder through gdown), licence acceptance,
# `weights fetch --all` for a whole model bundle, and `weights publish`, which converts the EG3D pickle to guide's
# .safetensors and uploads every file a bundle needs to the host's own Hugging Face repository. Every download still
# ends as `<file>.part`, is hashed, and is renamed into place by guide_core.weights.download.
from __future__ import annotations

import contextvars
import os
import pickle
import re
import shutil
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, TextIO

from guide_core import weights as W
from guide_core.weights import catalogue
from guide_core.files import human_size
from guide_core.weights.download import download_http
from guide_core.weights.hashes import cached_verdict, remember_check

SOURCE_KINDS = ("hf", "url", "gdrive")
ENV_HOST_REPO = "GUIDE_HF_REPO"          # a host's own mirror: every file comes from this Hugging Face repository
ENV_HOST_REVISION = "GUIDE_HF_REVISION"  # optional branch, tag or commit of that repository
ENV_ACCEPT = "GUIDE_ACCEPT_LICENCE"      # 1 = the licences that need acceptance are accepted
ENV_SOURCES = "GUIDE_SOURCES"            # comma-separated source kinds to use, in order (e.g. "hf,url")
DEFAULT_MODEL = "eg3d-ffhq-rebalanced"
OPTIONAL_WEIGHTS = ("ffhq-real-feat",)   # improve a bundle (ΔFID_real reference) but are not required
PROBE_TIMEOUT = 10.0
# gdown's own retries of a cut transfer (each resumes with a Range request) before the error reaches the user.
GDRIVE_RETRIES = 2
# gdown keeps Google's cookies here (None: gdown's default, ~/.cache/gdown/cookies.txt).
GDOWN_COOKIES: str | None = None
INCOMING = ".incoming"                   # per-file staging folders of gdown, inside weights_dir()
CARD_FILE = "README.md"

# Hosts found unreachable during one `fetch --all`, so an offline machine is told once instead of waiting per file.
_UNREACHABLE: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("guide_unreachable", default=None)
_DRIVE_LISTINGS: dict[str, list[Any]] = {}


# ---------------------------------------------------------------------------------------------------------------------
# Licences
# ---------------------------------------------------------------------------------------------------------------------

# Whether a name's licence must be accepted before its file is downloaded (the NVIDIA EG3D licence and its derivatives).
def needs_acceptance(name: str) -> bool:
    return bool(W.entry(name).get("license_accept"))


# Whether the user accepted those licences: the flag, else GUIDE_ACCEPT_LICENCE=1 (or true / yes).
def licence_accepted(flag: bool | None = None) -> bool:
    if flag:
        return True
    return os.environ.get(ENV_ACCEPT, "").strip().lower() in ("1", "true", "yes")


# One line naming a file's licence and where to read it.
def licence_line(name: str) -> str:
    item = W.entry(name)
    text = item.get("license", "licence unknown: see weights/README.md").rstrip(". ")
    link = f" ({item['license_url']})" if item.get("license_url") else ""
    return f"{text}{link}"


# Refuse to download files whose licence needs acceptance until it is accepted; the message says how to accept.
def require_licence(names: Iterable[str], accept: bool | None = None) -> None:
    pending = [n for n in names if needs_acceptance(n)]
    if not pending or licence_accepted(accept):
        return
    lines = [f"  {n} ({W.entry(n)['file']}): {licence_line(n)}" for n in pending]
    raise W.LicenceNotAcceptedError(
        "these files may only be downloaded once their licence is accepted:\n" + "\n".join(lines) +
        f"\nread it, then run again with --accept-licence (or set {ENV_ACCEPT}=1); nothing was downloaded")


# ---------------------------------------------------------------------------------------------------------------------
# Source chains
# ---------------------------------------------------------------------------------------------------------------------

# A Hugging Face source as a normalised dict.
def _hf_source(repo: str, filename: str, revision: str | None = None, repo_type: str | None = None) -> dict[str, Any]:
    return {"kind": "hf", "repo": repo, "filename": filename, "revision": revision or None,
            "repo_type": repo_type or "model"}


# A Google Drive source from a file id or any Drive (or other) link.
def _gdrive_source(value: str) -> dict[str, Any]:
    return {"kind": "gdrive", "url": value} if re.match(r"^https?://", value) else {"kind": "gdrive", "id": value}


# A manifest source record ({hf_repo ...} | {url} | {gdrive_folder, gdrive_name} | {gdrive}) as a normalised dict.
def _from_manifest(record: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    if record.get("hf_repo"):
        return _hf_source(record["hf_repo"], record.get("hf_filename") or item["file"], record.get("revision"),
                          record.get("hf_repo_type"))
    if record.get("url"):
        return {"kind": "url", "url": record["url"]}
    if record.get("gdrive"):
        return _gdrive_source(record["gdrive"])
    if record.get("gdrive_folder"):
        return {"kind": "gdrive", "folder": record["gdrive_folder"], "name": record.get("gdrive_name") or item["file"]}
    raise W.WeightsError(f"manifest source {record} names no hf_repo, url, gdrive or gdrive_folder")


# The source kinds to use, in order: the argument, else GUIDE_SOURCES, else all.
def _kinds(kinds: str | Iterable[str] | None) -> list[str]:
    value = kinds if kinds is not None else os.environ.get(ENV_SOURCES) or None
    if value is None:
        return list(SOURCE_KINDS)
    chosen = [k.strip() for k in (value.split(",") if isinstance(value, str) else value) if k.strip()]
    unknown = [k for k in chosen if k not in SOURCE_KINDS]
    if unknown:
        raise W.UnknownWeightsError(f"unknown source kind(s) {', '.join(unknown)}; use {', '.join(SOURCE_KINDS)}")
    return chosen


# Every place a name can be downloaded from, in the order to try. Precedence: arguments > per-name environment
# (GUIDE_URL_X, GUIDE_HF_REPO_X, GUIDE_GDRIVE_X) > a host's mirror (GUIDE_HF_REPO) > the manifest's sources, the
# last filtered and ordered by `kinds` / GUIDE_SOURCES.
def sources_for(name: str, url: str | None = None, hf_repo: str | None = None, hf_filename: str | None = None,
                gdrive: str | None = None, kinds: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
    item = W.entry(name)
    envs = W.env_names(name)
    order = _kinds(kinds)
    file_in_repo = hf_filename or os.environ.get(envs["hf_filename"]) or item["file"]
    if url or hf_repo or gdrive:
        chain = [_hf_source(hf_repo, file_in_repo, os.environ.get(ENV_HOST_REVISION))] if hf_repo else []
        chain += [{"kind": "url", "url": url}] if url else []
        return chain + ([_gdrive_source(gdrive)] if gdrive else [])
    per_name = []
    if os.environ.get(envs["hf_repo"]):
        per_name.append(_hf_source(os.environ[envs["hf_repo"]], file_in_repo))
    if os.environ.get(envs["url"]):
        per_name.append({"kind": "url", "url": os.environ[envs["url"]]})
    if os.environ.get(envs["gdrive"]):
        per_name.append(_gdrive_source(os.environ[envs["gdrive"]]))
    if per_name:
        return per_name
    if os.environ.get(ENV_HOST_REPO):
        # A host's mirror holds every file flat under its manifest name (what `weights publish` uploads).
        return [_hf_source(os.environ[ENV_HOST_REPO], item["file"], os.environ.get(ENV_HOST_REVISION))]
    records = item.get("sources")
    if records is None:  # entries written before source chains: a single url / hf_repo field
        records = [{k: item[k] for k in ("url",) if item.get(k)} or
                   {k: item[k] for k in ("hf_repo", "hf_filename") if item.get(k)}]
        records = [r for r in records if r]
    chain = [_from_manifest(r, item) for r in records]
    return sorted((s for s in chain if s["kind"] in order), key=lambda s: order.index(s["kind"]))


# A short human name of a source, used in messages and as the hash record's origin.
def describe(source: dict[str, Any]) -> str:
    if source["kind"] == "hf":
        at = f"@{source['revision']}" if source.get("revision") else ""
        return f"hf://{source['repo']}{at}/{source['filename']}"
    if source["kind"] == "url":
        return source["url"]
    if source.get("url"):
        return f"gdown {source['url']}"
    if source.get("id"):
        return f"Google Drive file {source['id']}"
    return f"Google Drive folder {source['folder']} / {source['name']}"


# ---------------------------------------------------------------------------------------------------------------------
# Transports: each leaves the complete file as `part` (or raises FetchError, keeping what can be resumed)
# ---------------------------------------------------------------------------------------------------------------------

# An exception's message on one line, shortened (huggingface_hub and gdown write paragraphs).
def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")


# The cause inside a connection error ("[Errno 111] Connection refused", "Name or service not known", ...).
def network_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    found = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    return found.group(0).strip() if found else one_line(exc)


# Fail fast with OfflineError when the host of `url` cannot be reached at all (clients would otherwise retry for
# tens of seconds per file). Any HTTP answer, even an error status, means the host is reachable.
def probe(url: str, what: str) -> None:
    import requests

    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    seen = _UNREACHABLE.get()
    if seen is not None and parts.netloc in seen:
        raise W.OfflineError(f"cannot reach {what} at {origin} (unreachable earlier in this run)", host=parts.netloc)
    try:
        requests.head(origin + "/", timeout=PROBE_TIMEOUT, allow_redirects=False).close()
    except requests.RequestException as exc:
        if not isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return  # the host answered in some way; the download itself reports what is wrong
        if seen is not None:
            seen.add(parts.netloc)
        raise W.OfflineError(f"cannot reach {what} at {origin} ({network_reason(exc)})", host=parts.netloc) from None


# The Hub endpoint, read when called (huggingface_hub reads HF_ENDPOINT once, at import).
def hf_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


# A tqdm class whose bars never draw (huggingface_hub accepts a tqdm class, not a switch).
def _silent_tqdm():
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
    return Silent


# One file of a Hugging Face repository as `part`: from the local Hugging Face cache when it is there (a Space's
# preload_from_hub puts files there at build time), else through hf_hub_download into a private folder beside `part`.
# huggingface_hub resumes a cut stream itself (Range requests, a few tries); a download killed outright restarts,
# because huggingface_hub discards its temporary file when it fails.
def download_hf(source: dict[str, Any], part: Path, progress: bool = True, timeout: float = 60.0) -> str:
    try:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError as exc:
        raise W.FetchError("huggingface_hub is not installed; `pip install huggingface_hub` or use --url") from exc
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
                                    tqdm_class=None if progress else _silent_tqdm())
        except hf_errors.GatedRepoError:
            raise W.FetchError(f"{repo} on {endpoint} is gated: accept its terms on its Hub page, then log in "
                               f"(`hf auth login` or HF_TOKEN)") from None
        except hf_errors.RepositoryNotFoundError:
            raise W.FetchError(f"no Hugging Face repository {repo} on {endpoint} (or it is private: log in with "
                               f"`hf auth login` or set HF_TOKEN)") from None
        except hf_errors.RevisionNotFoundError:
            raise W.FetchError(f"{repo} on {endpoint} has no revision {revision!r}") from None
        except hf_errors.RemoteEntryNotFoundError:
            raise W.FetchError(f"{repo} on {endpoint} has no file {filename} (HTTP 404)") from None
        except (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError) as exc:
            # huggingface_hub folds every failed metadata request into LocalEntryNotFoundError; its cause says
            # whether the Hub was unreachable or answered something unusable.
            cause = exc.__cause__ or exc
            if isinstance(exc, hf_errors.OfflineModeIsEnabled) or _is_connection_error(cause):
                raise W.OfflineError(f"cannot reach the Hugging Face Hub at {endpoint} for {filename} "
                                     f"({network_reason(cause)})", host=urllib.parse.urlsplit(endpoint).netloc) \
                    from None
            raise W.FetchError(f"the Hugging Face Hub at {endpoint} did not serve {repo}/{filename}: "
                               f"{one_line(cause)}") from None
        except hf_errors.HFValidationError as exc:
            raise W.FetchError(f"{repo!r} is not a Hugging Face repository id (owner/name): {one_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises httpx, OS and its own types mid-stream
            raise W.FetchError(f"Hugging Face download of {origin} failed ({type(exc).__name__}: {one_line(exc)}); "
                               f"run the same fetch again to retry") from None
        os.replace(local, part)
    return origin


# Whether an exception means no connection at all: huggingface_hub's offline mode (a ConnectionError), or its HTTP
# client's connect / timeout errors (httpx2 in current releases, httpx before).
def _is_connection_error(exc: BaseException) -> bool:
    import importlib

    kinds: list[type] = [ConnectionError, TimeoutError]
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        kinds += [module.ConnectError, module.TimeoutException]
    return isinstance(exc, tuple(kinds))


# gdown's staging folder of one target file: its partial download survives here between runs.
def incoming_dir(target: Path) -> Path:
    return target.parent / INCOMING / target.name


# The Drive file id of `filename` inside a public folder, from gdown's folder listing (one request per folder and
# process; Google's page is scraped by gdown, so a changed page shows up here as a clear FetchError).
def drive_file_id(folder_id: str, filename: str, timeout: float = 60.0) -> str:
    import gdown
    import requests

    if folder_id not in _DRIVE_LISTINGS:
        probe("https://drive.google.com", "Google Drive")
        try:
            _DRIVE_LISTINGS[folder_id] = list(gdown.download_folder(id=folder_id, skip_download=True, quiet=True,
                                                                    timeout=timeout, cookies_file=GDOWN_COOKIES))
        except (gdown.exceptions.DownloadError, gdown.exceptions.FileURLRetrievalError, requests.RequestException,
                ValueError) as exc:
            raise W.FetchError(f"could not list the Google Drive folder {folder_id}: {one_line(exc)}") from None
    return pick_drive_file(_DRIVE_LISTINGS[folder_id], filename, folder_id)


# The id of `filename` in a gdown folder listing (GoogleDriveFileToDownload records: id, path, local_path).
def pick_drive_file(listing: Iterable[Any], filename: str, folder_id: str = "?") -> str:
    listing = list(listing)
    ids = [f.id for f in listing if PurePosixPath(f.path).name == filename]
    if not ids:
        names = ", ".join(sorted(PurePosixPath(f.path).name for f in listing)) or "nothing"
        raise W.FetchError(f"the Google Drive folder {folder_id} has no {filename} (it lists: {names})")
    if len(set(ids)) > 1:
        raise W.FetchError(f"the Google Drive folder {folder_id} holds {len(ids)} files named {filename}; pass the "
                           f"one to use with --gdrive FILE_ID")
    return ids[0]


# A Drive file (by id, link or folder + name) as `part`, through gdown with resume: gdown's partial file stays in
# incoming_dir(target) when the transfer is cut, and the next run continues it.
def download_gdrive(source: dict[str, Any], part: Path, progress: bool = True, timeout: float = 60.0) -> str:
    try:
        import gdown
        import requests
    except ImportError as exc:
        raise W.FetchError("gdown is not installed; `pip install gdown` or use --url / --hf-repo") from exc
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
        raise W.FetchError(f"Google Drive would not serve {target.name} ({one_line(exc)}); it may be over its "
                           f"download quota: try again later, or use another source") from None
    except (gdown.exceptions.DownloadError, requests.RequestException, OSError) as exc:
        raise W.FetchError(f"download of {target.name} through gdown was interrupted ({one_line(exc)}); what "
                           f"arrived is kept in {staging}: run the same fetch again to resume") from None
    os.replace(output, part)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.parent.rmdir()  # the shared staging folder goes once no other download is pending in it
    except OSError:
        pass
    return describe(source)


# Bring one source's bytes to `part`; returns the origin recorded with the hash.
def download(source: dict[str, Any], part: Path, progress: bool = True, timeout: float = 60.0) -> str:
    if source["kind"] == "url":
        if not re.match(r"^https?://", source["url"]):
            raise W.FetchError(f"only http(s) URLs can be fetched, got {source['url']!r}")
        probe(source["url"], "the download server")
        download_http(source["url"], part, progress=progress, timeout=timeout)
        return source["url"]
    if source["kind"] == "hf":
        return download_hf(source, part, progress=progress, timeout=timeout)
    if source["kind"] == "gdrive":
        return download_gdrive(source, part, progress=progress, timeout=timeout)
    raise W.WeightsError(f"unknown source kind {source['kind']!r}")


# One error for a file that no source delivered: the single failure itself, else all of them (OfflineError when
# every source was unreachable).
def combined_error(name: str, failures: list[tuple[dict[str, Any], Exception]]) -> Exception:
    if len(failures) == 1:
        return failures[0][1]
    text = "; ".join(f"{describe(s)}: {one_line(e)}" for s, e in failures)
    if all(isinstance(e, W.OfflineError) for _, e in failures):
        hosts = sorted({e.host for _, e in failures if getattr(e, "host", None)})
        return W.OfflineError(f"{name}: every source is unreachable ({text})", host=", ".join(hosts))
    return W.FetchError(f"{name}: no source delivered {W.entry(name)['file']} ({text})")


# ---------------------------------------------------------------------------------------------------------------------
# fetch --all: every file a bundle needs
# ---------------------------------------------------------------------------------------------------------------------

# One file a bundle needs: the role, the weight names that can fill it (first that works), whether it is optional.
@dataclass
class Step:
    role: str
    candidates: list[str]
    optional: bool = False


# The outcome of fetch --all: installed paths, and the one-line reason of every failure.
@dataclass
class FetchReport:
    installed: dict[str, Path] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    optional_failed: dict[str, str] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)     # names that failed only because no host answered
    offline_hosts: list[str] = field(default_factory=list)

    # Every required file is in place.
    @property
    def ok(self) -> bool:
        return not self.failed

    # Nothing could be fetched because no host answered: the one-line "offline" case.
    @property
    def offline(self) -> bool:
        failures = set(self.failed) | set(self.optional_failed)
        return bool(self.failed) and not self.downloaded and failures <= self.unreachable


# The converted (.safetensors) manifest entry of a generator pickle entry, if the manifest has one.
def converted_name(generator_name: str) -> str | None:
    for name, item in catalogue.manifest().items():
        if item.get("converted_from") == generator_name:
            return name
    return None


# What a bundle needs, in order: its generator (the converted file when installed or when a host's mirror serves it),
# the networks of released.NET_WEIGHTS, then the optional w̄ file and real-image statistics.
def plan(model: str = DEFAULT_MODEL, host_repo: str | None = None) -> list[Step]:
    from guide_core import released

    if model not in released.EG3D_MODELS:
        raise W.UnknownWeightsError(f"unknown model {model!r} for fetch --all; known: {', '.join(released.EG3D_MODELS)}")
    generator = released.EG3D_MODELS[model][0]
    converted = converted_name(generator)
    if converted and (host_repo or W.is_installed(converted)):
        candidates = [converted, generator]
    else:
        candidates = [generator]
    steps = [Step("generator", candidates)]
    steps += [Step(role, [name]) for role, name in released.NET_WEIGHTS.items()]
    w_avg_files = [n for n, item in catalogue.manifest().items() if item.get("w_avg_for") == generator]
    steps += [Step("w_avg", [n], optional=True) for n in w_avg_files]
    steps += [Step("real_stats", [n], optional=True) for n in OPTIONAL_WEIGHTS if n in catalogue.manifest()]
    return steps


# The licence block printed before anything is downloaded: one line per file, marking those that need acceptance.
def print_licences(names: Iterable[str], out: TextIO) -> None:
    names = list(dict.fromkeys(names))
    print("Licences of these files (read them before use; * = must be accepted: --accept-licence or "
          f"{ENV_ACCEPT}=1):", file=out)
    width = max((len(n) for n in names), default=0)
    for name in names:
        mark = "*" if needs_acceptance(name) else " "
        print(f" {mark} {name:<{width}}  {W.entry(name)['file']}: {licence_line(name)}", file=out)


# Fetch every file of a bundle. Licences are printed first; files whose licence needs acceptance stop the run before
# any download unless it is accepted. A failed file does not stop the others; the report says what happened.
def fetch_all(model: str = DEFAULT_MODEL, *, host_repo: str | None = None, accept_licence: bool | None = None,
              kinds: str | Iterable[str] | None = None, progress: bool = True, force: bool = False,
              out: TextIO | None | object = "stdout") -> FetchReport:
    out = sys.stdout if out == "stdout" else out   # resolved per call: the default must follow a redirected stdout
    # A mirror named here overrides every source; one from GUIDE_HF_REPO keeps the per-name overrides above it.
    steps = plan(model, host_repo or os.environ.get(ENV_HOST_REPO) or None)
    if out is not None:
        print_licences([n for s in steps for n in s.candidates[:1]], out)
    to_download = [s.candidates[0] for s in steps if force or not any(W.is_installed(n) for n in s.candidates)]
    require_licence([n for n in to_download if not _optional_step(steps, n)], accept_licence)
    report = FetchReport()
    token = _UNREACHABLE.set(set())
    try:
        for step in steps:
            _fetch_step(step, report, host_repo=host_repo, accept_licence=accept_licence, kinds=kinds,
                        progress=progress, force=force, out=out)
        report.offline_hosts = sorted(_UNREACHABLE.get() or ())
    finally:
        _UNREACHABLE.reset(token)
    return report


# Whether the step that first names `name` is optional.
def _optional_step(steps: list[Step], name: str) -> bool:
    return any(s.optional for s in steps if s.candidates and s.candidates[0] == name)


# Fill one step: an installed candidate counts; else each candidate is fetched until one arrives.
def _fetch_step(step: Step, report: FetchReport, *, host_repo, accept_licence, kinds, progress, force, out) -> None:
    if not force:
        for name in step.candidates:
            if W.is_installed(name):
                report.installed[name] = W.path_of(name)
                if out is not None:
                    print(f"  {name}: already installed ({W.path_of(name)})", file=out)
                return
    reasons, offline = [], False
    for name in step.candidates:
        if step.optional and needs_acceptance(name) and not licence_accepted(accept_licence):
            reasons.append(f"licence not accepted (--accept-licence or {ENV_ACCEPT}=1)")
            break
        try:
            path = W.fetch(name, hf_repo=host_repo, progress=progress, force=force, accept_licence=accept_licence,
                           sources=kinds)
        except W.OfflineError as exc:
            reasons.append(one_line(exc))
            offline = True
            seen = _UNREACHABLE.get()
            if seen is not None and exc.host:
                seen.update(h.strip() for h in exc.host.split(","))
            break  # the same hosts serve the other candidates
        except W.WeightsError as exc:
            reasons.append(one_line(exc))
            continue
        report.installed[name] = path
        report.downloaded.append(name)
        if out is not None:
            print(f"  {name}: {path} ({cached_verdict(name, path)})", file=out)
        return
    (report.optional_failed if step.optional else report.failed)[step.candidates[0]] = " / ".join(reasons)
    if offline:
        report.unreachable.add(step.candidates[0])


# ---------------------------------------------------------------------------------------------------------------------
# publish: a host's own Hugging Face repository with every file of a bundle
# ---------------------------------------------------------------------------------------------------------------------

# One file to upload: where it lies, its name in the repository, and the manifest name it belongs to.
@dataclass
class Upload:
    name: str
    path: Path
    path_in_repo: str
    convert_from: Path | None = None     # set when the file is still to be converted from this pickle


# The files `publish` uploads for a bundle: the converted generator (converting the pickle when needed), the required
# networks, and the optional files that are installed. A missing required file is one error naming them all.
def publish_plan(model: str = DEFAULT_MODEL) -> list[Upload]:
    steps = plan(model)
    generator = steps[0].candidates[-1]
    converted = converted_name(generator)
    if converted is None:
        raise W.WeightsError(f"the manifest has no converted entry for {generator}; publish needs one")
    uploads, missing = [], []
    if W.is_installed(converted):
        uploads.append(Upload(converted, W.path_of(converted), W.entry(converted)["file"]))
    elif W.is_installed(generator):
        uploads.append(Upload(converted, W.path_of(converted), W.entry(converted)["file"],
                              convert_from=W.path_of(generator)))
    else:
        missing.append(f"{generator} ({W.entry(generator)['file']})")
    for step in steps[1:]:
        name = step.candidates[0]
        if W.is_installed(name):
            uploads.append(Upload(name, W.path_of(name), W.entry(name)["file"]))
        elif not step.optional:
            missing.append(f"{name} ({W.entry(name)['file']})")
    if missing:
        raise W.MissingWeightsError(f"publish needs these files installed first: {', '.join(missing)}; run "
                                    f"`python -m guide_core weights fetch --all --accept-licence`")
    return uploads


# The lines a Space's README front matter needs to preload a published repository's files at build time.
def space_front_matter(repo: str, uploads: list[Upload]) -> list[str]:
    files = ",".join(u.path_in_repo for u in uploads)
    return ["preload_from_hub:", f"  - {repo} {files}"]


# The model card of the published repository: what each file is, its licence and SHA-256.
def model_card(repo: str, uploads: list[Upload]) -> str:
    rows = []
    for u in uploads:
        digest = W.sha256_file(u.path) if u.path.is_file() else "(written at publish)"
        rows.append(f"| `{u.path_in_repo}` | {W.entry(u.name).get('feature', u.name)} | {licence_line(u.name)} | "
                    f"`{digest}` |")
    return "\n".join([
        "---",
        "license: other",
        "license_name: nvidia-source-code-license-eg3d",
        "license_link: https://github.com/NVlabs/eg3d/blob/main/LICENSE.txt",
        "tags:",
        "  - eg3d",
        "  - machine-unlearning",
        "---",
        f"# {repo}: weights for guide",
        "",
        "The files guide (generative identity unlearning for EG3D; GUIDE, Seo et al. CVPR 2024) needs for its released",
        "model bundle, uploaded by `python -m guide_core weights publish`. Set `GUIDE_HF_REPO` to this repository and",
        "`python -m guide_core weights fetch --all` takes every file from here.",
        "",
        "**Licences.** The generator is NVIDIA's EG3D (converted to guide's .safetensors format: same weights, no",
        "pickle) under the NVIDIA Source Code License for EG3D: non-commercial research and evaluation use only. The",
        "other files keep the terms of their authors, listed per file below.",
        "",
        "| file | what | licence | SHA-256 |",
        "|-|-|-|-|",
        *rows,
        "",
    ])


# Convert the EG3D pickle to guide's .safetensors (+ .json) next to the other weights, and record its hash.
def convert_generator(upload: Upload, progress_out: TextIO | None = None) -> Path:
    from guide_core.eg3d.io import load_generator_file, save_generator

    if progress_out is not None:
        print(f"converting {upload.convert_from} -> {upload.path} (weights only; nothing in the pickle runs)",
              file=progress_out)
    try:
        G = load_generator_file(upload.convert_from, "cpu")
    except (ValueError, OSError, pickle.UnpicklingError) as exc:  # a corrupt, foreign or refused pickle
        raise W.UnsafeCheckpointError(f"cannot convert {upload.convert_from}: {one_line(exc)}") from None
    save_generator(G, upload.path)
    digest = W.sha256_file(upload.path)
    W.record_hash(upload.name, upload.path, digest, f"converted from {upload.convert_from.name}")
    remember_check(upload.name, upload.path, digest)
    upload.convert_from = None
    return upload.path


# Convert and upload a bundle's files to the host's Hugging Face model repository (created when absent), in one
# commit. dry_run prints the plan and touches nothing. Returns the commit URL (None for a dry run).
def publish(repo: str, *, model: str = DEFAULT_MODEL, dry_run: bool = False, token: str | None = None,
            private: bool = False, accept_licence: bool | None = None, extra: Iterable[str | os.PathLike] = (),
            out: TextIO | None = None) -> str | None:
    out = out or sys.stdout
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo or ""):
        raise W.UnknownWeightsError(f"--repo must be OWNER/NAME, got {repo!r}")
    uploads = publish_plan(model)
    extra_paths = [Path(p) for p in extra]
    absent = [str(p) for p in extra_paths if not p.is_file()]
    if absent:
        raise W.MissingWeightsError(f"--add: no such file: {', '.join(absent)}")
    print_licences([u.name for u in uploads], out)
    if dry_run:
        print(f"dry run: would upload to {hf_endpoint()}/{repo} (model repository{', private' if private else ''}):",
              file=out)
        for u in uploads:
            what = f"converted from {u.convert_from}" if u.convert_from else \
                f"{u.path} ({human_size(u.path.stat().st_size)})"
            print(f"  {u.path_in_repo}  <- {what}", file=out)
        for p in extra_paths:
            print(f"  {p.name}  <- {p}", file=out)
        print(f"  {CARD_FILE}  <- model card (files, licences, SHA-256)", file=out)
        if not licence_accepted(accept_licence):
            print(f"note: the real upload needs --accept-licence (or {ENV_ACCEPT}=1): it redistributes files whose "
                  f"licence must be accepted", file=out)
        _print_front_matter(repo, uploads, out)
        return None
    # Uploading redistributes NVIDIA's model: the same acceptance as downloading it.
    require_licence([u.name for u in uploads], accept_licence)
    for u in uploads:
        if u.convert_from is not None:
            convert_generator(u, out)
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hf_endpoint(), token=token)
    with tempfile.TemporaryDirectory(prefix="guide-card-") as tmp:
        card = Path(tmp) / CARD_FILE
        card.write_text(model_card(repo, uploads))
        operations = [CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=str(u.path)) for u in uploads]
        operations += [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in extra_paths]
        operations.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(card)))
        try:
            api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
            info = api.create_commit(repo, operations, repo_type="model",
                                     commit_message=f"guide weights for {model} (weights publish)")
        except Exception as exc:  # noqa: BLE001 - huggingface_hub raises HTTP, auth and validation errors
            raise W.FetchError(f"upload to {hf_endpoint()}/{repo} failed ({type(exc).__name__}: {one_line(exc)}); "
                               f"log in with `hf auth login` (a token with write access) and run again") from None
    print(f"published {len(operations)} files to {hf_endpoint()}/{repo}: {info.commit_url}", file=out)
    _print_front_matter(repo, uploads, out)
    return info.commit_url


# The Space set-up lines printed after a publish (docs/spaces.md explains them).
def _print_front_matter(repo: str, uploads: list[Upload], out: TextIO) -> None:
    print("\nfor a Space running the studio from this repository, put in its README front matter:", file=out)
    for line in space_front_matter(repo, uploads):
        print(f"  {line}", file=out)
    print(f"and set the Space variables {ENV_HOST_REPO}={repo} and {ENV_ACCEPT}=1 (see docs/spaces.md)", file=out)
