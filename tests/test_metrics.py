# Evaluation metrics on the small random EG3D world: Frechet distance math and ID / ID_others / FID_pre / dFID_real
# behaviour and determinism (the erasure audit: tests/test_audit.py).
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from guide_core import metrics
from guide_core.backends import EG3DBackend

TRAINABLE_PREFIX = EG3DBackend.trainable_prefix
from tests.test_guide import bundle, short_run, w_u  # noqa: F401  (module-scoped fixtures shared with the engine tests)
from tests.util import assert_close


# A copy of G_s with its synthesis backbone nudged: a cheap stand-in for "some G_u" where only determinism matters.
@pytest.fixture(scope="module")
def nudged(bundle):  # noqa: F811
    G = copy.deepcopy(bundle.G)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.startswith(TRAINABLE_PREFIX):
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return G


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    expected = 8.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert abs(metrics.frechet_distance(mu1, s1, mu2, s2) - expected) < 1e-9
    assert abs(metrics.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
    with pytest.raises(ValueError, match="do not match"):
        metrics.frechet_distance(mu1, s1, np.zeros(3), np.eye(3))


def test_fid_grows_with_a_shift():
    rng = np.random.RandomState(0)
    a, b = rng.randn(400, 4), rng.randn(400, 4)
    same, shifted = metrics.fid_from_features(a, b), metrics.fid_from_features(a, b + 1.0)
    assert same < 0.2 and abs(shifted - 4.0) < 0.6, (same, shifted)


def test_id_of_an_unchanged_generator_is_one(bundle, w_u):  # noqa: F811
    sims = metrics.id_similarity(bundle, bundle.G, bundle.G, w_u)
    assert_close(sims, torch.ones(1), 1e-5, "ID(G_s, G_s)")
    assert len(metrics.view_yaws()) == 11 and abs(float(metrics.view_yaws()[-1]) - np.pi / 12) < 1e-6


def test_id_drops_for_the_unlearned_identity_only(bundle, w_u, short_run):  # noqa: F811
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        others = bundle.G.mapping(torch.randn(4, 512, generator=gen), bundle.cond_c.expand(4, -1))
    id_source = float(metrics.id_similarity(bundle, bundle.G, short_run.G_u, w_u)[0])
    id_random = metrics.id_similarity(bundle, bundle.G, short_run.G_u, others)
    assert id_source < float(id_random.min()) - 0.01, (id_source, id_random.tolist())


def test_evaluate_is_deterministic_and_complete(bundle, w_u, nudged, tmp_path):  # noqa: F811
    real = metrics.sample_features(bundle, bundle.G, 12, seed=42)
    np.savez(tmp_path / "real.npz", mu=real.mean(0), sigma=np.cov(real, rowvar=False))
    others = w_u + 0.1
    first = metrics.evaluate(bundle, nudged, w_u, others, n_fid=12, seed=0, real_stats=tmp_path / "real.npz")
    metrics._SOURCE_FEATURES.clear()  # the second evaluation recomputes everything
    second = metrics.evaluate(bundle, nudged, w_u, others, n_fid=12, seed=0, real_stats=tmp_path / "real.npz")
    assert first.to_dict() == second.to_dict()
    values = first.to_dict()
    assert all(isinstance(values[k], float) for k in ("id", "id_others", "fid_pre", "delta_fid_real")), values
    assert values["fid_pre"] > 0 and values["feature_note"] == bundle.feature_note
    other_seed = metrics.evaluate(bundle, nudged, w_u, n_fid=12, seed=1)
    assert other_seed.fid_pre != first.fid_pre and other_seed.id_others is None


def test_fid_of_an_unchanged_generator(bundle):  # noqa: F811
    assert abs(metrics.fid_pre(bundle, bundle.G, n=10, seed=0)) < 1e-6
    stats = metrics.feature_statistics(metrics.sample_features(bundle, bundle.G, 10, seed=5))
    assert metrics.frechet_distance(*stats, *stats) == pytest.approx(0.0, abs=1e-6)


def test_real_stats_files(tmp_path):
    np.save(tmp_path / "feat.npy", np.random.RandomState(0).randn(10, 3))
    mu, sigma = metrics.load_real_stats(tmp_path / "feat.npy")
    assert mu.shape == (3,) and sigma.shape == (3, 3)
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        metrics.load_real_stats(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        metrics.load_real_stats(tmp_path / "none.npz")


def test_metrics_without_a_feature_network(bundle, w_u):  # noqa: F811
    import dataclasses
    bare = dataclasses.replace(bundle, feature_net=None)
    result = metrics.evaluate(bare, bundle.G, w_u, n_fid=10)
    assert result.fid_pre is None and result.delta_fid_real is None and result.id == pytest.approx(1.0, abs=1e-5)
    assert any("no feature network" in note for note in result.notes)
