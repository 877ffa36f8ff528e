"""Safe reader for the original EG3D / StyleGAN network pickles (NVlabs dnnlib + torch_utils.persistence format).
Those files normally load by *executing* Python source stored inside them. Here every global the pickle names is
looked up in an allowlist of inert stand-ins: persistent-class records are kept as data (class name, source text,
state) and never executed, torch tensors are rebuilt through torch.load(weights_only=True), and anything else
(os.system, builtins.eval, ...) raises UnsafePickleError before it can be called. Refusals are worded here, naming
the global or the tensor storage, never passing on torch's advice to turn its check off.
"""
from __future__ import annotations

import codecs
import collections
import io
import logging
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from guide_core.weights.safe_load import foreign_global, is_weights_only_refusal, tensor_file_refusal

# Modules whose classes may appear by reference in EG3D pickles (non-persistent nn.Modules of the training code,
# plain torch.nn containers/activations). They become inert ModuleRecord stand-ins; nothing is imported.
_CLASS_REFERENCE_MODULES = (
    "training.triplane", "training.networks_stylegan2", "training.networks_stylegan3", "training.superresolution",
    "training.dual_discriminator", "training.augment", "training.volumetric_rendering.renderer",
    "training.volumetric_rendering.ray_sampler", "training.volumetric_rendering.ray_marcher",
)
_TORCH_NN_PREFIX = "torch.nn.modules."
_NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
_PERSISTENT_VERSION = 6  # torch_utils.persistence format version of the released checkpoints
# Buffers the original training loop registers on G (and so on G_ema, its deep copy) that no forward pass reads: the
# per-dimension std of the dataset's camera labels. Real snapshots carry them; the generator architecture does not.
TRAINING_ONLY_BUFFERS = frozenset({"dataset_label_std"})

log = logging.getLogger(__name__)


class UnsafePickleError(pickle.UnpicklingError):
    """Raised when a pickle names a global outside the allowlist (the pickle is refused, nothing is executed)."""
    pass


@dataclass
class PersistentRecord:
    """A persistent-class object as stored in the pickle: the class name, its module's source text (kept, never run),
    the format version and the object's __dict__ state.
    """
    class_name: str
    module_src: str
    version: int
    state: dict = field(repr=False)


class ModuleRecord:
    """Inert stand-in for a class referenced by name (e.g. torch.nn.Sequential): remembers the name and its state."""
    qualified_name = "?"

    def __setstate__(self, state: Any) -> None:
        # pickle's BUILD may hand (dict_state, slot_state); only the dict part matters for modules.
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0] or {}
        self.state = dict(state or {})

    def __repr__(self) -> str:
        return f"ModuleRecord({self.qualified_name})"


class EasyDict(dict):
    """dict subclass standing in for dnnlib.util.EasyDict (attribute access, no code from the pickle)."""
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


_record_classes: dict[str, type] = {}


def _record_class(qualified_name: str) -> type:
    cls = _record_classes.get(qualified_name)
    if cls is None:
        cls = type(qualified_name.rsplit(".", 1)[-1], (ModuleRecord,), {"qualified_name": qualified_name})
        _record_classes[qualified_name] = cls
    return cls


def _persistent_record(meta: dict) -> PersistentRecord:
    """Replacement for torch_utils.persistence._reconstruct_persistent_obj: records the meta data, executes nothing."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise UnsafePickleError(f"unsupported persistent record (type {kind!r})")
    version = meta.get("version")
    if version != _PERSISTENT_VERSION:
        raise pickle.UnpicklingError(f"persistent record version {version}, expected {_PERSISTENT_VERSION}")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"persistent record {meta.get('class_name')!r} has a non-dict state")
    return PersistentRecord(class_name=str(meta.get("class_name")), module_src=str(meta.get("module_src", "")),
                            version=int(version), state=dict(state))


def _storage_from_bytes(data: bytes, index: int = 0):
    """Read one legacy tensor-storage payload (torch.storage._load_from_bytes' argument) with weights_only; a refusal
    becomes UnsafePickleError naming the storage and the global in our words, a corrupt payload an UnpicklingError.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"tensor storage #{index} is not stored as bytes ({type(data).__name__}); refused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice, once per tensor
            return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as exc:
        if is_weights_only_refusal(exc) or foreign_global(bytes(data)) is not None:
            raise UnsafePickleError(f"refused tensor storage #{index} ({len(data)} bytes): "
                                    f"{tensor_file_refusal(bytes(data), exc)}") from None
        raise pickle.UnpicklingError(f"tensor storage #{index} ({len(data)} bytes) is corrupt "
                                     f"({type(exc).__name__})") from None


def _safe_reconstructor(cls: type, base: type, state: Any):
    """copyreg._reconstructor for protocol-0/1 pickles, limited to our stand-ins."""
    if not (isinstance(cls, type) and issubclass(cls, (ModuleRecord, EasyDict))) or base is not object:
        raise UnsafePickleError(f"copyreg._reconstructor refused for {cls!r}")
    return cls.__new__(cls)


def _safe_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """_codecs.encode as used by protocol-2 pickles for bytes (latin-1 text -> bytes) and nothing else."""
    if not isinstance(obj, str) or encoding.lower() not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode refused for encoding {encoding!r}")
    return codecs.encode(obj, "latin1", errors)


def _numpy_global(module: str, name: str):
    """numpy reconstruction helpers (harmless data constructors; object arrays only hold already-vetted objects)."""
    if name == "dtype":
        return np.dtype
    if name == "ndarray":
        return np.ndarray
    if name == "scalar":
        return getattr(np, "_core", getattr(np, "core")).multiarray.scalar
    if name == "_reconstruct":
        return getattr(np, "_core", getattr(np, "core")).multiarray._reconstruct
    return None


_TORCH_REBUILDERS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                     "_rebuild_parameter_with_state")
_ALLOWED_BUILTINS = {"set": set, "frozenset": frozenset, "object": object, "slice": slice, "complex": complex}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class answers only from the allowlist above; tensor storages are numbered in the
    order
    they are read, so a refusal can say which one.
    """
    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self.storages_read = 0

    def _load_storage(self, data: bytes):
        self.storages_read += 1
        return _storage_from_bytes(data, self.storages_read)

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
            return _persistent_record
        if module == "torch._utils" and name in _TORCH_REBUILDERS and hasattr(torch._utils, name):
            return getattr(torch._utils, name)
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._load_storage
        if (module, name) in (("collections", "OrderedDict"), ("typing", "OrderedDict")):
            return collections.OrderedDict
        if (module, name) == ("dnnlib.util", "EasyDict") or (module, name) == ("dnnlib", "EasyDict"):
            return EasyDict
        if (module, name) == ("copyreg", "_reconstructor"):
            return _safe_reconstructor
        if (module, name) == ("_codecs", "encode"):
            return _safe_encode
        if module in ("builtins", "__builtin__") and name in _ALLOWED_BUILTINS:
            return _ALLOWED_BUILTINS[name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) == ("torch", "Size"):
            return torch.Size
        if (module, name) == ("torch", "device"):
            return torch.device
        if module in _NUMPY_MODULES and _numpy_global(module, name) is not None:
            return _numpy_global(module, name)
        if (module in _CLASS_REFERENCE_MODULES or module.startswith(_TORCH_NN_PREFIX)) and name.isidentifier():
            return _record_class(f"{module}.{name}")
        raise UnsafePickleError(f"refused global {module}.{name}: not on the allowlist of the EG3D pickle reader "
                                "(the file may be malicious or not an EG3D network pickle); nothing in it was run")


def safe_load_pickle(file: str | Path | BinaryIO) -> Any:
    """Unpickle an EG3D network pickle into plain data (dicts, tensors, PersistentRecord / ModuleRecord trees)."""
    if isinstance(file, (str, Path)):
        with open(file, "rb") as f:
            return RestrictedUnpickler(f).load()
    return RestrictedUnpickler(file).load()


def _state_of(node: Any) -> dict | None:
    if isinstance(node, PersistentRecord):
        return node.state
    if isinstance(node, ModuleRecord):
        return getattr(node, "state", {})
    if isinstance(node, torch.nn.Module):
        return node.__dict__
    return None


def _name_of(node: Any) -> str:
    if isinstance(node, PersistentRecord):
        return node.class_name
    if isinstance(node, ModuleRecord):
        return node.qualified_name
    return type(node).__name__


def record_state_dict(node: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """state_dict of a module record tree: parameters, then persistent buffers, then submodules (nn.Module's key order).
    """
    state = _state_of(node)
    if state is None:
        raise pickle.UnpicklingError(f"{prefix or 'network'} is not a module record ({type(node).__name__})")
    out: dict[str, torch.Tensor] = {}
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach()
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in non_persistent:
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(record_state_dict(child, prefix + name + "."))
    return out


def plain(value: Any) -> Any:
    """Convert EasyDict / OrderedDict / tuples / numpy scalars into JSON-friendly Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class NetworkRecord:
    """One network of the pickle ('G', 'G_ema' or 'D') as data: class, constructor kwargs, weights, extra attributes,
    and
    the record itself (for attributes of its submodules).
    """
    class_name: str
    init_args: list
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    attributes: dict = field(default_factory=dict, repr=False)
    record: Any = field(default=None, repr=False)


def _network_record(node: Any, entry: str) -> NetworkRecord:
    """A top-level entry must be a persistent-class record (how the original pickles its networks)."""
    if not isinstance(node, PersistentRecord):
        raise pickle.UnpicklingError(f"entry {entry!r} is not a persistent network record ({_name_of(node)})")
    state = node.state
    attributes = {k: v for k, v in state.items() if not k.startswith("_") and k != "training"}
    return NetworkRecord(class_name=node.class_name, init_args=plain(list(state.get("_init_args") or ())),
                         init_kwargs=plain(dict(state.get("_init_kwargs") or {})), state_dict=record_state_dict(node),
                         attributes=attributes, record=node)


def load_network_records(file: str | Path | BinaryIO) -> dict[str, NetworkRecord]:
    """Read the 'G', 'G_ema' and 'D' networks of an original training snapshot / released checkpoint, or of the file the
    official GUIDE unlearn.py writes ({'G_ema': generator} only).
    """
    data = safe_load_pickle(file)
    if not isinstance(data, dict):
        raise pickle.UnpicklingError(f"expected a dict of networks, found {type(data).__name__}")
    records = {k: _network_record(data[k], k) for k in ("G", "G_ema", "D") if data.get(k) is not None}
    if not records:
        raise pickle.UnpicklingError(f"no 'G', 'G_ema' or 'D' entry in the pickle (keys: {sorted(map(str, data))})")
    return records


@dataclass
class GeneratorCheckpoint:
    """Everything needed to rebuild the generator: constructor kwargs, weights, the two runtime attributes, and one
    line per
    adjustment made to what the file holds (dropped training-only buffers, sr_antialias taken from the module).
    """
    entry: str
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    neural_rendering_resolution: int
    rendering_kwargs: dict
    notes: list[str] = field(default_factory=list)


def _drop_training_buffers(state_dict: dict[str, torch.Tensor], entry: str) -> list[str]:
    """The training loop's extra buffers on the generator's top level are not part of the architecture: drop them,
    noted.
    """
    dropped = [f"{k} {list(state_dict.pop(k).shape)}" for k in [k for k in state_dict if k in TRAINING_ONLY_BUFFERS]]
    if not dropped:
        return []
    return [f"{entry}: dropped the training-only buffer{'s' if len(dropped) > 1 else ''} {', '.join(dropped)} "
            "(registered by the training loop, read by no forward pass)"]


def _sr_antialias_from_module(rec: NetworkRecord, init_kwargs: dict, rendering_kwargs: dict, entry: str) -> list[str]:
    """The super-resolution module renders with its own `sr_antialias` attribute; the original reads it from the pickled
    module, so that value wins over rendering_kwargs (and fills it where older snapshots lack the key).
    """
    children = (_state_of(rec.record) or {}).get("_modules") or {}
    sr_state = _state_of(children.get("superresolution")) or {}
    value = sr_state.get("sr_antialias")
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, bool):
        return []
    targets = {"rendering_kwargs": rendering_kwargs}
    if isinstance(init_kwargs.get("rendering_kwargs"), dict):
        targets["init_kwargs.rendering_kwargs"] = init_kwargs["rendering_kwargs"]
    missing = [label for label, kwargs in targets.items() if "sr_antialias" not in kwargs]
    differ = [f"{label} ({kwargs['sr_antialias']})" for label, kwargs in targets.items()
              if "sr_antialias" in kwargs and bool(kwargs["sr_antialias"]) != value]
    for kwargs in targets.values():
        kwargs["sr_antialias"] = value
    if not missing and not differ:
        return []
    problems = ([f"missing from {' and '.join(missing)}"] if missing else []) + \
        ([f"different in {' and '.join(differ)}"] if differ else [])
    return [f"{entry}: sr_antialias {'; '.join(problems)}: using the super-resolution module's own value {value}"]


def load_generator_checkpoint(file: str | Path | BinaryIO) -> GeneratorCheckpoint:
    """G_ema (the weights the paper's results use), else G, as a GeneratorCheckpoint; each adjustment is logged as one
    line.
    """
    records = load_network_records(file)
    entry = "G_ema" if "G_ema" in records else "G"
    if entry not in records:
        raise pickle.UnpicklingError("the pickle has no 'G_ema' or 'G' generator entry")
    rec = records[entry]
    if rec.class_name != "TriPlaneGenerator":
        raise pickle.UnpicklingError(f"{entry} is a {rec.class_name}, not an EG3D TriPlaneGenerator")
    if rec.init_args:
        raise pickle.UnpicklingError(f"{entry} was built with positional arguments {rec.init_args}; expected keywords")
    init_kwargs = rec.init_kwargs
    rendering_kwargs = plain(rec.attributes.get("rendering_kwargs", init_kwargs.get("rendering_kwargs", {})))
    if not isinstance(rendering_kwargs, dict):
        raise pickle.UnpicklingError(f"{entry}.rendering_kwargs is a {type(rendering_kwargs).__name__}, not a dict")
    resolution = rec.attributes.get("neural_rendering_resolution", 64)
    state_dict = dict(rec.state_dict)
    notes = _drop_training_buffers(state_dict, entry)
    notes += _sr_antialias_from_module(rec, init_kwargs, rendering_kwargs, entry)
    name = str(file) if isinstance(file, (str, Path)) else getattr(file, "name", "network pickle")
    for note in notes:
        log.warning("%s: %s", name, note)
    return GeneratorCheckpoint(entry=entry, init_kwargs=init_kwargs, state_dict=state_dict,
                               neural_rendering_resolution=int(plain(resolution)), rendering_kwargs=rendering_kwargs,
                               notes=notes)
