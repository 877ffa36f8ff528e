# The studio's event handlers called as plain functions on a tiny seeded model bundle: the whole flow (upload → UFO →
# unlearn → views → clusters → report), bad input, cancellation and session isolation.
from __future__ import annotations

import dataclasses
import gc
import io
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from demo import handlers, plots
from demo.handlers import common, views
from guide_core import registry, runs
from guide_core.config import LTUConfig
from guide_core.methods.guide import ufo_target
from guide_core.bundle import ModelBundle

TINY = "tiny-studio-test"


# A fixed random projection of pooled pixels, normalised: a stand-in identity network with the `.embed` interface.
class TinyIdentity(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        self.register_buffer("proj", torch.randn(3 * 8 * 8, 64, generator=torch.Generator().manual_seed(seed)))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images.float(), 8).flatten(1)
        return F.normalize(pooled @ self.proj, dim=1)


# A tiny EG3D: the real TriPlaneGenerator with a 16² tri-plane backbone (so a render takes ~0.1 s on one core).
def tiny_generator(seed: int = 0):
    from guide_core.eg3d import TriPlaneGenerator
    from guide_core.eg3d.networks import StyleGAN2Backbone

    torch.manual_seed(seed)
    rendering = dict(superresolution_module="SuperresolutionHybrid2X", sr_antialias=True, depth_resolution=8,
                     depth_resolution_importance=8, ray_start=2.25, ray_end=3.3, box_warp=1, clamp_mode="softplus",
                     c_gen_conditioning_zero=False, superresolution_noise_mode="none", c_scale=1.0,
                     avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2], white_back=False, density_reg=0.25,
                     decoder_lr_mul=1.0, disparity_space_sampling=False)
    G = TriPlaneGenerator(z_dim=512, c_dim=25, w_dim=512, img_resolution=16, img_channels=3,
                          rendering_kwargs=rendering, channel_base=256, channel_max=16, num_fp16_res=0,
                          mapping_kwargs=dict(num_layers=2))
    G.backbone = StyleGAN2Backbone(512, 25, 512, img_resolution=16, img_channels=96, channel_base=256,
                                   channel_max=16, num_fp16_res=0, mapping_kwargs=dict(num_layers=2))
    G.neural_rendering_resolution = 8
    return G.eval()


# "Face alignment" of the tiny world: any photo with some contrast is a face, a flat image has none.
def tiny_align(photo: Image.Image) -> Image.Image:
    from guide_core.faces import FaceError

    if np.asarray(photo.convert("L"), dtype=np.float32).std() < 2.0:
        raise FaceError("no face found (the image is flat)")
    return photo.convert("RGB").resize((16, 16), Image.BILINEAR)


# The tiny bundle: real generator class and engine, stand-in encoder / identity / perceptual networks.
def tiny_bundle(device: str = "cpu") -> ModelBundle:
    from guide_core.eg3d import camera_params

    G = tiny_generator().to(device)
    cond_c = camera_params(0.0, 0.0, radius=2.7, fov_deg=18.837, pivot=(0.0, 0.0, 0.2))
    with torch.no_grad():
        z = torch.randn(500, 512, generator=torch.Generator().manual_seed(7))
        w_avg = G.mapping(z, cond_c.expand(500, -1)).mean(dim=0)
    encoder_proj = torch.randn(3 * 4 * 4, 512, generator=torch.Generator().manual_seed(3)) * 0.5

    # Photo -> absolute w+: the mean plus a fixed projection of the pooled pixels (deterministic, photo-dependent).
    def encoder(images: torch.Tensor) -> torch.Tensor:
        offset = F.adaptive_avg_pool2d(images.float(), 4).flatten(1) @ encoder_proj
        return w_avg.unsqueeze(0) + offset.unsqueeze(1)

    identity = TinyIdentity(11)
    return ModelBundle(
        name=TINY, G=G, w_avg=w_avg, cond_c=cond_c, id_loss_net=identity, id_metric_net=identity,
        perceptual=lambda x, y: (x - y).pow(2).flatten(1).mean(dim=1), encoder=encoder, encoder_resolution=16,
        align=tiny_align, pivot=(0.0, 0.0, 0.2), feature_note="no feature network in the tiny test world",
        ltu_defaults=LTUConfig(iters=3, preview_every=1, lr=1e-2))


@pytest.fixture(scope="module")
def tiny_model():
    registry.register_model(TINY, tiny_bundle, "tiny seeded model for the studio's tests")
    common._BUNDLES.pop(TINY, None)
    yield TINY
    registry.unregister_model(TINY)
    common._BUNDLES.pop(TINY, None)


# A small "photo": smooth colour gradients with a face-like blob, saved as PNG (or JPEG) in tmp_path.
def make_photo(tmp_path: Path, name: str = "photo.png", seed: int = 0, size: int = 96) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 255, size=3)
    image = np.stack([base[i] * (0.5 + 0.5 * np.sin(3 * xx * (i + 1) + rng.uniform(0, 6)) * yy) for i in range(3)], -1)
    blob = np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.04)[..., None] * rng.uniform(0, 200, size=3)
    path = tmp_path / name
    Image.fromarray(np.clip(image + blob, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def uploaded(tiny_model, tmp_path):
    out = handlers.upload_photo(str(make_photo(tmp_path)), tiny_model, 30.0, None)
    return out.session


def run_to_end(session, d: float = 30.0, start_over: bool = False, method_name: str = "guide", **settings):
    updates = list(handlers.run_unlearning(session, d, settings, start_over=start_over, method=method_name))
    assert updates, "the run produced no update"
    return updates


def test_upload_shows_detection_crop_inversion_and_target(tiny_model, tmp_path):
    out = handlers.upload_photo(str(make_photo(tmp_path)), tiny_model, 30.0, None)
    assert out.session.current.w_u is not None and out.session.current.w_u.shape == (6, 512)
    assert out.detected.shape[2] == 3 and out.aligned.shape == (16, 16, 3)
    # 16 px renders are shown as 256 px blocks: every generated pixel is a 16x16 block of the displayed image.
    assert out.inversion.shape == (256, 256, 3) and out.target.shape == (256, 256, 3)
    assert np.array_equal(out.inversion[::16, ::16], out.inversion[15::16, 15::16])
    assert "Inverted" in out.status
    # w_t is exactly guide's UFO target of w_u at d = 30 (no math in the UI: it only calls it).
    bundle = handlers.get_bundle(tiny_model)
    expected = ufo_target(out.session.current.w_u, bundle.w_avg_code().cpu(), 30.0)
    assert torch.equal(out.session.current.w_t, expected)


def test_d_slider_moves_the_target_and_marks_it(uploaded):
    near = handlers.change_d(0.0, uploaded)
    w_t_at_zero = uploaded.current.w_t.clone()
    far = handlers.change_d(60.0, uploaded)
    diff = np.abs(near.target.astype(int) - far.target.astype(int)).max()
    assert diff > 0, "the target render did not change with d"
    names = [trace.name for trace in far.ufo_plot.data]
    assert any("d = 60" in name for name in names), names
    assert any("sampled w" in name for name in names) and any("w_u" in name for name in names)
    # The picture's x axis is UFO's direction: w_t lies at x = −d, w̄ at 0, w_u at +‖w_u − w̄‖, all on y = 0.
    bundle = handlers.get_bundle(uploaded.model)
    points = {trace.name.split(" ")[0]: (trace.x[0], trace.y[0]) for trace in far.ufo_plot.data if len(trace.x) == 1}
    distance = float((uploaded.current.w_u - bundle.w_avg_code().cpu()).norm())
    assert points["w_t"] == pytest.approx((-60.0, 0.0), abs=1e-3)
    assert points["w̄"] == pytest.approx((0.0, 0.0), abs=1e-3)
    assert points["w_u"] == pytest.approx((distance, 0.0), abs=1e-3)
    # d = 0 is the mean face: w_t equals w̄ (the paper's "average" baseline target).
    assert torch.allclose(w_t_at_zero, bundle.w_avg_code().cpu(), atol=1e-6)


@pytest.mark.parametrize("content, expected", [
    (b"this is not an image at all", "not an image"),
    (None, "truncated"),
])
def test_bad_uploads_give_clear_messages_and_next_upload_works(tiny_model, tmp_path, content, expected):
    bad = tmp_path / "bad.jpg"
    if content is None:  # a JPEG cut in half
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
        bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    else:
        bad.write_bytes(content)
    session = handlers.new_session()
    with pytest.raises(gr.Error, match=expected):
        handlers.upload_photo(str(bad), tiny_model, 30.0, session)
    assert session.current is None and session.identities == []
    good = handlers.upload_photo(str(make_photo(tmp_path)), tiny_model, 30.0, session)
    assert good.session.current.w_u is not None


def test_photo_without_face_is_refused(tiny_model, tmp_path):
    flat = tmp_path / "wall.png"
    Image.new("RGB", (64, 64), (120, 130, 140)).save(flat)
    with pytest.raises(gr.Error, match="No usable face"):
        handlers.upload_photo(str(flat), tiny_model, 30.0, None)


def test_50_megapixel_photo_is_handled_with_a_note(tiny_model, tmp_path):
    path = tmp_path / "huge.jpg"
    Image.linear_gradient("L").resize((8700, 5800)).convert("RGB").save(path, quality=50)
    image = Image.open(path)
    assert image.width * image.height >= 50e6
    # Decoded (the limit is guide_core.faces.MAX_PIXELS), processed, and the status says it was a large photo.
    out = handlers.upload_photo(str(path), tiny_model, 30.0, None)
    assert "50.5 MP" in out.status and "large photo" in out.status and out.session.current.w_u is not None
    assert max(out.detected.shape[:2]) <= 768  # the page gets a display copy, not 50 MP
    flat = tmp_path / "flat.jpg"
    Image.new("RGB", (8700, 5800), (90, 60, 40)).save(flat, quality=50)
    with pytest.raises(gr.Error, match="No usable face"):
        handlers.upload_photo(str(flat), tiny_model, 30.0, out.session)
    assert [i.name for i in out.session.identities] == ["huge"]  # the refused upload left the session as it was


def test_run_before_upload_says_what_to_do():
    with pytest.raises(gr.Error, match="Upload a photo"):
        next(handlers.run_unlearning(None, 30.0, {}))
    with pytest.raises(gr.Error, match="Upload a photo"):
        handlers.change_d(10.0, handlers.new_session())
    with pytest.raises(gr.Error, match="Upload a photo"):
        handlers.orbit(handlers.new_session())
    assert handlers.render_view(0, 0, None) == handlers.ViewOut(None, None, [])


def test_run_streams_progress_and_after_differs_from_before(uploaded):
    with pytest.raises(gr.Error, match="Run unlearning first"):
        handlers.identity_clusters(uploaded)
    assert handlers.render_view(0, 0, uploaded).after is None
    updates = run_to_end(uploaded)
    final = updates[-1]
    assert "Finished 3/3" in final.status
    assert uploaded.generator_u is not None and uploaded.run_state == "finished"
    assert {"total", "local", "adjacency", "global"} <= set(uploaded.losses)
    assert len(uploaded.steps) == 3 and len(final.loss_plot.data) >= 4
    source, target, unlearned = (image for image, _ in final.previews)
    view = handlers.render_view(10, 5, uploaded)
    assert view.after is not None
    diff = np.abs(view.after.astype(int) - view.before.astype(int)).mean()
    assert diff > 0.5, f"after-image equals before-image (mean |diff| {diff:.3f})"
    # The session's settings are LTUConfig's, with the model's overrides and the sliders' values.
    assert uploaded.config.iters == 3 and uploaded.config.d == 30.0 and uploaded.config.n_adj == LTUConfig().n_adj


def test_settings_from_sliders_override_defaults_and_bad_values_are_reported(uploaded):
    run_to_end(uploaded, iters=2.0, n_adj=1.0, n_glob=0.0)
    assert uploaded.config.iters == 2 and isinstance(uploaded.config.iters, int) and uploaded.config.n_glob == 0
    with pytest.raises(gr.Error, match="lr"):
        next(handlers.run_unlearning(uploaded, 30.0, {"lr": -1.0}))
    with pytest.raises(gr.Error, match="unknown setting"):
        next(handlers.run_unlearning(uploaded, 30.0, {"not_a_field": 1}))


# The method picked on the page runs with its own controls; another method's controls on the page are left out.
def test_the_studio_runs_each_method_with_its_own_settings(uploaded):
    from guide_core.methods.legato import LegatoConfig, adapters
    from guide_core.methods.sugar import SugarConfig

    run_to_end(uploaded, iters=2.0, adapter_width=8.0, lambda_ewc=7.0, method_name="legato")
    assert type(uploaded.config) is LegatoConfig and uploaded.config.adapter_width == 8
    assert adapters(uploaded.generator_u) and uploaded.job.method.name == "legato"
    run_to_end(uploaded, start_over=True, iters=2.0, adapter_width=8.0, lambda_ewc=7.0, trigger_steps=2.0,
               method_name="sugar")
    assert type(uploaded.config) is SugarConfig and uploaded.config.lambda_ewc == 7.0
    assert uploaded.config.trigger_steps == 2 and not adapters(uploaded.generator_u)
    with gr.Blocks():
        names, groups = __import__("demo.layout", fromlist=["method_sliders"]).method_sliders()
    assert {"adapter_width", "ode_step", "lambda_traj", "trigger_steps", "lambda_ewc"} <= set(names)
    assert {method for method, _ in groups} == {"legato", "sugar"}


def test_cancel_stops_within_one_iteration_and_app_stays_usable(uploaded):
    updates = handlers.run_unlearning(uploaded, 30.0, {"iters": 50})
    first = next(updates)
    assert "iteration 1/50" in first.status
    assert "Cancelling" in handlers.cancel_run(uploaded)
    rest = list(updates)
    assert "Cancelled after" in rest[-1].status
    assert uploaded.job.steps_done <= 2, f"ran {uploaded.job.steps_done} iterations after Cancel"
    assert uploaded.run_state == "cancelled" and uploaded.generator_u is not None
    assert uploaded.chain == [] and uploaded.current.forgotten_in is None  # a cancelled run is not built on
    assert handlers.cancel_run(uploaded) == "Nothing is running."
    assert handlers.render_view(0, 0, uploaded).after is not None
    assert "Finished" in run_to_end(uploaded)[-1].status  # a new run after a cancelled one works
    assert uploaded.job.base_run is None and uploaded.current.forgotten_in == 1


def test_two_sessions_never_see_each_others_generator(tiny_model, tmp_path):
    bundle = handlers.get_bundle(tiny_model)
    base = runs.state_fingerprint(bundle.G)
    alice = handlers.upload_photo(str(make_photo(tmp_path, "a.png", seed=1)), tiny_model, 30.0, None).session
    bob = handlers.upload_photo(str(make_photo(tmp_path, "b.png", seed=2)), tiny_model, 30.0, None).session
    bob_before = handlers.render_view(0, 0, bob)
    run_to_end(alice)
    assert alice.generator_u is not None and bob.generator_u is None
    bob_after_alice = handlers.render_view(0, 0, bob)
    assert bob_after_alice.after is None, "Bob sees an unlearned generator he never made"
    assert np.array_equal(bob_before.before, bob_after_alice.before), "the shared G_s changed"
    assert runs.state_fingerprint(bundle.G) == base
    assert alice.workdir != bob.workdir
    # Gradio deep-copies a State's initial value per visitor: a copy is always a fresh, empty session.
    import copy
    assert copy.deepcopy(alice).generator_u is None and copy.deepcopy(alice).identities == []
    # When Gradio drops Alice's state, her generator and run files go with it; Bob is untouched.
    handlers.end_session(alice)
    assert alice.generator_u is None and not alice.workdir.exists() and bob.workdir.exists()
    # Bob's state is dropped without the callback (the server stopped): his run files still go with it.
    bob_dir = bob.workdir
    (bob_dir / "delta.safetensors").write_bytes(bytes(1024))
    del bob, bob_before, bob_after_alice
    gc.collect()
    assert not bob_dir.exists(), f"{sorted(p.name for p in bob_dir.iterdir())} outlived the session"


def test_others_orbit_clusters_and_report(uploaded, tmp_path):
    # Other photos of the person, one of them unusable: the good one is added, the bad one named in the warning.
    flat = tmp_path / "flat.png"
    Image.new("RGB", (40, 40), (0, 0, 0)).save(flat)
    session, status, gallery = handlers.add_others([str(make_photo(tmp_path, "other.png", seed=5)), str(flat)],
                                                   uploaded)
    assert "1 other photo" in status and "flat.png" in status and len(gallery) == 1
    run_to_end(uploaded)
    view = handlers.render_view(-20, 0, uploaded)
    assert len(view.others) == 2  # before and after of the other photo
    orbit = handlers.orbit(uploaded)
    assert orbit.before_strip.shape == (256, 256 * len(handlers.ORBIT_YAWS_DEG), 3)
    assert not np.array_equal(orbit.before_strip, orbit.after_strip)
    series = {trace.name: trace.y for trace in orbit.id_plot.data}
    assert len(series) == 3 and all(len(y) == len(handlers.ORBIT_YAWS_DEG) for y in series.values())
    assert all(-1.0 <= v <= 1.0 for y in series.values() for v in y)
    clusters = handlers.identity_clusters(uploaded)
    points = sum(len(trace.x) for trace in clusters.data)
    assert points == 2 * len(handlers.CLUSTER_YAWS_DEG) * (2 + handlers.CLUSTER_OTHERS)
    report = handlers.report(uploaded, audit_steps=2, n_fid=4)
    delta, run_json = (Path(p) for p in report.files)
    assert delta.is_file() and run_json.is_file()
    record = json.loads(run_json.read_text())
    assert record["config"]["iters"] == 3 and record["sources"][0]["name"] == "photo"
    assert record["metrics"]["id"] is not None and record["metrics"]["id_others"] is not None
    assert "audit" in record["metrics"] and "ID" in report.markdown and "tiny test world" in report.markdown
    # The ladder chart: tiers on the x axis; the forgotten person in G_s and G_u and the strangers as lines, the held
    # tiers marked, the impostor threshold drawn.
    ladder_values = record["metrics"]["audit"]
    tiers = list(ladder_values["tiers"])
    assert tiers[0] == "sample" and tiers[-1] == "wplus" and len(ladder_values["strangers"]) == 3
    lines = {trace.name: trace for trace in report.audit_plot.data}
    assert list(lines["forgotten, G_u"].x) == tiers and len(lines["strangers, G_u"].y) == len(tiers)
    assert list(lines["held"].x) == ladder_values["held"]
    assert [shape.y0 for shape in report.audit_plot.layout.shapes] == [ladder_values["threshold"]]
    assert "Attacker ladder" in report.markdown and ladder_values["sentence"] in report.markdown
    # The saved delta rebuilds this session's G_u on the base model.
    G_u = runs.load_run(run_json.parent, handlers.get_bundle(uploaded.model))
    assert runs.state_fingerprint(G_u) == runs.state_fingerprint(uploaded.generator_u)


# Settings of the multi-identity tests: one short iteration with few extra latents (a few seconds on one core).
QUICK = dict(iters=1, n_adj=1, n_glob=1)


def test_two_identities_are_forgotten_in_one_run_with_a_row_each(tiny_model, tmp_path, monkeypatch):
    session = handlers.upload_photo(str(make_photo(tmp_path, "ann.png", seed=1)), tiny_model, 30.0, None).session
    out = handlers.upload_photo(str(make_photo(tmp_path, "bob.png", seed=2)), tiny_model, 30.0, session)
    assert [i.name for i in session.identities] == ["ann", "bob"] and session.selected == "bob"
    assert out.identity["choices"] == ["ann", "bob"] and out.identity["value"] == "bob"
    assert [caption for _, caption in out.identities] == ["ann · to forget in the next run",
                                                          "bob · to forget in the next run"]
    # The same photo again selects its identity instead of listing it twice.
    again = handlers.upload_photo(str(tmp_path / "ann.png"), tiny_model, 30.0, session)
    assert len(session.identities) == 2 and session.selected == "ann" and "already listed" in again.status
    assert np.array_equal(again.inversion, session.identities[0].inversion)
    # One upload delivered twice by the browser (the same file while it is selected) shows the page it showed first.
    twice = handlers.upload_photo(str(tmp_path / "ann.png"), tiny_model, 30.0, session)
    assert len(session.identities) == 2 and twice.status.startswith("Inverted **ann.png**"), twice.status
    # One d for the run: every identity's w_t follows it, the picture shows the selected one.
    handlers.change_d(10.0, session)
    w_avg = handlers.get_bundle(tiny_model).w_avg_code().cpu()
    for identity in session.identities:
        assert torch.equal(identity.w_t, ufo_target(identity.w_u, w_avg, 10.0)), identity.name
    final = run_to_end(session, d=10.0, **QUICK)[-1]
    assert "Finished 1/1" in final.status and "**ann**, **bob**" in final.status
    assert [caption.split(" · ")[0] for _, caption in final.previews] == ["ann"] * 3 + ["bob"] * 3
    assert [i.forgotten_in for i in session.identities] == [1, 1]
    # Multi-view: the selected identity large, the other one in the gallery, both before and after.
    view = handlers.render_view(0, 0, session)
    assert [caption for _, caption in view.others] == ["bob: before", "bob: after"]
    assert not np.array_equal(view.before, view.others[0][0])
    monkeypatch.setattr(views, "ORBIT_YAWS_DEG", (-15.0, 15.0))  # fewer views: the layout is what is checked
    monkeypatch.setattr(views, "CLUSTER_YAWS_DEG", (0.0,))
    orbit = handlers.orbit(session)
    assert orbit.before_strip.shape == (2 * 256, 2 * 256, 3)  # one row per identity
    assert {name.split(" of ")[1].split(" vs")[0] for name in (t.name for t in orbit.id_plot.data)} == {"ann", "bob"}
    seen = {}
    monkeypatch.setattr(plots, "identity_clusters",
                        lambda embeddings, labels, generators: seen.update(labels=labels, n=len(embeddings)))
    handlers.identity_clusters(session)
    assert {"ann", "bob"} <= set(seen["labels"]) and seen["n"] == len(seen["labels"])
    # The report: one run.json with both sources, a row per identity, and the audit of each.
    report = handlers.report(session, audit_steps=1, n_fid=4)
    record = json.loads(Path(report.files[1]).read_text())
    assert [s["name"] for s in record["sources"]] == ["ann", "bob"] and record["base_run"] is None
    assert [s["sha256"] for s in record["sources"]] == [i.sha256 for i in session.identities]
    assert [(r["name"], r["run"]) for r in record["metrics"]["per_identity"]] == [("ann", 0), ("bob", 0)]
    assert record["metrics"]["audit"]["forgotten"] == ["ann", "bob"]
    assert [r["name"] for r in record["metrics"]["audit"]["tiers"]["wplus"]["per_identity"]] == ["ann", "bob"]
    assert "| ann | run 1 |" in report.markdown and "| bob | run 1 |" in report.markdown


def test_remove_drops_the_selected_identity(tiny_model, tmp_path):
    session = handlers.upload_photo(str(make_photo(tmp_path, "ann.png", seed=1)), tiny_model, 30.0, None).session
    handlers.upload_photo(str(make_photo(tmp_path, "bob.png", seed=2)), tiny_model, 30.0, session)
    handlers.upload_photo(str(make_photo(tmp_path, "cat.png", seed=3)), tiny_model, 30.0, session)
    shown = handlers.select_identity("bob", 30.0, session)
    assert session.selected == "bob" and np.array_equal(shown.inversion, session.identity("bob").inversion)
    out = handlers.remove_identity("bob", 30.0, session)
    assert [i.name for i in session.identities] == ["ann", "cat"] and out.identity["choices"] == ["ann", "cat"]
    assert session.selected == "cat" and np.array_equal(out.inversion, session.identity("cat").inversion)
    assert len(handlers.render_view(0, 0, session).others) == 1  # ann's before; no G_u yet
    with pytest.raises(gr.Error, match="No identity named 'bob'"):
        handlers.remove_identity("bob", 30.0, session)
    handlers.remove_identity("cat", 30.0, session)
    out = handlers.remove_identity("ann", 30.0, session)
    assert session.identities == [] and out.inversion is None and out.identity["choices"] == []
    with pytest.raises(gr.Error, match="Upload a photo"):
        next(handlers.run_unlearning(session, 30.0, {}))


def test_a_second_run_continues_from_the_first_and_start_over_begins_again(tiny_model, tmp_path):
    bundle = handlers.get_bundle(tiny_model)
    session = handlers.upload_photo(str(make_photo(tmp_path, "ann.png", seed=1)), tiny_model, 30.0, None).session
    run_to_end(session, **QUICK)
    first = runs.state_fingerprint(session.generator_u)
    out = handlers.upload_photo(str(make_photo(tmp_path, "bob.png", seed=2)), tiny_model, 30.0, session)
    assert [caption for _, caption in out.identities] == ["ann · forgotten in run 1", "bob · to forget in the next run"]
    final = run_to_end(session, **QUICK)[-1]
    assert "continuing from run 1" in final.status and len(session.chain) == 2
    assert [s["name"] for s in session.job.sources] == ["bob"]  # ann is not a source again
    assert runs.state_fingerprint(session.generator_u) not in (first, runs.state_fingerprint(bundle.G))
    report = handlers.report(session, audit_steps=0, n_fid=4)
    run_json = Path(report.files[1])
    record = json.loads(run_json.read_text())
    assert [s["name"] for s in record["sources"]] == ["bob"]
    parent = record["base_run"]
    assert [s["name"] for s in parent["sources"]] == ["ann"] and parent["fingerprint"] == first
    assert Path(parent["path"]) == (session.workdir / "run-1").resolve()
    assert (session.workdir / "run-1" / runs.RUN_JSON).is_file()
    rows = record["metrics"]["per_identity"]
    assert [(r["name"], r["run"], r["earlier"]) for r in rows] == [("ann", 0, True), ("bob", 1, False)]
    assert "| ann | run 1 (earlier run) |" in report.markdown and "| bob | run 2 |" in report.markdown
    # The delta is relative to the original model: the saved run alone rebuilds run 2's G_u.
    rebuilt = runs.load_run(run_json.parent, bundle)
    assert runs.state_fingerprint(rebuilt) == runs.state_fingerprint(session.generator_u)
    # Nothing new to forget: run 2 is run again, from run 1's generator.
    final = run_to_end(session, **QUICK)[-1]
    assert "continuing from run 1" in final.status and len(session.chain) == 2
    assert session.job.base_run["fingerprint"] == first and [s["name"] for s in session.job.sources] == ["bob"]
    # Start over: one fresh run of every listed identity from the original model.
    final = run_to_end(session, start_over=True, **QUICK)[-1]
    assert "start over" in final.status and len(session.chain) == 1
    assert [i.forgotten_in for i in session.identities] == [1, 1]
    record = json.loads(Path(handlers.report(session, audit_steps=0, n_fid=4).files[1]).read_text())
    assert record["base_run"] is None and [s["name"] for s in record["sources"]] == ["ann", "bob"]
    # A model switch clears the list and the chain.
    handlers.select_model(tiny_model, session)
    assert session.identities == [] and session.chain == [] and session.generator_u is None


def test_config_sliders_come_from_ltuconfig(tiny_model):
    from demo import layout

    defaults = handlers.config_defaults(tiny_model)
    assert defaults.iters == 3 and defaults.alpha_max == LTUConfig().alpha_max
    with gr.Blocks():
        names, components = layout.config_sliders(LTUConfig, advanced=False, defaults=defaults)
        adv_names, adv = layout.config_sliders(LTUConfig, advanced=True, defaults=defaults)
    assert {"iters", "alpha_max", "n_adj", "n_glob"} == set(names)
    assert {"lambda_l2", "lambda_per", "lambda_id", "lambda_adj", "lambda_glob"} <= set(adv_names)
    for name, component in zip(names + adv_names, components + adv):
        assert component.value == getattr(defaults, name), name
        field = next(f for f in dataclasses.fields(LTUConfig) if f.name == name)
        if "range" in field.metadata:  # the paper's range, widened only to hold a model's own default
            lo, hi = field.metadata["range"]
            assert (component.minimum, component.maximum) == (min(lo, component.value), max(hi, component.value))


def test_weights_panel_lists_the_manifest():
    text = handlers.weights_panel()
    assert "| name |" in text and "eg3d-ffhq" in text


def test_app_builds_with_heavy_events_on_one_queue_slot(tiny_model, monkeypatch):
    from demo import app as demo_app

    monkeypatch.setattr(handlers, "available_models", lambda: [tiny_model])
    blocks = demo_app.build_app()
    heavy = [fn for fn in blocks.fns.values() if fn.concurrency_id == "heavy"]
    assert heavy and all(fn.concurrency_limit == 1 for fn in heavy)
    light = [fn for fn in blocks.fns.values() if getattr(fn.fn, "__name__", "") in ("change_d", "render_view")]
    assert light and all(fn.concurrency_limit is None for fn in light)


def test_real_photo_on_a_released_model_shows_the_detected_box(data_dir, monkeypatch):
    # The tiny networks registered under a released model's name: alignment then goes through guide_core.faces
    # (MTCNN + the EG3D crop), the path real photos take, and the page shows the detected box.
    # monkeypatch puts the built-in entry back afterwards, so later tests still see the released model.
    name = "eg3d-ffhq"
    registry.available_models()
    monkeypatch.setitem(registry._REGISTRY, name, (lambda device: dataclasses.replace(tiny_bundle(device), name=name), ""))
    common._BUNDLES.pop(name, None)
    try:
        photo = sorted((data_dir / "celebahq_1024").glob("*.jpg"))[0]
        out = handlers.upload_photo(str(photo), name, 30.0, None)
        assert out.aligned.shape == (512, 512, 3) and out.session.current.w_u is not None
        red = (out.detected[..., 0] == 255) & (out.detected[..., 1] == 64) & (out.detected[..., 2] == 64)
        assert red.sum() > 100, "the detected face box is not drawn"
    finally:
        common._BUNDLES.pop(name, None)
