# The engine's speed settings (LTUConfig.precision, channels_last, fused_sr, compile_renderer) change how the losses
# are computed, never what is optimised: each is checked against the original's fp32 arithmetic (ltu_losses_reference)
# on the same draws, and a short run on the default world erases as well as the fp32 one.
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from guide_core import precision
from guide_core.backends import EG3DBackend
from guide_core.engine import Unlearning
from guide_core.config import LTUConfig
from guide_core.engine.draws import sample_draws
from guide_core.engine.losses import LossNets, ltu_losses
from guide_core.engine.reference import ltu_losses_reference
from guide_core.methods.guide import ufo_target
from tests.test_guide import bundle, w_u  # noqa: F401  (the small random world and its source code)
from tests.util import assert_close

TRAINABLE_PREFIX = EG3DBackend.trainable_prefix


# G_u moved off G_s (so every loss term is non-zero) with its backbone trainable, and the source code w_u.
@pytest.fixture(scope="module")
def moved(bundle, w_u):  # noqa: F811
    gen = torch.Generator().manual_seed(5)
    G_u = copy.deepcopy(bundle.G)
    with torch.no_grad():
        for name, p in G_u.named_parameters():
            if name.startswith(TRAINABLE_PREFIX):
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
    for name, p in G_u.named_parameters():
        p.requires_grad_(name.startswith(TRAINABLE_PREFIX))
    G_u.train()
    return G_u, w_u


# Losses and the flat gradient of G_u's trainable parameters, through the engine (batched) or the reference.
def losses_and_gradient(bundle, G_u, w_u, cfg: LTUConfig, batched: bool):
    w_t = ufo_target(w_u, bundle.w_avg, cfg.d)
    draws = sample_draws(torch.Generator().manual_seed(0), cfg, 1, 512)
    c = bundle.camera(draws.yaw, cfg.pitch)
    G_u.zero_grad(set_to_none=True)
    if batched:
        with torch.no_grad():
            planes_t = bundle.G.get_planes(w_t)
        total, parts = ltu_losses(G_u, bundle.G, w_u, w_t, planes_t, draws, LossNets.of(bundle, cfg), cfg, c)
    else:
        nets = LossNets(bundle.perceptual, bundle.id_loss_net, bundle.backend)
        total, parts = ltu_losses_reference(G_u, bundle.G, w_u, w_t, draws, nets, cfg.original_arithmetic(), c)
    total.backward()
    grad = torch.cat([p.grad.flatten() for p in G_u.parameters() if p.grad is not None])
    return {k: float(v.detach()) for k, v in parts.items()}, grad


# fused_sr and channels_last alone (fp32) are the same maths as the original's unfused, contiguous computation.
def test_fused_sr_and_channels_last_are_the_original_maths(bundle, moved):
    G_u, w_u = moved
    cfg = LTUConfig(deterministic_render=True, precision="fp32", channels_last=True, fused_sr=True)
    fast, grad = losses_and_gradient(bundle, G_u, w_u, cfg, batched=True)
    ref, grad_ref = losses_and_gradient(bundle, G_u, w_u, cfg, batched=False)
    for key in ref:
        assert_close(torch.tensor(fast[key]), torch.tensor(ref[key]), 1e-5, f"loss {key}")
    assert_close(grad, grad_ref, 1e-3, "gradient", rel=True)


# bf16 autocast of the super-resolution and the loss networks: each loss within 2 % of fp32, or within bf16's noise
# floor of 5e-4 (LPIPS units; G_u's and G_s's renders of the same person round differently, so the global loss between
# nearly equal generators reads about 1e-4 instead of 0), and the gradient pointing the same way (cosine >= 0.98, norm
# within 5 %) - the tolerance Adam's normalised steps absorb.
def test_bf16_matches_the_fp32_reference_within_tolerance(bundle, moved):
    G_u, w_u = moved
    cfg = LTUConfig(deterministic_render=True, precision="bf16")
    fast, grad = losses_and_gradient(bundle, G_u, w_u, cfg, batched=True)
    ref, grad_ref = losses_and_gradient(bundle, G_u, w_u, cfg, batched=False)
    for key in ("total", "local", "adjacency", "global"):
        assert abs(fast[key] - ref[key]) <= 0.02 * abs(ref[key]) + 5e-4, (key, fast[key], ref[key])
    cosine = float(torch.nn.functional.cosine_similarity(grad, grad_ref, dim=0))
    norm_ratio = float(grad.norm() / grad_ref.norm())
    assert cosine >= 0.98 and abs(norm_ratio - 1) <= 0.05, (cosine, norm_ratio)
    # ... and bf16 really ran: the same losses are not bit-equal to fp32
    assert fast["total"] != ref["total"]


def test_precision_settings_resolve_per_device(monkeypatch):
    assert precision.autocast_dtype("fp32", "cpu") is None
    assert precision.autocast_dtype("bf16", "cpu") is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.autocast_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.autocast_dtype("auto", "cpu") is None  # emulated bf16 would be slower than fp32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        precision.autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        precision.autocast_dtype("fp8", "cpu")
    with pytest.raises(ValueError, match="LTUConfig.precision = 'fp8'"):
        LTUConfig(precision="fp8").validate()
    fields = LTUConfig().original_arithmetic()
    assert (fields.precision, fields.channels_last, fields.fused_sr, fields.compile_renderer) == \
        ("fp32", False, False, False)


# This machine's answer agrees with its CPU flags (x86 AVX512-BF16 / AMX, Arm BF16).
def test_native_bf16_reads_the_cpu_flags():
    precision.cpu_has_native_bf16.cache_clear()
    flags = set()
    for line in open("/proc/cpuinfo").read().splitlines():
        if line.split(":")[0].strip().lower() in ("flags", "features"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert precision.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


# The compiled renderer gives eager's images and gradients, with stratified jitter drawn from the same stream.
@pytest.mark.slow
def test_compiled_renderer_equals_eager(bundle, moved):
    G_u, w_u = moved
    c = bundle.camera(0.1, -0.2).expand(2, -1)
    ws = torch.cat([w_u, bundle.w_avg_code()[None]])
    out = {}
    for compiled in (False, True):
        planes = G_u.get_planes(ws).detach().requires_grad_(True)
        torch.manual_seed(3)
        image = G_u.render_planes(planes, c, ws=ws, compiled=compiled)["image"]
        image.square().mean().backward()
        out[compiled] = (image.detach(), planes.grad)
    assert_close(out[True][0], out[False][0], 1e-5, "compiled render")
    assert_close(out[True][1], out[False][1], 1e-4, "gradient through the compiled render", rel=True)


# A short run on the default world with every speed setting on erases the person as well as the original arithmetic
# (same seed: the paper's ID after within 0.05).
@pytest.mark.slow
def test_fast_settings_erase_as_well_as_fp32_on_the_default_world():
    from guide_core.metrics import id_similarity
    from guide_core.registry import load_bundle
    world = load_bundle("default")
    w_u = world.w_avg_code()[None] + 0.6 * torch.randn(1, world.num_ws, 512, generator=torch.Generator().manual_seed(3))
    base = dataclasses.replace(world.ltu_defaults, iters=60, preview_every=0)
    ids = {}
    for name, cfg in (("fp32", base.original_arithmetic()),
                      ("fast", dataclasses.replace(base, precision="bf16", channels_last=True, fused_sr=True,
                                                   compile_renderer=True))):
        G_u = Unlearning(world, w_u, cfg=cfg).run_all().G_u
        ids[name] = float(id_similarity(world, world.G, G_u, w_u)[0])
    assert ids["fp32"] < 0.5, ids  # the run erased at all
    assert abs(ids["fast"] - ids["fp32"]) <= 0.05, ids
