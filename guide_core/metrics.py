"""Evaluation of an unlearning (GUIDE Sec. 5, "Evaluation metrics") and an erasure audit that goes beyond the paper.
  ID          identity cosine between pre- and post-unlearning renders of w_u over 11 yaw views in +-pi/12 at pitch
              -0.2 (the official evaluate_id.py / unlearn.py views), metric network = CurricularFace role. Lower = the
              identity is gone.
  ID_others   the same for OTHER photos of the same person, inverted with the encoder: lower = the erasure
              generalises beyond the one photo used for unlearning.
  per identity  ID / ID_others of every identity a run (or a chain of runs) forgot, each against the root G_s.
  FID_pre     Frechet distance between G_s and G_u samples drawn from the same z and cameras (paper: 5,000 samples).
  dFID_real   FID(real, G_u) - FID(real, G_s) against a real-image statistics file {mu, sigma}.
  audit       guide_core.audit: attackers re-invert the source photo into G_s and into G_u; the best identity
              similarity to the photo they reach, before and after.
All draws come from seeded generators: two evaluations of the same run give identical numbers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from guide_core.identity import identity_similarity
from guide_core.progress import progress_bar
from guide_core.tables import Table, number

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

N_VIEWS = 11
# FID samples per generator: the paper's count on a GPU; on a CPU a count that finishes in minutes, not hours.
N_FID_PAPER = 5000
N_FID_CPU_SMALL = 500   # models rendering at most 128 px (the embedded world)
N_FID_CPU_LARGE = 64    # full-size models (512 px EG3D): each sample costs seconds on a CPU
YAW_RANGE = math.pi / 12
PITCH = -0.2


def default_n_fid(bundle: "ModelBundle") -> int:
    """The FID sample count used when none is given: the paper's 5,000 on a GPU, fewer on a CPU (by output size)."""
    if torch.device(bundle.device).type != "cpu":
        return N_FID_PAPER
    return N_FID_CPU_SMALL if bundle.backend.resolution(bundle.G) <= 128 else N_FID_CPU_LARGE


def view_yaws(n_views: int = N_VIEWS, yaw_range: float = YAW_RANGE) -> torch.Tensor:
    """The official evaluation views: yaw = linspace(-pi/12, pi/12, 11), pitch -0.2 from frontal."""
    return torch.linspace(-yaw_range, yaw_range, n_views) if n_views > 1 else torch.zeros(1)


def render_views(bundle: "ModelBundle", G: torch.nn.Module, ws: torch.Tensor, yaws: torch.Tensor, pitch: float,
                 batch: int = 16, bar=None) -> torch.Tensor:
    """Renders of codes [N, num_ws, 512] at each view: [N * n_views, 3, H, W] (code-major), deterministic rendering."""
    codes = ws.repeat_interleave(len(yaws), dim=0)
    cams = bundle.camera(yaws, pitch)
    cams = None if cams is None else cams.repeat(ws.shape[0], 1)
    out = []
    with torch.no_grad():
        for i in range(0, codes.shape[0], batch):
            out.append(bundle.synthesize(G, codes[i:i + batch], None if cams is None else cams[i:i + batch]))
            if bar is not None:
                bar.update(len(out[-1]))
    return torch.cat(out)


def id_similarity(bundle: "ModelBundle", G_s: torch.nn.Module, G_u: torch.nn.Module, ws: torch.Tensor,
                  n_views: int = N_VIEWS, yaw_range: float = YAW_RANGE, pitch: float = PITCH,
                  progress: str | None = None) -> torch.Tensor:
    """Identity similarity per code between G_s and G_u renders over the evaluation views: [N] (mean over views)."""
    yaws = view_yaws(n_views, yaw_range) if bundle.has_camera else torch.zeros(1)  # a 2D generator has one view
    with progress_bar(2 * ws.shape[0] * len(yaws), progress or "", progress is not None, unit="img") as bar:
        before = render_views(bundle, G_s, ws, yaws, pitch, bar=bar)
        after = render_views(bundle, G_u, ws, yaws, pitch, bar=bar)
    with torch.no_grad():
        cos = identity_similarity(bundle.id_metric_net, before, after)
    return cos.view(ws.shape[0], len(yaws)).mean(dim=1).cpu()


def other_codes(source: dict[str, Any], device: torch.device | str = "cpu") -> torch.Tensor | None:
    """The codes of a run.json source's other photos [K, num_ws, 512], or None when it has none."""
    others = source.get("others") or []
    return torch.tensor([o["w"] for o in others], dtype=torch.float32, device=device) if others else None


def identity_rows(bundle: "ModelBundle", G_u: torch.nn.Module, identities: list[dict[str, Any]],
                  progress: bool = False) -> list[dict[str, Any]]:
    """ID and ID_others of every identity forgotten (run.json source records with w_u, as runs.chain_sources lists them
    for a chain), each against the root G_s: [{name, run, earlier, id, id_others, n_others}]. `earlier` marks the
    identities of earlier runs of a chain, which must stay forgotten.
    """
    codes = torch.tensor([s["w_u"] for s in identities], dtype=torch.float32, device=bundle.device)
    ids = id_similarity(bundle, bundle.G, G_u, codes, progress="ID renders" if progress else None).tolist()
    latest = max(s.get("run", 0) for s in identities)
    rows = []
    for source, value in zip(identities, ids):
        others = other_codes(source, bundle.device)
        id_others = None if others is None else float(id_similarity(
            bundle, bundle.G, G_u, others, progress=f"ID_others renders of {source['name']}" if progress else None
        ).mean())
        rows.append({"name": source["name"], "run": source.get("run", 0), "earlier": source.get("run", 0) < latest,
                     "id": value, "id_others": id_others, "n_others": 0 if others is None else len(others)})
    return rows


def identity_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of identity_rows: id = mean over the latest run's identities, id_others = mean over all
    their
    other photos (each photo counts once, as when they are pooled), plus the rows themselves.
    """
    latest = [r for r in rows if not r["earlier"]]
    n_others = sum(r["n_others"] for r in latest)
    return {"id": sum(r["id"] for r in latest) / len(latest),
            "id_others": (sum(r["id_others"] * r["n_others"] for r in latest if r["n_others"]) / n_others
                          if n_others else None),
            "per_identity": rows}


def sample_features(bundle: "ModelBundle", G: torch.nn.Module, n: int, seed: int = 0, batch: int = 16,
                    yaw_range: float = YAW_RANGE, pitch: float = PITCH, progress: str | None = None) -> np.ndarray:
    """Features of n generator samples: z ~ N(0, I) and yaw ~ U(-pi/12, pi/12) from a seeded generator (identical for
    G_s
    and G_u), mapping on the frontal camera with psi = 1, pitch -0.2 (official evaluate_fid.py).
    """
    if bundle.feature_net is None:
        raise RuntimeError(f"model {bundle.name!r} has no feature network: FID is not computable")
    if n < 2:
        raise ValueError(f"FID needs at least 2 samples, got n={n}")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, bundle.z_dim, generator=gen)
    yaw = (torch.rand(n, generator=gen) * 2 - 1) * yaw_range
    feats = []
    with torch.no_grad(), progress_bar(n, progress or "", progress is not None, unit="img") as bar:
        for i in range(0, n, batch):
            zb = z[i:i + batch].to(bundle.device)
            ws = bundle.map(G, zb, 1.0)
            images = bundle.synthesize(G, ws, bundle.camera(yaw[i:i + batch], pitch))
            feats.append(bundle.feature_net(images).double().cpu().numpy())
            if bar is not None:
                bar.update(len(zb))
    return np.concatenate(feats)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of features [n, F]."""
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between two Gaussians (Heusel et al. 2017): |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)."""
    import scipy.linalg

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                         f"{sigma2.shape} (different feature networks?)")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Near-singular product (few samples): regularise the diagonal, as the reference FID code does.
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.abs(covmean.imag).max():.3g} in sqrt(S1 S2)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets."""
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


def load_real_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Real-image statistics: an .npz with arrays mu and sigma, or an .npy of real features [n, F] (the official
    `ffhq_real_feat.npy`). Loaded without pickles.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"real-image statistics file {path} does not exist")
    if path.suffix == ".npy":
        features = np.load(path, allow_pickle=False)
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"{path} must hold real features [n >= 2, F], got shape {features.shape}")
        return feature_statistics(features.astype(np.float64))
    with np.load(path, allow_pickle=False) as data:
        missing = {"mu", "sigma"} - set(data.files)
        if missing:
            raise ValueError(f"{path} must hold arrays 'mu' and 'sigma' (missing: {', '.join(sorted(missing))})")
        return data["mu"], data["sigma"]


# G_s features are the same for every run of a model: computed once per (generator, n, seed) in a process.
_SOURCE_FEATURES: dict[tuple[int, str, int, int], np.ndarray] = {}


def source_features(bundle: "ModelBundle", n: int, seed: int, progress: bool = False) -> np.ndarray:
    """Features of the source generator G_s for FID (cached, see above)."""
    key = (id(bundle.G), bundle.name, n, seed)
    if key not in _SOURCE_FEATURES:
        _SOURCE_FEATURES[key] = sample_features(bundle, bundle.G, n, seed,
                                                progress="FID samples of G_s" if progress else None)
    return _SOURCE_FEATURES[key]


def unlearned_features(bundle: "ModelBundle", G_u: torch.nn.Module, n: int, seed: int,
                       progress: bool = False) -> np.ndarray:
    """Features of the unlearned generator G_u (never cached: its weights change between calls)."""
    return sample_features(bundle, G_u, n, seed, progress="FID samples of G_u" if progress else None)


def fid_pre(bundle: "ModelBundle", G_u: torch.nn.Module, n: int = N_FID_PAPER, seed: int = 0,
            progress: bool = False, features_u: np.ndarray | None = None) -> float:
    """FID_pre (GUIDE Sec. 5): G_s vs G_u on the same z and cameras.
    features_u: G_u's features when already computed (evaluate shares them with dFID_real).
    """
    if features_u is None:
        features_u = unlearned_features(bundle, G_u, n, seed, progress)
    return fid_from_features(source_features(bundle, n, seed, progress), features_u)


def delta_fid_real(bundle: "ModelBundle", G_u: torch.nn.Module, real_stats: str | Path, n: int = N_FID_PAPER,
                   seed: int = 0, progress: bool = False, features_u: np.ndarray | None = None) -> float:
    """dFID_real (GUIDE Sec. 5): FID(real, G_u) - FID(real, G_s); > 0 means G_u drifted away from real faces."""
    mu_r, sigma_r = load_real_stats(real_stats)
    if features_u is None:
        features_u = unlearned_features(bundle, G_u, n, seed, progress)
    fid_s = frechet_distance(mu_r, sigma_r, *feature_statistics(source_features(bundle, n, seed, progress)))
    fid_u = frechet_distance(mu_r, sigma_r, *feature_statistics(features_u))
    return fid_u - fid_s


@dataclass
class Metrics:
    """All metrics of one unlearning; None where a metric is not computable (no others, no feature net, no real stats).
    """
    id: float | None = None
    id_others: float | None = None
    fid_pre: float | None = None
    delta_fid_real: float | None = None
    n_fid: int = 0
    seed: int = 0
    feature_note: str = ""
    notes: list[str] = field(default_factory=list)
    per_identity: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the CLI's --json output and run.json's metrics)."""
        return asdict(self)

    def tables(self) -> list[Table]:
        """The headline metrics, then ID / ID_others of every identity forgotten (CLI and studio alike)."""
        headline = Table(("metric", "value"), [
            ("ID (lower = identity erased)", number(self.id)),
            ("ID_others (lower = erasure generalises)", number(self.id_others)),
            (f"FID_pre (lower = G_u close to G_s; {self.n_fid} samples)", number(self.fid_pre)),
            ("ΔFID_real (lower = no drift from real faces)", number(self.delta_fid_real))])
        rows = []
        for row in self.per_identity:
            photos = f" ({row['n_others']} photo{'s' if row['n_others'] != 1 else ''})" if row["n_others"] else ""
            rows.append((row["name"], f"run {row['run'] + 1}{' (earlier run)' if row['earlier'] else ''}",
                         number(row["id"]), number(row["id_others"]) + photos))
        return [headline, Table(("identity", "forgotten in", "ID", "ID_others"), rows,
                                title="per identity, against the original model")]

    def notes_text(self) -> list[str]:
        """What the numbers rest on: the FID features and the evaluation's notes."""
        return [f"FID features: {self.feature_note} (n = {self.n_fid}, seed {self.seed})", *self.notes]


def evaluate(bundle: "ModelBundle", G_u: torch.nn.Module, w_u: torch.Tensor | None = None,
             others: torch.Tensor | None = None, n_fid: int | None = N_FID_PAPER, seed: int = 0,
             real_stats: str | Path | None = None, progress: bool = False,
             identities: list[dict[str, Any]] | None = None) -> Metrics:
    """Evaluate G_u against the bundle's G_s: ID on w_u, ID_others on the other codes, FID_pre and dFID_real on n
    samples.
    identities: run.json source records (runs.chain_sources) instead of w_u / others: ID and ID_others per identity,
    the headline id / id_others over the latest run's. n_fid None: default_n_fid(bundle). progress: one tqdm bar on
    stderr per stage (renders, FID samples).
    """
    n_fid = default_n_fid(bundle) if n_fid is None else int(n_fid)
    metrics = Metrics(n_fid=n_fid, seed=seed, feature_note=bundle.feature_note)
    if identities is not None:
        summary = identity_summary(identity_rows(bundle, G_u, identities, progress))
        metrics.id, metrics.id_others, metrics.per_identity = summary["id"], summary["id_others"], summary["per_identity"]
    else:
        metrics.id = float(id_similarity(bundle, bundle.G, G_u, w_u.to(bundle.device),
                                         progress="ID renders" if progress else None).mean())
        if others is not None and len(others):
            metrics.id_others = float(id_similarity(bundle, bundle.G, G_u, others.to(bundle.device),
                                                    progress="ID_others renders" if progress else None).mean())
    if metrics.id_others is None:
        metrics.notes.append("id_others: no other photos of the person were given")
    if bundle.feature_net is None or n_fid < 2:
        metrics.notes.append("fid: no feature network" if bundle.feature_net is None else "fid: n_fid < 2")
        return metrics
    features_u = unlearned_features(bundle, G_u, n_fid, seed, progress)
    metrics.fid_pre = fid_pre(bundle, G_u, n_fid, seed, progress, features_u=features_u)
    stats = real_stats if real_stats is not None else bundle.real_stats
    if stats is not None:
        metrics.delta_fid_real = delta_fid_real(bundle, G_u, stats, n_fid, seed, progress, features_u=features_u)
    else:
        metrics.notes.append("delta_fid_real: no real-image statistics file for this model")
    return metrics
