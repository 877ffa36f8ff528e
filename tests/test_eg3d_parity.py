# Parity of guide's EG3D with the original implementation on the shared fixture (reduced-width ffhq512-128
# configuration, outputs computed by the original on CPU): ws, truncated ws, tri-planes, deterministic renderings and
# gradients, within the tolerances of ../shared/fixtures/README.md; plus the full-size key layout, the stochastic /
# deterministic rendering switch, and small configurations (2X/4X/8X super-resolution) used by the embedded world.
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from guide_core.eg3d import TriPlaneGenerator, camera_params
from guide_core.eg3d.networks import SynthesisBlock
from tests.util import assert_close, load_io

GRAD_KEYS = ("backbone.synthesis.b256.torgb.weight", "backbone.synthesis.b4.conv1.weight",
             "backbone.synthesis.b64.conv0.affine.weight", "decoder.net.0.weight",
             "superresolution.block1.conv1.weight")


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    folder = fixtures_dir / "eg3d"
    config = json.loads((folder / "config.json").read_text())
    io_tensors = load_io(folder)
    G = TriPlaneGenerator(**config["init_kwargs"])
    G.load_state_dict(load_file(str(folder / "state_dict.safetensors")), strict=True)
    G.neural_rendering_resolution = config["neural_rendering_resolution"]
    return G.eval(), config, io_tensors, folder


@pytest.fixture(scope="module")
def planes(fixture):
    G, _, io_tensors, _ = fixture
    with torch.no_grad():
        return G.get_planes(io_tensors["ws"], noise_mode="const")


def test_full_configuration_key_layout(fixture):
    _, _, _, folder = fixture
    full = json.loads((folder / "keys_full.json").read_text())
    with torch.device("meta"):  # shapes only; no 31 M-value allocation
        G = TriPlaneGenerator(**full["init_kwargs"])
    ours = {k: list(v.shape) for k, v in G.state_dict().items()}
    expected = {k: list(v) for k, v in full["keys"].items()}
    assert sorted(set(expected) - set(ours)) == [], "keys missing from our layout"
    assert sorted(set(ours) - set(expected)) == [], "keys the original does not have"
    assert {k: s for k, s in ours.items() if s != expected[k]} == {}, "shape mismatch"
    assert sum(int(torch.tensor(s).prod()) for s in ours.values()) == json.loads(
        (folder / "config.json").read_text())["n_params_full"]


def test_mapping_and_truncation(fixture):
    G, _, io_tensors, _ = fixture
    with torch.no_grad():
        ws = G.mapping(io_tensors["z"], io_tensors["c_cond"])
        ws07 = G.mapping(io_tensors["z"], io_tensors["c_cond"], truncation_psi=0.7, truncation_cutoff=14)
    assert ws.shape == (2, 14, 512)
    assert_close(ws, io_tensors["ws"], 1e-5, "ws")
    assert_close(ws07, io_tensors["ws_trunc07"], 1e-5, "ws_trunc07")
    # Truncation really moves towards w_avg: 0.7 of the distance remains.
    w_avg = G.backbone.mapping.w_avg
    assert_close(ws07 - w_avg, 0.7 * (ws - w_avg), 1e-5, "truncation ratio")


def test_camera_params(fixture):
    _, _, io_tensors, _ = fixture
    yaw, pitch = io_tensors["cam_yaw_pitch"][:, 0], io_tensors["cam_yaw_pitch"][:, 1]
    assert_close(camera_params(yaw, pitch), io_tensors["c_view"], 1e-6, "c_view")
    frontal = camera_params(0.0, 0.0)
    assert frontal.shape == (1, 25)
    assert_close(frontal, io_tensors["c_cond"][:1], 1e-6, "frontal camera")


def test_planes(fixture, planes):
    _, _, io_tensors, _ = fixture
    assert planes.shape == (2, 96, 256, 256)
    assert_close(planes[:, :, ::8, ::8], io_tensors["planes_sub8"], 1e-4, "planes_sub8")


# One train-mode forward/backward (the heavy part) checks the rendering outputs and the gradients together;
# train mode uses the unfused modulated convolution, whose equality with the fused one is tested separately below.
# The two samples run one at a time (gradients accumulate; nothing couples them) to halve peak memory (~4 GB).
def test_deterministic_synthesis_and_gradients(fixture):
    G, _, io_tensors, _ = fixture
    G.train()
    try:
        G.zero_grad(set_to_none=True)
        outs = []
        for i in range(io_tensors["ws"].shape[0]):
            out = G.synthesis(io_tensors["ws"][i:i + 1], io_tensors["c_view"][i:i + 1], noise_mode="const",
                              deterministic=True)
            (out["image"] * io_tensors["grad_R"][i:i + 1]).sum().backward()
            outs.append({k: v.detach() for k, v in out.items()})
        errors = {name: assert_close(torch.cat([o[name] for o in outs]), io_tensors[name], 1e-3, name)
                  for name in ("image_raw", "image_depth", "image")}
        params = dict(G.named_parameters())
        for key in GRAD_KEYS:
            errors[f"grad:{key} (rel)"] = assert_close(params[key].grad, io_tensors[f"grad:{key}"], 1e-3,
                                                       f"grad:{key}", rel=True)
        print("\n".join(f"max error {name}: {err:.3e}" for name, err in errors.items()))  # shown with -s
    finally:
        G.zero_grad(set_to_none=True)
        G.eval()


def test_fused_and_unfused_modulated_conv_agree():
    torch.manual_seed(0)
    block = SynthesisBlock(16, 8, w_dim=32, resolution=16, img_channels=3, is_last=True, conv_clamp=None,
                           fused_modconv_default="inference_only")
    with torch.no_grad():
        block.conv0.noise_strength.fill_(0.3)
        block.conv1.noise_strength.fill_(0.3)
    x, img, ws = torch.randn(3, 16, 8, 8), torch.randn(3, 3, 8, 8), torch.randn(3, 3, 32)
    with torch.no_grad():
        fused = block.eval()(x, img, ws, noise_mode="const")
        unfused = block.train()(x, img, ws, noise_mode="const")
    assert_close(fused[0], unfused[0], 1e-5, "features fused vs unfused")
    assert_close(fused[1], unfused[1], 1e-5, "image fused vs unfused")


def test_stochastic_default_and_deterministic_switch(fixture, planes):
    G, _, io_tensors, _ = fixture
    c = io_tensors["c_view"]
    with torch.no_grad():
        det1 = G.render_planes(planes, c, deterministic=True, neural_rendering_resolution=32)
        det2 = G.render_planes(planes, c, deterministic=True, neural_rendering_resolution=32)
        rnd1 = G.render_planes(planes, c, neural_rendering_resolution=32)
        rnd2 = G.render_planes(planes, c, neural_rendering_resolution=32)
    G.neural_rendering_resolution = 128
    assert "image" not in det1  # no ws given: no super-resolution
    assert torch.equal(det1["image_raw"], det2["image_raw"]) and torch.equal(det1["image_depth"], det2["image_depth"])
    assert (rnd1["image_raw"] - rnd2["image_raw"]).abs().max() > 1e-4, "stochastic sampling returned identical images"
    for rnd in (rnd1, rnd2):
        assert (rnd["image_raw"] - det1["image_raw"]).abs().mean() < 0.02
        assert (rnd["image_depth"] - det1["image_depth"]).abs().mean() < 0.02


# The embedded world builds the same class at small widths and resolutions; every super-resolution variant must run,
# render each sample with its own camera, and honour noise_mode.
@pytest.mark.parametrize("sr_module, img_resolution, nr_resolution", [
    ("SuperresolutionHybrid2X", 64, 32), ("SuperresolutionHybrid2X", 128, 64),
    ("SuperresolutionHybrid4X", 128, 32), ("SuperresolutionHybrid8X", 64, 16)])
def test_small_configurations(sr_module, img_resolution, nr_resolution):
    torch.manual_seed(1)
    rendering = dict(image_resolution=img_resolution, disparity_space_sampling=False, clamp_mode="softplus",
                     superresolution_module=f"training.superresolution.{sr_module}", c_gen_conditioning_zero=False,
                     c_scale=1.0, superresolution_noise_mode="none", sr_antialias=True, depth_resolution=8,
                     depth_resolution_importance=8, ray_start=2.25, ray_end=3.3, box_warp=1,
                     avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])
    G = TriPlaneGenerator(z_dim=32, c_dim=25, w_dim=512, img_resolution=img_resolution, img_channels=3,
                          mapping_kwargs={"num_layers": 2}, rendering_kwargs=rendering, channel_base=256,
                          channel_max=32, num_fp16_res=0, conv_clamp=None,
                          sr_kwargs={"channel_base": 256, "channel_max": 32}).eval()
    G.neural_rendering_resolution = nr_resolution
    for module in G.modules():
        if hasattr(module, "noise_strength"):
            torch.nn.init.constant_(module.noise_strength, 0.5)
    c = camera_params(torch.tensor([0.0, 0.4]), torch.tensor([0.0, -0.2]))
    z = torch.randn(2, 32)
    with torch.no_grad():
        ws = G.mapping(z, c)
        out = G.synthesis(ws, c, deterministic=True)
        single = G.synthesis(ws[1:], c[1:], deterministic=True)
        no_noise = G.get_planes(ws, noise_mode="none")
        const = G.get_planes(ws, noise_mode="const")
    assert out["image"].shape == (2, 3, img_resolution, img_resolution)
    assert out["image_raw"].shape == (2, 3, nr_resolution, nr_resolution)
    assert out["image_depth"].shape == (2, 1, nr_resolution, nr_resolution)
    assert torch.isfinite(out["image"]).all()
    assert_close(single["image"][0], out["image"][1], 1e-4, "batched vs single sample")
    assert (out["image_raw"][0] - out["image_raw"][1]).abs().max() > 1e-3, "cameras per sample ignored"
    assert (no_noise - const).abs().max() > 1e-3, "noise_mode has no effect"


# guide's one extension of the constructor: coarser tri-planes for small CPU models, kept through save/load.
def test_plane_resolution_extension(tmp_path):
    from guide_core.eg3d.io import load_generator_file, save_generator
    rendering = dict(superresolution_module="SuperresolutionHybrid2X", sr_antialias=True, depth_resolution=4,
                     depth_resolution_importance=4, ray_start=2.25, ray_end=3.3, box_warp=1, clamp_mode="softplus",
                     c_gen_conditioning_zero=False, c_scale=1.0, superresolution_noise_mode="none")
    G = TriPlaneGenerator(z_dim=8, c_dim=25, w_dim=512, img_resolution=32, img_channels=3,
                          mapping_kwargs={"num_layers": 1}, rendering_kwargs=rendering, channel_base=256,
                          channel_max=16, plane_resolution=32)
    G.neural_rendering_resolution = 16
    assert G.backbone.num_ws == 8 and G.init_kwargs["plane_resolution"] == 32
    loaded = load_generator_file(save_generator(G, tmp_path / "small.safetensors"))
    ws = loaded.mapping(torch.randn(1, 8), camera_params(0.0, 0.0))
    assert loaded.get_planes(ws).shape == (1, 96, 32, 32)
    with torch.no_grad():
        assert loaded.synthesis(ws, camera_params(0.2, 0.0))["image"].shape == (1, 3, 32, 32)


def test_upsample_fast_path_matches_reference_upfirdn():
    from guide_core.eg3d.ops import setup_filter, upfirdn2d, upsample2d
    torch.manual_seed(2)
    x = torch.randn(2, 5, 70, 64)
    for taps in ([1, 3, 3, 1], [1, 2, 5, 1]):  # the asymmetric one would expose a flipped kernel
        f = setup_filter(taps)
        assert_close(upsample2d(x, f, gain=1.5), upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=6.0), 1e-5,
                     f"upsample2d {taps}")


# fp16 settings of the released checkpoints: CPU runs stay float32 (with the fp16 layers' conv clamp), and the
# half-precision pre-normalisation of the modulated convolution keeps results close to float32.
def test_fp16_settings():
    rendering = dict(superresolution_module="training.superresolution.SuperresolutionHybrid2X", sr_antialias=True,
                     depth_resolution=4, depth_resolution_importance=4, ray_start=2.25, ray_end=3.3, box_warp=1,
                     clamp_mode="softplus", c_gen_conditioning_zero=False, c_scale=1.0,
                     superresolution_noise_mode="none")
    G = TriPlaneGenerator(z_dim=8, c_dim=25, w_dim=512, img_resolution=32, img_channels=3, sr_num_fp16_res=4,
                          mapping_kwargs={"num_layers": 1}, rendering_kwargs=rendering, channel_base=512,
                          channel_max=16, num_fp16_res=2, conv_clamp=256).eval()
    G.neural_rendering_resolution = 16
    assert G.superresolution.block0.use_fp16 and G.superresolution.block0.conv1.conv_clamp == 256
    assert G.backbone.synthesis.b256.use_fp16 and G.backbone.synthesis.b128.use_fp16
    assert not G.backbone.synthesis.b64.use_fp16
    c = camera_params(0.1, 0.0)
    with torch.no_grad():
        out = G(torch.randn(1, 8), c, deterministic=True)
    assert all(v.dtype == torch.float32 for v in out.values())
    from guide_core.eg3d.networks import modulated_conv2d
    torch.manual_seed(3)
    x, w, s = torch.randn(2, 8, 12, 12), torch.randn(6, 8, 3, 3), torch.randn(2, 8)
    ref = modulated_conv2d(x, w, s, padding=1)
    try:
        half = modulated_conv2d(x.half(), w, s, padding=1)
    except RuntimeError as exc:  # CPU builds without half convolutions
        pytest.skip(f"half-precision conv2d unavailable on this CPU build: {exc}")
    assert half.dtype == torch.float16
    assert_close(half.float(), ref, 2e-2, "fp16 modulated conv vs fp32")
