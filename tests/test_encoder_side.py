# Encoder-side unlearning: after the generator, a copy of the inversion encoder learns to send the person's photos to
# their target while strangers' inversions stay; the run keeps the changed encoder tensors, the audit serves G_u with
# that encoder.
from __future__ import annotations

import pytest
import torch

from guide_core import ladder, runs, testing
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning
from guide_core.engine.encoder_side import augment, strangers_for_encoder
from tests.util import people_of


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    return testing.random_bundle("small", seed=0)


def photos_of(bundle, n: int, seed: int) -> torch.Tensor:
    return people_of(bundle, n, seed, yaw=0.1)  # turned a little, as photos are


def test_augment_keeps_the_photos_and_adds_mirrors_and_crops():
    photos = torch.rand(2, 3, 16, 16)
    views = augment(photos, torch.Generator().manual_seed(0))
    assert views.shape == (6, 3, 16, 16)
    assert torch.equal(views[:2], photos) and torch.equal(views[2:4], photos.flip(-1))


def test_the_encoder_learns_the_target_and_keeps_strangers(bundle, tmp_path):
    photo = photos_of(bundle, 1, 3)
    w_u = bundle.invert(photo)
    cfg = LTUConfig(iters=2, lr=3e-3, preview_every=0, encoder_steps=40, encoder_lr=3e-3, lambda_encoder_keep=1.0)
    job = Unlearning(bundle, w_u, cfg=cfg, photos=[photo]).run_all()
    assert job.encoder_u is not None and job.extra["encoder_unlearning"]["steps"] == 40
    with torch.no_grad():
        before = float((bundle.invert(photo) - job.w_t).norm())
        after = float((job.encoder_u(photo) - job.w_t).norm())
        strangers = strangers_for_encoder(bundle, 99)
        drift = float((job.encoder_u(strangers) - bundle.invert(strangers)).flatten(1).norm(dim=1).mean())
    assert after < 0.5 * before, (before, after)
    assert drift < 0.5 * before, drift
    # the bundle's own encoder is untouched
    assert torch.equal(bundle.invert(photo), w_u)
    runs.save_run(tmp_path / "r", job)
    reloaded = runs.load_encoder(tmp_path / "r", bundle)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(photo), job.encoder_u(photo))


def test_off_by_default_and_the_ladder_serves_g_u_with_the_run_encoder(bundle, tmp_path):
    photo = photos_of(bundle, 1, 5)
    plain = Unlearning(bundle, bundle.invert(photo), cfg=LTUConfig(iters=1, preview_every=0)).run_all()
    assert plain.encoder_u is None and not plain.method_tensors
    runs.save_run(tmp_path / "plain", plain)
    assert runs.load_encoder(tmp_path / "plain", bundle) is None
    cfg = LTUConfig(iters=1, preview_every=0, encoder_steps=30, encoder_lr=3e-3)
    job = Unlearning(bundle, bundle.invert(photo), cfg=cfg, photos=[photo]).run_all()
    budget = ladder.LadderBudget(samples=8, refine_steps=1, steps=1)
    strangers = photos_of(bundle, 2, 6)
    served = ladder.attack_ladder(bundle, job.G_u, photo, strangers, tiers=("encoder",), budget=budget,
                                  encoder_u=job.encoder_u).to_dict()["tiers"]["encoder"]
    bare = ladder.attack_ladder(bundle, job.G_u, photo, strangers, tiers=("encoder",), budget=budget
                                ).to_dict()["tiers"]["encoder"]
    assert served["best_id_before"] == pytest.approx(bare["best_id_before"])  # G_s keeps the original encoder
    assert served["best_id_after"] != pytest.approx(bare["best_id_after"], abs=1e-4)
