"""The 2D half of GUIDE (GUIDE-SG2, App. A.7) end to end on a small random StyleGAN2 world: the engine, the CLI
(unlearn, eval, audit, import) and the studio, for a generator without a camera."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from demo import handlers
from demo.handlers import common
from guide_core import registry, runs, testing
from guide_core.__main__ import main
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning
from guide_core.stylegan2 import TRAINABLE_PREFIXES

MODEL = "random-sg2-test"
FAST = ["--model", MODEL, "--device", "cpu", "--iters", "3", "--lr", "3e-3", "--preview-every", "0"]


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    return testing.random_bundle("sg2-small", seed=0)


@pytest.fixture(scope="module", autouse=True)
def registered(bundle):
    registry.register_model(MODEL, lambda device: bundle, "small random StyleGAN2 world for tests")
    common._BUNDLES.pop(MODEL, None)
    yield
    registry.unregister_model(MODEL)
    common._BUNDLES.pop(MODEL, None)


def make_photo(path, seed: int = 0, size: int = 64):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    pixels = np.stack([np.sin(6 * xx + rng.rand() * 3), np.cos(5 * yy + rng.rand() * 3), xx * yy], axis=-1)
    Image.fromarray(((pixels * 0.5 + 0.5) * 255).astype(np.uint8)).save(path)
    return path


def test_unlearning_a_2d_generator_moves_the_source_to_its_target_and_keeps_the_mapping(bundle):
    gen = torch.Generator().manual_seed(5)
    w_u = (bundle.w_avg_code() + 0.8 * torch.randn(bundle.num_ws, 512, generator=gen)).unsqueeze(0)
    run = Unlearning(bundle, w_u, cfg=LTUConfig(iters=20, lr=3e-3, preview_every=0, precision="fp32")).run_all()
    target = bundle.render(bundle.G, run.w_t)
    before = float((bundle.render(bundle.G, w_u) - target).pow(2).mean())
    after = float((bundle.render(run.G_u, w_u) - target).pow(2).mean())
    assert after < 0.5 * before, f"G_u(w_u) only moved from {before:.4f} to {after:.4f} (squared distance to G_s(w_t))"
    source = dict(bundle.G.named_parameters())
    changed = [n for n, p in run.G_u.named_parameters() if not torch.equal(p, source[n])]
    assert changed and all(n.startswith(TRAINABLE_PREFIXES) for n in changed)
    assert not any(n.startswith("style.") for n in changed), "the mapping network must stay frozen"
    assert run.history[-1]["local_l2"] < run.history[0]["local_l2"]


def test_recomputing_the_synthesis_in_the_backward_pass_changes_no_gradient(bundle):
    G = copy.deepcopy(bundle.G).requires_grad_(True)
    ws = bundle.w_avg_code().unsqueeze(0).repeat(2, 1, 1) + 0.3 * torch.randn(2, bundle.num_ws, 512,
                                                                                 generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (False, True):
        G.checkpointing = recompute
        G.zero_grad(set_to_none=True)
        G(ws).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    worst = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0])
    assert worst <= 1e-6, f"checkpointed gradients differ by {worst:.2e}"
    run = Unlearning(bundle, ws[:1], cfg=LTUConfig(iters=1, preview_every=0, checkpoint_synthesis=True))
    assert run.G_u.checkpointing and not bundle.G.checkpointing


def test_cli_unlearn_eval_audit_and_import_on_a_2d_model(tmp_path, capsys):
    photo, other = make_photo(tmp_path / "photo.png", 0), make_photo(tmp_path / "other.png", 1)
    out = tmp_path / "run"
    assert main(["unlearn", "--image", str(photo), "--out", str(out), "--others", str(other), *FAST]) == 0
    record = runs.read_run(out)
    assert record["method"] == "guide" and record["model"] == MODEL
    assert record["trainable_prefix"] == list(TRAINABLE_PREFIXES)
    capsys.readouterr()
    assert main(["eval", str(out), "--json", "--n-fid", "6", "--device", "cpu"]) == 0
    values = json.loads(capsys.readouterr().out)
    assert -1 <= values["id"] <= 1 and -1 <= values["id_others"] <= 1 and np.isfinite(values["fid_pre"])
    assert main(["audit", str(out), "--json", "--steps", "2", "--samples", "4", "--refine-steps", "1", "--device",
                 "cpu", "--no-save"]) == 0
    audit = json.loads(capsys.readouterr().out)
    assert list(audit["tiers"]) == ["sample", "encoder", "encoder_refine", "typical_w", "typical_wplus", "w", "wplus"]
    assert all(-1 <= t["best_id_after"] <= 1 and -1 <= t["stranger_after"] <= 1 for t in audit["tiers"].values())
    # a generator unlearned elsewhere, saved as rosinality saves one: it imports as a run with the same G_u
    G_u = runs.load_run(out, registry.load_bundle(MODEL))
    exported = tmp_path / "unlearned_g_ema.pt"
    torch.save({"g_ema": G_u.state_dict(), "latent_avg": torch.zeros(512)}, exported)
    imported = tmp_path / "imported"
    assert main(["import", str(exported), "--image", str(photo), "--out", str(imported), "--model", MODEL,
                 "--device", "cpu"]) == 0
    again = runs.load_run(imported, registry.load_bundle(MODEL))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), G_u.state_dict().values()))


def test_the_studio_disables_pose_controls_and_shows_the_front_view_for_a_2d_model(tmp_path):
    yaw, pitch = handlers.pose_controls(MODEL)
    assert yaw["interactive"] is False and pitch["interactive"] is False and "no camera" in yaw["info"]
    assert handlers.pose_controls("default")[0]["interactive"] is True
    session = handlers.upload_photo(str(make_photo(tmp_path / "p.png")), MODEL, 30.0, None).session
    updates = list(handlers.run_unlearning(session, 30.0, {"iters": 2, "preview_every": 0}))
    assert updates and session.generator_u is not None
    turned, front = handlers.render_view(20.0, 10.0, session), handlers.render_view(0.0, 0.0, session)
    assert np.array_equal(turned.before, front.before) and np.array_equal(turned.after, front.after)
    strips = handlers.orbit(session)
    assert strips.before_strip.shape == strips.after_strip.shape == front.before.shape  # one view, one identity
    clusters = handlers.identity_clusters(session)
    assert len(clusters.data) >= 2  # before / after points of the identity and the random people
    report = handlers.report(session, audit_steps=1, n_fid=4)
    assert "ID (lower = identity erased)" in report.markdown and "Attacker ladder" in report.markdown
    assert list(report.audit_plot.data[0].x)[-1] == "wplus"


def test_two_identities_at_once_then_a_third_in_a_chain_on_a_2d_model(bundle, tmp_path):
    gen = torch.Generator().manual_seed(9)
    people = bundle.w_avg_code() + 0.8 * torch.randn(3, bundle.num_ws, 512, generator=gen)
    cfg = LTUConfig(iters=3, lr=3e-3, preview_every=0)
    first = Unlearning(bundle, people[:2], cfg=cfg, sources=[{"name": "a"}, {"name": "b"}]).run_all()
    runs.save_run(tmp_path / "run1", first)
    G_1 = runs.load_run(tmp_path / "run1", bundle)
    link = runs.base_run_record(tmp_path / "run1", runs.read_run(tmp_path / "run1"), G_1)
    second = Unlearning(bundle, people[2:], cfg=cfg, sources=[{"name": "c"}], base=G_1, base_run=link,
                        forgotten=runs.forgotten_codes(link)).run_all()
    runs.save_run(tmp_path / "run2", second)
    assert [s["name"] for s in runs.chain_sources(runs.read_run(tmp_path / "run2"))] == ["a", "b", "c"]
    G_2 = runs.load_run(tmp_path / "run2", bundle)
    assert all(torch.equal(a, b) for a, b in zip(G_2.state_dict().values(), second.G_u.state_dict().values()))
    assert not torch.equal(bundle.render(G_2, people[:1]), bundle.render(G_1, people[:1]))
