"""What is installed and whether it is intact: the rows of `weights status` (and the one table every front end
shows them as), and `weights verify` of installed files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import guide_core.weights.catalogue as catalogue
from guide_core.files import human_size, sha256_file
from guide_core.weights.catalogue import entry, install_hint, is_installed, path_of
from guide_core.weights.hashes import cached_verdict, judge_hash, record_hash, remember_check
from guide_core.weights.transports import incoming_dir

STATUS_COLUMNS = ("name", "file", "installed", "size", "verified", "feature")
# How a verdict reads in the table; the other verdicts read as themselves.
VERDICT_LABELS = {"mismatch": "MISMATCH", "missing": "-", "partial": "partial (.part)"}


@dataclass
class WeightStatus:
    """One row of `weights status`."""
    name: str
    file: str
    path: str
    installed: bool
    size: int | None
    # sha256 | prefix | recorded | no reference | mismatch | unchecked | shipped | missing | partial
    verified: str
    feature: str
    license: str
    kind: str
    shipped: bool
    hint: str              # what to do when missing, else ""


@dataclass
class VerifyResult:
    """The result of verifying one name."""
    name: str
    path: str
    verdict: str           # sha256 | prefix | recorded | no reference | mismatch | missing | shipped
    sha256: str | None

    @property
    def ok(self) -> bool:
        """Whether the file may be used: intact, pinned, without a reference yet, or shipped."""
        return self.verdict in ("sha256", "prefix", "recorded", "no reference", "shipped")


def _disk_size(path: Path) -> int:
    """Size of a file or the total of a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _partial_size(path: Path) -> int | None:
    """Bytes of an interrupted download of `path` (its `.part`, or gdown's partial file in its staging folder), or
    None when there is none."""
    part = path.with_name(path.name + ".part")
    if part.is_file():
        return part.stat().st_size
    staging = incoming_dir(path)
    found = [p for p in staging.glob("*") if p.is_file()] if staging.is_dir() else []
    return sum(p.stat().st_size for p in found) if found else None


def status(check_hashes: bool = False) -> list[WeightStatus]:
    """One row per manifest entry. With check_hashes, hashes installed files now (slow for the big ones)."""
    rows = []
    for name, item in catalogue.manifest().items():
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
            verdict = verify_one(name).verdict if check_hashes else cached_verdict(name, path)
        rows.append(WeightStatus(
            name=name, file=(item["dir"] + "/") if item.get("dir") else item["file"], path=str(path),
            installed=installed, size=size, verified=verdict, feature=item.get("feature", ""),
            license=item.get("license", ""), kind=item.get("kind", ""), shipped=shipped,
            hint="" if installed else install_hint(name)))
    return rows


def status_table(rows: Iterable[WeightStatus]) -> tuple[list[str], list[list[str]]]:
    """The status rows as one plain-text table: the header (STATUS_COLUMNS) and, per row, its cells (name, file,
    yes / no, human size, verdict label, feature). `weights status` and the studio's weights panel both show this
    table, each in its own markup."""
    cells = [[row.name, row.file, "yes" if row.installed else "no", human_size(row.size),
              VERDICT_LABELS.get(row.verified, row.verified), row.feature] for row in rows]
    return list(STATUS_COLUMNS), cells


def verify_one(name: str, progress: bool = False) -> VerifyResult:
    """Hash one installed file against its reference (shipped folders: presence of their files)."""
    item = entry(name)
    path = path_of(name)
    if not is_installed(name):
        return VerifyResult(name, str(path), "missing", None)
    if item.get("shipped"):
        return VerifyResult(name, str(path), "shipped", None)
    digest = sha256_file(path, progress=progress)
    remember_check(name, path, digest)
    return VerifyResult(name, str(path), judge_hash(name, digest, path.stat().st_size), digest)


def record(name: str) -> VerifyResult:
    """Pin the current hash of an installed file that has no reference yet (a file downloaded by hand): trust on
    first use."""
    result = verify_one(name)
    if result.verdict != "no reference":
        return result
    record_hash(name, Path(result.path), result.sha256, "recorded by hand (weights verify --record)")
    return VerifyResult(name, result.path, "recorded", result.sha256)


def verify(name: str | None = None, progress: bool = False) -> list[VerifyResult]:
    """Verify one name, or every installed one when name is None."""
    if name is not None:
        return [verify_one(name, progress=progress)]
    return [verify_one(n, progress=progress) for n in catalogue.manifest() if is_installed(n)]
