"""The two seams of the engine: a generator family behind the Backend protocol, a method behind the Method protocol.

A 2D backend (no camera; the local loss compares images, as GUIDE-SG2 does, App. A.7) and a method registered from
outside the package both run through the unchanged loop.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from guide_core import runs
from guide_core.backends import Backend, EG3DBackend
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning, available_methods, make_method, register_method
from guide_core.engine.draws import sample_draws
from guide_core.engine.losses import LossNets, ltu_losses
from guide_core.engine.method import _METHODS
from guide_core.engine.reference import ltu_losses_reference
from guide_core.methods.guide import GuideMethod
from tests.test_guide import bundle, w_u  # noqa: F401  (the small random world and its source code)
from tests.util import assert_close

SHORT = dict(lr=3e-3, iters=3, preview_every=0, deterministic_render=True, n_adj=1, n_glob=1)


class FrontalImageBackend(EG3DBackend):
    """A 2D generator made of the small EG3D bundle: always the frontal view, no camera; structure = the image."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.name, self.has_camera = "frontal-2d", False
        self.cameras_seen: list[object] = []
        self.frontal = super().camera(0.0, 0.0)

    def camera(self, yaw, pitch, device="cpu"):
        return None

    def synthesize(self, G, ws, camera, noise_mode="const", deterministic=True):
        self.cameras_seen.append(camera)
        c = self.frontal.to(ws.device).expand(ws.shape[0], -1)
        return G.synthesis(ws, c, noise_mode=noise_mode, deterministic=True)["image"]

    def structure(self, G, ws, noise_mode="const"):
        return self.synthesize(G, ws, None, noise_mode)

    def render_structure(self, G, structure, ws, camera, settings):
        self.cameras_seen.append(camera)
        return structure


@pytest.fixture(scope="module")
def flat(bundle):
    return dataclasses.replace(bundle, backend=FrontalImageBackend(cond_c=bundle.cond_c))


def test_the_eg3d_backend_satisfies_the_protocol(bundle):
    assert isinstance(bundle.backend, Backend) and isinstance(FrontalImageBackend(), Backend)
    assert bundle.has_camera and bundle.camera(0.0, 0.0).shape == (1, 25)


def test_a_2d_backend_unlearns_through_the_same_loop_without_a_camera(flat, w_u):
    assert not flat.has_camera and flat.camera(0.3, -0.2) is None
    flat.backend.cameras_seen.clear()
    run = Unlearning(flat, w_u, cfg=LTUConfig(**SHORT)).run_all()
    assert run.completed and all(torch.isfinite(torch.tensor(h["total"])) for h in run.history)
    assert flat.backend.cameras_seen and all(c is None for c in flat.backend.cameras_seen)
    # the local loss's L2 term compared images: the structure is the render itself
    assert run.structure_t.shape == flat.render(flat.G, run.w_t).shape
    changed = [name for name, p in run.G_u.named_parameters()
               if not torch.equal(p, dict(flat.G.named_parameters())[name])]
    assert changed and all(name.startswith(flat.backend.trainable_prefix) for name in changed)
    with torch.no_grad():
        moved = (flat.render(run.G_u, w_u) - flat.render(flat.G, w_u)).abs().max()
    assert moved > 0


def test_the_batched_losses_equal_the_one_at_a_time_reference_on_a_2d_backend(flat, w_u):
    cfg = LTUConfig(**{**SHORT, "n_adj": 2, "n_glob": 2})
    run = Unlearning(flat, w_u, cfg=cfg)
    nets = LossNets(flat.perceptual, flat.id_loss_net, flat.backend)
    draws = sample_draws(torch.Generator().manual_seed(0), cfg, 1, flat.z_dim)
    batched = ltu_losses(run.G_u, flat.G, run.w_u, run.w_t, run._target_structure(), draws, nets, cfg, None)[1]
    reference = ltu_losses_reference(run.G_u, flat.G, run.w_u, run.w_t, draws, nets, cfg, None)[1]
    for key in ("total", "local", "adjacency", "global"):
        assert_close(batched[key], reference[key], 1e-5, key)


class MeanTargetMethod(GuideMethod):
    """GUIDE with the paper's "average" baseline target: every identity is pulled to the mean face."""

    name = "mean-target"

    def targets(self, bundle, w_u, cfg):
        return bundle.w_avg_code().expand_as(w_u).clone()


@pytest.fixture
def mean_target():
    register_method("mean-target", MeanTargetMethod, "pull to the mean face")
    yield
    _METHODS.pop("mean-target", None)


def test_a_registered_method_runs_in_the_loop_and_is_recorded(bundle, w_u, mean_target, tmp_path):
    assert "mean-target" in available_methods() and "guide" in available_methods()
    run = Unlearning(bundle, w_u, cfg=LTUConfig(**SHORT), method="mean-target").run_all()
    assert torch.equal(run.w_t[0], bundle.w_avg_code()) and run.completed
    runs.save_run(tmp_path / "run", run)
    assert runs.read_run(tmp_path / "run")["method"] == "mean-target"


def test_unknown_methods_fail_loudly_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown method 'nope'; known methods: .*guide"):
        make_method("nope")


def test_a_run_saved_before_methods_were_recorded_reads_as_guide(bundle, w_u, tmp_path):
    run = Unlearning(bundle, w_u, cfg=LTUConfig(**{**SHORT, "iters": 1})).run_all()
    runs.save_run(tmp_path / "run", run)
    path = tmp_path / "run" / runs.RUN_JSON
    record = json.loads(path.read_text())
    assert record["method"] == "guide"
    del record["method"]
    path.write_text(json.dumps(record))
    assert runs.read_run(tmp_path / "run")["method"] == "guide"
    G_u = runs.load_run(tmp_path / "run", bundle)
    assert all(torch.equal(a, b) for a, b in zip(G_u.state_dict().values(), run.G_u.state_dict().values()))


def test_a_chain_needs_the_codes_its_earlier_runs_forgot(bundle, w_u, tmp_path):
    first = Unlearning(bundle, w_u, cfg=LTUConfig(**{**SHORT, "iters": 1})).run_all()
    runs.save_run(tmp_path / "run1", first)
    G_1 = runs.load_run(tmp_path / "run1", bundle)
    link = runs.base_run_record(tmp_path / "run1", runs.read_run(tmp_path / "run1"), G_1)
    with pytest.raises(ValueError, match="forgotten=guide_core.runs.forgotten_codes"):
        Unlearning(bundle, w_u, cfg=LTUConfig(**SHORT), base=G_1, base_run=link)
    forgotten = runs.forgotten_codes(link)
    assert torch.equal(forgotten[0], first.w_u.cpu()) and torch.equal(forgotten[1], first.w_t.cpu())
