# Safe loading of original EG3D network pickles: a pickle built here in the original persistent-record format
# (torch_utils.persistence records, dnnlib EasyDicts, plain torch modules by reference, numpy scalars) must load back
# to the fixture's weights without running the stored module source; malicious globals must be refused by name.
from __future__ import annotations

import argparse
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from guide_core.eg3d import TriPlaneGenerator
from guide_core.eg3d import convert
from guide_core.eg3d.io import CheckpointError, load_generator_file, save_generator
from guide_core.eg3d.legacy import UnsafePickleError, load_generator_checkpoint, load_network_records, safe_load_pickle
from tests import released_files
from tests.util import assert_close, load_io

MARKER = Path("/tmp/guide_eg3d_pickle_marker")
# Module source stored in every persistent record: it would leave the marker file if anyone executed it.
MARKER_SRC = f"open({str(MARKER)!r}, 'w').write('executed')\n"


# The original's module names installed as throw-away modules (tests/released_files.py) for hand-made records.
@pytest.fixture()
def original_namespace():
    with released_files.original_modules() as ns:
        yield ns


# A training snapshot of G (as G_ema) with a different, random training 'G' at its initial rendering resolution.
def _write_original_pickle(path: Path, G: TriPlaneGenerator, config: dict, with_g_ema: bool = True) -> None:
    G_train = TriPlaneGenerator(**config["init_kwargs"])
    released_files.write_eg3d_snapshot(path, G, config=config, G_train=G_train, with_g_ema=with_g_ema,
                                       module_src=MARKER_SRC)


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir):
    folder = fixtures_dir / "eg3d"
    config = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "state_dict.safetensors"))
    io_tensors = load_io(folder)
    G = TriPlaneGenerator(**config["init_kwargs"])
    G.load_state_dict(state)
    G.neural_rendering_resolution = config["neural_rendering_resolution"]
    return G.eval(), config, state, io_tensors


def _check_parity(G, io_tensors):
    with torch.no_grad():
        ws = G.mapping(io_tensors["z"], io_tensors["c_cond"])
        planes = G.get_planes(io_tensors["ws"], noise_mode="const")
    assert_close(ws, io_tensors["ws"], 1e-5, "ws")
    assert_close(planes[:, :, ::8, ::8], io_tensors["planes_sub8"], 1e-4, "planes_sub8")


def test_original_pickle_loads_without_executing_source(fixture_model, tmp_path):
    G, config, state, io_tensors = fixture_model
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "network-snapshot.pkl"
    _write_original_pickle(path, G, config)
    records = load_network_records(path)
    assert set(records) == {"G", "G_ema", "D"}
    assert records["D"].class_name == "DualDiscriminator"
    ckpt = load_generator_checkpoint(path)
    assert ckpt.entry == "G_ema" and ckpt.neural_rendering_resolution == 128
    assert ckpt.rendering_kwargs["superresolution_module"].endswith("SuperresolutionHybrid8XDC")
    assert ckpt.init_kwargs == config["init_kwargs"]
    assert set(ckpt.state_dict) == set(state)
    for key, value in state.items():
        assert torch.equal(ckpt.state_dict[key], value), key
    loaded = load_generator_file(path)
    assert not loaded.training and loaded.neural_rendering_resolution == 128
    _check_parity(loaded, io_tensors)
    assert not MARKER.exists(), "the pickled module source was executed"


def test_falls_back_to_G_without_G_ema(fixture_model, tmp_path):
    G, config, state, _ = fixture_model
    path = tmp_path / "no-ema.pkl"
    _write_original_pickle(path, G, config, with_g_ema=False)
    ckpt = load_generator_checkpoint(path)
    assert ckpt.entry == "G" and ckpt.neural_rendering_resolution == 64
    assert not torch.equal(ckpt.state_dict["decoder.net.0.weight"], state["decoder.net.0.weight"])


class _Evil:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


class _EvalEvil:
    def __reduce__(self):
        return eval, (f"open({str(MARKER)!r}, 'w')",)


@pytest.mark.parametrize("payload, refused", [
    ({"G_ema": _Evil()}, os.system.__module__ + ".system"),
    ({"G": {"_modules": [1, _EvalEvil()]}}, "builtins.eval"),
])
def test_malicious_pickle_is_refused(tmp_path, payload, refused):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(UnsafePickleError, match=refused.replace(".", r"\.")):
        safe_load_pickle(path)
    with pytest.raises(UnsafePickleError, match=refused.replace(".", r"\.")):
        load_generator_file(path)
    assert not MARKER.exists(), "the malicious payload ran"


def test_malicious_global_inside_a_persistent_record(original_namespace, tmp_path):
    meta = {"type": "class", "version": 6, "module_src": "", "class_name": "TriPlaneGenerator",
            "state": {"_modules": OrderedDict(decoder=_Evil())}}
    path = tmp_path / "nested.pkl"
    path.write_bytes(pickle.dumps({"G_ema": released_files.PersistentObject(original_namespace.reconstruct, meta)},
                                  protocol=4))
    with pytest.raises(UnsafePickleError, match="refused global"):
        load_generator_checkpoint(path)
    assert not MARKER.exists()


def test_safetensors_round_trip_and_convert_cli(fixture_model, tmp_path, capsys):
    G, config, state, io_tensors = fixture_model
    pkl = tmp_path / "orig.pkl"
    _write_original_pickle(pkl, G, config)
    out = tmp_path / "converted.safetensors"
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    assert convert.main(parser.parse_args([str(pkl), str(out), "--dry-run"])) == 0
    assert "would write" in capsys.readouterr().out and not out.exists()
    assert convert.main(parser.parse_args([str(pkl), str(out)])) == 0
    assert out.exists() and out.with_suffix(".json").exists()
    loaded = load_generator_file(out)
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.rendering_kwargs == config["init_kwargs"]["rendering_kwargs"]
    _check_parity(loaded, io_tensors)
    # The metadata alone is enough; a copy of the JSON is only a convenience.
    out.with_suffix(".json").unlink()
    assert load_generator_file(out).neural_rendering_resolution == 128
    again = save_generator(loaded, tmp_path / "again.safetensors")
    assert set(load_file(str(again))) == set(state)


def test_bad_checkpoints_give_clear_errors(fixture_model, tmp_path):
    G, config, state, _ = fixture_model
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_generator_file(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_generator_file(tmp_path / "missing.pkl")
    with pytest.raises(CheckpointError, match="unknown generator format"):
        load_generator_file(garbage.rename(tmp_path / "garbage.bin"))
    path = save_generator(G, tmp_path / "g.safetensors")
    tensors = load_file(str(path))
    tensors.pop("decoder.net.0.weight")
    tensors["decoder.extra"] = torch.zeros(1)
    from safetensors.torch import save_file
    save_file(tensors, str(tmp_path / "g2.safetensors"))
    path.with_suffix(".json").rename(tmp_path / "g2.json")
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. decoder\.net\.0\.weight\).*1 unexpected"):
        load_generator_file(tmp_path / "g2.safetensors")
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"G_ema": 1}, protocol=4)[:-3])
    with pytest.raises(CheckpointError):
        load_generator_file(truncated)
