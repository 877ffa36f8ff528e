# Event handlers of the studio: plain functions of (inputs, session) -> outputs, callable without Gradio running.
# They hold no math: every latent, render, loss and metric comes from guide_core (Seo et al. 2024, "Generative
# Unlearning for Any Identity"); this module decodes uploads, keeps the per-visitor session and shapes outputs.
from __future__ import annotations

import dataclasses
import math
import tempfile
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
    from guide_core import bundle, guide, metrics  # imported lazily so the page renders even while a piece is missing

    return bundle, guide, metrics


_BUNDLES: dict[str, Any] = {}
_SAMPLES: dict[str, torch.Tensor] = {}
_BUNDLE_LOCK = threading.Lock()


# One read-only ModelBundle per model name, shared by all sessions (G_s is frozen; sessions copy it to unlearn).
def get_bundle(name: str | None):
    bundle_mod, _, _ = _lib()
    if not name:
        raise gr.Error("Pick a model first.")
    with _BUNDLE_LOCK:
        if name not in _BUNDLES:
            try:
                _BUNDLES[name] = bundle_mod.load_bundle(name, device=_device())
            except (FileNotFoundError, RuntimeError, ValueError, KeyError) as error:
                raise gr.Error(f"Model {name!r} cannot be loaded: {error}") from None
        return _BUNDLES[name]


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------------------
# Per-visitor state (lives in gr.State): nothing in here is ever shared with another session.
@dataclasses.dataclass
class StudioSession:
    model: str | None = None
    photo_name: str | None = None
    photo_sha256: str | None = None
    aligned: Any = None  # guide_core.faces.AlignedFace (or the world's equivalent)
    w_u: torch.Tensor | None = None
    d: float | None = None
    w_t: torch.Tensor | None = None
    plane: Any = None  # plots.LatentPlane of this source: the UFO picture's axes
    others: list[tuple[str, torch.Tensor, np.ndarray]] = dataclasses.field(default_factory=list)
    generator_u: Any = None  # this visitor's unlearned copy G_u; None until a run finishes or is cancelled
    job: Any = None  # the guide.Unlearning that produced generator_u (settings, codes, loss history)
    config: Any = None  # the LTUConfig of the last run
    steps: list[int] = dataclasses.field(default_factory=list)
    losses: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    run_seconds: float = 0.0
    run_state: str = "none"  # none | running | cancelled | finished
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    workdir: Path = dataclasses.field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="guide-session-")))

    # Gradio deep-copies initial state values; a session is never copied, a copy starts a fresh one.
    def __deepcopy__(self, memo) -> "StudioSession":
        return StudioSession()

    def forget_run(self) -> None:
        self.generator_u, self.job, self.config, self.steps, self.losses = None, None, None, [], {}
        self.run_state = "none"
        self.run_seconds = 0.0


def new_session() -> StudioSession:
    return StudioSession()


# Gradio drops a visitor's state after they leave: stop their run and remove their run files with it.
def end_session(session: StudioSession | None) -> None:
    if session is None:
        return
    import shutil

    session.cancel.set()
    session.generator_u = session.job = None
    shutil.rmtree(session.workdir, ignore_errors=True)


def _need_source(session: StudioSession | None) -> StudioSession:
    if session is None or session.w_u is None:
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


def _sha256_of(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    bundle_mod, _, _ = _lib()
    from guide_core.faces import FaceError, align_face

    try:
        if bundle.name in bundle_mod.EG3D_MODELS:
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


# LTUConfig defaults for a model: the paper's, unless the model's bundle says its world needs others (the CPU world
# runs fewer iterations, issue 5); the UI never writes a default of its own.
def config_defaults(model: str):
    _, guide, _ = _lib()
    try:
        overrides = dict(get_bundle(model).extras.get("ltu_defaults", {}))
    except Exception:  # noqa: BLE001 - a model that cannot load yet still gets the paper's defaults on the page
        overrides = {}
    return dataclasses.replace(guide.LTUConfig(), **overrides)


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
    bundle_mod, _, _ = _lib()
    from guide_core import weights

    names = []
    for name in bundle_mod.available_models():
        if name == "default":
            names.append(name)
            continue
        try:
            if all(weights.is_installed(item) for item in bundle_mod.required_weights(name)):
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


# Page load: a fresh private session bound to the selected model.
def start_session(session: StudioSession | None, model: str) -> tuple[StudioSession, str]:
    session = session or new_session()
    session.model = model
    try:
        get_bundle(model)
    except gr.Error as error:
        return session, f"⚠️ {error.message} See the weights panel below."
    return session, f"Model **{model}** selected. Upload a photo or click an example."


# Model switch: codes and the unlearned generator belong to the old model, so they are dropped.
@gpu
def select_model(model: str, session: StudioSession | None):
    session = session or new_session()
    get_bundle(model)
    previous = session.model
    session.model = model
    session.aligned, session.w_u, session.w_t, session.others = None, None, None, []
    session.forget_run()
    note = f"Model **{model}** loaded." + (" Upload the photo again for this model." if previous else "")
    empty = plots.empty_figure("Upload a photo to see UFO's latent geometry.")
    return session, note, weights_panel(), None, None, None, None, empty


# Source photo -> detected face, aligned crop, w_u and its render, w_t at the current d and its render.
@gpu
def upload_photo(path: str | None, model: str, d: float, session: StudioSession | None) -> SourceOut:
    session = session or new_session()
    if path is None:  # the photo was cleared: keep everything else as it is
        return SourceOut(session, "Photo cleared.", None, None, None, gr.skip(), gr.skip())
    start = time.perf_counter()
    photo = load_photo(path)
    bundle = get_bundle(model)
    aligned = _align(bundle, photo)
    w_u = _invert(bundle, aligned)
    session.model, session.aligned, session.w_u, session.others = model, aligned, w_u, []
    session.photo_name, session.photo_sha256 = Path(path).name, _sha256_of(path)
    session.forget_run()
    session.plane = plots.LatentPlane(_samples(bundle), bundle.w_avg_code().cpu(), w_u)
    ufo = change_d(d, session)
    inversion = _show(_render(bundle, bundle.G, w_u))[0]
    faces = getattr(aligned, "n_faces", 1)
    megapixels = photo.width * photo.height / 1e6
    status = (f"Inverted **{session.photo_name}** ({photo.width}×{photo.height}, {megapixels:.1f} MP) in "
              f"{time.perf_counter() - start:.2f} s."
              + (" A large photo: faces were searched on a reduced copy." if megapixels > LARGE_PHOTO_MP else "")
              + (f" {faces} faces found; the largest was used." if faces > 1 else "")
              + " Next: choose d on the UFO tab, then Run.")
    return SourceOut(session, status, _with_box(photo, getattr(aligned, "box", None)),
                     np.asarray(_crop_of(aligned)), inversion, ufo.target, ufo.ufo_plot)


# The UFO explorer: new d -> w_t = ufo_target(w_u, w̄, d), its render and the latent picture (light: < 1 s on CPU).
def change_d(d: float, session: StudioSession | None) -> UFOOut:
    _, guide, _ = _lib()
    session = _need_source(session)
    bundle = get_bundle(session.model)
    w_avg = bundle.w_avg_code().detach().cpu()
    try:
        w_t = guide.ufo_target(session.w_u, w_avg, float(d))
    except ValueError as error:
        raise gr.Error(str(error)) from None
    session.d, session.w_t = float(d), w_t
    # The line runs from the source (d = −‖w_u − w̄‖ gives back w_u) through w̄ to the far end of the slider.
    line_d = sorted({-session.plane.source_distance, *(float(v) for v in np.linspace(*d_range(), 19))})
    line = [guide.ufo_target(session.w_u, w_avg, value) for value in line_d]
    figure = plots.ufo_geometry(session.plane, w_avg, session.w_u, line, line_d, w_t, float(d))
    return UFOOut(session, _show(_render(bundle, bundle.G, w_t))[0], figure)


# Latent Target Unlearning, streamed: status line, loss curves, previews; stops within one iteration on Cancel.
@gpu_unlearn
def run_unlearning(session: StudioSession | None, d: float, settings: dict[str, Any],
                   progress: Callable | None = None) -> Iterator[RunOut]:
    _, guide, _ = _lib()
    session = _need_source(session)
    bundle = get_bundle(session.model)
    try:
        values = {**_cast_settings(guide.LTUConfig, settings), "d": float(d)}
        cfg = dataclasses.replace(config_defaults(session.model), **values).validate()
    except (TypeError, ValueError) as error:
        raise gr.Error(f"Invalid setting: {error}") from None
    session.forget_run()
    session.cancel.clear()
    session.run_state, session.config = "running", cfg
    try:
        job = guide.Unlearning(bundle, session.w_u, None, cfg, cancel=session.cancel,
                               source={"image_sha256": session.photo_sha256, "image_name": session.photo_name})
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
                previews = _preview_gallery(report.previews, f"G_u(w_u) at iteration {report.step}")
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
    verb = "Cancelled after" if job.cancelled else "Finished"
    status = (f"{verb} {job.steps_done}/{cfg.iters} iterations in {job.seconds:.1f} s "
              f"({job.seconds / max(job.steps_done, 1):.2f} s per iteration). The unlearned generator lives in this "
              f"session only: compare views on the Multi-view tab.")
    yield RunOut(session, status, plots.loss_curves(session.losses, session.steps),
                 _preview_gallery(job.previews(), f"G_u(w_u) after {job.steps_done} iterations"))


def _preview_gallery(previews: dict[str, np.ndarray], unlearned_caption: str) -> list[tuple[np.ndarray, str]]:
    return [(previews["source"], "source: G_s(w_u)"), (previews["target"], "target: G_s(w_t)"),
            (previews["unlearned"], unlearned_caption)]


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


# Other photos of the same person: inverted once, shown before/after at the current view (ID_others in the paper).
@gpu
def add_others(paths: list[str] | None, session: StudioSession | None):
    session = _need_source(session)
    bundle = get_bundle(session.model)
    added, problems = [], []
    for path in paths or []:
        name = Path(path).name
        try:
            aligned = _align(bundle, load_photo(path))
            session.others.append((name, _invert(bundle, aligned), aligned))
            added.append(name)
        except gr.Error as error:
            problems.append(f"{name}: {error.message}")
    if problems and not added:
        raise gr.Error("None of the other photos could be used: " + "; ".join(problems))
    if problems:
        gr.Warning("Some photos were skipped: " + "; ".join(problems))
    status = f"{len(session.others)} other photo(s) of the person." + (" Skipped: " + "; ".join(problems)
                                                                      if problems else "")
    return session, status, render_view(0.0, 0.0, session).others


# One camera: before (G_s) and after (G_u) at w_u and at each other photo's code. Light: one render batch each.
def render_view(yaw_deg: float, pitch_deg: float, session: StudioSession | None) -> ViewOut:
    if session is None or session.w_u is None:
        return ViewOut(None, None, [])
    bundle = get_bundle(session.model)
    codes = torch.stack([session.w_u] + [w for _, w, _ in session.others])
    before = _show(_render(bundle, bundle.G, codes, yaw_deg, pitch_deg))
    after = (_show(_render(bundle, session.generator_u, codes, yaw_deg, pitch_deg))
             if session.generator_u is not None else None)
    gallery = []
    for i, (name, _, _) in enumerate(session.others, start=1):
        gallery.append((before[i], f"{name}: before"))
        if after is not None:
            gallery.append((after[i], f"{name}: after"))
    return ViewOut(before[0], after[0] if after is not None else None, gallery)


# Orbit strip before/after and identity similarity of each view to the aligned photo (the ID metric's idea, per view).
@gpu
def orbit(session: StudioSession | None) -> OrbitOut:
    session = _need_unlearned(session)
    bundle = get_bundle(session.model)
    before = torch.cat([_render(bundle, bundle.G, session.w_u, yaw) for yaw in ORBIT_YAWS_DEG])
    after = torch.cat([_render(bundle, session.generator_u, session.w_u, yaw) for yaw in ORBIT_YAWS_DEG])
    reference = _embed(bundle, _photo_tensor(bundle, session.aligned))
    series = {"before: G_s(w_u) vs photo": (_embed(bundle, before) @ reference.T).squeeze(1).tolist(),
              "after: G_u(w_u) vs photo": (_embed(bundle, after) @ reference.T).squeeze(1).tolist()}
    for name, w_other, aligned in session.others:
        ref = _embed(bundle, _photo_tensor(bundle, aligned))
        views = torch.cat([_render(bundle, session.generator_u, w_other, yaw) for yaw in ORBIT_YAWS_DEG])
        series[f"after: {name} vs its photo"] = (_embed(bundle, views) @ ref.T).squeeze(1).tolist()
    return OrbitOut(np.concatenate(_show(before), axis=1), np.concatenate(_show(after), axis=1),
                    plots.identity_per_view(ORBIT_YAWS_DEG, series))


# Identity clusters: identity embeddings of the source (and its other photos) and CLUSTER_OTHERS random people,
# several views each, rendered by G_s and by G_u, projected together by t-SNE. Erasure = the source's "after"
# points leave its "before" cluster while the other people's clusters stay put.
@gpu
def identity_clusters(session: StudioSession | None):
    session = _need_unlearned(session)
    bundle = get_bundle(session.model)
    z = torch.randn(CLUSTER_OTHERS, bundle.z_dim, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        people = bundle.G.mapping(z.to(bundle.device), bundle.cond_c.expand(len(z), -1)).cpu()
    codes = torch.cat([torch.stack([session.w_u] + [w for _, w, _ in session.others]), people])
    names = ["source"] * (1 + len(session.others)) + [f"person {i + 1}" for i in range(CLUSTER_OTHERS)]
    images, labels, generators = [], [], []
    for generator_name, G in (("before", bundle.G), ("after", session.generator_u)):
        for yaw in CLUSTER_YAWS_DEG:
            images.append(_render(bundle, G, codes, yaw))
            labels += names
            generators += [generator_name] * len(names)
    return plots.identity_clusters(_embed(bundle, torch.cat(images)), labels, generators)


# Report: ID, ID_others, the preservation metric (with what its features are), the erasure audit; the run files.
@gpu
def report(session: StudioSession | None, audit_steps: float, n_fid: int = REPORT_FID_SAMPLES) -> ReportOut:
    _, guide, metrics = _lib()
    session = _need_unlearned(session)
    bundle = get_bundle(session.model)
    job = session.job
    others = torch.stack([w for _, w, _ in session.others]) if session.others else None
    result = metrics.evaluate(bundle, session.generator_u, _codes(session.w_u), others, n_fid=n_fid)
    values = result.to_dict()
    audit = None
    if int(audit_steps) > 0:
        audit = metrics.erasure_audit(bundle, session.generator_u, _photo_tensor(bundle, session.aligned),
                                      _codes(session.w_u), steps=int(audit_steps))
        values["audit"] = audit.to_dict()
    job.metrics = values
    run_dir = session.workdir / "run"
    guide.save_run(run_dir, job, overwrite=True)
    rows = [("ID (lower = identity gone; G_s vs G_u renders of w_u, 11 views)", result.id),
            ("ID_others (other photos of the person)", result.id_others),
            (f"FID_pre (G_s vs G_u, {result.n_fid} samples; preservation)", result.fid_pre),
            ("ΔFID_real", result.delta_fid_real)]
    if audit is not None:
        rows += [(f"audit: best identity reached by re-inversion into G_s ({audit.steps} steps)", audit.before.best_id),
                 ("audit: best identity reached by re-inversion into G_u", audit.after.best_id),
                 ("audit: fraction of the identity erased", audit.erased)]
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {'n/a' if value is None else f'{value:.4f}'} |" for name, value in rows]
    notes = [f"Features: {result.feature_note or bundle.feature_note}."] + [f"{note}." for note in result.notes]
    state = "cancelled" if job.cancelled else "complete"
    markdown = "\n".join(lines) + "\n\n" + " ".join(notes) + (f"\n\nRun {state}: {job.steps_done}/{job.cfg.iters} "
                                                              f"iterations, {job.seconds:.1f} s.")
    return ReportOut(markdown, [str(run_dir / guide.DELTA_FILE), str(run_dir / guide.RUN_JSON)])
