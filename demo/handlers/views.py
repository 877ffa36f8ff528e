"""The Multi-view and Identity-clusters tabs: before/after at any camera, other photos, the orbit, and the t-SNE.

Before is the original generator G_s, after this session's unlearned G_u; the orbit measures identity per view, the
t-SNE projects identity embeddings of both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch

from demo import plots
from demo.handlers.common import (align, embed, get_bundle, gpu, invert, load_photo, need_source, need_unlearned,
                                  photo_tensor, render, show)
from demo.session import OtherPhoto, StudioSession

# Multi-view check: the orbit strip spans the paper's evaluation range of yaw (±π/12, Sec. 4.1) and a little more.
ORBIT_YAWS_DEG = (-30.0, -15.0, -7.5, 0.0, 7.5, 15.0, 30.0)
# Identity clusters: how many other identities and views per identity the t-SNE shows.
CLUSTER_OTHERS = 4
CLUSTER_YAWS_DEG = (-20.0, -10.0, 0.0, 10.0, 20.0)


class ViewOut(NamedTuple):
    """The renders at one camera, in the order the layout lists the outputs."""
    before: np.ndarray | None
    after: np.ndarray | None
    others: list


class OrbitOut(NamedTuple):
    """The orbit strips and the identity-per-view plot."""
    before_strip: np.ndarray
    after_strip: np.ndarray
    id_plot: Any


def views_of(bundle, yaws: tuple[float, ...]) -> tuple[float, ...]:
    """The yaws to render: all of them for a generator with a camera, the one front view for a 2D generator."""
    return yaws if bundle.has_camera else (0.0,)


def pose_controls(model: str):
    """The yaw / pitch sliders: live for a generator with a camera; for a 2D one disabled, with the reason."""
    try:
        has_camera = get_bundle(model).has_camera
    except gr.Error:  # the model cannot load: the status line says why; leave the sliders as they are
        return gr.update(), gr.update()
    if has_camera:
        return gr.update(interactive=True, info=None), gr.update(interactive=True, info=None)
    reason = f"{model} is a 2D generator: it has no camera, so the views show the front view only"
    return gr.update(interactive=False, value=0, info=reason), gr.update(interactive=False, value=0, info=reason)


def render_view(yaw_deg: float, pitch_deg: float, session: StudioSession | None) -> ViewOut:
    """One camera: before (G_s) and after (G_u) of the selected identity.

    The gallery holds every other listed identity and every other photo, each labelled by name. Light: one render
    batch per generator.
    """
    if session is None or not session.identities:
        return ViewOut(None, None, [])
    bundle = get_bundle(session.model)
    first = session.current or session.identities[-1]
    people = [first] + [i for i in session.identities if i is not first]
    labels = [f"{i.name}" for i in people[1:]] + [f"{i.name} · {o.name}" for i in people for o in i.others]
    codes = torch.stack([i.w_u for i in people] + [o.w for i in people for o in i.others])
    before = show(render(bundle, bundle.G, codes, yaw_deg, pitch_deg))
    after = (show(render(bundle, session.generator_u, codes, yaw_deg, pitch_deg))
             if session.generator_u is not None else None)
    gallery = []
    for k, label in enumerate(labels, start=1):
        gallery.append((before[k], f"{label}: before"))
        if after is not None:
            gallery.append((after[k], f"{label}: after"))
    return ViewOut(before[0], after[0] if after is not None else None, gallery)


@gpu
def add_others(paths: list[str] | None, session: StudioSession | None):
    """Other photos of the selected person (ID_others in the paper), inverted once.

    The gallery shows them before/after at the front view.
    """
    from guide_core.weights import sha256_file

    session = need_source(session)
    identity = session.current or session.identities[-1]
    bundle = get_bundle(session.model)
    added, problems = [], []
    for path in paths or []:
        name = Path(path).name
        try:
            aligned = align(bundle, load_photo(path))
            identity.others.append(OtherPhoto(name, sha256_file(Path(path)), invert(bundle, aligned), aligned))
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


@gpu
def orbit(session: StudioSession | None) -> OrbitOut:
    """Orbit strips before/after (one row per listed identity, in list order) and identity similarity per view.

    Each view is compared with that identity's aligned photo (the ID metric's idea, per view), and each other photo's
    views after unlearning with that photo.
    """
    session = need_unlearned(session)
    bundle = get_bundle(session.model)
    people = session.identities
    codes = torch.stack([i.w_u for i in people])
    # [N, yaws, 3, H, W]: every identity at every yaw, one render batch per yaw and generator.
    yaws = views_of(bundle, ORBIT_YAWS_DEG)
    before = torch.stack([render(bundle, bundle.G, codes, yaw) for yaw in yaws], dim=1)
    after = torch.stack([render(bundle, session.generator_u, codes, yaw) for yaw in yaws], dim=1)
    references = embed(bundle, torch.cat([photo_tensor(bundle, i.aligned) for i in people]))
    n_yaws = len(yaws)
    sim_before = (embed(bundle, before.flatten(0, 1)).view(len(people), n_yaws, -1) * references[:, None]).sum(-1)
    sim_after = (embed(bundle, after.flatten(0, 1)).view(len(people), n_yaws, -1) * references[:, None]).sum(-1)
    series = {}
    for k, identity in enumerate(people):
        series[f"before: G_s(w_u) of {identity.name} vs photo"] = sim_before[k].tolist()
        series[f"after: G_u(w_u) of {identity.name} vs photo"] = sim_after[k].tolist()
        for other in identity.others:
            ref = embed(bundle, photo_tensor(bundle, other.aligned))
            views = torch.cat([render(bundle, session.generator_u, other.w, yaw) for yaw in yaws])
            similarity = (embed(bundle, views) @ ref.T).squeeze(1)
            series[f"after: {identity.name} · {other.name} vs its photo"] = similarity.tolist()

    def strips(images: torch.Tensor) -> np.ndarray:
        """[N, yaws, 3, H, W] -> one image: a row of views per identity."""
        return np.concatenate([np.concatenate(show(row), axis=1) for row in images], axis=0)

    return OrbitOut(strips(before), strips(after), plots.identity_per_view(yaws, series))


@gpu
def identity_clusters(session: StudioSession | None):
    """Identity clusters: a t-SNE of identity embeddings before and after unlearning.

    Every listed identity (and its other photos) and CLUSTER_OTHERS random people, several views each, rendered by G_s
    and by G_u, projected together. Erasure = each listed identity's "after" points leave its "before" cluster while
    the other people's clusters stay put.
    """
    session = need_unlearned(session)
    bundle = get_bundle(session.model)
    z = torch.randn(CLUSTER_OTHERS, bundle.z_dim, generator=torch.Generator().manual_seed(1234))
    people = bundle.map(bundle.G, z).cpu()
    listed = [w for i in session.identities for w in [i.w_u, *(o.w for o in i.others)]]
    codes = torch.cat([torch.stack(listed), people])
    names = ([i.name for i in session.identities for _ in range(1 + len(i.others))]
             + [f"random person {k + 1}" for k in range(CLUSTER_OTHERS)])
    images, labels, generators = [], [], []
    for generator_name, G in (("before", bundle.G), ("after", session.generator_u)):
        for yaw in views_of(bundle, CLUSTER_YAWS_DEG):
            images.append(render(bundle, G, codes, yaw))
            labels += names
            generators += [generator_name] * len(names)
    return plots.identity_clusters(embed(bundle, torch.cat(images)), labels, generators)
