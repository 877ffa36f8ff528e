"""The embedded world: procedural heads (determinism, exact identity, depth, camera behaviour), the fixed z -> params
map, the world's trainers, export and model card (tools.world), and — when weights/default/ is shipped — the identity
net's verification rate and the generator's fidelity.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from guide_core.world import camera_params, params_from_z, random_z, render_heads, same_identity_z
from guide_core.world.heads import (IDENTITY_DIMS, IDENTITY_SPEC, N_ID, PHOTO_DIMS, PHOTO_SPEC, RAY_FAR, Z_DIM,
                                    HeadParams)

RES = 48
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "default"


def _frontal(n: int) -> torch.Tensor:
    return camera_params(torch.zeros(n), torch.zeros(n))


def _params(seed: int, n: int = 1) -> HeadParams:
    p = params_from_z(random_z(n, seed))
    photo = p.photo.clone()
    photo[:, [i for i, s in enumerate(PHOTO_SPEC) if s[0] == "glasses"][0]] = 0.9  # no glasses unless a test asks
    return HeadParams(p.identity, photo)


def _set(p: HeadParams, **values: float) -> HeadParams:
    identity, photo = p.identity.clone(), p.photo.clone()
    for name, value in values.items():
        names_id = [s[0] for s in IDENTITY_SPEC]
        names_photo = [s[0] for s in PHOTO_SPEC]
        if name in names_id:
            identity[:, names_id.index(name)] = value
        else:
            photo[:, names_photo.index(name)] = value
    return HeadParams(identity, photo)


# The trainers' configs for a test: the shipped settings with the test's overrides (the generator without its polish
# phase unless the test asks for one).
def _gen(**overrides):
    from tools.world.generator import GeneratorTrainConfig
    return replace(GeneratorTrainConfig(), **{"polish_steps": 0, **overrides})


def _ident(**overrides):
    from tools.world.identity import IdentityTrainConfig
    return replace(IdentityTrainConfig(), **overrides)


def _enc(**overrides):
    from tools.world.encoder import EncoderTrainConfig
    return replace(EncoderTrainConfig(), **overrides)


def _nose_pixel(depth: torch.Tensor) -> tuple[int, int]:
    flat = int(depth.reshape(-1).argmin())
    return flat // depth.shape[-1], flat % depth.shape[-1]


def test_render_is_deterministic_and_in_range():
    p, c = _params(0, 2), camera_params(torch.tensor([0.2, -0.3]), torch.tensor([0.0, 0.1]))
    a, b = render_heads(p, c, RES, supersample=1), render_heads(p, c, RES, supersample=1)
    assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
    assert a.image.shape == (2, 3, RES, RES) and a.depth.shape == (2, 1, RES, RES)
    assert a.image.min() >= -1 and a.image.max() <= 1
    coverage = a.mask.mean((1, 2, 3))
    assert ((coverage > 0.3) & (coverage < 0.9)).all(), f"head coverage {coverage.tolist()}"


def test_z_map_is_fixed_formula():
    z = torch.zeros(1, Z_DIM)
    mid = params_from_z(z)
    for i, (name, low, high) in enumerate(IDENTITY_SPEC):
        assert mid.identity[0, i].item() == pytest.approx((low + high) / 2, abs=1e-6), name
    z[0, IDENTITY_DIMS[0]] = 1.0
    z[0, PHOTO_DIMS[0]] = -1.0
    p = params_from_z(z)
    phi = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    name, low, high = IDENTITY_SPEC[0]
    assert p.identity[0, 0].item() == pytest.approx(low + (high - low) * phi, abs=1e-6)
    name, low, high = PHOTO_SPEC[0]
    assert p.photo[0, 0].item() == pytest.approx(low + (high - low) * (1 - phi), abs=1e-6)
    # every z dim drives exactly one parameter: no ignored dims for the mapping network to learn away
    assert sorted(IDENTITY_DIMS + PHOTO_DIMS) == list(range(Z_DIM))
    assert torch.equal(random_z(3, 7), random_z(3, 7))
    with pytest.raises(ValueError, match="z must have shape"):
        params_from_z(torch.zeros(2, 100))


def test_same_identity_z_keeps_identity_only():
    z = random_z(1, 3)
    others = same_identity_z(z, 4, seed=1)
    p0, ps = params_from_z(z), params_from_z(others)
    assert torch.equal(ps.identity, p0.identity.expand(4, -1))
    assert (ps.photo - p0.photo).abs().amax(1).min() > 0.01
    assert torch.equal(others, same_identity_z(z[0], 4, seed=1))


def test_per_photo_changes_stay_where_expected():
    p, c = _params(5), _frontal(1)
    base = render_heads(p, c, RES, supersample=1)
    lit = render_heads(_set(p, light_azimuth=-0.8, light_intensity=0.6), c, RES, supersample=1)
    # Lighting changes shading only: the same geometry (depth and silhouette) under a different light.
    assert torch.equal(base.depth, lit.depth) and torch.equal(base.mask, lit.mask)
    assert (base.image - lit.image).abs().mean() > 0.01
    # Expression changes pixels only around the mouth: the upper half of the face is untouched.
    smile = render_heads(_set(p, smile=1.0, mouth_open=0.02), c, RES, supersample=1)
    changed = (base.image - smile.image).abs().amax(1)[0] > 1e-4
    rows = torch.nonzero(changed)[:, 0]
    assert rows.numel() > 3, "a smile must change some pixels"
    nose_row, _ = _nose_pixel(base.depth[0, 0])
    assert rows.min() >= nose_row, f"expression changed rows from {rows.min()} (nose at {nose_row})"
    # Glasses add geometry in front of the eyes (nearer depth there), nowhere below the nose.
    glasses = render_heads(_set(p, glasses=0.0), c, RES, supersample=1)
    nearer = (glasses.depth < base.depth - 1e-3)[0, 0]
    assert nearer.any() and torch.nonzero(nearer)[:, 0].max() <= nose_row + 1


def test_identities_differ_and_identity_is_exact():
    c = _frontal(1)
    renders = [render_heads(_params(s), c, RES, supersample=1).image for s in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert (renders[i] - renders[j]).abs().mean() > 0.03, f"people {i} and {j} look alike"
    # Same identity parameters = the same person: re-rendering after a round trip through z changes nothing.
    z = random_z(1, 11)
    again = same_identity_z(z, 1, seed=4)
    again[:, PHOTO_DIMS] = z[:, PHOTO_DIMS]
    a = render_heads(params_from_z(z), c, RES, supersample=1)
    b = render_heads(params_from_z(again), c, RES, supersample=1)
    assert torch.equal(a.image, b.image)


def test_depth_is_plausible():
    p = _params(2)
    out = render_heads(p, _frontal(1), RES, supersample=1)
    depth, mask = out.depth[0, 0], out.mask[0, 0]
    assert torch.all(depth[mask == 0] == RAY_FAR)
    row, col = _nose_pixel(depth)
    assert abs(col - (RES - 1) / 2) <= 2, f"nearest point at column {col}, expected the nose near the centre"
    cheek = depth[row, col + RES // 6]
    assert depth[row, col] < cheek - 0.02, "the nose must be nearer than the cheek"
    assert 2.2 < depth[row, col] < 2.6, f"nose at ray distance {depth[row, col]:.3f} (camera radius 2.7)"


def test_camera_yaw_turns_the_head_consistently():
    p = _params(4, 1)
    yaws = torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.5])
    out = render_heads(HeadParams(p.identity.expand(5, -1), p.photo.expand(5, -1)),
                       camera_params(yaws, torch.zeros(5)), RES, supersample=1)
    offsets, centres = [], []
    for k in range(5):
        _, nose_col = _nose_pixel(out.depth[k, 0])
        cols = torch.nonzero(out.mask[k, 0] > 0.5)[:, 1].float()
        offsets.append(nose_col - cols.mean().item())
        centres.append(cols.mean().item())
    # A camera moved towards +x (positive yaw) sees the nearest point (the nose, or the near cheek at large yaw) on
    # the image's left of the head; the head itself, behind the pivot (0, 0, 0.2), drifts right, monotonically.
    assert offsets[1] > abs(offsets[2]) and offsets[3] < -abs(offsets[2]), f"nose offsets {offsets}"
    assert offsets[0] > 1 and offsets[-1] < -1, f"nose offsets {offsets}"
    assert all(a < b for a, b in zip(centres, centres[1:])), f"silhouette centres {centres}"
    # Pitch: the head sits behind the pivot (0, 0, 0.2), so its silhouette moves down the image by several pixels as
    # the pitch goes from -0.3 to +0.3 (measured 2.5-5 px on the first 12 people; the nearest point is no guide here,
    # a long nose is nearest from both sides).
    ud = render_heads(HeadParams(p.identity.expand(2, -1), p.photo.expand(2, -1)),
                      camera_params(torch.zeros(2), torch.tensor([-0.3, 0.3])), RES, supersample=1)
    rows = [torch.nonzero(ud.mask[k, 0] > 0.5)[:, 0].float().mean().item() for k in range(2)]
    assert rows[0] + 2 < rows[1], f"silhouette rows {rows}"


def test_bad_input_is_rejected():
    p = _params(0)
    with pytest.raises(ValueError, match="cameras"):
        render_heads(p, _frontal(2), RES)
    with pytest.raises(ValueError, match=r"\[B, 25\]"):
        render_heads(p, torch.zeros(1, 16), RES)
    with pytest.raises(ValueError, match="identity parameters"):
        HeadParams(torch.zeros(1, N_ID + 1), p.photo)


# The bars of the shipped weights. Until the weights meet them (metrics.json, measured on every held-out photo by
# `export`), the checks below hold the weights to what their model card records, so a regression still fails; 4
# samples are noisier than 1,024, hence the margin.
BARS = {"generator_psnr": 24.0, "encoder_psnr": 22.0, "encoder_id": 0.8, "identity_tar": 0.95}
SAMPLE_MARGIN_DB = 1.5


def _recorded() -> dict:
    return json.loads((WEIGHTS / "metrics.json").read_text())


@pytest.mark.skipif(not (WEIGHTS / "identity.safetensors").exists(), reason="weights/default/ not shipped yet")
def test_shipped_identity_net_verifies_heldout_people():
    from guide_core.world.bundle import load_world_nets
    from tools.world.data import CHUNK_IDS, WorldData, render_chunk
    from tools.world.evaluate import verification_tar
    nets = load_world_nets("cpu")
    chunk = render_chunk(9000, 3, seed=77, resolution=64)  # people never seen in training (other seed)
    data = WorldData(chunk["z"], chunk["c"], chunk["image"], chunk["depth"], chunk["person"])
    result = verification_tar(nets["identity"], data, far=0.01)
    assert data.person.unique().numel() == CHUNK_IDS
    assert result["tar"] >= 0.95, result


@pytest.mark.skipif(not (WEIGHTS / "generator.safetensors").exists(), reason="weights/default/ not shipped yet")
def test_shipped_generator_reproduces_heldout_renders():
    from guide_core.world.bundle import load_world_nets
    from guide_core.world.heads import render_z
    from tools.world.evaluate import psnr
    G = load_world_nets("cpu")["G"]
    z = random_z(4, 424242)
    c = camera_params(torch.tensor([0.0, 0.3, -0.3, 0.15]), torch.tensor([0.0, -0.1, 0.1, 0.0]))
    target = render_z(z, c, 64).image
    with torch.no_grad():
        image = G(z, c, noise_mode="const", deterministic=True)["image"]
    value = psnr(image, target)
    floor = min(BARS["generator_psnr"], _recorded()["generator"]["psnr"]) - SAMPLE_MARGIN_DB
    assert value.mean() >= floor, f"held-out PSNR {value.tolist()} < {floor:.2f} (model card: {_recorded()['generator']})"


@pytest.mark.skipif(not (WEIGHTS / "generator.safetensors").exists(), reason="weights/default/ not shipped yet")
def test_default_bundle_is_complete():
    from guide_core.bundle import pil_to_tensor
    from guide_core.registry import load_bundle
    bundle = load_bundle("default")
    assert bundle.encoder is not None and bundle.feature_net is not None
    assert bundle.w_avg.shape == (512,) and bundle.cond_c.shape == (1, 25)
    photo = bundle.extras["photo"](1, 0)
    x = pil_to_tensor(bundle.align(photo))
    assert x.shape == (1, 3, 64, 64)
    ws = bundle.invert(x)
    assert ws.shape == (1, bundle.num_ws, 512)
    image = bundle.render(bundle.G, ws)
    assert image.shape == (1, 3, 64, 64)
    d = bundle.perceptual(image, x)
    assert d.shape == (1,) and 0 <= float(d) <= 1
    assert bundle.feature_net(image).shape == (1, 128)
    with pytest.raises(ValueError, match="square"):
        from PIL import Image
        bundle.align(Image.new("RGB", (64, 40)))


@pytest.mark.skipif(not (WEIGHTS / "encoder.safetensors").exists(), reason="weights/default/ not shipped yet")
def test_shipped_encoder_inverts_heldout_photos():
    from guide_core.world.bundle import load_world_nets
    from guide_core.world.heads import render_z
    from tools.world.evaluate import psnr
    nets = load_world_nets("cpu")
    G, enc, idnet = nets["G"], nets["encoder"], nets["identity"]
    z = random_z(4, 515151)
    c = camera_params(torch.tensor([0.0, 0.2, -0.2, 0.0]), torch.tensor([0.0, 0.0, 0.1, -0.1]))
    photo = render_z(z, c, 64).image
    with torch.no_grad():
        ws = enc(photo) + G.backbone.mapping.w_avg
        image = G.synthesis(ws, c, noise_mode="const", deterministic=True)["image"]
        similarity = (idnet(image) * idnet(photo)).sum(1)
    card = _recorded()["encoder"]
    floor_psnr = min(BARS["encoder_psnr"], card["rerender_psnr"]) - SAMPLE_MARGIN_DB
    floor_id = min(BARS["encoder_id"], card["id_similarity"]) - 0.1
    assert psnr(image, photo).mean() >= floor_psnr, f"re-render PSNR {psnr(image, photo).tolist()} < {floor_psnr:.2f}"
    assert similarity.mean() >= floor_id, f"identity similarity {similarity.tolist()} < {floor_id:.2f}"


# The model card must not overstate the shipped weights: any bar that metrics.json misses is named in its status line,
# and the card is the one export writes from metrics.json (architecture, steps, numbers).
@pytest.mark.skipif(not (WEIGHTS / "metrics.json").exists(), reason="weights/default/ not shipped yet")
def test_model_card_states_every_unmet_bar():
    card = (WEIGHTS / "MODEL_CARD.md").read_text()
    status = next(line for line in card.splitlines() if line.startswith("Status:"))
    m = _recorded()
    unmet = {"generator PSNR": m["generator"]["psnr"] < BARS["generator_psnr"],
             "encoder re-render PSNR": m["encoder"]["rerender_psnr"] < BARS["encoder_psnr"],
             "encoder identity similarity": m["encoder"]["id_similarity"] < BARS["encoder_id"],
             "TAR": m["identity"]["tar"] < BARS["identity_tar"]}
    for name, missed in unmet.items():
        assert (name in status) == missed, f"status line {status!r} vs {name} {'missed' if missed else 'met'}"
    from tools.world.card import model_card
    assert card == model_card(m), "MODEL_CARD.md is not the card export writes for metrics.json: re-run export"


# benchmarks/world_erasure.py run as the README runs it; its JSON result.
def _erasure_benchmark(*flags: str) -> dict:
    import subprocess
    import sys
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "world_erasure.py"
    out = subprocess.run([sys.executable, str(script), "--json", *flags],
                         capture_output=True, text=True, timeout=900, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# The erasure benchmark whose numbers are in the README, at 2 iterations: it reads the shipped weights, reports the
# flags it was given, and two small steps leave everyone (the source included) almost as they were.
@pytest.mark.slow
@pytest.mark.skipif(not (WEIGHTS / "encoder.safetensors").exists(), reason="weights/default/ not shipped yet")
def test_erasure_benchmark_runs_and_two_iterations_change_little():
    r = _erasure_benchmark("--person", "1", "--iters", "2", "--n-glob", "1", "--lr", "1e-4")
    assert r["iters"] == 2 and r["overrides"] == {"iters": 2, "n_glob": 1, "lr": 1e-4}
    assert r["source_before"] >= 0.9, r
    assert abs(r["source_after"] - r["source_before"]) < 0.1, r
    assert r["far_min"] > 0.95 and r["far_n"] + len(r["near"]) == 24, r
    least = r["far_least_kept"]
    assert 1 <= least["distance_rank"] <= r["far_n"] and least["similarity_to_source"] < r["threshold"], least
    assert 10 < least["median_w_distance"] < 60, least


# The point of the default world, at its default settings, on person 2, the one whose least-kept far person
# is its nearest in w: the source is erased from 0.9+ to <= 0.3, its other photos drop, far people keep >= 0.8.
@pytest.mark.slow
@pytest.mark.skipif(not (WEIGHTS / "encoder.safetensors").exists(), reason="weights/default/ not shipped yet")
def test_default_settings_erase_the_source_and_keep_far_people():
    r = _erasure_benchmark("--person", "2")
    assert r["iters"] == 160 and r["overrides"] == {}, r
    assert r["source_before"] >= 0.9 and r["source_after"] <= 0.3, r
    assert r["others_after"] < r["others_before"] and r["far_min"] >= 0.8, r


# Resumable training (long CPU runs stop and go on): a run resumed from its checkpoint continues at the saved step
# with the saved optimiser state and loss history, instead of starting over.
def test_generator_training_resumes_from_its_checkpoint(tmp_path):
    from tools.world.data import render_dataset
    from tools.world.generator import train_generator
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    messages: list[str] = []
    kwargs = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", out=tmp_path / "run",
                  log=messages.append)
    settings = dict(batch=2, ckpt_every=2, eval_every=2, coarse_fraction=0.0)
    train_generator(config=_gen(steps=2, **settings), **kwargs)
    first = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    train_generator(config=_gen(steps=4, **settings), resume=True, **kwargs)
    last = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert "resumed generator training at step 2" in messages
    assert last["step"] == 4
    adam_steps = {float(v["step"]) for v in last["opt"]["state"].values()}
    assert adam_steps == {4.0}, f"optimiser restarted: Adam steps {adam_steps}"
    history = json.loads(last["history"])
    assert [h["step"] for h in history] == [2, 4] and history[0] == json.loads(first["history"])[0]
    # The resumed call changed the schedule (4 steps, not 2): a second leg, which the model card lists.
    legs = json.loads(last["legs"])
    assert [(leg["from_step"], leg["steps"], leg["polish_steps"]) for leg in legs] == [(0, 2, 0), (2, 4, 0)]


# The model card lists the calls a generator was trained with, and the learning rate a resumed, longer polish
# restarted at (the cosine of the new length at the step it resumed from).
def test_model_card_lists_the_generator_legs():
    from tools.world.card import model_card
    leg = {"steps": 17000, "lr": 2e-3, "polish_lr": 2e-4, "batch": 8}
    legs = [{"from_step": 0, "polish_steps": 3000, "normalize_z": True, **leg},
            {"from_step": 20000, "polish_steps": 9000, "normalize_z": False, **leg},
            {"from_step": 26000, "polish_steps": 15000, "normalize_z": False, **leg, "batch": 16}]

    def calls(card: str) -> str:  # the card's line listing the generator's training calls
        return next(line for line in card.splitlines() if "generator's calls" in line)

    card = model_card({"generator": {"steps": 32000, "psnr": 24.0, "legs": legs}})
    line = calls(card)
    assert "steps 0–20,000: `--steps 17000 --polish-steps 3000 --normalize-z`" in line
    # 2e-4 * (1 + cos(pi * 3000 / 9000)) / 2 = 1.5e-4; 2e-4 * (1 + cos(pi * 9000 / 15000)) / 2 = 6.9e-5
    assert "20,000–26,000: `--resume --steps 17000 --polish-steps 9000` (polish learning rate back up to 1.5e-04; z " \
           "read as it is from here)" in line
    assert "26,000–32,000: `--resume --steps 17000 --polish-steps 15000 --batch 16` (polish learning rate back up " \
           "to 6.9e-05)" in line
    assert "15,000 steps here" in card
    # A resumed call repeats the architecture it continues, which a resume would otherwise refuse.
    line = calls(model_card({"generator": {"steps": 32000, "mapping_layers": 4, "legs": [
        legs[0], {**legs[1], "widened_from": [1024, 64], "widened_to": [4096, 128]}, legs[2]]}}))
    assert "0–20,000: `--steps 17000 --polish-steps 3000 --mapping-layers 4 --normalize-z`" in line
    assert "20,000–26,000: `--resume --steps 17000 --polish-steps 9000 --mapping-layers 4 --channel-base 4096 " \
           "--channel-max 128 --widen`" in line
    assert "26,000–32,000: `--resume --steps 17000 --polish-steps 15000 --batch 16 --mapping-layers 4 " \
           "--channel-base 4096 --channel-max 128`" in line
    # Learning rates other than train_generator's defaults are flags of the call that used them.
    line = calls(model_card({"generator": {"steps": 42000, "legs": [legs[0], {**legs[1], "lr": 1e-3},
                                                                     {**legs[2], "steps": 35000, "polish_lr": 3e-4}]}}))
    assert "20,000–26,000: `--resume --steps 17000 --polish-steps 9000 --lr 0.001` (polish" in line
    assert "26,000–42,000: `--resume --steps 35000 --polish-steps 15000 --batch 16 --polish-lr 0.0003`" in line
    assert "generator's calls" not in model_card({"generator": {"steps": 22000, "psnr": 23.4}})


# `export`: the shipped files are the checkpoints' weights (float32 safetensors + JSON), the metrics are
# measured on every held-out photo, and the card is the one written from them.
@pytest.mark.slow
def test_export_ships_the_checkpoints_and_measures_every_heldout_photo(tmp_path):
    from safetensors.torch import load_file
    from guide_core.world.generator import load_world_generator
    from tools.world.card import model_card
    from tools.world.data import load_dataset, render_dataset
    from tools.world.encoder import train_encoder
    from tools.world.evaluate import evaluate_generator
    from tools.world.export import export_weights
    from tools.world.generator import train_generator
    from tools.world.identity import train_identity
    runs, out = tmp_path / "runs", tmp_path / "weights"
    render_dataset(runs / "data" / "train", 32, 2, seed=5, progress=False)
    render_dataset(runs / "data" / "heldout", 32, 3, seed=6, progress=False)
    quiet = {"log": lambda m: None}
    train_identity(runs / "data" / "train", runs / "data" / "heldout", runs / "identity", _ident(steps=2, batch=16),
                   **quiet)
    train_generator(runs / "data" / "train", runs / "data" / "heldout", runs / "generator",
                    _gen(steps=2, batch=2, coarse_fraction=0.0), **quiet)
    train_encoder(runs / "encoder", runs / "generator", runs / "identity", _enc(steps=2, batch=4), **quiet)
    metrics = export_weights(runs, out)
    assert {p.name for p in out.iterdir()} == {f"{n}.{e}" for n in ("generator", "identity", "encoder")
                                                for e in ("safetensors", "json")} | {"metrics.json", "MODEL_CARD.md"}
    assert metrics["generator"]["n"] == metrics["encoder"]["n"] == 96, "metrics not measured on all 96 photos"
    ckpt = torch.load(runs / "generator" / "ckpt.pt", weights_only=True)
    shipped = load_file(str(out / "generator.safetensors"))
    assert shipped.keys() == ckpt["G"].keys()
    assert all(torch.equal(shipped[k], v.float()) for k, v in ckpt["G"].items())
    G = load_world_generator(shipped, json.loads((out / "generator.json").read_text()))
    again = evaluate_generator(G, load_dataset(runs / "data" / "heldout"), n=96)["psnr"]
    assert abs(again - metrics["generator"]["psnr"]) < 1e-4, f"{again} vs {metrics['generator']['psnr']}"
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (out / "MODEL_CARD.md").read_text() == model_card(metrics)
    assert "on 96 photos" in model_card(metrics)
    # A session whose runs/ folder is gone goes on from the exported weights: same step, legs and tensors, new Adam.
    messages: list[str] = []
    train_generator(runs / "data" / "train", runs / "data" / "heldout", tmp_path / "again",
                    _gen(steps=2, polish_steps=2, batch=2, coarse_fraction=0.0), init_from=out, log=messages.append)
    assert any("starting from the exported generator" in m for m in messages), messages
    state = torch.load(tmp_path / "again" / "ckpt.pt", weights_only=True)
    assert state["step"] == 4
    legs = json.loads(state["legs"])
    assert legs[0] == metrics["generator"]["legs"][0] and legs[1]["from_step"] == 2 and legs[1]["init_from"] == str(out)
    moved = max((state["G"][k] - v).abs().max().item() for k, v in shipped.items() if not k.endswith("w_avg"))
    assert 0 < moved < 1e-4, moved  # two polish steps at the warm-up rate (1e-6), not a fresh network
    assert f"steps 2–4: `--init-from {out} --steps 2 --polish-steps 2 --batch 2`" in model_card(
        {"generator": {"steps": 4, "legs": legs}})
    messages.clear()
    train_encoder(tmp_path / "encoder_again", runs / "generator", tmp_path / "no_identity_run", _enc(steps=4, batch=4),
                  init_from=out, log=messages.append)
    assert any("starting from the exported encoder" in m for m in messages), messages
    state = torch.load(tmp_path / "encoder_again" / "ckpt.pt", weights_only=True)
    encoder = load_file(str(out / "encoder.safetensors"))
    trained = [k for k in encoder if "running_" not in k and "num_batches" not in k]  # not the batch-norm statistics
    moved = max((state["enc"][k] - encoder[k]).abs().max().item() for k in trained)
    assert state["step"] == 4 and 0 < moved < 5e-3, (state["step"], moved)  # two steps at the cosine's 5e-4
    from tools.world.encoder import _load_identity
    identity = _load_identity(tmp_path / "no_identity_run", out)  # the identity loss's net: the exported one
    exported_identity = load_file(str(out / "identity.safetensors"))
    assert all(torch.equal(v.float(), exported_identity[k]) for k, v in identity.state_dict().items())
    # A generator exported alone keeps the exported identity net and encoder: re-measured with it, marked as kept.
    import shutil
    (tmp_path / "alone" / "generator").mkdir(parents=True)
    shutil.copy(runs / "generator" / "ckpt.pt", tmp_path / "alone" / "generator" / "ckpt.pt")
    (tmp_path / "alone" / "data").symlink_to(runs / "data")
    kept = export_weights(tmp_path / "alone", out)
    assert kept["identity"]["kept_from_export"] and kept["encoder"]["kept_from_export"]
    assert {k: kept["identity"][k] for k in ("steps", "tar", "generator_mix")} == {
        k: metrics["identity"][k] for k in ("steps", "tar", "generator_mix")}
    assert abs(kept["encoder"]["rerender_psnr"] - metrics["encoder"]["rerender_psnr"]) < 1e-4, (kept, metrics)
    assert "kept from the previous export" in (out / "MODEL_CARD.md").read_text()


# A generator trained at another tri-plane resolution (the road to sharper eyes and glasses) or mapping depth saves,
# resumes only as what it is, and loads back as what it is.
def test_generator_architecture_is_kept_by_its_checkpoint(tmp_path):
    from guide_core.world.generator import generator_from_checkpoint, mapping_layers_of, plane_resolution_of
    from tools.world.data import render_dataset
    from tools.world.generator import train_generator
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    kwargs = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", out=tmp_path / "run", log=lambda m: None)
    settings = dict(batch=2, ckpt_every=1, eval_every=1, coarse_fraction=0.0)
    train_generator(config=_gen(steps=1, plane_resolution=128, mapping_layers=6, **settings), **kwargs)
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert plane_resolution_of(ckpt["G"]) == 128 and mapping_layers_of(ckpt["G"]) == 6
    G = generator_from_checkpoint(ckpt)
    assert G.backbone.synthesis.img_resolution == 128 and G.backbone.num_ws == 12
    assert G.backbone.mapping.num_layers == 6
    with pytest.raises(ValueError, match="128² tri-planes and a 6-layer mapping, not 64² tri-planes"):
        train_generator(config=_gen(steps=2, plane_resolution=64, mapping_layers=6, **settings), resume=True,
                        **kwargs)
    with pytest.raises(ValueError, match="a 6-layer mapping, not 128² tri-planes and a 4-layer mapping"):
        train_generator(config=_gen(steps=2, plane_resolution=128, mapping_layers=4, **settings), resume=True,
                        **kwargs)
    train_generator(config=_gen(steps=2, plane_resolution=128, mapping_layers=6, **settings), resume=True, **kwargs)
    for of in (plane_resolution_of, mapping_layers_of):
        with pytest.raises(ValueError, match="not a world generator"):
            of({"encoder.weight": torch.zeros(1)})


# Widening (train_generator's widen, `--widen`): a trained generator grows wider synthesis blocks and draws the same
# pictures at first; the checkpoint keeps the new widths, its leg says where it grew, and narrower widths fail.
def test_widened_generator_draws_the_same_pictures_and_trains_on(tmp_path):
    from guide_core.world.cameras import camera_params
    from guide_core.world.generator import (build_generator, generator_config, generator_from_checkpoint,
                                            load_world_generator, synthesis_channels_of)
    from guide_core.world.heads import random_z
    from tools.world.card import model_card
    from tools.world.data import render_dataset
    from tools.world.generator import train_generator, widen_state
    G = build_generator(3, mapping_layers=2)
    with torch.no_grad():  # non-zero biases and noise strengths (fresh ones are zero), so that every kept weight counts
        for name, p in G.named_parameters():
            if name.endswith(("bias", "noise_strength")):
                p.add_(0.1 * torch.randn_like(p))
    wide = load_world_generator(widen_state(G.state_dict(), 2048, 128, normalize_z=False), generator_config(G))
    assert synthesis_channels_of(G.state_dict()) == (1024, 64)
    assert synthesis_channels_of(wide.state_dict()) == (2048, 128)
    assert [getattr(wide.backbone.synthesis, f"b{r}").conv1.weight.shape[0] for r in (4, 8, 16, 32, 64)] == [
        128, 128, 128, 64, 32]
    z, c = random_z(3, 7), camera_params(torch.tensor([-0.4, 0.0, 0.4]), torch.zeros(3))
    fresh = build_generator(3, mapping_layers=2, channel_base=2048, channel_max=128)
    a, b, f = (net.eval()(z, c, noise_mode="const", deterministic=True) for net in (G, wide, fresh))
    for key in ("image", "image_raw", "image_depth"):
        diff = (a[key] - b[key]).abs().max().item()
        assert diff < 1e-4, f"{key}: widened generator differs by up to {diff}"
    assert (a["image"] - f["image"]).abs().max() > 0.1, "a fresh wide generator should draw something else"
    with pytest.raises(ValueError, match="narrower than the saved generator's"):
        widen_state(wide.state_dict(), 1024, 64, normalize_z=False)
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    messages: list[str] = []
    kwargs = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", out=tmp_path / "run",
                  log=messages.append)
    settings = dict(batch=2, ckpt_every=1, eval_every=1, coarse_fraction=0.0, mapping_layers=2)
    train_generator(config=_gen(steps=1, **settings), **kwargs)
    with pytest.raises(ValueError, match="synthesis widths 1024 / 64, not 2048 / 128"):
        train_generator(config=_gen(steps=3, channel_base=2048, channel_max=128, **settings), resume=True, **kwargs)
    train_generator(config=_gen(steps=3, channel_base=2048, channel_max=128, **settings), resume=True, widen=True,
                    **kwargs)
    assert any("widened the synthesis from 1024 / 64 to 2048 / 128" in m for m in messages), messages
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 3 and synthesis_channels_of(ckpt["G"]) == (2048, 128)
    assert synthesis_channels_of(generator_from_checkpoint(ckpt).state_dict()) == (2048, 128)
    legs = json.loads(ckpt["legs"])
    assert (legs[-1]["from_step"], legs[-1]["widened_from"], legs[-1]["widened_to"]) == (1, [1024, 64], [2048, 128])
    card = model_card({"generator": {"steps": 3, "mapping_layers": 2, "channel_base": 2048, "channel_max": 128,
                                     "legs": legs}})
    assert "steps 0–1: `--steps 1 --polish-steps 0 --batch 2 --mapping-layers 2`" in card
    assert ("steps 1–3: `--resume --steps 3 --polish-steps 0 --batch 2 --mapping-layers 2 --channel-base 2048 "
            "--channel-max 128 --widen`") in card
    assert "channel_base 2048 / channel_max 128" in card


# The polish phase (train_generator's polish_steps) follows the main phase in the same checkpoint: squared image
# error at MSE_WEIGHT instead of L1, no perceptual term, and a learning rate that warms up again from near zero.
def test_generator_polish_phase_switches_to_squared_error(tmp_path):
    import torch.nn.functional as F
    from guide_core.world.generator import build_generator
    from tools.world.data import load_dataset, render_dataset
    from tools.world.generator import MSE_WEIGHT, generator_loss, train_generator
    from tools.world.identity import train_identity
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    data = load_dataset(tmp_path / "data")
    G, idx = build_generator(), torch.arange(2)
    torch.manual_seed(3)  # the same stratified ray jitter in all three renders
    _, l1 = generator_loss(G, data, idx, pixel="l1")
    torch.manual_seed(3)
    _, mse = generator_loss(G, data, idx, pixel="mse")
    torch.manual_seed(3)
    with torch.no_grad():
        image = G(data.z[idx], data.c[idx], noise_mode="const")["image"]
    assert abs(l1["img"] - (image - data.images(idx)).abs().mean().item()) < 1e-5
    expected = MSE_WEIGHT * F.mse_loss(image, data.images(idx)).item()
    assert abs(mse["img"] - expected) < 1e-5, f"MSE term {mse['img']} vs {expected}"
    with pytest.raises(ValueError, match="'l1' or 'mse'"):
        generator_loss(G, data, idx, pixel="l2")
    folders = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data")
    train_identity(out=tmp_path / "identity", config=_ident(steps=2, batch=16, eval_every=2), log=lambda m: None,
                   **folders)
    kwargs = dict(out=tmp_path / "run", identity_dir=tmp_path / "identity", log=lambda m: None, **folders)
    settings = dict(batch=2, ckpt_every=1, eval_every=1, coarse_fraction=0.0)
    train_generator(config=_gen(steps=2, **settings), **kwargs)
    train_generator(config=_gen(steps=2, polish_steps=2, polish_lr=1e-4, **settings), resume=True, **kwargs)
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    history = json.loads(state["history"])
    assert state["step"] == 4 and [h["phase"] for h in history] == ["main", "main", "polish", "polish"]
    assert ["per" in h for h in history] == [True, True, False, False]
    last_rate = 1e-4 * (2 / 200) * 0.5 * (1 + math.cos(math.pi * 1 / 2))  # second polish step, still warming up
    assert state["opt"]["param_groups"][0]["lr"] == pytest.approx(last_rate)


# The generator's perceptual loss keeps the identity net its run started with: the identity net is retrained later on
# the generator's renders, and a resumed generator run must not silently switch losses.
def test_generator_checkpoint_keeps_its_perceptual_net(tmp_path):
    from tools.world.data import render_dataset
    from tools.world.generator import train_generator
    from tools.world.identity import train_identity
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    data = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data")
    train_identity(out=tmp_path / "identity", config=_ident(steps=2, batch=16, eval_every=2), log=lambda m: None,
                   **data)
    first = torch.load(tmp_path / "identity" / "ckpt.pt", weights_only=True)["net"]
    kwargs = dict(out=tmp_path / "run", identity_dir=tmp_path / "identity", log=lambda m: None, **data)
    settings = dict(batch=2, ckpt_every=2, eval_every=2, coarse_fraction=0.0)
    train_generator(config=_gen(steps=2, **settings), **kwargs)
    train_identity(out=tmp_path / "identity", config=_ident(steps=2, batch=16, seed=1, eval_every=2),
                   log=lambda m: None, **data)
    second = torch.load(tmp_path / "identity" / "ckpt.pt", weights_only=True)["net"]
    assert not torch.equal(first["stem.0.weight"], second["stem.0.weight"])
    train_generator(config=_gen(steps=4, **settings), resume=True, **kwargs)
    kept = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["perceptual_net"]
    diff = max((kept[k].float() - first[k].float()).abs().max().item() for k in first)
    assert diff == 0, f"perceptual net changed on resume (max diff {diff})"


# Stage two of the identity net sees the generator's renders, each G's picture of one training photo (its z and camera).
def test_identity_net_trains_on_generator_renders_of_its_photos(tmp_path):
    from guide_core.world.generator import build_generator, generator_config
    from tools.world.data import load_dataset, render_dataset, save_checkpoint
    from tools.world.identity import generator_renders, train_identity
    render_dataset(tmp_path / "data", 32, 3, seed=5, progress=False)
    data = load_dataset(tmp_path / "data")
    G = build_generator(0).eval()
    images, rows = generator_renders(G, data, per_person=2)
    assert images.dtype == torch.uint8 and len(rows) == 64
    assert torch.equal(data.person[rows].bincount(), torch.full((32,), 2)), "two renders of every person"
    assert len(set(rows.tolist())) == 64, "two different photos of each person"
    with torch.no_grad():
        expected = G.synthesis(G.mapping(data.z[rows[5:6]], data.c[rows[5:6]]), data.c[rows[5:6]],
                               noise_mode="const", deterministic=True)["image"]
    err = ((expected.clamp(-1, 1) + 1) * 127.5 - images[5].float()).abs().max().item()
    assert err <= 1.0, f"render 5 is not G's picture of photo {int(rows[5])} (max diff {err})"
    (tmp_path / "generator").mkdir()
    saved = {"G": G.state_dict(), "config": json.dumps(generator_config(G))}
    save_checkpoint(tmp_path / "generator" / "ckpt.pt", saved, torch.optim.Adam(G.parameters()), torch.Generator(),
                    7, [])
    train_identity(tmp_path / "data", tmp_path / "data", tmp_path / "identity",
                   _ident(steps=2, batch=16, generator_mix=0.25, eval_every=2), generator_dir=tmp_path / "generator",
                   log=lambda m: None)
    cache = torch.load(tmp_path / "identity" / "generator_renders.pt", weights_only=True)
    assert int(cache["generator_step"]) == 7 and torch.equal(cache["image"], images)
    assert torch.equal(cache["person"], data.person[rows])
    assert float(torch.load(tmp_path / "identity" / "ckpt.pt", weights_only=True)["generator_mix"]) == 0.25


# The pair term pulls a render's embedding onto the embedding of the photo it renders (beyond the shared class).
def test_identity_pair_term_pulls_renders_onto_their_photos(tmp_path):
    from guide_core.world.generator import build_generator, generator_config
    from guide_core.world.identity import load_identity_net
    from tools.world.data import load_dataset, render_dataset, save_checkpoint
    from tools.world.identity import render_rows, train_identity
    render_dataset(tmp_path / "data", 32, 3, seed=5, progress=False)
    data = load_dataset(tmp_path / "data")
    G = build_generator(0).eval()
    (tmp_path / "generator").mkdir()
    saved = {"G": G.state_dict(), "config": json.dumps(generator_config(G))}
    save_checkpoint(tmp_path / "generator" / "ckpt.pt", saved, torch.optim.Adam(G.parameters()), torch.Generator(),
                    7, [])
    pair_similarity = {}
    for weight in (0.0, 20.0):
        out = tmp_path / f"identity_{weight:g}"
        train_identity(tmp_path / "data", tmp_path / "data", out,
                       _ident(steps=60, batch=32, lr=5e-3, eval_every=60, generator_mix=0.25, lambda_pair=weight),
                       generator_dir=tmp_path / "generator", log=lambda m: None)
        state = torch.load(out / "ckpt.pt", weights_only=True)
        assert float(state["lambda_pair"]) == weight
        net = load_identity_net(state["net"], json.loads(state["config"]))
        cache = torch.load(out / "generator_renders.pt", weights_only=True)
        rows = render_rows(data)  # the photos the cached renders picture (same seed as training)
        with torch.no_grad():
            rendered = net(cache["image"].float() / 127.5 - 1)
            photos = net(data.images(rows))
        pair_similarity[weight] = (rendered * photos).sum(1).mean().item()
    assert pair_similarity[20.0] > pair_similarity[0.0] + 0.3, pair_similarity
    # more than half renders would leave some render without its photo in the batch
    with pytest.raises(ValueError, match="generator_mix"):
        train_identity(tmp_path / "data", tmp_path / "data", tmp_path / "bad", _ident(steps=1, generator_mix=0.6),
                       generator_dir=tmp_path / "generator")


# Rendering in worker processes (`render-data --workers N`) writes the very files a single process writes: chunks are
# seeded by their index, not by the order they finish in.
def test_parallel_rendering_writes_the_serial_files(tmp_path):
    from tools.world.data import load_dataset, render_dataset
    render_dataset(tmp_path / "serial", 64, 1, seed=5, progress=False)
    render_dataset(tmp_path / "parallel", 64, 1, seed=5, progress=False, workers=2)
    names = sorted(p.name for p in (tmp_path / "parallel").iterdir())
    assert names == ["chunk_0000.pt", "chunk_0001.pt"], names  # no temporary file left behind
    a, b = load_dataset(tmp_path / "serial"), load_dataset(tmp_path / "parallel")
    for key in ("z", "c", "image", "depth", "person"):
        diff = (getattr(a, key).double() - getattr(b, key).double()).abs().max().item()
        assert diff == 0, f"{key}: max difference {diff}"


# The world's parameters depend on z's length, which EG3D's mapping network divides away (normalize_z): world
# generators read z as it is, the choice travels with the weights (config), and configs saved before the option
# (weights trained that way) load with EG3D's normalisation.
def test_world_generator_reads_the_length_of_z(tmp_path):
    from guide_core.world.generator import (build_generator, generator_config, generator_from_checkpoint,
                                            load_world_generator)
    from guide_core.world.heads import params_from_z, random_z
    from tools.world.data import render_dataset
    from tools.world.generator import train_generator
    z, c = random_z(4, 0), torch.zeros(4, 25)
    assert (params_from_z(1.2 * z).identity - params_from_z(z).identity).abs().max() > 1e-3
    G = build_generator()
    state, config = G.state_dict(), generator_config(G)
    assert config["init_kwargs"]["mapping_kwargs"]["normalize_z"] is False
    with torch.no_grad():
        for G2, scale_free in ((load_world_generator(state, json.loads(json.dumps(config))), False),
                               (load_world_generator(state, {}), True)):
            diff = (G2.mapping(1.2 * z, c) - G2.mapping(z, c)).abs().max().item()
            assert (diff < 1e-5) == scale_free, f"normalize_z={G2.backbone.mapping.normalize_z}: max diff {diff:.2e}"
    # A run started with EG3D's normalisation goes on without it, and its checkpoint says so.
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    messages: list[str] = []
    kwargs = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", out=tmp_path / "run",
                  log=messages.append)
    settings = dict(batch=2, coarse_fraction=0.0)
    saved = lambda: generator_from_checkpoint(torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True))
    train_generator(config=_gen(steps=1, normalize_z=True, **settings), **kwargs)
    assert saved().backbone.mapping.normalize_z is True
    train_generator(config=_gen(steps=2, **settings), resume=True, **kwargs)
    assert "z normalisation off from step 1" in messages
    assert saved().backbone.mapping.normalize_z is False


# Training on a GPU (`train generator --device cuda`) resumes from its checkpoint, and the checkpoint opens on a
# machine without a GPU with the same weights.
@pytest.mark.gpu
def test_generator_trained_on_gpu_checkpoints_on_the_cpu(tmp_path):
    from guide_core.world.generator import generator_from_checkpoint
    from tools.world.data import load_dataset, render_dataset
    from tools.world.evaluate import evaluate_generator
    from tools.world.generator import train_generator
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    kwargs = dict(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", out=tmp_path / "run", device="cuda",
                  log=lambda m: None)
    settings = dict(batch=4, ckpt_every=2, eval_every=2, coarse_fraction=0.0)
    train_generator(config=_gen(steps=2, **settings), **kwargs)
    train_generator(config=_gen(steps=4, **settings), resume=True, **kwargs)
    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    tensors = [v for v in state["G"].values()] + [t for s in state["opt"]["state"].values() for t in s.values()]
    assert all(t.device.type == "cpu" for t in tensors if isinstance(t, torch.Tensor))
    data = load_dataset(tmp_path / "data")
    on_gpu = evaluate_generator(generator_from_checkpoint(state).cuda(), data.to("cuda"), n=8)["psnr"]
    on_cpu = evaluate_generator(generator_from_checkpoint(state), data, n=8)["psnr"]
    assert abs(on_gpu - on_cpu) < 0.05, (on_gpu, on_cpu)


# The encoder's training (the GOAE role) learns the codes of the photos it sees and resumes where it stopped.
def test_encoder_training_learns_codes_and_resumes(tmp_path):
    from guide_core.world.encoder import WorldEncoder, load_world_encoder
    from guide_core.world.generator import generator_from_checkpoint
    from tools.world.data import load_dataset, render_dataset
    from tools.world.encoder import _codes, train_encoder
    from tools.world.generator import train_generator
    render_dataset(tmp_path / "data", 32, 2, seed=5, progress=False)
    train_generator(data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", out=tmp_path / "generator",
                    config=_gen(steps=1, batch=2, coarse_fraction=0.0), log=lambda m: None)
    messages: list[str] = []
    kwargs = dict(out=tmp_path / "encoder", generator_dir=tmp_path / "generator", identity_dir=tmp_path / "none",
                  data_dir=tmp_path / "data", heldout_dir=tmp_path / "data", log=messages.append)
    settings = dict(batch=16, rerender_every=0, ckpt_every=15, eval_every=15)
    train_encoder(config=_enc(steps=15, **settings), **kwargs)
    train_encoder(config=_enc(steps=30, **settings), resume=True, **kwargs)
    state = torch.load(tmp_path / "encoder" / "ckpt.pt", weights_only=True)
    assert "resumed encoder training at step 15" in messages and state["step"] == 30
    adam_steps = {float(v["step"]) for v in state["opt"]["state"].values()}
    assert adam_steps == {30.0}, f"optimiser restarted: Adam steps {adam_steps}"
    G = generator_from_checkpoint(torch.load(tmp_path / "generator" / "ckpt.pt", weights_only=True))
    data = load_dataset(tmp_path / "data")
    codes, x = _codes(G, data), data.images(torch.arange(len(data)))
    torch.manual_seed(0)
    untrained = WorldEncoder(G.backbone.num_ws).eval()
    trained = load_world_encoder(state["enc"], json.loads(state["config"]))
    with torch.no_grad():
        before = (untrained(x) + state["w_avg"] - codes).square().mean().item()
        after = (trained(x) + state["w_avg"] - codes).square().mean().item()
    assert after < 0.6 * before, f"code error {before:.4f} -> {after:.4f}"


# `train-all` (the whole chain on one GPU within a time budget) sizes the generator and encoder steps from measured step
# times: the generator gets its share split into main and polish phases, the encoder stops at its default length and
# leaves the rest to the generator, and a budget already spent is refused.
def test_world_plan_sizes_steps_from_measured_step_times():
    from tools.world.pipeline import ENCODER_MAX_STEPS, ENCODER_SHARE, MAIN_FRACTION, WorldPlan, size_plan
    plan = size_plan(WorldPlan("cuda", 9), seconds=1000, generator_step_s=0.1, encoder_step_s=0.02)
    assert plan.encoder_steps == int(1000 * ENCODER_SHARE / 0.02) == 10000
    total = plan.generator_steps + plan.polish_steps
    assert total == 8000 and plan.generator_steps == int(8000 * MAIN_FRACTION)
    capped = size_plan(WorldPlan("cuda", 9), seconds=1000, generator_step_s=0.1, encoder_step_s=0.001)
    assert capped.encoder_steps == ENCODER_MAX_STEPS
    assert capped.generator_steps + capped.polish_steps == int((1000 - ENCODER_MAX_STEPS * 0.001) / 0.1) == 9840
    assert "train generator --steps 5600 --polish-steps 2400 --batch 32 --device cuda" in plan.commands()
    with pytest.raises(ValueError, match="no time left"):
        size_plan(WorldPlan("cuda", 1), seconds=-5, generator_step_s=0.1, encoder_step_s=0.02)


# The whole chain on a tiny world (CPU): each network is trained for exactly the planned steps (the budget's sizing is
# the test above; wall time is never asserted), the second identity stage sees the generator's renders, and the plan
# is saved as the run printed it.
@pytest.mark.slow
def test_train_world_runs_its_plan(tmp_path):
    from tools.world.pipeline import PLAN_ENCODER, PLAN_GENERATOR, WorldPlan, train_world
    plan = WorldPlan("cpu", 0.6, identity=_ident(steps=4), generator=replace(PLAN_GENERATOR, batch=2),
                     encoder=replace(PLAN_ENCODER, batch=8))
    tiny = {"train": (32, 2, 5, 1), "heldout": (32, 2, 6, 1)}
    result = train_world(tmp_path, plan, datasets=tiny, log=lambda m: None)
    assert plan.generator_steps > 0 and plan.polish_steps > 0 and plan.encoder_steps > 0
    assert json.loads((tmp_path / "plan.json").read_text()) == result["plan"]
    load = lambda name: torch.load(tmp_path / name / "ckpt.pt", weights_only=True)
    assert load("generator")["step"] == plan.generator_steps + plan.polish_steps
    assert load("encoder")["step"] == plan.encoder_steps
    assert float(load("identity")["generator_mix"]) > 0 and load("identity")["step"] == 4


def test_train_all_dry_run_prints_the_plan(capsys):
    from tools.world.__main__ import main
    assert main(["train-all", "--dry-run", "--minutes", "12", "--generator-batch", "48"]) == 0
    printed = json.loads(capsys.readouterr().out.split("\n}")[0] + "}")
    assert printed["minutes"] == 12 and printed["generator_batch"] == 48 and printed["device"] == "cuda"


# `train generator --lr --polish-lr` reach train_generator (the model card names them as these flags); unset, the
# trainer's defaults.
def test_train_generator_cli_passes_the_learning_rates(monkeypatch, tmp_path):
    import tools.world.__main__ as cli
    import tools.world.generator as generator
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the CLI's --threads would outlast this test
    monkeypatch.setattr(cli, "_rendering_elsewhere", lambda: False)
    monkeypatch.setattr(cli, "_render_data", lambda which, workers=1: None)
    monkeypatch.setattr(generator, "train_generator", lambda *a, **kw: calls.append(kw) or {})
    args = ["train", "generator", "--out", str(tmp_path), "--steps", "10", "--polish-steps", "5"]
    assert cli.main(args + ["--lr", "1e-3", "--polish-lr", "3e-4"]) == 0
    assert cli.main(args) == 0
    config = [kw["config"] for kw in calls]
    assert (config[0].lr, config[0].polish_lr) == (1e-3, 3e-4)
    assert (config[1].lr, config[1].polish_lr) == (generator.LR, generator.POLISH_LR) == (2e-3, 2e-4)
