"""What every tab of the studio shares: the model bundles, the seam into guide_core, photos, renders and guards.

The handlers hold no math: every latent, render, loss and metric comes from guide_core (Seo et al. 2024, "Generative
Unlearning for Any Identity"). This module is the only place that knows the shape of guide_core's API; the tab modules
(identities, run, views, report, models) build on it and it imports none of them.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from demo.session import Identity, StudioSession
from guide_core.devices import pick_device
from guide_core.engine import to_uint8

# Largest upload the server accepts at all (a 50 MP JPEG is about 20–30 MB); faces.load_image limits the pixels.
MAX_UPLOAD = "60mb"
# Renders smaller than this are enlarged for display (the tiny world renders at 64–128 px).
DISPLAY_MIN_SIDE = 256
# Number of w = mapping(z) drawn once per model for the UFO picture.
UFO_SAMPLES = 300

# ZeroGPU seconds one unlearning run may hold the GPU: the paper's 1,000 iterations measured at 0.244 s each on an H200
# (about 245 s), plus headroom (the other handlers keep the spaces default: they take seconds).
UNLEARN_GPU_SECONDS = 300

try:  # Hugging Face ZeroGPU: heavy functions ask for a GPU only while they run.
    import spaces  # type: ignore

    gpu: Callable[[Callable], Callable] = spaces.GPU
    gpu_unlearn: Callable[[Callable], Callable] = spaces.GPU(duration=UNLEARN_GPU_SECONDS)
except ImportError:  # not on a Space: the decorators do nothing
    def gpu(fn: Callable) -> Callable:
        """Off a Space: the function itself, unwrapped."""
        return fn

    gpu_unlearn = gpu


def lib():
    """guide_core's model registry and metrics modules, as (registry, metrics), imported on first use."""
    from guide_core import metrics, registry

    return registry, metrics


# ---------------------------------------------------------------------------------------------------------------------
# Per-model state shared by all sessions, behind one lock.
_BUNDLES: dict[str, Any] = {}
_SAMPLES: dict[str, torch.Tensor] = {}
_BUNDLE_LOCK = threading.Lock()


def get_bundle(name: str | None):
    """One read-only ModelBundle per model name, shared by all sessions (G_s is frozen; sessions copy it to unlearn)."""
    registry, _ = lib()
    if not name:
        raise gr.Error("Pick a model first.")
    with _BUNDLE_LOCK:
        if name not in _BUNDLES:
            try:
                _BUNDLES[name] = registry.load_bundle(name, device=pick_device())
            except (FileNotFoundError, RuntimeError, ValueError, KeyError) as error:
                raise gr.Error(f"Model {name!r} cannot be loaded: {error}") from None
        return _BUNDLES[name]


def samples(bundle) -> torch.Tensor:
    """The fixed cloud of w = mapping(z) drawn once per model for the UFO picture."""
    with _BUNDLE_LOCK:
        if bundle.name not in _SAMPLES:
            z = torch.randn(UFO_SAMPLES, bundle.z_dim, generator=torch.Generator().manual_seed(0))
            _SAMPLES[bundle.name] = bundle.map(bundle.G, z).cpu()
        return _SAMPLES[bundle.name]


# ---------------------------------------------------------------------------------------------------------------------
# Session guards: per-visitor state lives in demo/session.py; the handlers take it and hand it back.

def need_source(session: StudioSession | None) -> StudioSession:
    """The session, which must list at least one identity."""
    if session is None or not session.identities:
        raise gr.Error("Upload a photo (or pick an example) first: there is no source identity yet.")
    return session


def need_unlearned(session: StudioSession | None) -> StudioSession:
    """The session, which must hold an unlearned generator."""
    session = need_source(session)
    if session.generator_u is None:
        raise gr.Error("Run unlearning first: this session has no unlearned generator yet.")
    return session


# ---------------------------------------------------------------------------------------------------------------------
# Photos in.

def load_photo(path: str | Path | None):
    """Decode an upload with guide_core.faces.load_image (size limit before decoding, truncation, EXIF, modes).

    Its FaceError messages are written for the person who uploaded the photo, so the UI shows them verbatim.
    """
    from guide_core.faces import FaceError, load_image

    if path is None:
        raise gr.Error("No file was uploaded.")
    try:
        return load_image(path)
    except FaceError as error:
        # The server's upload path means nothing to the visitor: name the file as they know it.
        raise gr.Error(f"{Path(path).name}: {str(error).replace(str(path), 'the file')}") from None


def align(bundle, photo: Image.Image):
    """Face detection + crop of the bundle's world.

    Released models align with guide_core.faces.align_face (EG3D's crop) or guide_core.faces_ffhq.align_face_ffhq
    (FFHQ's, for StyleGAN2): their bundle's aligner keeps only the crop, so they are called here directly and the page
    can also show the detected box; other worlds use their bundle's own aligner (the default world's photos are
    already aligned renders).
    """
    from guide_core.faces import FaceError, align_face
    from guide_core.faces_ffhq import align_face_ffhq
    from guide_core.released import EG3D_MODELS
    from guide_core.sg2 import SG2_MODELS

    try:
        if bundle.name in EG3D_MODELS:
            return align_face(photo)
        if bundle.name in SG2_MODELS:
            return align_face_ffhq(photo, bundle.encoder_resolution)
        return bundle.align(photo)
    except (FaceError, ValueError, RuntimeError) as error:
        raise gr.Error(f"No usable face in this photo: {error}") from None


def crop_of(aligned) -> Image.Image:
    """The aligned crop as an image, whichever aligner made it."""
    return aligned.image if hasattr(aligned, "image") else aligned


def invert(bundle, aligned) -> torch.Tensor:
    """The encoder's absolute code w_u for an aligned crop.

    The encoder plays GOAE's role; on the default model it is the world's small encoder.
    """
    try:
        return bundle.invert(crop_of(aligned))[0].detach().cpu()
    except RuntimeError as error:
        raise gr.Error(str(error)) from None


def photo_tensor(bundle, aligned) -> torch.Tensor:
    """The photo as a [-1, 1] tensor at the generator's output size, for identity comparison and the audit."""
    from guide_core.bundle import pil_to_tensor

    return pil_to_tensor(crop_of(aligned))


# ---------------------------------------------------------------------------------------------------------------------
# Seam functions: one line each into guide_core, so the handlers read as the flow of the paper.

def as_codes(w: torch.Tensor) -> torch.Tensor:
    """A code as [N, num_ws, 512]."""
    return w.unsqueeze(0) if w.ndim == 2 else w


def render(bundle, G, w: torch.Tensor, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> torch.Tensor:
    """Renders of generator G at codes [N, num_ws, 512] from one camera: images in [-1, 1] (bundle.render)."""
    return bundle.render(G, as_codes(w).to(bundle.device), math.radians(float(yaw_deg)), math.radians(float(pitch_deg)))


def show(images: torch.Tensor) -> list[np.ndarray]:
    """[-1, 1] image tensors -> uint8 HxWx3 for display, with guide's own conversion.

    Renders of small worlds are enlarged with nearest-neighbour (every generated pixel stays visible as a block) so the
    page can show them.
    """
    shown = []
    for image in images:
        pixels = to_uint8(image)
        factor = -(-DISPLAY_MIN_SIDE // max(pixels.shape[:2]))
        shown.append(pixels.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else pixels)
    return shown


def embed(bundle, images: torch.Tensor) -> torch.Tensor:
    """Unit identity embeddings (the metric network: CurricularFace role) of [-1, 1] images."""
    with torch.no_grad():
        return bundle.id_metric_net.embed(images.to(bundle.device)).cpu()


def source_record(identity: Identity) -> dict[str, Any]:
    """run.json's record of an identity (guide_core.runs.source_record).

    The uploaded photo is named by its file stem and SHA-256 only (its server path means nothing outside this session),
    its other photos with their codes.
    """
    from guide_core import runs

    others = [({"name": Path(o.name).stem, "sha256": o.sha256, "path": None}, o.w) for o in identity.others]
    return runs.source_record(identity.name, identity.sha256, None, others)
