"""Source chains: every place a weight file can be downloaded from, in the order to try.

A source is a plain dict with a `kind`: "hf" (a Hugging Face repository: repo, filename, revision, repo_type), "url"
(plain HTTP(S)) or "gdrive" (a Google Drive file id, a link, or a public folder + file name). The chain of a name
comes from the call's arguments, the per-name environment, a host's mirror or the manifest's `sources` records.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable

from guide_core.weights.catalogue import entry, env_names
from guide_core.weights.errors import UnknownWeightsError, WeightsError

SOURCE_KINDS = ("hf", "url", "gdrive")
ENV_HOST_REPO = "GUIDE_HF_REPO"          # a host's own mirror: every file comes from this Hugging Face repository
ENV_HOST_REVISION = "GUIDE_HF_REVISION"  # optional branch, tag or commit of that repository
ENV_SOURCES = "GUIDE_SOURCES"            # comma-separated source kinds to use, in order (e.g. "hf,url")


def _hf_source(repo: str, filename: str, revision: str | None = None, repo_type: str | None = None) -> dict[str, Any]:
    """A Hugging Face source as a normalised dict."""
    return {"kind": "hf", "repo": repo, "filename": filename, "revision": revision or None,
            "repo_type": repo_type or "model"}


def _gdrive_source(value: str) -> dict[str, Any]:
    """A Google Drive source from a file id or any Drive (or other) link."""
    return {"kind": "gdrive", "url": value} if re.match(r"^https?://", value) else {"kind": "gdrive", "id": value}


def _from_manifest(record: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """A manifest source record ({hf_repo ...} | {url} | {gdrive_folder, gdrive_name} | {gdrive}) as a source."""
    if record.get("hf_repo"):
        return _hf_source(record["hf_repo"], record.get("hf_filename") or item["file"], record.get("revision"),
                          record.get("hf_repo_type"))
    if record.get("url"):
        return {"kind": "url", "url": record["url"]}
    if record.get("gdrive"):
        return _gdrive_source(record["gdrive"])
    if record.get("gdrive_folder"):
        return {"kind": "gdrive", "folder": record["gdrive_folder"], "name": record.get("gdrive_name") or item["file"]}
    raise WeightsError(f"manifest source {record} names no hf_repo, url, gdrive or gdrive_folder")


def _kinds(kinds: str | Iterable[str] | None) -> list[str]:
    """The source kinds to use, in order: the argument, else GUIDE_SOURCES, else all."""
    value = kinds if kinds is not None else os.environ.get(ENV_SOURCES) or None
    if value is None:
        return list(SOURCE_KINDS)
    chosen = [k.strip() for k in (value.split(",") if isinstance(value, str) else value) if k.strip()]
    unknown = [k for k in chosen if k not in SOURCE_KINDS]
    if unknown:
        raise UnknownWeightsError(f"unknown source kind(s) {', '.join(unknown)}; use {', '.join(SOURCE_KINDS)}")
    return chosen


def sources_for(name: str, url: str | None = None, hf_repo: str | None = None, hf_filename: str | None = None,
                gdrive: str | None = None, kinds: str | Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every place a name can be downloaded from, in the order to try.

    Precedence: arguments > per-name environment (GUIDE_URL_X, GUIDE_HF_REPO_X, GUIDE_GDRIVE_X) > a host's mirror
    (GUIDE_HF_REPO) > the manifest's sources, the last filtered and ordered by `kinds` / GUIDE_SOURCES."""
    item = entry(name)
    envs = env_names(name)
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


def describe(source: dict[str, Any]) -> str:
    """A short human name of a source, used in messages and as the hash record's origin."""
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
