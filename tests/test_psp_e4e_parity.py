# Parity of guide's pSp (GradualStyleEncoder) and e4e (Encoder4Editing) encoders with the originals, on the full-size
# fixtures tests/fixtures/psp and tests/fixtures/e4e: recipe-regenerated weights (sha256-checked), the original's body
# features, codes (w+ offsets), and the full forward through the StyleGAN2 decoder (guide_core.stylegan2).
# Storage: the input batch and the decoder's 17 noise maps (the same torch.randn chain, seed 7001, as the stylegan2
# fixture's) are kept as seeds in seeded_inputs.json; recipe_state_dict / load_io put them back.
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from guide_core.encoders import (Encoder4Editing, EncoderWeightsError, GradualStyleEncoder, load_e4e_encoder,
                                 load_psp_encoder)
from tests.util import assert_close, load_io, recipe_state_dict

# Per-tensor atol from the fixture README (smallest power of ten >= 3x the original's fp32-vs-fp64 error).
ATOL = {"feat.c1": 1e-4, "feat.c2": 1e-4, "feat.c3": 1e-3, "codes": 1e-4, "codes_stage0": 1e-4, "w_plus": 1e-4,
        "image_sub4": 1e-4, "image_pool256": 1e-4}
LOADERS = {"psp": load_psp_encoder, "e4e": load_e4e_encoder}
CLASSES = {"psp": GradualStyleEncoder, "e4e": Encoder4Editing}


def _decoder_part(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len("decoder."):]: value for key, value in state.items() if key.startswith("decoder.")}


@pytest.fixture(scope="module")
def states(fixtures_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The complete official pSp / e4e state dicts (encoder.* and decoder.*), every parameter sha256-checked."""
    return {name: recipe_state_dict(fixtures_dir / name, check_sha=True) for name in ("psp", "e4e")}


@pytest.fixture(scope="module")
def ios(fixtures_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_io(fixtures_dir / name) for name in ("psp", "e4e")}


# One public forward per encoder, the body taps captured by forward hooks (as the fixture was made); e4e's stage-0 codes
# from the same taps.
@pytest.fixture(scope="module")
def outputs(states, ios) -> dict[str, dict[str, torch.Tensor]]:
    result = {}
    for name, loader in LOADERS.items():
        encoder, taps = loader(states[name]), {}
        hooks = [encoder.body[index].register_forward_hook(lambda m, a, y, key=key: taps.__setitem__(key, y))
                 for index, key in ((6, "feat.c1"), (20, "feat.c2"), (23, "feat.c3"))]
        try:
            with torch.no_grad():
                out = {"codes": encoder(ios[name]["imgs"])}
                if name == "e4e":
                    out["codes_stage0"] = encoder.codes_from_features(taps["feat.c1"], taps["feat.c2"],
                                                                      taps["feat.c3"], stage=0)
        finally:
            for hook in hooks:
                hook.remove()
        out.update(taps)
        out["w_plus"] = out["codes"] + ios[name]["latent_avg"]
        result[name] = out
    return result


# The module layout must equal the released checkpoints' encoder.* keys, order and shapes, or they would not load.
@pytest.mark.parametrize("name", ["psp", "e4e"])
def test_state_dict_layout_equals_official(fixtures_dir, name):
    full = json.loads((fixtures_dir / name / "keys_full.json").read_text())
    expected = [(key[len("encoder."):], shape) for key, shape in full.items() if key.startswith("encoder.")]
    with torch.device("meta"):  # no 267 M-parameter initialisation just to read the layout
        model = CLASSES[name]()
    assert [(key, list(value.shape)) for key, value in model.state_dict().items()] == expected


def test_psp_and_e4e_share_the_decoder_fixture(fixtures_dir, states):
    # Same decoder recipe entries (seeds, sha256) and noise seed in both folders, so one generator serves both tests.
    recipes = {name: json.loads((fixtures_dir / name / "weights_recipe.json").read_text())["params"]
               for name in ("psp", "e4e")}
    decoder_keys = [key for key in recipes["psp"] if key.startswith("decoder.")]
    assert decoder_keys and all(recipes["psp"][key] == recipes["e4e"][key] for key in decoder_keys)
    seeds = {name: json.loads((fixtures_dir / name / "seeded_inputs.json").read_text())["decoder.noises.noise_*"]
             for name in ("psp", "e4e")}
    assert seeds["psp"] == seeds["e4e"] and len(seeds["psp"]["names"]) == 17
    psp_decoder, e4e_decoder = _decoder_part(states["psp"]), _decoder_part(states["e4e"])
    assert psp_decoder.keys() == e4e_decoder.keys()
    assert all(torch.equal(psp_decoder[key], e4e_decoder[key]) for key in psp_decoder)


@pytest.mark.parametrize("name", ["psp", "e4e"])
def test_encoder_parity(name, outputs, ios):
    io, out = ios[name], outputs[name]
    errors = {key: assert_close(value, io[key], ATOL[key], f"{name} {key}") for key, value in out.items()}
    rounding = (out["codes"].double() - io["codes_fp64"]).abs().max().item()
    print(f"\n{name} max |error|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
          + f"; codes vs the original's fp64 codes {rounding:.2e}")


def test_e4e_structure(outputs, ios):
    # Stage 0 is w0 on every row; at the Inference stage row 0 carries no delta, every other row does.
    stage0, codes = outputs["e4e"]["codes_stage0"], outputs["e4e"]["codes"]
    assert torch.equal(stage0, stage0[:, :1].expand_as(stage0))
    assert torch.equal(codes[:, 0], stage0[:, 0])
    assert (codes[:, 1:] - stage0[:, 1:]).abs().amax(dim=2).min() > 1e-3


@pytest.fixture(scope="module")
def decoder(states):
    """guide's StyleGAN2 generator with the fixtures' decoder.* weights (shared by pSp and e4e, checked above)."""
    stylegan2 = pytest.importorskip("guide_core.stylegan2", reason="guide_core.stylegan2 (the decoder) not present yet")
    with torch.device("meta"):
        generator = stylegan2.StyleGAN2Generator(size=1024)
    generator.load_state_dict(_decoder_part(states["psp"]), strict=True, assign=True)
    return generator.eval().requires_grad_(False)


# Full forward as the original pSp class runs it: codes + latent_avg -> decoder (stored noise) -> face_pool to 256.
@pytest.mark.parametrize("name", ["psp", "e4e"])
def test_full_forward_parity(name, outputs, ios, decoder):
    io = ios[name]
    with torch.no_grad():
        image = decoder(outputs[name]["w_plus"], noise_mode="const")
    errors = {
        "image_sub4": assert_close(image[:, :, ::4, ::4], io["image_sub4"], ATOL["image_sub4"], f"{name} image_sub4"),
        "image_pool256": assert_close(F.adaptive_avg_pool2d(image, (256, 256)), io["image_pool256"],
                                      ATOL["image_pool256"], f"{name} image_pool256"),
    }
    print(f"\n{name} full forward max |error|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


def test_loaders_take_a_whole_checkpoint_state_dict_and_name_bad_keys(states):
    # The released state_dict holds encoder.* and decoder.*: the loader takes the encoder part itself.
    encoder = load_psp_encoder(states["psp"])
    assert isinstance(encoder, GradualStyleEncoder) and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert load_e4e_encoder(states["e4e"]).progressive_stage == 18  # Inference: all 17 deltas active
    part = {k[len("encoder."):]: v for k, v in states["psp"].items() if k.startswith("encoder.")}
    with pytest.raises(EncoderWeightsError, match=r"1 missing: styles\.17\.linear\.bias"):
        load_psp_encoder({k: v for k, v in part.items() if k != "styles.17.linear.bias"})
    with pytest.raises(EncoderWeightsError, match=r"latlayer1\.weight: \(512, 128, 1, 1\) != \(512, 256, 1, 1\)"):
        load_e4e_encoder(dict(part, **{"latlayer1.weight": torch.zeros(512, 128, 1, 1)}))
    with pytest.raises(EncoderWeightsError, match=r"1 unexpected: extra"):
        load_psp_encoder(dict(part, extra=torch.zeros(1)))


def test_inputs_are_checked(states):
    encoder = load_e4e_encoder(states["e4e"])
    with pytest.raises(ValueError, match=r"\[N, 3, 256, 256\]"):
        encoder(torch.zeros(1, 3, 128, 128))
    with pytest.raises(TypeError, match="floating-point"):
        encoder(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))
    with pytest.raises(ValueError, match="progressive stage"):
        encoder.codes_from_features(None, None, None, stage=19)
