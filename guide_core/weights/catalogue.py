"""The manifest of every weight file guide can use (names, files, licences, features) and where each one lives."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from guide_core.weights.errors import MissingWeightsError, UnknownWeightsError, WeightsError

REPO = Path(__file__).resolve().parents[2]
MANIFEST_FILE = "manifest.json"
INSTALLED_WEIGHTS = Path(sys.prefix) / "share" / "guide" / "weights"  # where pip puts weights/ (pyproject data-files)


def _shipped_root() -> Path:
    """The shipped files (the manifest and the default world): the checkout's weights/ folder when running from a clone
    or an editable install, else the copy an installed package carries."""
    checkout = REPO / "weights"
    if (checkout / MANIFEST_FILE).is_file() or not (INSTALLED_WEIGHTS / MANIFEST_FILE).is_file():
        return checkout
    return INSTALLED_WEIGHTS


SHIPPED_ROOT = _shipped_root()
MANIFEST_PATH = SHIPPED_ROOT / MANIFEST_FILE
IN_CHECKOUT = SHIPPED_ROOT == REPO / "weights"


def weights_dir() -> Path:
    """The folder the downloaded weights live in: $GUIDE_WEIGHTS_DIR, else the checkout's weights/, else (an installed
    package, whose share/ folder may not be writable) ~/.cache/guide/weights."""
    override = os.environ.get("GUIDE_WEIGHTS_DIR")
    if override:
        return Path(override).expanduser().resolve()
    return SHIPPED_ROOT if IN_CHECKOUT else Path.home() / ".cache" / "guide" / "weights"


_MANIFEST_CACHE: dict[str, Any] = {}


def manifest() -> dict[str, dict[str, Any]]:
    """Every manifest entry by name. The manifest always comes with the code (it describes the code's needs),
    whatever weights_dir() is. Parsed once per file version: status/require call it for every row. Other modules
    call it as `catalogue.manifest()`, so that replacing this one attribute (as tests do) changes every reader."""
    path = MANIFEST_PATH
    try:
        stamp = path.stat().st_mtime_ns
        if _MANIFEST_CACHE.get("stamp") == stamp:
            return _MANIFEST_CACHE["entries"]
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise WeightsError(f"the weights manifest {path} is missing; restore it with "
                           f"`git checkout weights/manifest.json`") from exc
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


def entry(name: str) -> dict[str, Any]:
    """One manifest entry, with a clear error naming the known entries."""
    entries = manifest()
    if name not in entries:
        raise UnknownWeightsError(f"unknown weights name {name!r}; known names: {', '.join(entries)}")
    return entries[name]


def converted_name(original: str) -> str | None:
    """The manifest entry that declares itself converted from `original` (guide's .safetensors of an EG3D pickle),
    if the manifest has one."""
    for name, item in manifest().items():
        if item.get("converted_from") == original:
            return name
    return None


def path_of(name: str) -> Path:
    """Where a name's file (or folder, for shipped entries) lives, whether or not it is installed."""
    item = entry(name)
    if item.get("dir"):
        # Shipped folders travel with the repository, and their loaders read them there, whatever weights_dir() is.
        return SHIPPED_ROOT / item["dir"]
    return weights_dir() / item["file"]


def is_installed(name: str) -> bool:
    """Whether the file (or every required file of a shipped folder) is present."""
    item = entry(name)
    path = path_of(name)
    if item.get("dir"):
        if not path.is_dir():
            return False
        return all((path / f).is_file() for f in item.get("files", []))
    return path.is_file()


def env_names(name: str) -> dict[str, str]:
    """The environment variable names that override a name's download source (e.g. GUIDE_URL_IR_SE50)."""
    key = re.sub(r"[^A-Za-z0-9]", "_", name).upper()
    return {"url": f"GUIDE_URL_{key}", "hf_repo": f"GUIDE_HF_REPO_{key}", "hf_filename": f"GUIDE_HF_FILENAME_{key}",
            "gdrive": f"GUIDE_GDRIVE_{key}"}


def install_steps(name: str) -> list[str]:
    """The human instructions for a missing file: where it goes, the command that fetches it, where it comes from."""
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


def install_hint(name: str) -> str:
    """The instructions of install_steps as one string."""
    return "; ".join(install_steps(name))


def require(name: str) -> Path:
    """The installed path of a name, or a MissingWeightsError saying exactly what to do."""
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
