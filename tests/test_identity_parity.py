# Parity of the identity networks with the original IDLoss (IR-SE50) and id_sim.py backbone (IR-101), plus the
# behaviour the engine relies on: gradients reach y_hat only, bad checkpoints fail naming keys, ArcFace warping.
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from guide_core.identity import (ARCFACE_TEMPLATE_112, IDLoss, IdentityCheckpointError, IRBackbone, arcface_align,
                                 eg3d_crop_face_input, identity_similarity, load_ir101, load_ir_se50,
                                 similarity_transform)
from tests.util import assert_close, recipe_state_dict, load_io

IR_SE50_ATOL = {"face112": 1e-6, "feat_unnorm": 1e-4, "emb": 1e-6, "loss": 1e-6}
IR101_ATOL = {"feat_unnorm": 1e-5, "emb": 1e-6, "similarity": 1e-6}


@pytest.fixture(scope="module")
def ir_se50_state(fixtures_dir):
    return recipe_state_dict(fixtures_dir / "ir_se50", check_sha=True)


@pytest.fixture(scope="module")
def ir_se50(ir_se50_state):
    return load_ir_se50(ir_se50_state)


@pytest.fixture(scope="module")
def ir_se50_io(fixtures_dir):
    return load_io(fixtures_dir / "ir_se50")


@pytest.fixture(scope="module")
def ir101(fixtures_dir):
    return load_ir101(recipe_state_dict(fixtures_dir / "ir101", check_sha=True), preprocessing="aligned")


@pytest.fixture(scope="module")
def ir101_io(fixtures_dir):
    return load_io(fixtures_dir / "ir101")


# The module layout must equal the released checkpoints' key set and shapes, or the real weights would not load.
@pytest.mark.parametrize("name, kwargs", [("ir_se50", dict(num_layers=50, mode="ir_se", affine_output=True)),
                                          ("ir101", dict(num_layers=100, mode="ir", affine_output=False))])
def test_state_dict_layout_equals_official(fixtures_dir, name, kwargs):
    expected = json.loads((fixtures_dir / name / "keys_full.json").read_text())
    actual = {key: list(value.shape) for key, value in IRBackbone(**kwargs).state_dict().items()}
    assert sorted(set(actual) ^ set(expected)) == []
    assert actual == expected


def test_ir_se50_idloss_parity(ir_se50, ir_se50_io):
    io, errors = ir_se50_io, {}
    with torch.no_grad():
        for suffix in ("a", "b", "a512", "b512"):
            images = io[f"img_{suffix}"]
            face = ir_se50.face_input(images)
            feat = ir_se50.backbone.features(face)
            errors[f"face112_{suffix}"] = assert_close(face, io[f"face112_{suffix}"], IR_SE50_ATOL["face112"],
                                                       f"face112_{suffix}")
            errors[f"feat_unnorm_{suffix}"] = assert_close(feat, io[f"feat_unnorm_{suffix}"],
                                                           IR_SE50_ATOL["feat_unnorm"], f"feat_unnorm_{suffix}")
            errors[f"emb_{suffix}"] = assert_close(ir_se50.embed(images), io[f"emb_{suffix}"], IR_SE50_ATOL["emb"],
                                                   f"emb_{suffix}")
        loss = IDLoss(ir_se50)
        errors["loss_ab"] = assert_close(loss(io["img_a"], io["img_b"]), io["loss_ab"], IR_SE50_ATOL["loss"],
                                         "loss_ab")
        errors["loss_ab512"] = assert_close(loss(io["img_a512"], io["img_b512"]), io["loss_ab512"],
                                            IR_SE50_ATOL["loss"], "loss_ab512")
    print("\nIR-SE50 max |error|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


def test_ir101_parity(ir101, ir101_io):
    io = ir101_io
    with torch.no_grad():
        feat = ir101.backbone.features(io["x"])
        emb = ir101.embed(io["x"])
        similarity = identity_similarity(ir101, io["x"][:1], io["x"][1:])
    errors = {
        "feat_unnorm": assert_close(feat, io["feat_unnorm"], IR101_ATOL["feat_unnorm"], "feat_unnorm"),
        "emb": assert_close(emb, io["emb"], IR101_ATOL["emb"], "emb"),
        "similarity": assert_close(similarity[0], io["similarity"], IR101_ATOL["similarity"], "similarity"),
    }
    print("\nIR-101 max |error|: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


def test_embeddings_are_unit_vectors_and_parameters_frozen(ir_se50, ir_se50_io):
    with torch.no_grad():
        emb = ir_se50.embed(ir_se50_io["img_a"])
    assert_close(emb.norm(dim=1), torch.ones(2), 1e-6, "row norms")
    assert not any(p.requires_grad for p in ir_se50.parameters())
    ir_se50.train()  # a parent switching to train mode must not turn on batch statistics or dropout
    assert not ir_se50.training and not ir_se50.backbone.output_layer[0].training


def test_idloss_gradient_reaches_y_hat_only(ir_se50, ir_se50_io):
    y_hat = ir_se50_io["img_a"].clone().requires_grad_(True)
    y = ir_se50_io["img_b"].clone().requires_grad_(True)
    loss = IDLoss(ir_se50)(y_hat, y)
    assert loss.ndim == 0
    loss.backward()
    assert y.grad is None
    assert y_hat.grad is not None and torch.isfinite(y_hat.grad).all()
    # Only the 188x188 crop of the 256 image feeds the backbone: the gradient vanishes outside it.
    assert y_hat.grad.abs().sum() > 0
    assert y_hat.grad[:, :, :35].abs().max() == 0 and y_hat.grad[:, :, :, 220:].abs().max() == 0
    # Same image on both sides: zero loss.
    with torch.no_grad():
        assert abs(IDLoss(ir_se50)(ir_se50_io["img_a"], ir_se50_io["img_a"]).item()) < 1e-6


def test_wrong_checkpoint_names_keys(ir_se50_state, tmp_path):
    missing = {k: v for k, v in ir_se50_state.items() if k != "output_layer.3.weight"}
    with pytest.raises(IdentityCheckpointError, match=r"1 missing keys: output_layer\.3\.weight"):
        load_ir_se50(missing)
    reshaped = dict(ir_se50_state, **{"input_layer.0.weight": torch.zeros(32, 3, 3, 3)})
    with pytest.raises(IdentityCheckpointError, match=r"input_layer\.0\.weight: checkpoint \(32, 3, 3, 3\)"):
        load_ir_se50(reshaped)
    # The IR-SE50 weights are not an IR-101 checkpoint: deeper units missing, the affine final BN unexpected.
    with pytest.raises(IdentityCheckpointError,
                       match=r"missing keys: .*body\.24\..*unexpected keys: .*output_layer\.4\.weight"):
        load_ir101(ir_se50_state)
    with pytest.raises(FileNotFoundError, match=r"no_such\.pth.*weights status"):
        load_ir_se50(tmp_path / "no_such.pth")
    # A file read through torch.load(weights_only=True): a few keys only -> missing keys listed.
    partial = tmp_path / "partial.pth"
    torch.save({"state_dict": {"module.input_layer.0.weight": ir_se50_state["input_layer.0.weight"]}}, partial)
    with pytest.raises(IdentityCheckpointError, match=r"missing keys: input_layer\.1\.weight"):
        load_ir_se50(partial)
    # A pickle carrying an arbitrary object is refused, not executed.
    hostile = tmp_path / "hostile.pth"
    torch.save({"payload": _Payload()}, hostile)
    with pytest.raises(IdentityCheckpointError,
                       match=r"weights_only=True\): it names the global tests\.test_identity_parity\._Payload") as err:
        load_ir_se50(hostile)
    assert "weights_only=False" not in str(err.value)  # our words, never torch's advice to switch the check off


# An object type that a weights-only unpickler must refuse to rebuild.
class _Payload:
    pass


def test_similarity_transform_recovers_known_similarity():
    angle, scale, shift = math.radians(12.0), 2.5, torch.tensor([30.0, -7.0], dtype=torch.float64)
    rotation = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                                    dtype=torch.float64)
    src = ARCFACE_TEMPLATE_112.unsqueeze(0)
    dst = src @ rotation.T + shift
    fitted = similarity_transform(src, dst)[0]
    assert_close(fitted[:, :2], rotation, 1e-9, "linear part")
    assert_close(fitted[:, 2], shift, 1e-9, "translation")


def test_arcface_align_inverts_a_known_warp():
    # A smooth 112x112 "face" placed into a 400x400 image by a known similarity; aligning with the template's image
    # positions must recover it (bilinear resampling error only).
    generator = torch.Generator().manual_seed(0)
    face = F.interpolate(torch.rand(1, 3, 8, 8, generator=generator) * 2 - 1, size=(112, 112), mode="bicubic",
                         align_corners=False).clamp(-1, 1)
    angle, scale, shift = math.radians(-15.0), 2.0, torch.tensor([80.0, 80.0], dtype=torch.float64)
    rotation = scale * torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                                    dtype=torch.float64)
    landmarks = ARCFACE_TEMPLATE_112 @ rotation.T + shift  # where the template points lie in the big image
    # Build the big image by sampling the face at the inverse map of every big-image pixel centre.
    size = 400
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    big_pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2)
    face_pixels = (big_pixels - shift) @ torch.linalg.inv(rotation).T
    grid = ((2 * face_pixels + 1) / 112 - 1).reshape(1, size, size, 2).float()
    big = F.grid_sample(face + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    aligned = arcface_align(big, landmarks)
    err = assert_close(aligned[..., 4:-4, 4:-4], face[..., 4:-4, 4:-4], 0.02, "re-aligned face")
    assert err < 0.02
    # Landmarks equal to the template on a 112 image: the identity warp (sampling exactly at pixel centres).
    assert_close(arcface_align(face, ARCFACE_TEMPLATE_112), face, 1e-5, "identity warp")


def test_eg3d_crop_face_input_scales_with_resolution():
    generator = torch.Generator().manual_seed(1)
    image512 = F.interpolate(torch.rand(2, 3, 16, 16, generator=generator) * 2 - 1, size=(512, 512), mode="bicubic",
                             align_corners=False)
    image256 = F.avg_pool2d(image512, 2)
    face512, face256 = eg3d_crop_face_input(image512), eg3d_crop_face_input(image256)
    assert face512.shape == (2, 3, 112, 112)
    # The same crop at two resolutions: faces agree up to resampling of a smooth image.
    assert_close(face256, face512, 0.03, "256 vs 512 crop")
    with pytest.raises(ValueError, match="square"):
        eg3d_crop_face_input(image512[..., :500])


# The fixed EG3D-crop warp is only as good as EG3D_CROP_LANDMARKS_512: on the real aligned photos, the eyes MTCNN
# finds must land within 5 px (of 112) of the ArcFace template's eyes, the other points within 8 px.
def test_eg3d_crop_landmarks_fit_real_aligned_photos(data_dir):
    import numpy as np
    from PIL import Image
    from facenet_pytorch import MTCNN

    from guide_core.identity import EG3D_CROP_LANDMARKS_512
    detector = MTCNN(keep_all=True, device="cpu")
    warp = similarity_transform(EG3D_CROP_LANDMARKS_512[None], ARCFACE_TEMPLATE_112[None])[0]
    errors = []
    for path in sorted((data_dir / "celebahq_aligned").glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        assert image.size == (512, 512)
        _, probs, points = detector.detect(image, landmarks=True)
        best = int(np.argmax(np.asarray(probs, dtype=float)))
        found = torch.tensor(np.asarray(points[best], dtype=float))
        errors.append((found @ warp[:, :2].T + warp[:, 2] - ARCFACE_TEMPLATE_112).norm(dim=1))
    errors = torch.stack(errors)
    print(f"\nEG3D-crop warp, per-point max landmark error (px of 112): {errors.max(dim=0).values.tolist()}")
    assert errors[:, :2].max() < 5.0 and errors.max() < 8.0


def test_loaders_without_a_source_ask_the_weights_manager(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"(?s)model_ir_se50\.pth.*weights fetch ir_se50"):
        load_ir_se50()
    with pytest.raises(FileNotFoundError, match=r"CurricularFace_Backbone\.pth"):
        load_ir101()
