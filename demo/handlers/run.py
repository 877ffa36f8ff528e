"""The Unlearn tab: the run's settings, Latent Target Unlearning streamed to the page, and Cancel."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch

from demo import plots
from demo.handlers.common import get_bundle, gpu_unlearn, need_source, photo_tensor, source_record
from demo.session import ChainRun, Identity, StudioSession
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning
from guide_core.engine.method import DEFAULT_METHOD, available_methods, make_method, method_config
from guide_core.flags import cast_settings
from guide_core.runs import forgotten_codes


class RunOut(NamedTuple):
    """One update of a run, in the order the layout lists the outputs."""
    session: StudioSession
    status: str
    loss_plot: Any
    previews: Any


def config_defaults(model: str):
    """LTUConfig defaults for a model: its bundle's own (the CPU world runs fewer iterations).

    A model that cannot load yet gets the paper's; the UI never writes a default of its own.
    """
    try:
        return get_bundle(model).ltu_defaults
    except Exception:  # noqa: BLE001 - a model that cannot load yet still gets the paper's defaults on the page
        return LTUConfig()


def method_choices() -> dict[str, str]:
    """The methods the studio offers, with one line each."""
    return available_methods()


def _plan_run(session: StudioSession, start_over: bool) -> tuple[list[Identity], str]:
    """Who the next run forgets and from which generator.

    Identities added since the last finished run are forgotten on top of it (sequential unlearning); with nothing new,
    the latest run is run again (with the new settings) from the generator it started from; `start_over` forgets every
    listed identity in one run from the original model.
    """
    if start_over:
        session.chain.clear()
        for identity in session.identities:
            identity.forgotten_in = None
        return list(session.identities), "from the original model (start over)"
    pending = [i for i in session.identities if i.forgotten_in is None]
    if not pending:
        latest = len(session.chain)
        pending = [i for i in session.identities if i.forgotten_in == latest]
        if not pending:
            raise gr.Error("Nothing new to forget: every listed identity was forgotten in an earlier run. Upload a "
                           "photo of someone else, or check “start over from the original model”.")
        session.chain.pop()
        for identity in pending:
            identity.forgotten_in = None
    if not session.chain:
        return pending, "from the original model"
    return pending, f"continuing from run {len(session.chain)}'s generator"


def _base_of(session: StudioSession) -> tuple[Any, dict[str, Any] | None]:
    """The generator a continued run starts from and its base_run record.

    That is the latest finished run, saved to workdir/run-<k> the first time a later run needs it (run.json of the new
    run points there).
    """
    from guide_core import runs

    if not session.chain:
        return None, None
    parent = session.chain[-1]
    if parent.run_dir is None:
        parent.run_dir = runs.save_run(session.workdir / f"run-{len(session.chain)}", parent.job, overwrite=True)
    return parent.job.G_u, runs.base_run_record(parent.run_dir, runs.read_run(parent.run_dir), parent.job.G_u)


def _preview_gallery(previews: dict[str, np.ndarray], name: str, when: str) -> list[tuple[np.ndarray, str]]:
    """One identity's previews as gallery items captioned with its name."""
    return [(previews["source"], f"{name} · source: G_s(w_u)"), (previews["target"], f"{name} · target: G_s(w_t)"),
            (previews["unlearned"], f"{name} · G_u(w_u) {when}")]


@gpu_unlearn
def run_unlearning(session: StudioSession | None, d: float, settings: dict[str, Any],
                   progress: Callable | None = None, *, start_over: bool = False,
                   method: str = DEFAULT_METHOD) -> Iterator[RunOut]:
    """Latent Target Unlearning of every identity the plan names in one run, streamed.

    Yields the status line, loss curves and previews; stops within one iteration on Cancel. A finished run joins the
    session's chain; a cancelled one does not.
    """
    session = need_source(session)
    bundle = get_bundle(session.model)
    try:
        config_type = make_method(method).config_type
        known = {f.name for f in dataclasses.fields(config_type)}
        elsewhere = {f.name for name in available_methods() for f in dataclasses.fields(make_method(name).config_type)}
        # the page holds every method's controls; a run takes those of its own method
        values = {**cast_settings(config_type, {k: v for k, v in settings.items()
                                                if k in known or k not in elsewhere}), "d": float(d)}
        cfg = method_config(method, config_defaults(session.model), **values)
    except (TypeError, ValueError) as error:
        raise gr.Error(f"Invalid setting: {error}") from None
    members, origin = _plan_run(session, bool(start_over))
    session.forget_run()
    session.cancel.clear()
    session.run_state, session.config = "running", cfg
    names = ", ".join(f"**{i.name}**" for i in members)
    try:
        base, base_run = _base_of(session)
        # robust unlearning, bank then erase and encoder-side unlearning use each person's photo and other photos
        photos = [torch.cat([photo_tensor(bundle, i.aligned), *(photo_tensor(bundle, o.aligned) for o in i.others)])
                  for i in members]
        job = Unlearning(bundle, torch.stack([i.w_u for i in members]), None, cfg, cancel=session.cancel,
                         sources=[source_record(i) for i in members], base=base, base_run=base_run,
                         photos=photos, forgotten=forgotten_codes(base_run), method=method)
        previews: Any = gr.skip()
        last_yield = 0.0
        for report in job.run():
            if report.done:
                break
            for key, value in report.losses.items():
                session.losses.setdefault(key, []).append(value)
            session.steps.append(report.step)
            if progress is not None:
                progress((report.step, report.total), desc="unlearning", unit="iterations")
            if report.previews:
                previews = _preview_gallery(report.previews, members[0].name, f"at iteration {report.step}")
            now = time.perf_counter()
            if report.previews or now - last_yield > 0.5:  # stream about twice a second, and at every preview
                last_yield = now
                shown = " · ".join(f"{k} {report.losses[k]:.4g}" for k in ("total", "local", "adjacency", "global")
                                   if k in report.losses)
                yield RunOut(session, f"iteration {report.step}/{report.total} · {report.seconds:.1f} s · {shown}",
                             plots.loss_curves(session.losses, session.steps), previews)
                previews = gr.skip()
    except Exception:
        session.run_state = "failed"
        raise
    session.generator_u, session.job, session.run_seconds = job.G_u, job, job.seconds
    session.run_state = "cancelled" if job.cancelled else "finished"
    if job.completed:
        session.chain.append(ChainRun(job))
        for identity in members:
            identity.forgotten_in = len(session.chain)
    verb = "Cancelled after" if job.cancelled else "Finished"
    where = (f"run {len(session.chain)}, {origin}" if job.completed else
             f"{origin}; a cancelled run is not continued from")
    status = (f"{verb} {job.steps_done}/{cfg.iters} iterations in {job.seconds:.1f} s "
              f"({job.seconds / max(job.steps_done, 1):.2f} s per iteration): {names} ({where}). The unlearned "
              f"generator lives in this session only: compare views on the Multi-view tab.")
    gallery = [item for i, member in enumerate(members)
               for item in _preview_gallery(job.previews(index=i), member.name, f"after {job.steps_done} iterations")]
    yield RunOut(session, status, plots.loss_curves(session.losses, session.steps), gallery)


def cancel_run(session: StudioSession | None) -> str:
    """Cancel: the loop checks this flag before every iteration, so it stops within one iteration."""
    if session is None or session.run_state != "running":
        return "Nothing is running."
    session.cancel.set()
    return "Cancelling: the run stops before its next iteration…"
