# Parity of guide's StyleGAN2 generator with rosinality/stylegan2-pytorch's Generator(1024, 512, 8, 2) (the pSp / e4e
# decoder) on tests/fixtures/stylegan2: full-size layout, recipe-regenerated weights, seeded noise buffers, outputs and
# gradients of the original; plus unit tests on small generators that fail on the conventions the fixture singles out.
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from guide_core.stylegan2 import (FROZEN_PREFIXES, TRAINABLE_PREFIXES, StyleGAN2Generator, is_trainable,
                                  make_blur_kernel, upfirdn2d)
from tests.util import assert_close, load_io, recipe_state_dict

# Per-tensor tolerances suggested by the fixture README (smallest power of ten >= 3x the larger of fp32-vs-fp64 and
# the original's own fused=False formulation); ATOL absolute, RTOL max |error| / max |reference|.
ATOL = {"styles": 1e-4, "image_sub4": 1e-4, "image_pool256": 1e-4, "latent_trunc07": 1e-5,
        "image_trunc07_sub4": 1e-4, "image_trunc07_pool256": 1e-4}
RTOL = {"loss_L": 1e-4, "grad:w_plus": 1e-2, "grad:input.input": 1e-2, "grad:conv1.conv.modulation.bias": 1e-2,
        "grad:convs.7.noise.weight": 1e-2, "grad:convs.11.conv.weight": 1e-2, "grad:convs.15.conv.weight": 1e-2,
        "grad:to_rgbs.6.conv.modulation.weight": 1e-4, "grad:to_rgb1.conv.weight": 1e-5}
PARAM_GRADS = [name.removeprefix("grad:") for name in RTOL if name.startswith("grad:") and name != "grad:w_plus"]


@pytest.fixture(scope="module")
def sg2_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "stylegan2"


@pytest.fixture(scope="module")
def io(sg2_dir: Path) -> dict[str, torch.Tensor]:
    return load_io(sg2_dir)


@pytest.fixture(scope="module")
def official_state(sg2_dir: Path) -> dict[str, torch.Tensor]:
    return recipe_state_dict(sg2_dir, check_sha=True)  # fails unless every parameter regenerates bit-exactly


@pytest.fixture(scope="module")
def generator(official_state) -> StyleGAN2Generator:
    G = StyleGAN2Generator(1024, 512, 8, channel_multiplier=2)
    G.load_state_dict(official_state, strict=True)
    return G.eval()


# The fixture's w+ forward and backward, once per module (about 50 s on one CPU thread): autograd on, stored noise.
@pytest.fixture(scope="module")
def w_plus_run(generator: StyleGAN2Generator, io) -> dict[str, torch.Tensor]:
    ws = io["w_plus"].clone().requires_grad_(True)
    params = dict(generator.named_parameters())
    image = generator(ws, noise_mode="const")
    pool = F.adaptive_avg_pool2d(image, (256, 256))
    loss = (pool * io["grad_R"]).sum()
    grads = torch.autograd.grad(loss, [ws] + [params[name] for name in PARAM_GRADS])
    out = {"image_sub4": image[:, :, ::4, ::4].detach(), "image_pool256": pool.detach(), "loss_L": loss.detach(),
           "grad:w_plus": grads[0]}
    out.update({f"grad:{name}": g for name, g in zip(PARAM_GRADS, grads[1:])})
    return out


# The truncated image from z: generator([z], truncation=0.7, truncation_latent=mean_latent, randomize_noise=False).
@pytest.fixture(scope="module")
def trunc_run(generator: StyleGAN2Generator, io) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ws = generator.mapping(io["z"], truncation_psi=0.7, truncation_latent=io["mean_latent"])
        image = generator(ws)
    return {"latent_trunc07": ws, "image_trunc07_sub4": image[:, :, ::4, ::4],
            "image_trunc07_pool256": F.adaptive_avg_pool2d(image, (256, 256)), "styles": generator.style(io["z"])}


def test_state_dict_layout_equals_official(sg2_dir: Path, generator: StyleGAN2Generator):
    official = json.loads((sg2_dir / "keys_full.json").read_text())
    ours = {k: list(v.shape) for k, v in generator.state_dict().items()}
    assert set(ours) == set(official), f"missing {set(official) - set(ours)}, extra {set(ours) - set(official)}"
    assert ours == official, [k for k in ours if ours[k] != official[k]]
    assert list(ours) == list(official), "same keys, different order"
    assert sum(p.numel() for p in generator.parameters()) == 30_370_060
    assert (generator.num_ws, generator.z_dim, generator.w_dim, generator.img_resolution) == (18, 512, 512, 1024)


def test_weights_and_seeded_noise_rebuild_the_full_state(official_state, sg2_dir: Path):
    # recipe_state_dict(check_sha=True) already proved the 138 parameters bit-exact; the 17 noise maps are seeded.
    assert len(official_state) == 171
    stored = load_file(str(sg2_dir / "state_dict.safetensors"))
    assert sorted(stored) == sorted(k for k in official_state if k.endswith(".kernel")) and len(stored) == 16
    noises = [official_state[f"noises.noise_{i}"] for i in range(17)]
    assert [n.shape[-1] for n in noises] == [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]
    assert abs(float(noises[-1].std()) - 1) < 0.01


def test_constructor_blur_kernels_equal_stored(sg2_dir: Path):
    fresh = StyleGAN2Generator().state_dict()
    for key, value in load_file(str(sg2_dir / "state_dict.safetensors")).items():
        assert_close(fresh[key], value, 0.0, key)  # outer([1,3,3,1]) / 64 * 4, exactly
    assert torch.equal(fresh["to_rgbs.0.upsample.kernel"], make_blur_kernel([1, 3, 3, 1], 4.0))


@pytest.mark.parametrize("name", list(ATOL))
def test_outputs_match(name: str, w_plus_run, trunc_run, io):
    ours = {**w_plus_run, **trunc_run}[name]
    assert_close(ours, io[name], ATOL[name], name)


def test_mapping_rows_are_the_style_mlp(trunc_run, generator: StyleGAN2Generator, io):
    with torch.no_grad():
        ws = generator.mapping(io["z"])
    assert ws.shape == (2, 18, 512) and torch.equal(ws, trunc_run["styles"][:, None].expand(-1, 18, -1))
    latent = trunc_run["latent_trunc07"]
    assert torch.equal(latent, latent[:, :1].expand_as(latent)), "the truncated w is repeated on every row"


def test_mean_latent_of_a_seeded_generator_reproduces_the_original(generator: StyleGAN2Generator, io):
    # The original ran torch.manual_seed(7003); mean_latent(4096): a torch.Generator seeded alike draws the same z.
    mean = generator.mean_latent(4096, generator=torch.Generator().manual_seed(7003))
    assert_close(mean, io["mean_latent"], 1e-5, "mean_latent")


@pytest.mark.parametrize("name", list(RTOL))
def test_loss_and_gradients_match(name: str, w_plus_run, io):
    assert_close(w_plus_run[name], io[name], RTOL[name], name, rel=True)


# -- conventions, on small generators (fast; each test fails on the mistake it names) ----------------------------------


def small_generator(size: int = 32, seed: int = 0, noise_strength: float = 0.5) -> StyleGAN2Generator:
    """A narrow generator of the same code, with non-zero noise strengths (their init, 0, would hide noise bugs)."""
    torch.manual_seed(seed)
    G = StyleGAN2Generator(size, style_dim=32, n_mlp=2, max_channels=16).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(noise_strength)
    return G


def test_small_generator_layout_follows_the_size():
    G = small_generator(64)
    assert (G.num_ws, G.num_layers, G.img_resolution) == (10, 9, 64)
    assert len(G.convs) == 8 and len(G.to_rgbs) == 4
    assert G.noises.noise_8.shape == (1, 1, 64, 64)
    assert G(torch.randn(2, 10, 32)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="ws must be"):
        G(torch.randn(2, 9, 32))
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Generator(48)


def test_noise_modes():
    G = small_generator()
    ws = torch.randn(1, G.num_ws, 32).repeat(2, 1, 1)  # two identical samples
    with torch.no_grad():
        const, const_again = G(ws), G(ws, noise_mode="const")
        random_a, random_b = G(ws, noise_mode="random"), G(ws, noise_mode="random")
        none = G(ws, noise_mode="none")
        for name, p in G.named_parameters():
            if name.endswith("noise.weight"):
                p.zero_()
        const_without_strength = G(ws)
    assert torch.equal(const, const_again) and torch.equal(const[0], const[1]), "const: one stored map for all"
    assert (random_a - const).abs().max() > 0.05 and (random_a - random_b).abs().max() > 0.05
    assert (random_a[0] - random_a[1]).abs().max() > 0.05, "random: a fresh map per sample"
    assert (none - const).abs().max() > 0.05
    assert torch.equal(none, const_without_strength)
    with pytest.raises(ValueError, match="noise_mode"):
        G(ws, noise_mode="off")


def test_truncation_formula():
    G = small_generator()
    z, w_avg = torch.randn(3, 32), torch.randn(1, 32)
    with torch.no_grad():
        w = G.style(z)
        for psi in (0.0, 0.7, 1.5):
            ws = G.mapping(z, truncation_psi=psi, truncation_latent=w_avg)
            assert_close(ws, (w_avg + psi * (w - w_avg))[:, None].expand(-1, G.num_ws, -1), 1e-6, f"psi {psi}")
        assert torch.equal(G.mapping(z, truncation_psi=1.0), w[:, None].expand(-1, G.num_ws, -1))
    with pytest.raises(ValueError, match="truncation_latent"):
        G.mapping(z, truncation_psi=0.5)


def test_mapping_uses_pixel_norm():
    G = small_generator()
    z = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.allclose(G.mapping(z), G.mapping(3 * z), atol=1e-5), "z is normalised before the MLP"


def test_w_plus_rows_feed_the_documented_layers():
    G = small_generator(64)
    seen = {}
    layers = [(name, m) for name, m in G.named_modules() if re.fullmatch(r"conv1|to_rgb1|(convs|to_rgbs)\.\d+", name)]
    handles = [module.register_forward_hook(lambda m, args, out, name=name: seen.update({name: args[1]}))
               for name, module in layers]
    ws = torch.arange(G.num_ws, dtype=torch.float32)[None, :, None].expand(1, -1, 32).contiguous()
    with torch.no_grad():
        G(ws)
    for handle in handles:
        handle.remove()
    rows = {name: int(w[0, 0]) for name, w in seen.items()}
    expected = {"conv1": 0, "to_rgb1": 1, **{f"convs.{2 * k}": 2 * k + 1 for k in range(4)},
                **{f"convs.{2 * k + 1}": 2 * k + 2 for k in range(4)}, **{f"to_rgbs.{k}": 2 * k + 3 for k in range(4)}}
    assert rows == expected


def test_gradients_reach_ws_and_every_synthesis_parameter():
    G = small_generator()
    ws = torch.randn(2, G.num_ws, 32, requires_grad=True)
    G(ws).square().mean().backward()
    assert all(float(ws.grad[:, row].abs().max()) > 0 for row in range(G.num_ws)), "every w+ row is used"
    for name, p in G.named_parameters():
        if is_trainable(name):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name
        else:
            assert p.grad is None, f"{name}: the mapping network plays no part in synthesis from w+"


def test_trainable_prefixes_split_synthesis_from_mapping(sg2_dir: Path, generator: StyleGAN2Generator):
    names = [name for name, _ in generator.named_parameters()]
    trainable = [name for name, _ in generator.trainable_parameters()]
    assert trainable == [n for n in names if n.startswith(TRAINABLE_PREFIXES)]
    frozen = sorted(set(names) - set(trainable))
    assert len(frozen) == 16 and all(n.startswith(FROZEN_PREFIXES) for n in frozen)
    assert len(trainable) == 122 and not any(n.startswith(FROZEN_PREFIXES) for n in trainable)


def naive_upfirdn2d(x: torch.Tensor, k: torch.Tensor, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """The definition, slowly: zero insertion, zero padding, a true (flipped-kernel) convolution, subsampling."""
    n, c, h, w = x.shape
    xu = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    xu[:, :, ::up, ::up] = x
    xp = F.pad(xu, [pad[0], pad[1], pad[0], pad[1]])
    kh = k.shape[0]
    out_h, out_w = xp.shape[2] - kh + 1, xp.shape[3] - kh + 1
    out = torch.zeros(n, c, out_h, out_w, dtype=x.dtype)
    for a in range(kh):
        for b in range(kh):
            out += xp[:, :, a:a + out_h, b:b + out_w] * k[kh - 1 - a, kh - 1 - b]
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up, down, pad", [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (0, 3))])
def test_upfirdn2d_is_the_definition(up: int, down: int, pad: tuple[int, int]):
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    k = torch.randn(4, 4, dtype=torch.float64)  # asymmetric: catches a missing kernel flip
    assert_close(upfirdn2d(x, k, up=up, down=down, pad=pad), naive_upfirdn2d(x, k, up, down, pad), 1e-12,
                 f"upfirdn2d up={up} down={down} pad={pad}")
    full = upfirdn2d(x, k, up=up, pad=(0, 0))
    assert_close(upfirdn2d(x, k, up=up, pad=(-1, -2)), full[:, :, 1:-2, 1:-2], 1e-12, "negative pad crops")


def test_skip_upsampling_keeps_the_mean_and_zero_pads_the_border():
    G = small_generator()
    ones = torch.ones(1, 3, 8, 8)
    up = G.to_rgbs[0].upsample(ones)
    assert up.shape == (1, 3, 16, 16)
    assert torch.allclose(up[:, :, 2:-2, 2:-2], torch.ones(1, 3, 12, 12)), "x4 gain: a constant stays constant"
    assert float(up[0, 0, 0, 0]) < 0.9, "upfirdn2d pads with zeros (a bilinear resize would clamp to 1)"
