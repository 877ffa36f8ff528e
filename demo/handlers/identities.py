"""The Source and UFO tabs: photos in as identities to forget, the identity list, and the UFO target at distance d."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from demo import plots
from demo.handlers.common import (align, crop_of, get_bundle, gpu, invert, load_photo, need_source, render,
                                  samples, show)
from demo.session import Identity, StudioSession, new_session
from guide_core.config import LTUConfig
from guide_core.methods.guide import ufo_target

# Photos above this many megapixels get a note: detection runs on a reduced copy (guide_core.faces.DETECT_LONG_SIDE).
LARGE_PHOTO_MP = 12.0


class SourceOut(NamedTuple):
    """The outputs of a Source-tab event, in the order the layout lists them."""
    session: StudioSession
    status: str
    detected: np.ndarray | None
    aligned: np.ndarray | None
    inversion: np.ndarray | None
    target: np.ndarray | None
    ufo_plot: Any
    identity: Any  # the identity selector: its choices and the selected name
    identities: Any  # gallery of the listed identities: inversion and state


class UFOOut(NamedTuple):
    """The outputs of a change of d, in the order the layout lists them."""
    session: StudioSession
    target: np.ndarray | None
    ufo_plot: Any


def default_d() -> float:
    """The d slider's starting value: LTUConfig's own."""
    return float(LTUConfig().d)


def d_range() -> tuple[float, float]:
    """The d slider's range and the extent of the UFO line: LTUConfig.d's own metadata (about −30…60)."""
    field = next(f for f in dataclasses.fields(LTUConfig) if f.name == "d")
    low, high = field.metadata["range"]
    return float(low), float(high)


def empty_ufo_figure():
    """The UFO picture while no identity is listed."""
    return plots.empty_figure("Upload a photo to see UFO's latent geometry.")


def _with_box(photo: Image.Image, box) -> np.ndarray:
    """Draw the detected face box on a copy of the photo (display only)."""
    image = photo.copy()
    if box is not None:
        draw = ImageDraw.Draw(image)
        width = max(2, round(max(image.size) / 250))
        draw.rectangle([float(v) for v in list(box)[:4]], outline=(255, 64, 64), width=width)
    image.thumbnail((768, 768))  # display copy; the face crop below is full resolution
    return np.asarray(image)


def _state_of(identity: Identity) -> str:
    """The state of a listed identity as the page names it."""
    return f"forgotten in run {identity.forgotten_in}" if identity.forgotten_in else "to forget in the next run"


def _unique_name(session: StudioSession, stem: str) -> str:
    """A name for a new identity: the file's stem, numbered when another listed identity already has it."""
    taken = {i.name for i in session.identities}
    name, k = stem or "identity", 2
    while name in taken:
        name, k = f"{stem} ({k})", k + 1
    return name


def _count(n: int) -> str:
    """A count of identities in words: "1 identity", "3 identities"."""
    return f"{n} identit{'y' if n == 1 else 'ies'}"


def identity_list(session: StudioSession | None) -> tuple[Any, list[tuple[np.ndarray, str]]]:
    """The identity selector and the gallery of listed identities (light: no render, the inversions are kept)."""
    identities = session.identities if session is not None else []
    selector = gr.update(choices=[i.name for i in identities], value=session.selected if session else None)
    return selector, [(i.inversion, f"{i.name} · {_state_of(i)}") for i in identities]


def _source_view(session: StudioSession, d: float, status: str) -> SourceOut:
    """The Source tab for the selected identity (its detection, crop, inversion) and its UFO target at d."""
    identity = session.current
    if identity is None:
        return SourceOut(session, status, None, None, None, None, empty_ufo_figure(), *identity_list(session))
    ufo = change_d(d, session)
    return SourceOut(session, status, identity.detected, np.asarray(crop_of(identity.aligned)), identity.inversion,
                     ufo.target, ufo.ufo_plot, *identity_list(session))


@gpu
def upload_photo(path: str | None, model: str, d: float, session: StudioSession | None) -> SourceOut:
    """Source photo -> a new identity to forget.

    Shows its detected face, aligned crop, w_u and its render, and w_t at the current d.
    """
    from guide_core.weights import sha256_file

    session = session or new_session()
    if path is None:  # the photo was cleared: keep everything else as it is
        return SourceOut(session, "Photo cleared.", None, None, None, gr.skip(), gr.skip(), gr.skip(), gr.skip())
    start = time.perf_counter()
    photo = load_photo(path)
    bundle = get_bundle(model)
    sha256 = sha256_file(Path(path))
    known = next((i for i in session.identities if i.sha256 == sha256), None) if session.model == model else None
    if known is not None:
        repeated = known.upload_path == path and session.selected == known.name
        session.selected = known.name
        return _source_view(session, d, known.upload_note if repeated else
                            f"This photo is already listed as **{known.name}** ({_state_of(known)}).")
    aligned = align(bundle, photo)
    w_u = invert(bundle, aligned)
    if session.model != model:
        session.reset(model)
    identity = Identity(name=_unique_name(session, Path(path).stem), sha256=sha256, file_name=Path(path).name,
                        aligned=aligned, w_u=w_u,
                        plane=plots.LatentPlane(samples(bundle), bundle.w_avg_code().cpu(), w_u),
                        detected=_with_box(photo, getattr(aligned, "box", None)),
                        inversion=show(render(bundle, bundle.G, w_u))[0])
    session.identities.append(identity)
    session.selected = identity.name
    faces = getattr(aligned, "n_faces", 1)
    megapixels = photo.width * photo.height / 1e6
    status = (f"Inverted **{identity.file_name}** ({photo.width}×{photo.height}, {megapixels:.1f} MP) in "
              f"{time.perf_counter() - start:.2f} s as identity **{identity.name}**."
              + (" A large photo: faces were searched on a reduced copy." if megapixels > LARGE_PHOTO_MP else "")
              + (f" {faces} faces found; the largest was used." if faces > 1 else "")
              + f" {_count(len(session.identities))} listed. Next: choose d on the UFO tab, then Run"
              + " (or upload another photo to forget that person too).")
    identity.upload_path, identity.upload_note = path, status
    return _source_view(session, d, status)


def select_identity(name: str | None, d: float, session: StudioSession | None) -> SourceOut:
    """The identity selector: the Source and UFO tabs show the chosen identity.

    Light: kept renders + the UFO picture.
    """
    session = need_source(session)
    identity = session.identity(name)
    if identity is None:
        raise gr.Error(f"No identity named {name!r} is listed.")
    session.selected = identity.name
    return _source_view(session, d, f"Showing **{identity.name}** ({_state_of(identity)}).")


def remove_identity(name: str | None, d: float, session: StudioSession | None) -> SourceOut:
    """Remove the selected identity from the list.

    One already forgotten stays forgotten in the generators built on it.
    """
    session = need_source(session)
    identity = session.identity(name)
    if identity is None:
        raise gr.Error(f"No identity named {name!r} is listed.")
    index = session.identities.index(identity)
    session.identities.remove(identity)
    if session.selected == identity.name:
        rest = session.identities
        session.selected = rest[min(index, len(rest) - 1)].name if rest else None
    note = f"Removed **{identity.name}**; {_count(len(session.identities))} listed."
    if identity.forgotten_in:
        note += (f" It stays forgotten in the generator of run {identity.forgotten_in} and the runs after it: check "
                 "“start over from the original model” to unlearn without it.")
    return _source_view(session, d, note)


def change_d(d: float, session: StudioSession | None) -> UFOOut:
    """The UFO explorer: new d -> w_t = ufo_target(w_u, w̄, d) of every identity (one d per run).

    Returns the selected identity's target render and latent picture (light: < 1 s on CPU).
    """
    session = need_source(session)
    bundle = get_bundle(session.model)
    w_avg = bundle.w_avg_code().detach().cpu()
    try:
        for identity in session.identities:
            identity.w_t = ufo_target(identity.w_u, w_avg, float(d))
    except ValueError as error:
        raise gr.Error(str(error)) from None
    session.d = float(d)
    shown = session.current or session.identities[-1]
    # The line runs from the source (d = −‖w_u − w̄‖ gives back w_u) through w̄ to the far end of the slider.
    line_d = sorted({-shown.plane.source_distance, *(float(v) for v in np.linspace(*d_range(), 19))})
    line = [ufo_target(shown.w_u, w_avg, value) for value in line_d]
    figure = plots.ufo_geometry(shown.plane, w_avg, shown.w_u, line, line_d, shown.w_t, float(d))
    return UFOOut(session, show(render(bundle, bundle.G, shown.w_t))[0], figure)
