# Parity of the GOAE encoder (Swin-V2 backbone + GOAE heads) with the original, on ../shared/fixtures/goae:
# full-size official architecture, recipe-regenerated weights, outputs of the original at every progressive stage.
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from guide_core.encoders import (GOAEncoder, GOAEWeightsError, SwinFeatures, check_state_dict, load_goae,
                                 preprocess_for_goae)
from guide_core.encoders.swin_v2 import LOGIT_SCALE_MAX
from tests.util import assert_close, load_io, recipe_state_dict

# Per-tensor atol from the fixture README (smallest power of ten >= 3x the fp32-vs-fp64 error of the original).
ATOL = {"ws": 1e-4, "ws_base": 1e-4, "swin.x_base": 1e-4, "swin.x_query": 1e-4, "swin.x_coarse": 1e-4,
        "swin.x_mid": 1e-4, "swin.x_fine": 1e-5}


@pytest.fixture(scope="module")
def goae_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "goae"


@pytest.fixture(scope="module")
def io(goae_dir: Path) -> dict[str, torch.Tensor]:
    return load_io(goae_dir)


@pytest.fixture(scope="module")
def official_state(goae_dir: Path) -> dict[str, torch.Tensor]:
    return recipe_state_dict(goae_dir)


@pytest.fixture(scope="module")
def encoder(official_state) -> GOAEncoder:
    return load_goae(official_state)


# One stage-3 forward with the Swin features captured by a forward hook on `swin_model` (as the fixture was made).
@pytest.fixture(scope="module")
def stage3_outputs(encoder: GOAEncoder, io) -> dict[str, torch.Tensor]:
    captured = {}
    handle = encoder.swin_model.register_forward_hook(
        lambda module, args, out: captured.update({f"swin.{k}": v for k, v in out._asdict().items()}))
    try:
        with torch.no_grad():
            ws, ws_base = encoder(io["imgs"])
    finally:
        handle.remove()
    return {"ws": ws, "ws_base": ws_base, **captured}


# Stages 0-2 through the heads on the stage-3 backbone features (the backbone does not depend on the stage).
@pytest.fixture(scope="module")
def staged_outputs(encoder: GOAEncoder, stage3_outputs) -> dict[str, torch.Tensor]:
    feats = SwinFeatures(*(stage3_outputs[f"swin.{name}"] for name in SwinFeatures._fields))
    out = {}
    try:
        for stage in (0, 1, 2, 3):
            encoder.stage = stage
            with torch.no_grad():
                out[f"stage{stage}.ws"], out[f"stage{stage}.ws_base"] = encoder.heads(feats)
    finally:
        encoder.stage = 3
    return out


def test_recipe_regeneration_is_bit_exact(goae_dir: Path, official_state):
    recipe = json.loads((goae_dir / "weights_recipe.json").read_text())["params"]
    keys = ["swin_model.patch_embed.proj.weight", "swin_model.layers.2.blocks.17.attn.logit_scale",
            "swin_model.layers.3.blocks.1.norm2.weight", "mapper_base_channel.0.weight",
            "cross_att_fine.multihead_attn.in_proj_bias"]
    for key in keys:
        digest = hashlib.sha256(official_state[key].numpy().astype("<f4").tobytes(order="C")).hexdigest()
        assert digest == recipe[key]["sha256"], f"{key}: regenerated tensor differs from the recipe"


def test_state_dict_layout_equals_official(goae_dir: Path, encoder: GOAEncoder):
    official = json.loads((goae_dir / "keys_full.json").read_text())
    ours = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    assert set(ours) == set(official), f"missing {set(official) - set(ours)}, extra {set(ours) - set(official)}"
    assert ours == official, [k for k in ours if ours[k] != official[k]]
    assert list(ours) == list(official), "same keys, different order"
    assert sum(p.numel() for p in encoder.parameters()) == 111_218_822


def test_constructor_buffers_equal_stored(goae_dir: Path):
    stored = load_file(str(goae_dir / "state_dict.safetensors"))
    fresh = GOAEncoder().state_dict()
    assert len(stored) == 50
    kinds = {"relative_coords_table": 0, "relative_position_index": 0, "attn_mask": 0}
    for key, value in stored.items():
        assert fresh[key].dtype == value.dtype, f"{key}: dtype {fresh[key].dtype} != {value.dtype}"
        assert_close(fresh[key], value, 0.0, key)
        kinds[key.rsplit(".", 1)[-1]] += 1
    assert kinds == {"relative_coords_table": 24, "relative_position_index": 24, "attn_mask": 2}


def test_fixture_exercises_logit_clamp(official_state):
    scales = torch.cat([v.flatten() for k, v in official_state.items() if k.endswith("logit_scale")])
    assert scales.numel() == 376 and int((scales > LOGIT_SCALE_MAX).sum()) == 86
    assert LOGIT_SCALE_MAX == pytest.approx(4.6051702, abs=1e-7)


@pytest.mark.parametrize("name", list(ATOL))
def test_stage3_outputs_match(name: str, stage3_outputs, io):
    assert_close(stage3_outputs[name], io[name], ATOL[name], name)


@pytest.mark.parametrize("name", [f"stage{s}.{t}" for s in (0, 1, 2) for t in ("ws", "ws_base")])
def test_progressive_stage_outputs_match(name: str, staged_outputs, io):
    assert_close(staged_outputs[name], io[name], 1e-4, name)


def test_progressive_stage_row_structure(staged_outputs, stage3_outputs):
    base = stage3_outputs["ws_base"]
    assert torch.equal(staged_outputs["stage0.ws"], staged_outputs["stage0.ws_base"])
    assert torch.equal(base, base[:, :1].expand_as(base)), "w0 must be repeated on all 14 rows"
    # Rows without an active delta equal w0 exactly; rows with one differ from it.
    assert torch.equal(staged_outputs["stage1.ws"][:, 4:], base[:, 4:])
    assert torch.equal(staged_outputs["stage2.ws"][:, 7:], base[:, 7:])
    assert torch.equal(stage3_outputs["ws"][:, :1], base[:, :1])
    assert (stage3_outputs["ws"][:, 7:] - base[:, 7:]).abs().max() > 0.1
    # Deltas of earlier levels do not depend on which later levels run.
    assert torch.equal(staged_outputs["stage1.ws"][:, 1:4], stage3_outputs["ws"][:, 1:4])


def test_set_stage_follows_original_schedule():
    enc = GOAEncoder.__new__(GOAEncoder)  # the schedule needs no weights
    enc.stage_list = [10000, 20000, 30000]
    observed = {it: GOAEncoder.set_stage(enc, it) for it in (0, 9999, 10000, 19999, 20000, 29999, 30000, 30001)}
    assert observed == {0: 0, 9999: 0, 10000: 1, 19999: 1, 20000: 2, 29999: 2, 30000: 2, 30001: 3}


def test_load_goae_is_frozen_eval(encoder: GOAEncoder):
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.stage == 3


def test_wrong_shape_missing_and_unexpected_keys_are_named(encoder: GOAEncoder, official_state):
    bad = dict(official_state)
    bad["mapper_base_channel.2.weight"] = torch.zeros(512, 512)
    del bad["cross_att_mid.linear1.bias"]
    bad["swin_model.head.weight"] = torch.zeros(1000, 1024)
    with pytest.raises(GOAEWeightsError) as err:
        check_state_dict(encoder, bad, "bad.pt")
    message = str(err.value)
    assert "mapper_base_channel.2.weight: (512, 512) != (512, 1024)" in message
    assert "missing: cross_att_mid.linear1.bias" in message
    assert "unexpected: swin_model.head.weight" in message


def test_load_goae_file_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="encoder_FFHQ.pt"):
        load_goae(tmp_path / "absent.pt")
    small = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(small))
    with pytest.raises(GOAEWeightsError, match=r"missing: swin_model\.patch_embed\.proj\.weight.*545 in all"):
        load_goae(small)
    # A pickle that needs code to rebuild is refused by weights_only=True, never executed.
    code_pickle = tmp_path / "code.pt"
    torch.save({"w": Path("x")}, code_pickle)
    with pytest.raises(GOAEWeightsError, match=r"weights_only=True \(it names the global pathlib\.\w*Path") as err:
        load_goae(code_pickle)
    assert "weights_only=False" not in str(err.value)  # our words, never torch's advice to switch the check off
    with pytest.raises(TypeError):
        load_goae(42)


def test_bad_image_input_is_explained(encoder: GOAEncoder):
    with pytest.raises(ValueError, match=r"\[N, 3, 256, 256\].*\.invert\(\)"):
        encoder(torch.zeros(1, 3, 512, 512))
    with pytest.raises(TypeError, match="floating-point"):
        encoder(torch.zeros(1, 3, 256, 256, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        encoder.invert(torch.zeros(2, 4, 512, 512))


# invert() on the fixture batch (256 px, already on the 8-bit grid, so preprocessing is the identity) is the forward.
def test_invert_matches_forward(encoder: GOAEncoder, io, stage3_outputs, staged_outputs):
    assert torch.equal(staged_outputs["stage3.ws"], stage3_outputs["ws"]), "heads() must equal forward()"
    assert torch.equal(preprocess_for_goae(io["imgs"]), io["imgs"])
    ws = encoder.invert(io["imgs"][1])  # one [3, H, W] image: half the cost, and batch-size independence
    assert ws.shape == (1, 14, 512) and not ws.requires_grad
    assert_close(ws, io["ws"][1:], ATOL["ws"], "invert ws")


# unlearn.py's loader (PIL resize to 256, uint8, /127.5 - 1) versus a 512 tensor of the same photo.
def test_preprocessing_resizes_like_unlearn_py(data_dir: Path):
    from PIL import Image

    photo = Image.open(data_dir / "celebahq_aligned" / "aligned_1.jpg").convert("RGB")
    assert photo.size == (512, 512)
    reference = np.asarray(photo.resize((256, 256)))  # Pillow's default filter, as unlearn.py calls it
    reference = torch.from_numpy(reference.transpose(2, 0, 1).copy()).float() / 127.5 - 1
    as_tensor = torch.from_numpy(np.asarray(photo).transpose(2, 0, 1).copy()).float() / 127.5 - 1
    batch = preprocess_for_goae(as_tensor)
    assert batch.shape == (1, 3, 256, 256)
    assert_close(batch[0], reference, 0.0, "PIL-equivalent tensor resize")
    assert_close(preprocess_for_goae(photo)[0], reference, 0.0, "PIL path")
    assert_close(preprocess_for_goae([photo, photo]), torch.stack([reference, reference]), 0.0, "PIL list")
    assert_close(preprocess_for_goae(as_tensor, quantize=False), batch, 2.5 / 127.5, "float resize")
    big = Image.open(sorted((data_dir / "celebahq_1024").glob("*.jpg"))[0]).convert("RGB")
    big_tensor = torch.from_numpy(np.asarray(big).transpose(2, 0, 1).copy()).float() / 127.5 - 1
    assert_close(preprocess_for_goae(big_tensor), preprocess_for_goae(big), 0.0, "1024 -> 256")
