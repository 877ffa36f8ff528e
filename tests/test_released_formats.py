# Files in the layouts the original code writes (tests/released_files.py) must load: EG3D training snapshots with
# everything the training loop puts in them (D, augment_pipe, the dataset_label_std buffer) reproduce the fixture
# outputs and the fp16 / AFHQ configurations; snapshots without sr_antialias take it from the super-resolution module;
# the official GUIDE unlearn.py's file loads; hostile pickles are refused in our words (also by convert-eg3d); old
# IR-SE50 / IR-101 state dicts without BatchNorm counters load and match; GOAE's bare state dict loads.
from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import subprocess
import sys
import traceback
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from guide_core.eg3d import TriPlaneGenerator, camera_params, convert
from guide_core.eg3d.io import CheckpointError, load_generator_file
from guide_core.eg3d.legacy import (TRAINING_ONLY_BUFFERS, UnsafePickleError, load_generator_checkpoint,
                                    load_network_records, safe_load_pickle)
from tests import released_files
from tests.conftest import REPO
from tests.util import assert_close, load_io, recipe_state_dict

MARKER = Path("/tmp/guide_released_formats_marker")
MARKER_SRC = f"open({str(MARKER)!r}, 'w').write('executed')\n"  # leaves the marker if anyone ran the module source
TORCH_ADVICE = "weights_only=False"  # torch's own hint; a refusal of ours must never pass it on


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir):
    folder = fixtures_dir / "eg3d"
    config = json.loads((folder / "config.json").read_text())
    G = TriPlaneGenerator(**config["init_kwargs"])
    G.load_state_dict(load_file(str(folder / "state_dict.safetensors")), strict=True)
    G.neural_rendering_resolution = config["neural_rendering_resolution"]
    return G.eval(), config, load_io(folder)


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "module source stored in a pickle was executed"


# A reduced-width generator of the fixture's architecture family with other constructor settings and seeded weights
# (noise strengths and biases moved off zero so that every parameter kind reaches the outputs).
def _variant(config: dict, seed: int, **changes) -> TriPlaneGenerator:
    init_kwargs = json.loads(json.dumps(config["init_kwargs"]))
    rendering = dict(init_kwargs["rendering_kwargs"], depth_resolution=12, depth_resolution_importance=12)
    rendering.update(changes.pop("rendering_kwargs", {}))
    init_kwargs.update(changes, rendering_kwargs=rendering)
    torch.manual_seed(seed)
    G = TriPlaneGenerator(**init_kwargs)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith(("bias", "noise_strength")):
                p.normal_(0, 0.1)
    G.neural_rendering_resolution = 32
    return G.eval()


def _loaded_equals(loaded: TriPlaneGenerator, G: TriPlaneGenerator) -> None:
    assert loaded.init_kwargs == G.init_kwargs and loaded.rendering_kwargs == G.rendering_kwargs
    assert loaded.neural_rendering_resolution == G.neural_rendering_resolution
    ours, theirs = loaded.state_dict(), G.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "weights changed on the way through the snapshot"


def test_full_snapshot_reproduces_fixture_outputs(fixture_model, tmp_path, caplog):
    G, config, io = fixture_model
    path = released_files.write_eg3d_snapshot(tmp_path / "network-snapshot-025000.pkl", G, config=config,
                                              module_src=MARKER_SRC)
    data = safe_load_pickle(path)
    assert list(data) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert data["training_set_kwargs"]["resolution"] == 512
    assert data["augment_pipe"].class_name == "AugmentPipe"
    assert sorted(data["augment_pipe"].state["_buffers"]) == ["Hz_fbank", "Hz_geom", "p"]
    records = load_network_records(path)
    assert records["D"].class_name == "DualDiscriminator" and "b512.fromrgb.weight" in records["D"].state_dict
    for entry in ("G", "G_ema"):
        assert list(records[entry].state_dict["dataset_label_std"].shape) == [25]
    with caplog.at_level(logging.WARNING, logger="guide_core.eg3d.legacy"):
        loaded = load_generator_file(path)
    notes = [r.getMessage() for r in caplog.records if "dataset_label_std" in r.getMessage()]
    assert len(notes) == 1 and "\n" not in notes[0] and "training-only" in notes[0]
    _loaded_equals(loaded, G)
    with torch.no_grad():
        ws = loaded.mapping(io["z"], io["c_cond"])
        planes = loaded.get_planes(io["ws"], noise_mode="const")
        out = loaded.synthesis(io["ws"][:1], io["c_view"][:1], noise_mode="const", deterministic=True)
    assert_close(ws, io["ws"], 1e-5, "ws")
    assert_close(planes[:, :, ::8, ::8], io["planes_sub8"], 1e-4, "planes_sub8")
    for name in ("image", "image_raw", "image_depth"):
        assert_close(out[name], io[name][:1], 1e-3, name)


def test_training_buffers_are_named_and_only_noted_when_present(fixture_model, tmp_path, caplog):
    G, config, _ = fixture_model
    assert "dataset_label_std" in TRAINING_ONLY_BUFFERS
    with_std = load_generator_checkpoint(released_files.write_eg3d_snapshot(tmp_path / "a.pkl", G, config=config))
    assert with_std.notes == ["G_ema: dropped the training-only buffer dataset_label_std [25] (registered by the "
                              "training loop, read by no forward pass)"]
    caplog.clear()
    without = load_generator_checkpoint(released_files.write_eg3d_snapshot(
        tmp_path / "b.pkl", G, config=config, label_std=False, with_d=False, with_augment=False))
    assert without.notes == [] and not caplog.records
    assert set(with_std.state_dict) == set(without.state_dict) == set(G.state_dict())


# fp16 / clamped settings of train.py's --g-num-fp16-res and --sr-num-fp16-res, on the original's 128x128
# configuration (SuperresolutionHybrid2X): the snapshot must give back the same model, outputs included.
def test_fp16_and_clamp_snapshot_matches_the_model(fixture_model, tmp_path):
    _, config, io = fixture_model
    G = _variant(config, seed=3, conv_clamp=256, num_fp16_res=4, sr_num_fp16_res=4, img_resolution=128,
                 rendering_kwargs={"superresolution_module": "training.superresolution.SuperresolutionHybrid2X",
                                   "image_resolution": 128})
    G.neural_rendering_resolution = 64
    assert G.superresolution.block0.use_fp16 and G.backbone.synthesis.b256.use_fp16
    loaded = load_generator_file(released_files.write_eg3d_snapshot(tmp_path / "fp16.pkl", G))
    _loaded_equals(loaded, G)
    c = io["c_view"][:1]
    with torch.no_grad():
        ws = G.mapping(io["z"][:1], io["c_cond"][:1])
        expected = G.synthesis(ws, c, noise_mode="const", deterministic=True)
        actual = loaded.synthesis(loaded.mapping(io["z"][:1], io["c_cond"][:1]), c, noise_mode="const",
                                  deterministic=True)
    assert expected["image"].shape == (1, 3, 128, 128)
    for name in ("image", "image_raw", "image_depth"):
        assert_close(actual[name], expected[name], 0.0, name)


# The released AFHQ cats model's settings (train.py --cfg=afhq: camera pivot (0, 0, -0.06), 512 px, 8XDC).
def test_afhq_snapshot_matches_the_model(fixture_model, tmp_path):
    _, config, io = fixture_model
    G = _variant(config, seed=4, rendering_kwargs={"avg_camera_pivot": [0, 0, -0.06], "c_gen_conditioning_zero": False,
                                                   "c_scale": 1.0})
    loaded = load_generator_file(released_files.write_eg3d_snapshot(tmp_path / "afhqcats512-128.pkl", G))
    _loaded_equals(loaded, G)
    assert loaded.rendering_kwargs["avg_camera_pivot"] == [0, 0, -0.06]
    c = camera_params(torch.tensor([0.3]), torch.tensor([-0.1]))
    with torch.no_grad():
        ws, ws_loaded = G.mapping(io["z"][:1], c), loaded.mapping(io["z"][:1], c)
        expected = G.render_planes(G.get_planes(ws), c, deterministic=True)
        actual = loaded.render_planes(loaded.get_planes(ws_loaded), c, deterministic=True)
    assert_close(ws_loaded, ws, 0.0, "ws")
    for name in ("image_raw", "image_depth"):
        assert_close(actual[name], expected[name], 0.0, name)


# Snapshots written before rendering_kwargs had sr_antialias: the super-resolution module's own attribute decides
# (as it does when the original renders the pickled module), both for True and for False.
@pytest.mark.parametrize("antialias", [True, False])
def test_missing_sr_antialias_comes_from_the_module(fixture_model, tmp_path, antialias, caplog):
    _, config, _ = fixture_model
    G = _variant(config, seed=5, rendering_kwargs={"sr_antialias": antialias})
    path = released_files.write_eg3d_snapshot(tmp_path / "old.pkl", G, drop_sr_antialias=True, label_std=False)
    record = safe_load_pickle(path)["G_ema"]
    assert "sr_antialias" not in record.state["rendering_kwargs"]
    assert "sr_antialias" not in record.state["_init_kwargs"]["rendering_kwargs"]
    with caplog.at_level(logging.WARNING, logger="guide_core.eg3d.legacy"):
        loaded = load_generator_file(path)
    assert loaded.superresolution.sr_antialias is antialias
    assert loaded.rendering_kwargs["sr_antialias"] is antialias
    assert [r.getMessage() for r in caplog.records if "sr_antialias" in r.getMessage()] == [
        f"{path}: G_ema: sr_antialias missing from rendering_kwargs and init_kwargs.rendering_kwargs: using the "
        f"super-resolution module's own value {antialias}"]
    _loaded_equals(loaded, G)


def test_sr_antialias_nowhere_is_a_clear_error(fixture_model, tmp_path):
    _, config, _ = fixture_model
    G = _variant(config, seed=6)
    del G.superresolution.sr_antialias  # a module without the attribute as well
    try:
        path = released_files.write_eg3d_snapshot(tmp_path / "none.pkl", G, drop_sr_antialias=True)
    finally:
        G.superresolution.sr_antialias = True
    with pytest.raises(CheckpointError, match=r"none\.pkl \[G_ema\].*rendering_kwargs lacks \['sr_antialias'\]"):
        load_generator_file(path)


def test_official_guide_unlearned_file_loads(fixture_model, tmp_path, caplog):
    G, _, io = fixture_model
    path = released_files.write_guide_unlearned(tmp_path / "last.pkl", G, module_src=MARKER_SRC)
    data = safe_load_pickle(path)
    assert list(data) == ["G_ema"] and data["G_ema"].class_name == "TriPlaneGenerator"
    assert "_forward_hooks_with_kwargs" in data["G_ema"].state  # written by the torch 2.1 of GUIDE's environment
    with caplog.at_level(logging.WARNING, logger="guide_core.eg3d.legacy"):
        ckpt = load_generator_checkpoint(path)
        loaded = load_generator_file(path)
    assert ckpt.entry == "G_ema" and ckpt.notes == [] and not caplog.records
    _loaded_equals(loaded, G)
    with torch.no_grad():
        assert_close(loaded.mapping(io["z"], io["c_cond"]), io["ws"], 1e-5, "ws")


class _System:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


# A tensor storage whose payload is not a torch storage stream but a pickle calling os.system.
class _HostileStorage:
    def __reduce__(self):
        return torch.storage._load_from_bytes, (pickle.dumps(_System(), protocol=2),)


# A storage payload cut short: corrupt, not hostile.
class _TruncatedStorage:
    def __reduce__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
            payload = torch.zeros(4).storage().__reduce__()[1][0]  # the legacy torch.save stream of one storage
        return torch.storage._load_from_bytes, (payload[:40],)


# A full snapshot of the fixture model with `payload` planted as a buffer of G_ema's decoder (deep inside the records).
def _snapshot_with(path: Path, G: TriPlaneGenerator, config: dict, payload) -> Path:
    with released_files.original_modules() as ns:
        record = released_files.generator_record(ns, G, lambda module: MARKER_SRC, config["init_kwargs"],
                                                 config["init_kwargs"]["rendering_kwargs"], 128)
        record.meta["state"]["_modules"]["decoder"].__dict__["_buffers"]["planted"] = payload
        with open(path, "wb") as f:
            pickle.dump({"training_set_kwargs": {}, "G": None, "D": None, "G_ema": record, "augment_pipe": None}, f,
                        protocol=4)
    return path


@pytest.mark.parametrize("payload, refusal", [
    (_System(), rf"refused global {os.system.__module__}\.system: not on the allowlist"),
    (_HostileStorage(), rf"refused tensor storage #\d+ \(\d+ bytes\): it names the global "
                        rf"{os.system.__module__}\.system"),
])
def test_hostile_pickles_are_refused_in_our_words(fixture_model, tmp_path, payload, refusal, capsys):
    G, config, _ = fixture_model
    path = _snapshot_with(tmp_path / "hostile.pkl", G, config, payload)
    with pytest.raises(UnsafePickleError, match=refusal) as refused:
        load_generator_file(path)
    message = str(refused.value)
    assert TORCH_ADVICE not in message and "Weights only load failed" not in message and "\n" not in message
    shown = "".join(traceback.format_exception(refused.value))  # what a user sees if nobody catches it
    assert TORCH_ADVICE not in shown and "Weights only load failed" not in shown
    args = argparse.Namespace(input=path, output=tmp_path / "out.safetensors", dry_run=False)
    assert convert.main(args) == convert.EXIT_REFUSED == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"refused: {path}: ")
    assert TORCH_ADVICE not in err and not args.output.exists()


def test_bad_files_give_one_line_errors(fixture_model, tmp_path, capsys):
    G, config, _ = fixture_model
    corrupt = _snapshot_with(tmp_path / "corrupt.pkl", G, config, _TruncatedStorage())
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(released_files.write_eg3d_snapshot(tmp_path / "whole.pkl", G, config=config,
                                                            with_d=False).read_bytes()[:100_000])
    not_a_pickle = tmp_path / "noise.pkl"
    not_a_pickle.write_bytes(os.urandom(4096))
    for path, reason in ((corrupt, r"tensor storage #\d+ .* is corrupt"), (truncated, "cannot read the network"),
                         (not_a_pickle, "cannot read the network"), (tmp_path / "absent.pkl", "not found")):
        with pytest.raises(CheckpointError, match=reason):
            load_generator_file(path)
        args = argparse.Namespace(input=path, output=tmp_path / "out.safetensors", dry_run=False)
        assert convert.main(args) == convert.EXIT_ERROR, path
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err


# The command itself, as a user runs it, on the file whose torch error used to escape as a traceback.
def test_convert_cli_refuses_hostile_storage_in_one_line(fixture_model, tmp_path):
    G, config, _ = fixture_model
    path = _snapshot_with(tmp_path / "hostile-storage.pkl", G, config, _HostileStorage())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "guide_core", "convert-eg3d", str(path),
                           str(tmp_path / "out.safetensors")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"refused: {path}: refused tensor storage #")
    assert TORCH_ADVICE not in done.stderr and "Traceback" not in done.stderr


def _counters(state: dict) -> list[str]:
    return [k for k in state if k.endswith("num_batches_tracked")]


# model_ir_se50.pth as torch 0.4.0 saved it: legacy format, no BatchNorm counters; torch fills them in, so do we.
def test_old_batchnorm_ir_se50_file_loads_and_matches(fixtures_dir, tmp_path):
    from guide_core.identity import load_ir_se50

    state = recipe_state_dict(fixtures_dir / "ir_se50")
    path = released_files.write_ir_state_dict(tmp_path / "model_ir_se50.pth", state, old_bn=True)
    assert not zipfile.is_zipfile(path)
    on_disk = torch.load(path, weights_only=True)
    assert len(_counters(state)) == 54 and _counters(on_disk) == [] and len(on_disk) == len(state) - 54
    net = load_ir_se50(path)
    counters = {k: v for k, v in net.backbone.state_dict().items() if k.endswith("num_batches_tracked")}
    assert len(counters) == 54 and all(v.dtype == torch.long and int(v) == 0 for v in counters.values())
    io = load_io(fixtures_dir / "ir_se50")
    with torch.no_grad():
        assert_close(net.backbone.features(net.face_input(io["img_a"])), io["feat_unnorm_a"], 1e-4, "feat_unnorm_a")
        assert_close(net.embed(io["img_a"]), io["emb_a"], 1e-6, "emb_a")


def test_old_batchnorm_ir101_file_loads_and_matches(fixtures_dir, tmp_path):
    from guide_core.identity import IdentityCheckpointError, load_ir101

    state = recipe_state_dict(fixtures_dir / "ir101")
    path = released_files.write_ir_state_dict(tmp_path / "CurricularFace_Backbone.pth", state, old_bn=True)
    assert _counters(torch.load(path, weights_only=True)) == [] and len(_counters(state)) == 104
    net = load_ir101(path, preprocessing="aligned")
    io = load_io(fixtures_dir / "ir101")
    with torch.no_grad():
        assert_close(net.backbone.features(io["x"]), io["feat_unnorm"], 1e-5, "feat_unnorm")
        assert_close(net.embed(io["x"]), io["emb"], 1e-6, "emb")
    # Only the counters are filled in: a BatchNorm statistic missing from the file is still reported.
    del state["output_layer.0.running_mean"]
    with pytest.raises(IdentityCheckpointError, match=r"backbone: 1 missing keys: output_layer\.0\.running_mean$"):
        load_ir101({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})


# encoder_FFHQ.pt as GOAE's and GUIDE's code load it: the bare state dict, no wrapper, no prefix, zip format.
def test_goae_checkpoint_in_the_released_layout_loads(tmp_path):
    from guide_core.encoders.goae import GOAEncoder, load_goae

    torch.manual_seed(7)
    state = GOAEncoder().state_dict()
    path = released_files.write_goae_checkpoint(tmp_path / "encoder_FFHQ.pt", state)
    assert zipfile.is_zipfile(path)
    on_disk = torch.load(path, weights_only=True)
    assert list(on_disk) == list(state) and not any(k.startswith(("module.", "state_dict")) for k in on_disk)
    loaded = load_goae(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
