"""Plotly figures of the studio: latent geometry of UFO, loss curves, per-view identity, identity clusters, the
attacker ladder.

Every number drawn here comes from guide_core; this module only projects it to 2-D and lays it out.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE

# Colours shared by all figures so that "source", "target" and "mean" read the same everywhere.
SOURCE_COLOUR = "#d62728"
TARGET_COLOUR = "#1f77b4"
MEAN_COLOUR = "#2ca02c"
SAMPLE_COLOUR = "rgba(120,120,120,0.35)"


def _rows(codes) -> np.ndarray:
    """Turn [N, num_ws, 512] (or one code [num_ws, 512]) latents into one row per code, the whole code as one vector.

    UFO measures distances over the whole code (Seo et al. 2024 Sec. 3.2), so the projection should too.
    """
    array = np.asarray(codes.detach().cpu() if hasattr(codes, "detach") else codes, dtype=np.float64)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 1:
        array = array[None]
    return array.reshape(array.shape[0], -1)


def _figure() -> go.Figure:
    """A figure without plotly's per-update validation.

    Validating a 300-point figure costs ~0.1 s, the figures here are built from fixed code paths (their content is
    checked by tests/test_demo_handlers.py), and the d slider is live.
    """
    return go.Figure(_validate=False)


def _layout(fig: go.Figure, title: str, height: int = 360, **axes) -> go.Figure:
    """The studio's common layout, set in one update.

    Each plotly update call re-validates the figure, and the d slider's budget is < 1 s.
    """
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=10, t=40, b=70), template="plotly_white",
                      legend=dict(orientation="h", yanchor="top", y=-0.3), **axes)
    return fig


def empty_figure(message: str) -> go.Figure:
    """A figure that says why it is empty instead of showing blank axes."""
    fig = _figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height=260)


class LatentPlane:
    """The plane the UFO picture is drawn in.

    Its first axis is UFO's own direction (w_u − w̄)/‖w_u − w̄‖, so the extrapolation line is the horizontal axis and
    distances along it are true latent distances (w_t sits at −d, w_u at +‖w_u − w̄‖); its second axis is the first
    principal component of the sampled w with that direction removed, so the cloud shows how the latent space spreads
    around the line. Fitted once per source; the d slider only transforms.
    """

    def __init__(self, samples, w_avg, w_u):
        rows = _rows(samples)
        self.center = _rows(w_avg)[0]
        direction = _rows(w_u)[0] - self.center
        self.source_distance = float(np.linalg.norm(direction))
        self.direction = direction / self.source_distance
        offsets = rows - self.center
        residual = offsets - np.outer(offsets @ self.direction, self.direction)
        pca = PCA(n_components=1, random_state=0).fit(residual)
        self.orthogonal = pca.components_[0]
        self.explained = float(pca.explained_variance_ratio_[0])
        self.samples_xy = self.transform(samples)

    def transform(self, codes) -> np.ndarray:
        """Codes -> [N, 2] coordinates in the plane."""
        offsets = _rows(codes) - self.center
        return np.stack([offsets @ self.direction, offsets @ self.orthogonal], axis=1)


def ufo_geometry(plane: LatentPlane, w_avg, w_u, line: Sequence, line_d: Sequence[float], w_t, d: float) -> go.Figure:
    """The UFO picture (Seo et al. 2024, Fig. 3).

    Sampled w, the mean w̄, the source w_u, the extrapolation line {ufo_target(w_u, w̄, d)} and the current target w_t.
    """
    xy = plane.samples_xy
    mean_xy = plane.transform(w_avg)[0]
    source_xy = plane.transform(w_u)[0]
    target_xy = plane.transform(w_t)[0]
    line_xy = plane.transform(np.stack([_rows(code)[0] for code in line]).reshape(len(line), 1, -1))
    fig = _figure()
    fig.add_trace(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers", name="sampled w = mapping(z)",
                             marker=dict(size=5, color=SAMPLE_COLOUR)))
    fig.add_trace(go.Scatter(x=line_xy[:, 0], y=line_xy[:, 1], mode="lines", name="w̄ − d·(w_u − w̄)/‖w_u − w̄‖",
                             line=dict(color=TARGET_COLOUR, dash="dot", width=3),
                             customdata=np.asarray(line_d), hovertemplate="d = %{customdata:.1f}<extra></extra>"))
    for (x, y), name, colour, symbol in (
        (mean_xy, "w̄ (mean face, d = 0)", MEAN_COLOUR, "diamond"),
        (source_xy, f"w_u (source, ‖w_u − w̄‖ = {plane.source_distance:.1f})", SOURCE_COLOUR, "star"),
        (target_xy, f"w_t (target, d = {d:g})", TARGET_COLOUR, "x"),
    ):
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=name,
                                 marker=dict(size=14, color=colour, symbol=symbol, line=dict(width=1, color="black"))))
    return _layout(fig, "UFO: latent geometry", height=420,
                   xaxis=dict(title="along (w_u − w̄)/‖w_u − w̄‖  (w_t at −d)"),
                   yaxis=dict(title=f"PC1 of sampled w ⟂ that direction ({plane.explained:.0%})"))


def loss_curves(history: Mapping[str, Sequence[float]], steps: Sequence[int]) -> go.Figure:
    """Loss curves of Latent Target Unlearning as they stream in: one line per loss term (Seo et al. 2024, Eq. 4–7)."""
    if not steps:
        return empty_figure("Loss curves appear here while unlearning runs.")
    fig = _figure()
    for name, values in history.items():
        fig.add_trace(go.Scatter(x=list(steps)[: len(values)], y=list(values), mode="lines", name=name))
    fig.update_xaxes(title="iteration")
    fig.update_yaxes(title="loss", type="log")
    return _layout(fig, "Latent Target Unlearning losses")


def identity_per_view(yaws_deg: Sequence[float], series: Mapping[str, Sequence[float]]) -> go.Figure:
    """Identity similarity to each source photo per camera view, before (G_s) and after (G_u) unlearning."""
    fig = _figure()
    for name, values in series.items():
        dash = "solid" if name.startswith("before") else "dash"
        fig.add_trace(go.Scatter(x=list(yaws_deg), y=list(values), mode="lines+markers", name=name,
                                 line=dict(dash=dash)))
    fig.add_hline(y=0.0, line=dict(color="grey", width=1))
    fig.update_xaxes(title="yaw (degrees)")
    fig.update_yaxes(title="identity cosine similarity to the photo", range=[-1.0, 1.0])
    return _layout(fig, "Identity similarity per view")


def ladder_chart(values: Mapping[str, Any] | None) -> go.Figure:
    """The attacker ladder: tier on the x axis (weakest to strongest), the forgotten person's best identity in G_s and
    in G_u and the strangers' in G_u as lines, the impostor threshold drawn; held tiers are marked."""
    if not values or not values.get("tiers"):
        return empty_figure("The attacker ladder appears here when the report runs the audit.")
    tiers = list(values["tiers"])
    rows = [values["tiers"][t] for t in tiers]
    fig = _figure()
    for key, label, style in (("best_id_before", "forgotten, G_s", dict(color="#7f7f7f")),
                              ("best_id_after", "forgotten, G_u", dict(color="#d62728", width=3)),
                              ("stranger_after", "strangers, G_u", dict(color="#1f77b4", dash="dash"))):
        fig.add_trace(go.Scatter(x=tiers, y=[r[key] for r in rows], mode="lines+markers", name=label, line=style))
    fig.add_trace(go.Scatter(x=[t for t, r in zip(tiers, rows) if r["held"]],
                             y=[r["best_id_after"] for r in rows if r["held"]], mode="markers", name="held",
                             marker=dict(symbol="star", size=14, color="#2ca02c")))
    fig.add_hline(y=values["threshold"], line=dict(color="black", dash="dot"),
                  annotation_text=f"impostor threshold {values['threshold']:.2f}")
    fig.update_xaxes(title="attacker tier (weakest → strongest)")
    fig.update_yaxes(title="best identity similarity to the photo", range=[-1.0, 1.0])
    return _layout(fig, "Attacker ladder" + (f": {values.get('strongest_held') or 'no tier'} held" if values else ""))


def identity_clusters(embeddings, labels: Sequence[str], generators: Sequence[str], seed: int = 0) -> go.Figure:
    """t-SNE of identity embeddings: one scatter per generator (before / after), coloured by identity.

    Erasing the sources shows as their clusters dissolving while the other clusters stay put.
    """
    rows = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings, dtype=np.float64)
    perplexity = float(max(2.0, min(30.0, (len(rows) - 1) / 3.0)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(rows)
    fig = _figure()
    symbols = {name: symbol for name, symbol in zip(dict.fromkeys(generators), ("circle", "x", "diamond", "square"))}
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    colours = {name: palette[i % len(palette)] for i, name in enumerate(dict.fromkeys(labels))}
    for generator in dict.fromkeys(generators):
        for identity in dict.fromkeys(labels):
            mask = np.array([g == generator and l == identity for g, l in zip(generators, labels)])
            if not mask.any():
                continue
            fig.add_trace(go.Scatter(x=xy[mask, 0], y=xy[mask, 1], mode="markers", name=f"{identity} · {generator}",
                                     marker=dict(size=9, color=colours[identity], symbol=symbols[generator],
                                                 line=dict(width=1, color="black"))))
    fig.update_xaxes(title="t-SNE 1")
    fig.update_yaxes(title="t-SNE 2")
    return _layout(fig, "Identity clusters (t-SNE of identity embeddings)", height=460)
