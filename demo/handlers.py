# Event handlers of the studio: plain functions of (inputs, session) -> outputs, callable without Gradio running.
# They hold no math: every latent, render, loss and metric comes from guide_core (Seo et al. 2024, "Generative
# Unlearning for Any Identity"); this module decodes uploads, keeps the per-visitor session and shapes outputs.
from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch
from PIL import Image, ImageDraw

from demo import plots
from demo.session import ChainRun, Identity, OtherPhoto, StudioSession, end_session, new_session  # noqa: F401

# ---------------------------------------------------------------------------------------------------------------------
# Largest upload the server accepts at all (a 50 MP JPEG is about 20–30 MB); faces.load_image limits the pixels.
MAX_UPLOAD = "60mb"
# Renders smaller than this are enlarged for display (the tiny world renders at 64–128 px).
DISPLAY_MIN_SIDE = 256
# Photos above this many megapixels get a note: detection runs on a reduced copy (guide_core.faces.DETECT_LONG_SIDE).
LARGE_PHOTO_MP = 12.0
# Multi-view check: the orbit strip spans the paper's evaluation range of yaw (±π/12, Sec. 4.1) and a little more.
ORBIT_YAWS_DEG = (-30.0, -15.0, -7.5, 0.0, 7.5, 15.0, 30.0)
# Identity clusters: how many other identities and views per identity the t-SNE shows.
CLUSTER_OTHERS = 4
CLUSTER_YAWS_DEG = (-20.0, -10.0, 0.0, 10.0, 20.0)
# Number of w = mapping(z) drawn once per model for the UFO picture.
UFO_SAMPLES = 300
# FID_pre sample count in the studio's report (the paper uses 5,000; the CLI's eval does too).
REPORT_FID_SAMPLES = 64

# ZeroGPU seconds one unlearning run may hold the GPU: the paper's 1,000 iterations measured at 0.244 s each on an H200
# (about 245 s), plus headroom (the other handlers keep the spaces default: they take seconds).
UNLEARN_GPU_SECONDS = 300

try:  # Hugging Face ZeroGPU: heavy functions ask for a GPU only while they run.
    import spaces  # type: ignore

    gpu: Callable[[Callable], Callable] = spaces.GPU
    gpu_unlearn: Callable[[Callable], Callable] = spaces.GPU(duration=UNLEARN_GPU_SECONDS)
except ImportError:  # not on a Space: the decorators do nothing
    def gpu(fn: Callable) -> Callable:
        return fn

    gpu_unlearn = gpu


# ---------------------------------------------------------------------------------------------------------------------
# The library seam: the only place that knows the shape of guide_core's API.
def _lib():
    from guide_core import guide, metrics, registry  # imported lazily so the page renders even while a piece is missing

    return registry, guide, metrics


_BUNDLES: dict[str, Any] = {}
_SAMPLES: dict[str, torch.Tensor] = {}
_BUNDLE_LOCK = threading.Lock()


# One read-only ModelBundle per model name, shared by all sessions (G_s is frozen; sessions copy it to unlearn).
def get_bundle(name: str | None):
    registry, _, _ = _lib()
    if not name:
        raise gr.Error("Pick a model first.")
    with _BUNDLE_LOCK:
        if name not in _BUNDLES:
            try:
                _BUNDLES[name] = registry.load_bundle(name, device=_device())
            except (FileNotFoundError, RuntimeError, ValueError, KeyError) as error:
                raise gr.Error(f"Model {name!r} cannot be loaded: {error}") from None
        return _BUNDLES[name]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------------------
# Per-visitor state lives in demo/session.py; the handlers below take it and hand it back.

def _need_source(session: StudioSession | None) -> StudioSession:
    if session is None or not session.identities:
        raise gr.Error("Upload a photo (or pick an example) first: there is no source identity yet.")
    return session


def _need_unlearned(session: StudioSession | None) -> StudioSession:
    session = _need_source(session)
    if session.generator_u is None:
        raise gr.Error("Run unlearning first: this session has no unlearned generator yet.")
    return session


# ---------------------------------------------------------------------------------------------------------------------
# Upload decoding is guide_core.faces.load_image (size limit before decoding, truncation, EXIF, modes); its FaceError
# messages are written for the person who uploaded the photo, so the UI shows them verbatim.
def load_photo(path: str | Path | None):
    from guide_core.faces import FaceError, load_image

    if path is None:
        raise gr.Error("No file was uploaded.")
    try:
        return load_image(path)
    except FaceError as error:
        # The server's upload path means nothing to the visitor: name the file as they know it.
        raise gr.Error(f"{Path(path).name}: {str(error).replace(str(path), 'the file')}") from None


# Draw the detected face box on a copy of the photo (display only).
def _with_box(photo: Image.Image, box) -> np.ndarray:
    image = photo.copy()
    if box is not None:
        draw = ImageDraw.Draw(image)
        draw.rectangle([float(v) for v in list(box)[:4]], outline=(255, 64, 64), width=max(2, round(max(image.size) / 250)))
    image.thumbnail((768, 768))  # display copy; the face crop below is full resolution
    return np.asarray(image)


# ---------------------------------------------------------------------------------------------------------------------
# Seam functions: one line each into guide_core, so the handlers below read as the flow of the paper.

# Renders of generator G at codes [N, num_ws, 512] from one camera: images in [-1, 1] (bundle.render).
def _render(bundle, G, w: torch.Tensor, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> torch.Tensor:
    return bundle.render(G, _codes(w).to(bundle.device), math.radians(float(yaw_deg)), math.radians(float(pitch_deg)))


# [-1, 1] image tensors -> uint8 HxWx3 for display, with guide's own conversion; renders of small worlds are
# enlarged with nearest-neighbour (every generated pixel stays visible as a block) so the page can show them.
def _show(images: torch.Tensor) -> list[np.ndarray]:
    _, guide, _ = _lib()
    shown = []
    for image in images:
        pixels = guide.to_uint8(image)
        factor = -(-DISPLAY_MIN_SIDE // max(pixels.shape[:2]))
        shown.append(pixels.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else pixels)
    return shown


# A code as [N, num_ws, 512].
def _codes(w: torch.Tensor) -> torch.Tensor:
    return w.unsqueeze(0) if w.ndim == 2 else w


# Face detection + crop of the bundle's world. Released EG3D models align with guide_core.faces.align_face (their
# bundle's aligner keeps only its crop), called here directly so the page can also show the detected box; other
# worlds use their bundle's own aligner (the default world's photos are already aligned renders).
def _align(bundle, photo: Image.Image):
    from guide_core.faces import FaceError, align_face
    from guide_core.released import EG3D_MODELS

    try:
        if bundle.name in EG3D_MODELS:
            return align_face(photo)
        return bundle.align(photo)
    except (FaceError, ValueError, RuntimeError) as error:
        raise gr.Error(f"No usable face in this photo: {error}") from None


def _crop_of(aligned) -> Image.Image:
    return aligned.image if hasattr(aligned, "image") else aligned


# The encoder's absolute code w_u for an aligned crop (GOAE's role; the world's small encoder on the default model).
def _invert(bundle, aligned) -> torch.Tensor:
    try:
        return bundle.invert(_crop_of(aligned))[0].detach().cpu()
    except RuntimeError as error:
        raise gr.Error(str(error)) from None


# Unit identity embeddings (the metric network: CurricularFace role) of [-1, 1] images.
def _embed(bundle, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return bundle.id_metric_net.embed(images.to(bundle.device)).cpu()


# The photo as a [-1, 1] tensor at the generator's output size, for identity comparison and the audit.
def _photo_tensor(bundle, aligned) -> torch.Tensor:
    from guide_core.bundle import pil_to_tensor

    return pil_to_tensor(_crop_of(aligned))


# The fixed cloud of w = mapping(z) drawn once per model for the UFO picture.
def _samples(bundle) -> torch.Tensor:
    with _BUNDLE_LOCK:
        if bundle.name not in _SAMPLES:
            z = torch.randn(UFO_SAMPLES, bundle.z_dim, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                _SAMPLES[bundle.name] = bundle.G.mapping(z.to(bundle.device),
                                                         bundle.cond_c.expand(len(z), -1)).cpu()
        return _SAMPLES[bundle.name]


def default_d() -> float:
    _, guide, _ = _lib()
    return float(guide.LTUConfig().d)


# The d slider's range and the extent of the UFO line: LTUConfig.d's own metadata (about −30…60).
def d_range() -> tuple[float, float]:
    _, guide, _ = _lib()
    field = next(f for f in dataclasses.fields(guide.LTUConfig) if f.name == "d")
    low, high = field.metadata["range"]
    return float(low), float(high)


def default_audit_steps() -> int:
    return 20


# LTUConfig defaults for a model: its bundle's own (the CPU world runs fewer iterations), the paper's for a model that
# cannot load yet; the UI never writes a default of its own.
def config_defaults(model: str):
    _, guide, _ = _lib()
    try:
        return get_bundle(model).ltu_defaults
    except Exception:  # noqa: BLE001 - a model that cannot load yet still gets the paper's defaults on the page
        return guide.LTUConfig()


# The weights panel: guide_core.weights.status() as a table plus the install hint of every missing file.
def weights_panel() -> str:
    try:
        from guide_core import weights

        rows = weights.status()
    except Exception as error:  # noqa: BLE001 - the panel reports, it never takes the page down
        return f"The weights manager could not read the manifest: {error}"
    lines = ["| name | installed | size | what | verified |", "|---|---|---|---|---|"]
    hints = []
    for row in rows:
        size = f"{row.size / 2**20:.1f} MB" if row.size else "?"
        lines.append(f"| `{row.name}` | {'yes' if row.installed else 'no'} | {size} | {row.feature} | {row.verified} |")
        if not row.installed and row.hint:
            hints.append(f"- `{row.name}`: {row.hint}")
    text = "\n".join(lines)
    if hints:
        text += "\n\n**How to add the missing files** (`python -m guide_core weights status` says the same):\n" + \
            "\n".join(hints)
    return text


# Models the selector offers: the default world always, released ones only when their files are installed.
def available_models() -> list[str]:
    registry, _, _ = _lib()
    from guide_core import weights
    from guide_core.released import required_weights

    names = []
    for name in registry.available_models():
        if name == "default":
            names.append(name)
            continue
        try:
            if all(weights.is_installed(item) for item in required_weights(name)):
                names.append(name)
        except Exception:  # noqa: BLE001 - a name the manifest does not know is simply not offered
            continue
    return names


# ---------------------------------------------------------------------------------------------------------------------
# Handlers. Each returns a NamedTuple whose fields are the event's outputs, in the order the layout lists them.
class SourceOut(NamedTuple):
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
    session: StudioSession
    target: np.ndarray | None
    ufo_plot: Any


class RunOut(NamedTuple):
    session: StudioSession
    status: str
    loss_plot: Any
    previews: Any


class ViewOut(NamedTuple):
    before: np.ndarray | None
    after: np.ndarray | None
    others: list


class OrbitOut(NamedTuple):
    before_strip: np.ndarray
    after_strip: np.ndarray
    id_plot: Any


class ReportOut(NamedTuple):
    markdown: str
    files: list[str]
    audit_plot: Any = None


# Page load: a fresh private session bound to the selected model.
def start_session(session: StudioSession | None, model: str) -> tuple[StudioSession, str]:
    session = session or new_session()
    session.model = model
    try:
        get_bundle(model)
    except gr.Error as error:
        return session, f"⚠️ {error.message} See the weights panel below."
    return session, f"Model **{model}** selected. Upload a photo or click an example."


# Model switch: identities, codes and the unlearned generators belong to the old model, so they are dropped.
@gpu
def select_model(model: str, session: StudioSession | None):
    session = session or new_session()
    get_bundle(model)
    previous = session.model
    session.reset(model)
    note = f"Model **{model}** loaded." + (" Upload the photos again for this model." if previous else "")
    empty = plots.empty_figure("Upload a photo to see UFO's latent geometry.")
    return session, note, weights_panel(), None, None, None, None, empty, *identity_list(session)


# The state of a listed identity as the page names it.
def _state_of(identity: Identity) -> str:
    return f"forgotten in run {identity.forgotten_in}" if identity.forgotten_in else "to forget in the next run"


# The identity selector and the gallery of listed identities (light: no render, the inversions are kept).
def identity_list(session: StudioSession | None) -> tuple[Any, list[tuple[np.ndarray, str]]]:
    identities = session.identities if session is not None else []
    selector = gr.update(choices=[i.name for i in identities], value=session.selected if session else None)
    return selector, [(i.inversion, f"{i.name} · {_state_of(i)}") for i in identities]


# The Source tab for the selected identity (its detection, crop, inversion) and its UFO target at d.
def _source_view(session: StudioSession, d: float, status: str) -> SourceOut:
    identity = session.current
    if identity is None:
        return SourceOut(session, status, None, None, None, None,
                         plots.empty_figure("Upload a photo to see UFO's latent geometry."), *identity_list(session))
    ufo = change_d(d, session)
    return SourceOut(session, status, identity.detected, np.asarray(_crop_of(identity.aligned)), identity.inversion,
                     ufo.target, ufo.ufo_plot, *identity_list(session))


# A name for a new identity: the file's stem, numbered when another listed identity already has it.
def _unique_name(session: StudioSession, stem: str) -> str:
    taken = {i.name for i in session.identities}
    name, k = stem or "identity", 2
    while name in taken:
        name, k = f"{stem} ({k})", k + 1
    return name


# "1 identity", "3 identities".
def _count(n: int) -> str:
    return f"{n} identit{'y' if n == 1 else 'ies'}"


# Source photo -> a new identity to forget: detected face, aligned crop, w_u and its render, w_t at the current d.
@gpu
def upload_photo(path: str | None, model: str, d: float, session: StudioSession | None) -> SourceOut:
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
    aligned = _align(bundle, photo)
    w_u = _invert(bundle, aligned)
    if session.model != model:
        session.reset(model)
    identity = Identity(name=_unique_name(session, Path(path).stem), sha256=sha256, file_name=Path(path).name,
                        aligned=aligned, w_u=w_u,
                        plane=plots.LatentPlane(_samples(bundle), bundle.w_avg_code().cpu(), w_u),
                        detected=_with_box(photo, getattr(aligned, "box", None)),
                        inversion=_show(_render(bundle, bundle.G, w_u))[0])
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


# The identity selector: the Source and UFO tabs show the chosen identity (light: kept renders + the UFO picture).
def select_identity(name: str | None, d: float, session: StudioSession | None) -> SourceOut:
    session = _need_source(session)
    identity = session.identity(name)
    if identity is None:
        raise gr.Error(f"No identity named {name!r} is listed.")
    session.selected = identity.name
    return _source_view(session, d, f"Showing **{identity.name}** ({_state_of(identity)}).")


# Remove the selected identity from the list; one already forgotten stays forgotten in the generators built on it.
def remove_identity(name: str | None, d: float, session: StudioSession | None) -> SourceOut:
    session = _need_source(session)
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


# The UFO explorer: new d -> w_t = ufo_target(w_u, w̄, d) of every identity (one d per run), the selected one's render
# and latent picture (light: < 1 s on CPU).
def change_d(d: float, session: StudioSession | None) -> UFOOut:
    _, guide, _ = _lib()
    session = _need_source(session)
    bundle = get_bundle(session.model)
    w_avg = bundle.w_avg_code().detach().cpu()
    try:
        for identity in session.identities:
            identity.w_t = guide.ufo_target(identity.w_u, w_avg, float(d))
    except ValueError as error:
        raise gr.Error(str(error)) from None
    session.d = float(d)
    shown = session.current or session.identities[-1]
    # The line runs from the source (d = −‖w_u − w̄‖ gives back w_u) through w̄ to the far end of the slider.
    line_d = sorted({-shown.plane.source_distance, *(float(v) for v in np.linspace(*d_range(), 19))})
    line = [guide.ufo_target(shown.w_u, w_avg, value) for value in line_d]
    figure = plots.ufo_geometry(shown.plane, w_avg, shown.w_u, line, line_d, shown.w_t, float(d))
    return UFOOut(session, _show(_render(bundle, bundle.G, shown.w_t))[0], figure)


# run.json's record of an identity (guide_core.runs.source_record): the uploaded photo is named by its file stem and
# SHA-256 only (its server path means nothing outside this session), its other photos with their codes.
def _source_record(identity: Identity) -> dict[str, Any]:
    from guide_core import runs

    others = [({"name": Path(o.name).stem, "sha256": o.sha256, "path": None}, o.w) for o in identity.others]
    return runs.source_record(identity.name, identity.sha256, None, others)


# Who the next run forgets and from which generator. Identities added since the last finished run are forgotten on
# top of it (sequential unlearning); with nothing new, the latest run is run again (with the new settings) from the
# generator it started from; `start_over` forgets every listed identity in one run from the original model.
def _plan_run(session: StudioSession, start_over: bool) -> tuple[list[Identity], str]:
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


# The generator a continued run starts from and its base_run record: the latest finished run, saved to
# workdir/run-<k> the first time a later run needs it (run.json of the new run points there).
def _base_of(session: StudioSession) -> tuple[Any, dict[str, Any] | None]:
    from guide_core import runs

    if not session.chain:
        return None, None
    parent = session.chain[-1]
    if parent.run_dir is None:
        parent.run_dir = runs.save_run(session.workdir / f"run-{len(session.chain)}", parent.job, overwrite=True)
    return parent.job.G_u, runs.base_run_record(parent.run_dir, runs.read_run(parent.run_dir), parent.job.G_u)


# Latent Target Unlearning of every identity the plan names in one run, streamed: status line, loss curves, previews;
# stops within one iteration on Cancel. A finished run joins the session's chain; a cancelled one does not.
@gpu_unlearn
def run_unlearning(session: StudioSession | None, d: float, settings: dict[str, Any],
                   progress: Callable | None = None, *, start_over: bool = False) -> Iterator[RunOut]:
    _, guide, _ = _lib()
    session = _need_source(session)
    bundle = get_bundle(session.model)
    try:
        values = {**_cast_settings(guide.LTUConfig, settings), "d": float(d)}
        cfg = dataclasses.replace(config_defaults(session.model), **values).validate()
    except (TypeError, ValueError) as error:
        raise gr.Error(f"Invalid setting: {error}") from None
    members, origin = _plan_run(session, bool(start_over))
    session.forget_run()
    session.cancel.clear()
    session.run_state, session.config = "running", cfg
    names = ", ".join(f"**{i.name}**" for i in members)
    try:
        base, base_run = _base_of(session)
        # robust unlearning attacks each person's photo and their other photos
        photos = [torch.cat([_photo_tensor(bundle, i.aligned), *(_photo_tensor(bundle, o.aligned) for o in i.others)])
                  for i in members] if cfg.adversarial_sources else None
        job = guide.Unlearning(bundle, torch.stack([i.w_u for i in members]), None, cfg, cancel=session.cancel,
                               sources=[_source_record(i) for i in members], base=base, base_run=base_run,
                               photos=photos)
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


# One identity's previews as gallery items captioned with its name.
def _preview_gallery(previews: dict[str, np.ndarray], name: str, when: str) -> list[tuple[np.ndarray, str]]:
    return [(previews["source"], f"{name} · source: G_s(w_u)"), (previews["target"], f"{name} · target: G_s(w_t)"),
            (previews["unlearned"], f"{name} · G_u(w_u) {when}")]


# Slider values arrive as floats; integer fields of LTUConfig get ints back.
def _cast_settings(config_cls, settings: dict[str, Any]) -> dict[str, Any]:
    kinds = {field.name: field.type for field in dataclasses.fields(config_cls)}
    unknown = sorted(set(settings) - set(kinds))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
    return {name: int(round(float(value))) if kinds[name] in (int, "int") else float(value)
            for name, value in settings.items()}


# Cancel: the loop checks this flag before every iteration, so it stops within one iteration.
def cancel_run(session: StudioSession | None) -> str:
    if session is None or session.run_state != "running":
        return "Nothing is running."
    session.cancel.set()
    return "Cancelling: the run stops before its next iteration…"


# Other photos of the selected person: inverted once, shown before/after at the current view (ID_others in the paper).
@gpu
def add_others(paths: list[str] | None, session: StudioSession | None):
    from guide_core.weights import sha256_file

    session = _need_source(session)
    identity = session.current or session.identities[-1]
    bundle = get_bundle(session.model)
    added, problems = [], []
    for path in paths or []:
        name = Path(path).name
        try:
            aligned = _align(bundle, load_photo(path))
            identity.others.append(OtherPhoto(name, sha256_file(Path(path)), _invert(bundle, aligned), aligned))
            added.append(name)
        except gr.Error as error:
            problems.append(f"{name}: {error.message}")
    if problems and not added:
        raise gr.Error("None of the other photos could be used: " + "; ".join(problems))
    if problems:
        gr.Warning("Some photos were skipped: " + "; ".join(problems))
    status = (f"{len(identity.others)} other photo(s) of **{identity.name}**."
              + (" Skipped: " + "; ".join(problems) if problems else ""))
    return session, status, render_view(0.0, 0.0, session).others


# One camera: before (G_s) and after (G_u) of the selected identity, and in the gallery of every other listed identity
# and every other photo, each labelled by name. Light: one render batch per generator.
def render_view(yaw_deg: float, pitch_deg: float, session: StudioSession | None) -> ViewOut:
    if session is None or not session.identities:
        return ViewOut(None, None, [])
    bundle = get_bundle(session.model)
    first = session.current or session.identities[-1]
    people = [first] + [i for i in session.identities if i is not first]
    labels = [f"{i.name}" for i in people[1:]] + [f"{i.name} · {o.name}" for i in people for o in i.others]
    codes = torch.stack([i.w_u for i in people] + [o.w for i in people for o in i.others])
    before = _show(_render(bundle, bundle.G, codes, yaw_deg, pitch_deg))
    after = (_show(_render(bundle, session.generator_u, codes, yaw_deg, pitch_deg))
             if session.generator_u is not None else None)
    gallery = []
    for k, label in enumerate(labels, start=1):
        gallery.append((before[k], f"{label}: before"))
        if after is not None:
            gallery.append((after[k], f"{label}: after"))
    return ViewOut(before[0], after[0] if after is not None else None, gallery)


# Orbit strips before/after (one row per listed identity, in list order) and the identity similarity of each view to
# that identity's aligned photo (the ID metric's idea, per view), and of each other photo's views after unlearning.
@gpu
def orbit(session: StudioSession | None) -> OrbitOut:
    session = _need_unlearned(session)
    bundle = get_bundle(session.model)
    people = session.identities
    codes = torch.stack([i.w_u for i in people])
    # [N, yaws, 3, H, W]: every identity at every yaw, one render batch per yaw and generator.
    before = torch.stack([_render(bundle, bundle.G, codes, yaw) for yaw in ORBIT_YAWS_DEG], dim=1)
    after = torch.stack([_render(bundle, session.generator_u, codes, yaw) for yaw in ORBIT_YAWS_DEG], dim=1)
    references = _embed(bundle, torch.cat([_photo_tensor(bundle, i.aligned) for i in people]))
    n_yaws = len(ORBIT_YAWS_DEG)
    sim_before = (_embed(bundle, before.flatten(0, 1)).view(len(people), n_yaws, -1) * references[:, None]).sum(-1)
    sim_after = (_embed(bundle, after.flatten(0, 1)).view(len(people), n_yaws, -1) * references[:, None]).sum(-1)
    series = {}
    for k, identity in enumerate(people):
        series[f"before: G_s(w_u) of {identity.name} vs photo"] = sim_before[k].tolist()
        series[f"after: G_u(w_u) of {identity.name} vs photo"] = sim_after[k].tolist()
        for other in identity.others:
            ref = _embed(bundle, _photo_tensor(bundle, other.aligned))
            views = torch.cat([_render(bundle, session.generator_u, other.w, yaw) for yaw in ORBIT_YAWS_DEG])
            similarity = (_embed(bundle, views) @ ref.T).squeeze(1)
            series[f"after: {identity.name} · {other.name} vs its photo"] = similarity.tolist()

    # [N, yaws, 3, H, W] -> one image: a row of views per identity.
    def strips(images: torch.Tensor) -> np.ndarray:
        return np.concatenate([np.concatenate(_show(row), axis=1) for row in images], axis=0)

    return OrbitOut(strips(before), strips(after), plots.identity_per_view(ORBIT_YAWS_DEG, series))


# Identity clusters: identity embeddings of every listed identity (and their other photos) and CLUSTER_OTHERS random
# people, several views each, rendered by G_s and by G_u, projected together by t-SNE. Erasure = each listed
# identity's "after" points leave its "before" cluster while the other people's clusters stay put.
@gpu
def identity_clusters(session: StudioSession | None):
    session = _need_unlearned(session)
    bundle = get_bundle(session.model)
    z = torch.randn(CLUSTER_OTHERS, bundle.z_dim, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        people = bundle.G.mapping(z.to(bundle.device), bundle.cond_c.expand(len(z), -1)).cpu()
    listed = [w for i in session.identities for w in [i.w_u, *(o.w for o in i.others)]]
    codes = torch.cat([torch.stack(listed), people])
    names = ([i.name for i in session.identities for _ in range(1 + len(i.others))]
             + [f"random person {k + 1}" for k in range(CLUSTER_OTHERS)])
    images, labels, generators = [], [], []
    for generator_name, G in (("before", bundle.G), ("after", session.generator_u)):
        for yaw in CLUSTER_YAWS_DEG:
            images.append(_render(bundle, G, codes, yaw))
            labels += names
            generators += [generator_name] * len(names)
    return plots.identity_clusters(_embed(bundle, torch.cat(images)), labels, generators)


# A metric as the report's tables show it.
def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


# Report: ID and ID_others of every identity the chain of runs forgot (each against the original model), the
# preservation metric (with what its features are), the erasure audit of every identity whose photo the session
# holds; the latest run's files.
@gpu
def report(session: StudioSession | None, audit_steps: float, n_fid: int = REPORT_FID_SAMPLES) -> ReportOut:
    from guide_core import runs

    _, _, metrics = _lib()
    session = _need_unlearned(session)
    bundle = get_bundle(session.model)
    job = session.job
    held = {i.sha256: i for i in session.identities}
    # Other photos added after the run still count: the records take the session's current ones.
    job.sources = [_source_record(held[s["sha256"]]) if s.get("sha256") in held else s for s in job.sources]
    identities = runs.chain_sources({"sources": runs.run_sources(job), "base_run": job.base_run})
    for source in identities:
        if source.get("sha256") in held:
            source["others"] = _source_record(held[source["sha256"]])["others"]
    result = metrics.evaluate(bundle, session.generator_u, n_fid=n_fid, identities=identities)
    values = result.to_dict()
    audits = []
    if int(audit_steps) > 0:
        from guide_core import audit
        for source in identities:
            person = held.get(source.get("sha256"))
            if person is not None:
                audits.append((source, audit.erasure_audit(bundle, session.generator_u,
                                                           _photo_tensor(bundle, person.aligned),
                                                           _codes(person.w_u), steps=int(audit_steps))))
    if audits:
        values["audit"] = audit.audit_summary(audits)
    job.metrics = values
    run_dir = session.workdir / "run"
    runs.save_run(run_dir, job, overwrite=True)
    rows = [("ID (lower = identity gone; G_s vs G_u renders of w_u, 11 views; mean over this run's identities)",
             result.id),
            ("ID_others (other photos of this run's identities)", result.id_others),
            (f"FID_pre (G_s vs G_u, {result.n_fid} samples; preservation)", result.fid_pre),
            ("ΔFID_real", result.delta_fid_real)]
    if audits:
        summary = values["audit"]
        rows += [(f"audit: best identity reached by re-inversion into G_s (best of {len(summary['attacks'])} "
                  f"attacks, {summary['steps']} steps each; {summary['name']}: the identity recovered best from G_u)",
                  summary["best_id_before"]),
                 (f"audit: best identity reached by re-inversion into G_u (attack {summary['strongest_attack']})",
                  summary["best_id_after"]),
                 ("audit: fraction of the identity erased", summary["erased"])]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {_number(value)} |" for name, value in rows]
    lines += ["", "| identity | forgotten in | ID | ID_others |", "|---|---|---|---|"]
    for row in result.per_identity:
        photos = f" ({row['n_others']} photo{'s' if row['n_others'] != 1 else ''})" if row["n_others"] else ""
        lines.append(f"| {row['name']} | run {row['run'] + 1}{' (earlier run)' if row['earlier'] else ''} | "
                     f"{_number(row['id'])} | {_number(row['id_others'])}{photos} |")
    if audits:
        names = [pair.name for pair in audits[0][1].attacks]
        lines += ["", "| identity | attack | best ID from G_s | best ID from G_u | erased |", "|---|---|---|---|---|"]
        for s, a in audits:
            lines += [f"| {s['name']} | {pair.name} | {_number(pair.before.best_id)} | {_number(pair.after.best_id)} | "
                      f"{_number(pair.erased)} |" for pair in a.attacks]
            lines.append(f"| {s['name']} | **best of {len(names)}** | {_number(a.before.best_id)} | "
                         f"{_number(a.after.best_id)} | {_number(a.erased)} |")
    notes = [f"Features: {result.feature_note or bundle.feature_note}."] + [f"{note}." for note in result.notes]
    state = "cancelled" if job.cancelled else "complete"
    markdown = "\n".join(lines) + "\n\n" + " ".join(notes) + (f"\n\nRun {state}: {job.steps_done}/{job.cfg.iters} "
                                                              f"iterations, {job.seconds:.1f} s.")
    curves = plots.audit_curves(summary["attacks"], summary["name"]) if audits else plots.audit_curves({})
    return ReportOut(markdown, [str(run_dir / runs.DELTA_FILE), str(run_dir / runs.RUN_JSON)], curves)
