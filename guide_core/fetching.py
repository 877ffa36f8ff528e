"""Fetching every file a released model needs (`weights fetch --all`, and a Space's start-up).

A model's plan lists its generator (guide's converted .safetensors when installed or when a host's mirror serves
it), the networks of guide_core.released.NET_WEIGHTS, then the optional w̄ file and real-image statistics. Licences
are printed first; each file is then fetched through guide_core.weights (source chain, hash check, atomic rename).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, TextIO

import guide_core.weights.catalogue as catalogue
from guide_core.weights.catalogue import converted_name, is_installed, path_of
from guide_core.weights.download import fetch
from guide_core.weights.errors import OfflineError, UnknownWeightsError, WeightsError
from guide_core.weights.hashes import cached_verdict
from guide_core.weights.licences import ENV_ACCEPT, licence_accepted, needs_acceptance, print_licences, require_licence
from guide_core.weights.sources import ENV_HOST_REPO
from guide_core.weights.transports import one_line, unreachable_hosts

DEFAULT_MODEL = "eg3d-ffhq-rebalanced"
OPTIONAL_WEIGHTS = ("ffhq-real-feat",)   # improve a bundle (ΔFID_real reference) but are not required


@dataclass
class Step:
    """One file a bundle needs: the role, the weight names that can fill it (the first that works), whether it is
    optional."""
    role: str
    candidates: list[str]
    optional: bool = False


@dataclass
class FetchReport:
    """The outcome of fetch_all: installed paths, and the one-line reason of every failure."""
    installed: dict[str, Path] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    optional_failed: dict[str, str] = field(default_factory=dict)
    unreachable: set[str] = field(default_factory=set)     # names that failed only because no host answered
    offline_hosts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every required file is in place."""
        return not self.failed

    @property
    def offline(self) -> bool:
        """Nothing could be fetched because no host answered: the one-line "offline" case."""
        failures = set(self.failed) | set(self.optional_failed)
        return bool(self.failed) and not self.downloaded and failures <= self.unreachable


def plan(model: str = DEFAULT_MODEL, host_repo: str | None = None) -> list[Step]:
    """What a bundle needs, in order: for an EG3D model its generator (the converted file when installed or when a
    host's mirror serves it), the networks of released.NET_WEIGHTS and the optional w̄ file; for a 2D model its pSp /
    e4e file and the networks of sg2.NET_WEIGHTS; then the optional real-image statistics."""
    from guide_core import released, sg2

    optional = [Step("real_stats", [n], optional=True) for n in OPTIONAL_WEIGHTS if n in catalogue.manifest()]
    if model in sg2.SG2_MODELS:  # one file holds the encoder, the generator and w̄
        return ([Step("inversion", [sg2.SG2_MODELS[model][0]])]
                + [Step(role, [name]) for role, name in sg2.NET_WEIGHTS.items()] + optional)
    if model not in released.EG3D_MODELS:
        known = ", ".join([*released.EG3D_MODELS, *sg2.SG2_MODELS])
        raise UnknownWeightsError(f"unknown model {model!r} for fetch --all; known: {known}")
    generator = released.EG3D_MODELS[model][0]
    converted = converted_name(generator)
    if converted and (host_repo or is_installed(converted)):
        candidates = [converted, generator]
    else:
        candidates = [generator]
    steps = [Step("generator", candidates)]
    steps += [Step(role, [name]) for role, name in released.NET_WEIGHTS.items()]
    w_avg_files = [n for n, item in catalogue.manifest().items() if item.get("w_avg_for") == generator]
    steps += [Step("w_avg", [n], optional=True) for n in w_avg_files]
    return steps + optional


def fetch_all(model: str = DEFAULT_MODEL, *, host_repo: str | None = None, accept_licence: bool | None = None,
              kinds: str | Iterable[str] | None = None, progress: bool = True, force: bool = False,
              out: TextIO | None | object = "stdout") -> FetchReport:
    """Fetch every file of a bundle. Licences are printed first (to `out`; None prints nothing); files whose
    licence needs acceptance stop the run before any download unless it is accepted. A failed file does not stop
    the others; the report says what happened."""
    out = sys.stdout if out == "stdout" else out   # resolved per call: the default must follow a redirected stdout
    # A mirror named here overrides every source; one from GUIDE_HF_REPO keeps the per-name overrides above it.
    steps = plan(model, host_repo or os.environ.get(ENV_HOST_REPO) or None)
    if out is not None:
        print_licences([n for s in steps for n in s.candidates[:1]], out)
    to_download = [s.candidates[0] for s in steps if force or not any(is_installed(n) for n in s.candidates)]
    require_licence([n for n in to_download if not _optional_step(steps, n)], accept_licence)
    report = FetchReport()
    with unreachable_hosts() as seen:
        for step in steps:
            _fetch_step(step, report, seen, host_repo=host_repo, accept_licence=accept_licence, kinds=kinds,
                        progress=progress, force=force, out=out)
        report.offline_hosts = sorted(seen)
    return report


def _optional_step(steps: list[Step], name: str) -> bool:
    """Whether the step that first names `name` is optional."""
    return any(s.optional for s in steps if s.candidates and s.candidates[0] == name)


def _fetch_step(step: Step, report: FetchReport, seen: set[str], *, host_repo, accept_licence, kinds, progress,
                force, out) -> None:
    """Fill one step: an installed candidate counts; else each candidate is fetched until one arrives. Hosts that
    could not be reached are added to `seen`."""
    if not force:
        for name in step.candidates:
            if is_installed(name):
                report.installed[name] = path_of(name)
                if out is not None:
                    print(f"  {name}: already installed ({path_of(name)})", file=out)
                return
    reasons, offline = [], False
    for name in step.candidates:
        if step.optional and needs_acceptance(name) and not licence_accepted(accept_licence):
            reasons.append(f"licence not accepted (--accept-licence or {ENV_ACCEPT}=1)")
            break
        try:
            path = fetch(name, hf_repo=host_repo, progress=progress, force=force, accept_licence=accept_licence,
                         sources=kinds)
        except OfflineError as exc:
            reasons.append(one_line(exc))
            offline = True
            if exc.host:
                seen.update(h.strip() for h in exc.host.split(","))
            break  # the same hosts serve the other candidates
        except WeightsError as exc:
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
