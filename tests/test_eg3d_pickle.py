# Safe loading of original EG3D network pickles: a pickle built here in the original persistent-record format
# (torch_utils.persistence records, dnnlib EasyDicts, plain torch modules by reference, numpy scalars) must load back
# to the fixture's weights without running the stored module source; malicious globals must be refused by name.
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from guide_core.eg3d import TriPlaneGenerator
from guide_core.eg3d import convert
from guide_core.eg3d.io import CheckpointError, load_generator_file, save_generator
from guide_core.eg3d.legacy import UnsafePickleError, load_generator_checkpoint, load_network_records, safe_load_pickle
from tests.util import assert_close

# Classes that the original decorates with @persistence.persistent_class (pickled with their module source).
PERSISTENT = {"TriPlaneGenerator": "training.triplane", "StyleGAN2Backbone": "training.networks_stylegan2",
              "SynthesisNetwork": "training.networks_stylegan2", "SynthesisBlock": "training.networks_stylegan2",
              "SynthesisLayer": "training.networks_stylegan2", "ToRGBLayer": "training.networks_stylegan2",
              "FullyConnectedLayer": "training.networks_stylegan2", "MappingNetwork": "training.networks_stylegan2",
              "SynthesisBlockNoUp": "training.superresolution",
              "SuperresolutionHybrid8XDC": "training.superresolution"}
# Plain (non-persistent) classes the original pickles by reference.
BY_REFERENCE = {"ImportanceRenderer": "training.volumetric_rendering.renderer",
                "RaySampler": "training.volumetric_rendering.ray_sampler",
                "OSGDecoder": "training.triplane"}
MARKER = Path("/tmp/guide_eg3d_pickle_marker")


# Install throw-away modules named like the original's so the standard pickler can write references to them.
@pytest.fixture()
def original_namespace(monkeypatch):
    def module(name: str) -> types.ModuleType:
        mod = types.ModuleType(name)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    for name in ("torch_utils", "dnnlib", "training", "training.volumetric_rendering"):
        module(name)
    persistence = module("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the pickle is only written here
        raise AssertionError("the fake persistence hook must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = module("dnnlib.util")
    easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    util.EasyDict = easydict
    classes = {}
    for mod_name in set(BY_REFERENCE.values()) | set(PERSISTENT.values()):
        if mod_name not in sys.modules or not isinstance(sys.modules[mod_name], types.ModuleType) \
                or mod_name.startswith("training."):
            mod = module(mod_name)
        else:
            mod = sys.modules[mod_name]
        for cls_name, owner in BY_REFERENCE.items():
            if owner == mod_name:
                cls = type(cls_name, (), {"__module__": mod_name})
                setattr(mod, cls_name, cls)
                classes[cls_name] = cls
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=easydict, classes=classes)


# An object that pickles exactly like a persistent-class instance of the original.
class _PersistentObject:
    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def _easy(ns, value):
    if isinstance(value, dict):
        return ns.EasyDict({k: _easy(ns, v) for k, v in value.items()})
    return value


# Mirror one of our modules as the original would have pickled it.
def _as_original(ns, module: torch.nn.Module, module_src: str, init_kwargs: dict | None = None):
    children = OrderedDict((name, _as_original(ns, child, module_src)) for name, child in module._modules.items())
    params = OrderedDict((k, torch.nn.Parameter(v.detach().clone(), requires_grad=False) if v is not None else None)
                         for k, v in module._parameters.items())
    state = {"training": False, "_parameters": params,
             "_buffers": OrderedDict((k, v.clone()) for k, v in module._buffers.items()),
             "_non_persistent_buffers_set": set(), "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(),
             "_forward_pre_hooks": OrderedDict(), "_state_dict_hooks": OrderedDict(), "_modules": children}
    for key, value in module.__dict__.items():
        if not key.startswith("_") and key not in state and isinstance(value, (int, float, str, list, dict, bool)):
            state[key] = np.float64(value) if key == "weight_gain" else value  # the original stores numpy floats
    name = type(module).__name__
    if name in PERSISTENT:
        state["_init_args"] = ()
        state["_init_kwargs"] = _easy(ns, init_kwargs or {})
        meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": name, "state": state}
        return _PersistentObject(ns.reconstruct, meta)
    if name in BY_REFERENCE:
        obj = ns.classes[name].__new__(ns.classes[name])
        obj.__dict__.update(state)
        if name == "ImportanceRenderer":
            obj.plane_axes = torch.eye(3)  # a plain tensor attribute, as in the original renderer
        return obj
    real = type(module).__new__(type(module))  # torch.nn.Sequential / Softplus: pickled by reference to torch
    real.__dict__.update(state)
    return real


def _write_original_pickle(ns, path: Path, G: TriPlaneGenerator, config: dict, with_g_ema: bool = True) -> None:
    src = f"open({str(MARKER)!r}, 'w').write('executed')\n"  # would leave a marker if anyone executed the source
    g_ema = _as_original(ns, G, src, init_kwargs=config["init_kwargs"])
    g_ema.meta["state"]["neural_rendering_resolution"] = config["neural_rendering_resolution"]
    g_ema.meta["state"]["rendering_kwargs"] = _easy(ns, config["init_kwargs"]["rendering_kwargs"])
    G_train = TriPlaneGenerator(**config["init_kwargs"])  # a different, random 'G' (training weights)
    g = _as_original(ns, G_train, src, init_kwargs=config["init_kwargs"])
    g.meta["state"]["neural_rendering_resolution"] = 64
    g.meta["state"]["rendering_kwargs"] = _easy(ns, config["init_kwargs"]["rendering_kwargs"])
    d_layer = _as_original(ns, G.backbone.mapping.fc0, src)
    d_layer.meta["class_name"] = "DualDiscriminator"
    data = {"training_set_kwargs": {"resolution": 512}, "G": g, "D": d_layer, "augment_pipe": None}
    if with_g_ema:
        data["G_ema"] = g_ema
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir):
    folder = fixtures_dir / "eg3d"
    config = json.loads((folder / "config.json").read_text())
    state = load_file(str(folder / "state_dict.safetensors"))
    io_tensors = load_file(str(folder / "io.safetensors"))
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


def test_original_pickle_loads_without_executing_source(original_namespace, fixture_model, tmp_path):
    G, config, state, io_tensors = fixture_model
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "network-snapshot.pkl"
    _write_original_pickle(original_namespace, path, G, config)
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


def test_falls_back_to_G_without_G_ema(original_namespace, fixture_model, tmp_path):
    G, config, state, _ = fixture_model
    path = tmp_path / "no-ema.pkl"
    _write_original_pickle(original_namespace, path, G, config, with_g_ema=False)
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
    path.write_bytes(pickle.dumps({"G_ema": _PersistentObject(original_namespace.reconstruct, meta)}, protocol=4))
    with pytest.raises(UnsafePickleError, match="refused global"):
        load_generator_checkpoint(path)
    assert not MARKER.exists()


def test_safetensors_round_trip_and_convert_cli(original_namespace, fixture_model, tmp_path, capsys):
    G, config, state, io_tensors = fixture_model
    pkl = tmp_path / "orig.pkl"
    _write_original_pickle(original_namespace, pkl, G, config)
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
