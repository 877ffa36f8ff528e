"""Run records of an unlearning: delta.safetensors (G_u's new values of the synthesis tensors that differ from the ROOT
model, the released or embedded G_s) and run.json (every identity forgotten, settings, losses, metrics, and for
sequential unlearning the run it continued from). A chain of runs is reproducible from its records alone: each run
names its parent (`base_run`: path, G_u fingerprint, delta hash, sources) and nests the parent's own `base_run`.
Folders are written into a temporary sibling and renamed into place, so an interrupted write never leaves a
complete-looking run.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from guide_core.engine.method import DEFAULT_METHOD
from guide_core.files import atomic_write, sha256_file, state_fingerprint
from guide_core.metrics import other_codes  # noqa: F401 - read from run records; kept importable here

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle
    from guide_core.engine import Unlearning

RUN_FORMAT = "guide-run/2"
OLD_FORMAT = "guide-run/1"  # one identity, `source` + top-level codes: read and upgraded in memory
RUN_JSON = "run.json"
DELTA_FILE = "delta.safetensors"
# What else reproduces a run besides G_u: SUGAR's trigger network, an encoder from encoder-side unlearning.
METHOD_FILE = "method.safetensors"

__all__ = ["RUN_FORMAT", "RUN_JSON", "DELTA_FILE", "sha256_file", "state_fingerprint", "photo_record",
           "source_record", "other_record", "run_sources", "run_record", "base_run_record", "save_run", "read_run", "update_run", "load_run",
           "METHOD_FILE", "load_method_tensors", "load_encoder",
           "run_codes", "other_codes", "chain_sources", "export_state_dict"]




def versions() -> dict[str, str]:
    """Versions of everything that shaped the numbers, stored in run.json."""
    import safetensors

    import guide_core
    return {"guide": guide_core.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "safetensors": safetensors.__version__, "python": sys.version.split()[0]}


def changed_tensors(G_u: torch.nn.Module, G_s: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of G_u that differ from G_s, and those G_s does not have (a method's added modules, e.g. LEGATO's
    adapters), under their state_dict names."""
    base = G_s.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in G_u.state_dict().items()
            if k not in base or not torch.equal(v.detach().cpu(), base[k].detach().cpu())}


def rebuild_modules(G: torch.nn.Module, delta: dict[str, torch.Tensor]) -> None:
    """Give a copy of the root generator the modules the delta's methods added, so every key of the delta exists."""
    from guide_core.engine.method import available_methods, make_method

    if set(delta) - set(G.state_dict()):
        for name in available_methods():
            make_method(name).rebuild(G, delta)


# ---------------------------------------------------------------------------------------------------------------------
# Sources: one record shape for every identity, whoever made the run (CLI, studio, import, API).

def photo_record(path: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """A photo as run.json names it: file name stem, absolute path and SHA-256 (the photo itself is never stored)."""
    path = Path(path)
    return {"name": name or path.stem, "path": str(path.resolve()), "sha256": sha256_file(path)}


def source_record(name: str, sha256: str | None = None, path: str | None = None,
                  others: list[tuple[dict[str, Any], torch.Tensor]] | None = None) -> dict[str, Any]:
    """One identity to forget: its name, the photo it was inverted from (sha256 / path; None when only a code was given)
    and the other photos of the person with their codes (others: [{name, sha256, path, w}], for ID_others).
    """
    return {"name": name, "sha256": sha256, "path": path, "others": [other_record(info, w) for info, w in others or []]}


def other_record(info: dict[str, Any], w: torch.Tensor) -> dict[str, Any]:
    """One other photo of a person: its photo record ({name, sha256, path}) and its code w ([num_ws, 512]; encoders
    return a batch of one, [1, num_ws, 512]).
    """
    w = torch.as_tensor(w).detach().cpu()
    return {**info, "w": (w[0] if w.ndim == 3 else w).tolist()}


def run_sources(unlearning: "Unlearning") -> list[dict[str, Any]]:
    """An unlearning's source records with their codes w_u / w_t, as run.json stores them."""
    w_u, w_t = unlearning.w_u.detach().cpu(), unlearning.w_t.detach().cpu()
    return [{**meta, "w_u": w_u[i].tolist(), "w_t": w_t[i].tolist()} for i, meta in enumerate(unlearning.sources)]


def run_record(unlearning: "Unlearning", delta_keys: list[str]) -> dict[str, Any]:
    """Everything run.json says about an unlearning; codes are stored per source, delta keys relative to the root model.
    """
    sources = run_sources(unlearning)
    return {"format": RUN_FORMAT, "model": unlearning.bundle.name,
            "root_fingerprint": state_fingerprint(unlearning.bundle.G), "base_run": unlearning.base_run,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sources": sources, "method": unlearning.method.name, "config": unlearning.cfg.to_dict(),
            "trainable_prefix": unlearning.trainable_prefix, "steps_done": unlearning.steps_done,
            "completed": unlearning.completed, "cancelled": unlearning.cancelled,
            "train_seconds": round(unlearning.seconds, 3),
            "final_losses": unlearning.history[-1] if unlearning.history else {},
            "loss_history": unlearning.history,
            "metrics": unlearning.metrics, "extra": unlearning.extra, "versions": versions(),
            "delta": {"file": DELTA_FILE, "kind": "new_values",
                      "meaning": "G_u's values of the listed tensors (new ones are modules its method added); all "
                                 "others equal the root model",
                      "keys": delta_keys}}


def base_run_record(run_dir: str | os.PathLike, record: dict[str, Any], G_parent: torch.nn.Module) -> dict[str, Any]:
    """What a run that continues from `run_dir` records about its parent: where it is, what its G_u was (fingerprint and
    delta hash), whom it forgot, and the parent's own parent (nested), so the whole chain is in the newest record.
    """
    return {"path": str(Path(run_dir).resolve()), "fingerprint": state_fingerprint(G_parent),
            "delta_sha256": record["delta"].get("sha256"), "sources": record["sources"],
            "base_run": record.get("base_run")}


def chain_links(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs a record continues from, nearest parent first."""
    links, link = [], record.get("base_run")
    while link:
        links.append(link)
        link = link.get("base_run")
    return links


def chain_sources(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every identity forgotten along a chain, earliest run first; each source gains "run": 0 for the chain's first run,
    up to len(chain) for this record's own sources.
    """
    runs = [link["sources"] for link in reversed(chain_links(record))] + [record["sources"]]
    return [{**source, "run": depth} for depth, sources in enumerate(runs) for source in sources]


# ---------------------------------------------------------------------------------------------------------------------
# Writing and reading run folders.

def _write_atomically(run_dir: Path, files: Callable[[Path], None], overwrite: bool) -> None:
    """Write a folder atomically: fill a hidden temporary sibling, then rename it over `run_dir` (replacing an old run
    only when `overwrite`). An exception or kill before the rename leaves only the hidden `.partial` folder.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"run directory {run_dir} already exists and is not empty (pass overwrite=True)")
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.parent / f".{run_dir.name}.partial-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        files(tmp)
        if run_dir.exists():
            old = run_dir.parent / f".{run_dir.name}.old-{os.getpid()}"
            os.replace(run_dir, old)
            os.replace(tmp, run_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_run(run_dir: str | os.PathLike, unlearning: "Unlearning", overwrite: bool = False) -> Path:
    """Save a run: delta.safetensors + run.json (run.json is written last inside the temporary folder)."""
    from safetensors.torch import save_file

    delta = changed_tensors(unlearning.G_u, unlearning.bundle.G)
    record = run_record(unlearning, sorted(delta))

    def files(folder: Path) -> None:
        """The run's files, written into the temporary folder; run.json last."""
        save_file(delta, str(folder / DELTA_FILE), metadata={"format": RUN_FORMAT, "kind": "new_values"})
        record["delta"]["sha256"] = sha256_file(folder / DELTA_FILE)
        if unlearning.method_tensors:
            tensors = {k: v.detach().cpu().contiguous() for k, v in unlearning.method_tensors.items()}
            save_file(tensors, str(folder / METHOD_FILE), metadata={"format": RUN_FORMAT, "method": record["method"]})
            record["method_file"] = {"file": METHOD_FILE, "sha256": sha256_file(folder / METHOD_FILE),
                                     "keys": sorted(tensors)}
        (folder / RUN_JSON).write_text(json.dumps(record, indent=1))

    _write_atomically(Path(run_dir), files, overwrite)
    return Path(run_dir)


def _upgrade_old_record(record: dict[str, Any]) -> dict[str, Any]:
    """A one-identity record of the first format, in the current shape: its `source` and top-level codes become
    sources[0], the other photos' codes (extra.w_others) that source's others, base_fingerprint the root's.
    """
    old = record.pop("source", {}) or {}
    w_others = (record.get("extra") or {}).pop("w_others", None) or []
    infos = old.get("others") or [{} for _ in w_others]
    others = [{**info, "w": w} for info, w in zip(infos, w_others)]
    path = old.get("path")
    name = old.get("image_name") or (Path(path).stem if path else "identity 1")
    first = {"name": name, "sha256": old.get("sha256") or old.get("image_sha256"), "path": path, "others": others}
    codes = list(zip(record.pop("w_u"), record.pop("w_t")))
    record["sources"] = [{**(first if i == 0 else {"name": f"identity {i + 1}", "sha256": None, "path": None,
                                                   "others": []}), "w_u": u, "w_t": t}
                         for i, (u, t) in enumerate(codes)]
    record["root_fingerprint"] = record.pop("base_fingerprint")
    record["base_run"] = None
    record["format"] = RUN_FORMAT
    return record


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check run.json; a folder without a complete record is not a run (clear error naming what is missing)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / RUN_JSON
    if not path.is_file() or not (run_dir / DELTA_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a complete guide run: it needs {RUN_JSON} and {DELTA_FILE}")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if record.get("format") == OLD_FORMAT:
        record = _upgrade_old_record(record)
    elif record.get("format") != RUN_FORMAT:
        raise ValueError(f"{path}: unknown run format {record.get('format')!r} (expected {RUN_FORMAT})")
    record.setdefault("method", DEFAULT_METHOD)  # runs made before methods were recorded are GUIDE's
    return record


def update_run(run_dir: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Replace run.json's metrics (and optional extra fields) atomically, e.g. after `guide eval`."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    for key, value in fields.items():
        record[key] = {**record.get(key, {}), **value} if isinstance(value, dict) else value
    atomic_write(run_dir / RUN_JSON, json.dumps(record, indent=1))
    return record


def check_chain(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Every parent run of a chain that is still on disk must be the one this run was made from: its delta hash (and so
    its G_u) as recorded. A parent folder that is gone is no error: the delta is relative to the root, not the parent.
    """
    for link in chain_links(record):
        parent = Path(link["path"])
        if not (parent / RUN_JSON).is_file():
            continue
        parent_record = read_run(parent)
        if parent_record["delta"].get("sha256") != link["delta_sha256"]:
            raise ValueError(f"run {run_dir} continues from run {parent}, which changed since (its "
                             f"{DELTA_FILE} is not the one recorded); the chain can no longer be reproduced from there")
        if parent_record["root_fingerprint"] != record["root_fingerprint"]:
            raise ValueError(f"run {run_dir} and its parent run {parent} were made on different root models")


def load_method_tensors(run_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors a method saved beside the delta (SUGAR's trigger network), checked against run.json; {} if none."""
    from safetensors.torch import load_file

    entry = read_run(run_dir).get("method_file")
    if not entry:
        return {}
    path = Path(run_dir) / entry["file"]
    if not path.is_file() or sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path} is missing or does not match the SHA-256 recorded in run.json")
    return load_file(str(path))


def load_encoder(run_dir: str | os.PathLike, bundle: "ModelBundle") -> torch.nn.Module | None:
    """The encoder a run's encoder-side unlearning made (its method file's "encoder." tensors on a copy of the
    bundle's encoder); None when the run made none."""
    from guide_core.engine.encoder_side import encoder_with

    tensors = load_method_tensors(run_dir)
    return encoder_with(bundle.encoder, tensors) if tensors else None


def load_run(run_dir: str | os.PathLike, bundle: "ModelBundle") -> torch.nn.Module:
    """The unlearned generator G_u of a saved run, rebuilt on `bundle`'s generator, which must be the run's root model
    (for
    a chain: the original G_s of its first run).
    """
    from safetensors.torch import load_file

    record = read_run(run_dir)
    fingerprint = state_fingerprint(bundle.G)
    if record["root_fingerprint"] != fingerprint:
        chain = " (the root of its chain of runs)" if record.get("base_run") else ""
        if record["model"] == bundle.name:
            raise ValueError(f"the weights of model {bundle.name!r}{chain} changed since run {run_dir} was made; a run "
                             "only loads onto the exact base generator it was made on")
        raise ValueError(f"run {run_dir} was made on model {record['model']!r}{chain}, whose weights differ from the "
                         f"loaded model {bundle.name!r}; load it with --model {record['model']}")
    check_chain(run_dir, record)
    delta_path = Path(run_dir) / DELTA_FILE
    expected_sha = record["delta"].get("sha256")
    if expected_sha and sha256_file(delta_path) != expected_sha:
        raise ValueError(f"{delta_path} does not match the SHA-256 recorded in run.json (file changed or truncated)")
    delta = load_file(str(delta_path))
    G_u = copy.deepcopy(bundle.G)
    rebuild_modules(G_u, delta)
    state = G_u.state_dict()
    for key, value in delta.items():
        if key not in state:
            raise ValueError(f"{delta_path}: tensor {key!r} does not exist in model {bundle.name!r}")
        if state[key].shape != value.shape:
            raise ValueError(f"{delta_path}: {key} has shape {tuple(value.shape)}, the model's is "
                             f"{tuple(state[key].shape)}")
        state[key].copy_(value.to(state[key]))
    return G_u.eval().requires_grad_(False)


def run_codes(record: dict[str, Any], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The codes of a run's own sources: (w_u, w_t) as [N, num_ws, 512] tensors on `device`."""
    return (torch.tensor([s["w_u"] for s in record["sources"]], dtype=torch.float32, device=device),
            torch.tensor([s["w_t"] for s in record["sources"]], dtype=torch.float32, device=device))


def forgotten_codes(base_run: dict[str, Any] | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(w_u, w_t) [M, num_ws, 512] of every identity forgotten along the chain behind a base_run record, nearest
    parent first (what a continuing run holds to its targets); None when there is none."""
    earlier = [s for link in chain_links({"base_run": base_run}) for s in link["sources"]]
    if not earlier:
        return None
    return tuple(torch.tensor([s[key] for s in earlier], dtype=torch.float32) for key in ("w_u", "w_t"))


def export_state_dict(run_dir: str | os.PathLike, bundle: "ModelBundle", out: str | os.PathLike) -> Path:
    """A full original-layout generator state_dict of a run's G_u for other EG3D tools: `out` (.safetensors, every
    tensor
    under the original TriPlaneGenerator key names) plus the generator config in its metadata and a sibling .json
    (guide_core.eg3d.io.save_generator, which writes both atomically).
    """
    from guide_core.eg3d.io import save_generator

    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise ValueError(f"export target {out} must end in .safetensors")
    added = [k for k in read_run(run_dir)["delta"]["keys"] if k not in bundle.G.state_dict()]
    if added:
        raise ValueError(f"run {run_dir} adds modules the original generator layout has no place for ({added[0]}, "
                         f"... {len(added)} tensors): load it with guide_core.runs.load_run instead of exporting it")
    return save_generator(load_run(run_dir, bundle), out)
