# Writers of files in the layout the original code releases them: EG3D training snapshots (what every released
# EG3D .pkl is), the file the official GUIDE unlearn.py saves, the IR-SE50 / IR-101 state dicts and GOAE's encoder
# checkpoint. They hold the weights of guide's own modules, so a test can load exactly what a user downloads while
# none of the original code is present. Usable outside pytest; large generators are written without copying weights.
from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from guide_core.eg3d.ops import setup_filter

# Our module classes -> (module of the original class, its name there, whether the original is a persistent class,
# i.e. pickled with its module source instead of by reference). The original imports its StyleGAN2 `Generator` under
# the name StyleGAN2Backbone; the pickled record keeps the real class name.
ORIGINAL_CLASSES: dict[str, tuple[str, str, bool]] = {
    "TriPlaneGenerator": ("training.triplane", "TriPlaneGenerator", True),
    "StyleGAN2Backbone": ("training.networks_stylegan2", "Generator", True),
    "SynthesisNetwork": ("training.networks_stylegan2", "SynthesisNetwork", True),
    "SynthesisBlock": ("training.networks_stylegan2", "SynthesisBlock", True),
    "SynthesisLayer": ("training.networks_stylegan2", "SynthesisLayer", True),
    "ToRGBLayer": ("training.networks_stylegan2", "ToRGBLayer", True),
    "FullyConnectedLayer": ("training.networks_stylegan2", "FullyConnectedLayer", True),
    "MappingNetwork": ("training.networks_stylegan2", "MappingNetwork", True),
    "SynthesisBlockNoUp": ("training.superresolution", "SynthesisBlockNoUp", True),
    "SuperresolutionHybrid8XDC": ("training.superresolution", "SuperresolutionHybrid8XDC", True),
    "SuperresolutionHybrid8X": ("training.superresolution", "SuperresolutionHybrid8X", True),
    "SuperresolutionHybrid4X": ("training.superresolution", "SuperresolutionHybrid4X", True),
    "SuperresolutionHybrid2X": ("training.superresolution", "SuperresolutionHybrid2X", True),
    "SuperresolutionHybridDeepfp32": ("training.superresolution", "SuperresolutionHybridDeepfp32", True),
    "OSGDecoder": ("training.triplane", "OSGDecoder", False),
    "ImportanceRenderer": ("training.volumetric_rendering.renderer", "ImportanceRenderer", False),
    "RaySampler": ("training.volumetric_rendering.ray_sampler", "RaySampler", False),
}
# Plain classes of the original that only appear inside the records written here (not guide modules).
_EXTRA_PLAIN_CLASSES = {"MipRayMarcher2": "training.volumetric_rendering.ray_marcher"}
_ORIGINAL_PACKAGES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "training",
                      "training.volumetric_rendering", "training.networks_stylegan2", "training.dual_discriminator",
                      "training.augment", "training.triplane", "training.superresolution",
                      "training.volumetric_rendering.renderer", "training.volumetric_rendering.ray_sampler",
                      "training.volumetric_rendering.ray_marcher")
_NUMPY_LEGACY = "numpy.core.multiarray"  # where numpy 1.x (the released files' writer) keeps `scalar`

# nn.Module.__dict__ bookkeeping entries of the torch versions that wrote the files: 1.11 for EG3D's training runs,
# 2.1 for GUIDE's unlearn.py (environment files of both repositories). All empty in a saved network.
MODULE_DICT_KEYS = {
    "1.11": ("_backward_hooks", "_is_full_backward_hook", "_forward_hooks", "_forward_pre_hooks",
             "_state_dict_hooks", "_load_state_dict_pre_hooks"),
    "2.1": ("_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook", "_forward_hooks",
            "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
            "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"),
}
# The three plane orientations of EG3D's renderer (xy, xz, zy), a plain tensor attribute of ImportanceRenderer.
PLANE_AXES = torch.tensor([[[1, 0, 0], [0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
                           [[0, 0, 1], [1, 0, 0], [0, 1, 0]]], dtype=torch.float32)


# What `original_modules` installs: the persistence hook, EasyDict, the plain classes and the numpy scalar rebuilder,
# each registered under the original's module name so the standard pickler writes references to those names.
@dataclass
class OriginalNamespace:
    reconstruct: Callable
    EasyDict: type
    classes: dict[str, type]
    numpy_scalar: Callable
    cuda_storages: set


# Temporarily install throw-away modules named like the original's (torch_utils.persistence, dnnlib.util, training.*
# and, under numpy 2, numpy.core.multiarray) in sys.modules; everything is restored on exit. Nothing installed here can
# run: the hooks raise if called. Storages whose data pointer is added to `cuda_storages` are tagged 'cuda:0' by
# torch's serializer while the context is open, as tensors left on the GPU are in the real files.
@contextlib.contextmanager
def original_modules() -> Iterator[OriginalNamespace]:
    saved = {name: sys.modules.get(name) for name in (*_ORIGINAL_PACKAGES, _NUMPY_LEGACY)}
    installed: dict[str, types.ModuleType] = {}

    def module(name: str) -> types.ModuleType:
        installed[name] = sys.modules[name] = types.ModuleType(name)
        return installed[name]

    def stand_in(name: str, owner: str) -> Callable:
        def fn(*args, **kwargs):  # only ever written by reference; a reader that called it would fail here
            raise AssertionError(f"the stand-in {owner}.{name} was called")

        fn.__module__, fn.__name__, fn.__qualname__ = owner, name, name
        return fn

    cuda_storages: set = set()

    def tag(storage) -> str | None:
        return "cuda:0" if storage.data_ptr() in cuda_storages else None

    package = (-1, tag, lambda storage, location: None)  # a priority no torch backend uses (ties compare functions)
    try:
        for name in _ORIGINAL_PACKAGES:
            module(name)
        reconstruct = stand_in("_reconstruct_persistent_obj", "torch_utils.persistence")
        installed["torch_utils.persistence"]._reconstruct_persistent_obj = reconstruct
        easydict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
        installed["dnnlib.util"].EasyDict = easydict
        classes = {}
        for mod_name, orig_name, persistent in ORIGINAL_CLASSES.values():
            if not persistent:
                classes[orig_name] = type(orig_name, (), {"__module__": mod_name})
                setattr(installed[mod_name], orig_name, classes[orig_name])
        for orig_name, mod_name in _EXTRA_PLAIN_CLASSES.items():
            classes[orig_name] = type(orig_name, (), {"__module__": mod_name})
            setattr(installed[mod_name], orig_name, classes[orig_name])
        if np.lib.NumpyVersion(np.__version__) >= "2.0.0":  # numpy 2 writes numpy._core.multiarray.scalar
            scalar = stand_in("scalar", _NUMPY_LEGACY)
            module(_NUMPY_LEGACY).scalar = scalar
        else:  # numpy 1.x writes numpy.core.multiarray.scalar itself
            scalar = np.core.multiarray.scalar
        torch.serialization.register_package(*package)
        yield OriginalNamespace(reconstruct=reconstruct, EasyDict=easydict, classes=classes, numpy_scalar=scalar,
                                cuda_storages=cuda_storages)
    finally:
        registry = getattr(torch.serialization, "_package_registry", [])
        if package in registry:
            registry.remove(package)
        for name, previous in saved.items():
            if previous is not None:
                sys.modules[name] = previous
            elif name in installed:
                sys.modules.pop(name, None)


# Pickles exactly like an instance of a torch_utils.persistence class: the hook called with the record's meta data.
class PersistentObject:
    def __init__(self, reconstruct: Callable, meta: dict):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


# A numpy float64 as numpy 1.x pickles it (numpy.core.multiarray.scalar(dtype, bytes)), whatever numpy runs here.
class NumpyScalar:
    def __init__(self, ns: OriginalNamespace, value: float):
        self.scalar, self.value = ns.numpy_scalar, np.float64(value)

    def __reduce__(self):
        return self.scalar, (self.value.dtype, self.value.tobytes())


# Plain dicts (recursively) as dnnlib.EasyDict, as the original's configuration dicts are.
def easy(ns: OriginalNamespace, value: Any) -> Any:
    if isinstance(value, dict):
        return ns.EasyDict({k: easy(ns, v) for k, v in value.items()})
    return value


# A persistent-class record: meta data in the order torch_utils.persistence writes it.
def persistent_record(ns: OriginalNamespace, class_name: str, module_src: str, state: dict) -> PersistentObject:
    meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}
    return PersistentObject(ns.reconstruct, meta)


# The __dict__ of a saved nn.Module: eval mode, parameters (requires_grad off, sharing our tensors' storage: no copy),
# buffers, empty hook tables of the writing torch version, submodules, then the module's own attributes.
def module_state(parameters: dict, buffers: dict, modules: dict, attributes: dict | None = None,
                 torch_version: str = "1.11", non_persistent: set | None = None) -> dict:
    state: dict[str, Any] = {"training": False}
    state["_parameters"] = OrderedDict(
        (k, None if v is None else torch.nn.Parameter(v.detach(), requires_grad=False)) for k, v in parameters.items())
    state["_buffers"] = OrderedDict((k, None if v is None else v.detach()) for k, v in buffers.items())
    state["_non_persistent_buffers_set"] = set(non_persistent or ())
    for key in MODULE_DICT_KEYS[torch_version]:
        state[key] = None if key == "_is_full_backward_hook" else OrderedDict()
    state["_modules"] = OrderedDict(modules)
    state.update(attributes or {})
    return state


# Public attributes of one of our modules as the original stores them: numpy float64 where the original computes the
# value with numpy (weight gains, the lrelu gain sqrt(2)); guide-only attributes left out.
def _original_attributes(ns: OriginalNamespace, module: torch.nn.Module) -> dict:
    out = {}
    for key, value in module.__dict__.items():
        if key.startswith("_") or key in ("training", "init_kwargs"):
            continue
        if not isinstance(value, (int, float, str, bool, list, tuple, dict, type(None))):
            continue
        if key == "weight_gain" or (key == "act_gain" and not math.isclose(float(value), 1.0)):
            value = NumpyScalar(ns, float(value))
        out[key] = value
    return out


# Mirror one of our modules (recursively) as the original pickles it; returns the object to put in the pickle.
# Submodule records carry empty constructor arguments: only the top-level ones are ever read back (by the original's
# own reload path and by guide), the submodules' state is what rebuilds them.
def original_module(ns: OriginalNamespace, module: torch.nn.Module, module_src: Callable[[str], str],
                    torch_version: str = "1.11") -> Any:
    children = OrderedDict((name, original_module(ns, child, module_src, torch_version))
                           for name, child in module._modules.items() if child is not None)
    attributes = _original_attributes(ns, module)
    name = type(module).__name__
    if name == "ImportanceRenderer":  # the original's renderer holds a ray marcher and the plane axes (GPU-resident)
        marcher = ns.classes["MipRayMarcher2"].__new__(ns.classes["MipRayMarcher2"])
        marcher.__dict__.update(module_state({}, {}, {}, torch_version=torch_version))
        children["ray_marcher"] = marcher
        attributes["plane_axes"] = PLANE_AXES.clone()
        ns.cuda_storages.add(attributes["plane_axes"].untyped_storage().data_ptr())
    if name == "RaySampler":  # per-call caches, all None in a saved network
        attributes.update(dict.fromkeys(("ray_origins_h", "ray_directions", "depths", "image_coords",
                                         "rendering_options")))
    state = module_state(module._parameters, module._buffers, children, attributes,
                         torch_version, set(module._non_persistent_buffers_set))
    if name in ORIGINAL_CLASSES:
        mod_name, orig_name, persistent = ORIGINAL_CLASSES[name]
        if persistent:
            state["_init_args"], state["_init_kwargs"] = (), {}
            return persistent_record(ns, orig_name, module_src(mod_name), state)
        obj = ns.classes[orig_name].__new__(ns.classes[orig_name])
        obj.__dict__.update(state)
        return obj
    if type(module).__module__.startswith("torch.nn."):  # torch.nn.Sequential / Softplus: pickled by reference
        real = type(module).__new__(type(module))
        real.__dict__.update(state)
        return real
    raise ValueError(f"no original counterpart for {type(module).__module__}.{name}")


# The constructor kwargs as the original's training loop passes them: a plain dict whose nested mapping / sr kwargs
# are EasyDicts and whose rendering_kwargs is a plain dict.
def _original_init_kwargs(ns: OriginalNamespace, init_kwargs: dict) -> dict:
    if "plane_resolution" in init_kwargs:
        raise ValueError("plane_resolution is a guide extension; the original TriPlaneGenerator has no such argument")
    out = {}
    for key, value in init_kwargs.items():
        if key == "rendering_kwargs":
            out[key] = dict(value)
        elif isinstance(value, dict):
            out[key] = easy(ns, value)
        else:
            out[key] = value
    return out


# Label statistics like the training loop's G.dataset_label_std: the per-dimension std of FFHQ-style camera labels
# (rotation and translation of the cam2world matrix vary, its last row and the shared intrinsics do not).
def dataset_label_std(c_dim: int = 25, seed: int = 0) -> torch.Tensor:
    std = torch.zeros(c_dim, dtype=torch.float32)
    varying = [i for i in range(min(12, c_dim))]
    std[varying] = torch.rand(len(varying), generator=torch.Generator().manual_seed(seed)) * 0.35 + 0.05
    return std


# A TriPlaneGenerator record as a saved G / G_ema: our module tree plus the constructor kwargs, runtime attributes
# and any extra top-level buffers (the training loop's dataset_label_std).
def generator_record(ns: OriginalNamespace, G: torch.nn.Module, module_src: Callable[[str], str], init_kwargs: dict,
                     rendering_kwargs: dict, neural_rendering_resolution: int, extra_buffers: dict | None = None,
                     torch_version: str = "1.11") -> PersistentObject:
    record = original_module(ns, G, module_src, torch_version)
    state = record.meta["state"]
    state["_buffers"].update((k, v.detach()) for k, v in (extra_buffers or {}).items())
    state["_init_kwargs"] = _original_init_kwargs(ns, init_kwargs)
    state["neural_rendering_resolution"] = int(neural_rendering_resolution)
    state["rendering_kwargs"] = dict(rendering_kwargs)
    state["_last_planes"] = None
    return record


# StyleGAN2 building blocks of the discriminator, as records with the original's attributes and freshly drawn weights.
def _conv2d_record(ns, src, gen, in_channels, out_channels, kernel_size, bias=True, activation="linear", down=1,
                   conv_clamp=None) -> PersistentObject:
    weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size], generator=gen)
    params = {"weight": weight, "bias": torch.zeros([out_channels]) if bias else None}
    attributes = {"in_channels": in_channels, "out_channels": out_channels, "activation": activation, "up": 1,
                  "down": down, "conv_clamp": conv_clamp, "padding": kernel_size // 2,
                  "weight_gain": NumpyScalar(ns, 1 / np.sqrt(in_channels * kernel_size ** 2)),
                  "act_gain": NumpyScalar(ns, np.sqrt(2)) if activation == "lrelu" else 1}
    state = module_state(params, {"resample_filter": setup_filter([1, 3, 3, 1])}, {}, attributes)
    return _with_init(persistent_record(ns, "Conv2dLayer", src, state))


def _fc_record(ns, src, gen, in_features, out_features, activation="linear", lr_multiplier=1) -> PersistentObject:
    params = {"weight": torch.randn([out_features, in_features], generator=gen) / lr_multiplier,
              "bias": torch.zeros([out_features])}
    attributes = {"in_features": in_features, "out_features": out_features, "activation": activation,
                  "weight_gain": NumpyScalar(ns, lr_multiplier / np.sqrt(in_features)), "bias_gain": lr_multiplier}
    return _with_init(persistent_record(ns, "FullyConnectedLayer", src, module_state(params, {}, {}, attributes)))


def _with_init(record: PersistentObject, init_kwargs: dict | None = None) -> PersistentObject:
    record.meta["state"]["_init_args"], record.meta["state"]["_init_kwargs"] = (), dict(init_kwargs or {})
    return record


# EG3D's DualDiscriminator (image and upsampled raw image stacked: 2 x img_channels input channels), as the training
# loop saves it: resnet DiscriminatorBlocks from img_resolution down to 8, the camera-conditioning MappingNetwork
# (8 layers, no w_avg), the epilogue with minibatch-std, and its own resample_filter buffer. Weights are random.
def discriminator_record(ns: OriginalNamespace, module_src: Callable[[str], str], c_dim: int, img_resolution: int,
                         img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512,
                         num_fp16_res: int = 4, conv_clamp: int | None = 256, mbstd_group_size: int = 4,
                         seed: int = 0) -> PersistentObject:
    gen = torch.Generator().manual_seed(seed)
    src = module_src("training.networks_stylegan2")
    log2 = int(np.log2(img_resolution))
    block_resolutions = [2 ** i for i in range(log2, 2, -1)]
    channels = {res: min(channel_base // res, channel_max) for res in block_resolutions + [4]}
    fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
    cmap_dim = channels[4] if c_dim > 0 else 0
    in_img = img_channels * 2
    modules: dict[str, Any] = OrderedDict()
    layer_idx = 0
    for res in block_resolutions:
        in_ch, tmp, out = (channels[res] if res < img_resolution else 0), channels[res], channels[res // 2]
        block_modules = OrderedDict()
        if in_ch == 0:
            block_modules["fromrgb"] = _conv2d_record(ns, src, gen, in_img, tmp, 1, activation="lrelu",
                                                      conv_clamp=conv_clamp)
        block_modules["conv0"] = _conv2d_record(ns, src, gen, tmp, tmp, 3, activation="lrelu", conv_clamp=conv_clamp)
        block_modules["conv1"] = _conv2d_record(ns, src, gen, tmp, out, 3, activation="lrelu", down=2,
                                                conv_clamp=conv_clamp)
        block_modules["skip"] = _conv2d_record(ns, src, gen, tmp, out, 1, bias=False, down=2)
        attributes = {"in_channels": in_ch, "resolution": res, "img_channels": in_img, "first_layer_idx": layer_idx,
                      "architecture": "resnet", "use_fp16": res >= fp16_resolution, "channels_last": False,
                      "num_layers": len(block_modules)}
        layer_idx += len(block_modules)
        state = module_state({}, {"resample_filter": setup_filter([1, 3, 3, 1])}, block_modules, attributes)
        modules[f"b{res}"] = _with_init(persistent_record(ns, "DiscriminatorBlock", src, state))
    if c_dim > 0:
        mapping_modules = OrderedDict(embed=_fc_record(ns, src, gen, c_dim, cmap_dim))
        for idx in range(8):
            mapping_modules[f"fc{idx}"] = _fc_record(ns, src, gen, cmap_dim, cmap_dim, "lrelu", 0.01)
        attributes = {"z_dim": 0, "c_dim": c_dim, "w_dim": cmap_dim, "num_ws": None, "num_layers": 8,
                      "w_avg_beta": None}
        modules["mapping"] = _with_init(persistent_record(ns, "MappingNetwork", src,
                                                          module_state({}, {}, mapping_modules, attributes)))
    ch4 = channels[4]
    mbstd = _with_init(persistent_record(ns, "MinibatchStdLayer", src, module_state(
        {}, {}, {}, {"group_size": mbstd_group_size, "num_channels": 1})))
    epilogue_modules = OrderedDict(
        mbstd=mbstd, conv=_conv2d_record(ns, src, gen, ch4 + 1, ch4, 3, activation="lrelu", conv_clamp=conv_clamp),
        fc=_fc_record(ns, src, gen, ch4 * 16, ch4, "lrelu"), out=_fc_record(ns, src, gen, ch4, cmap_dim or 1))
    modules["b4"] = _with_init(persistent_record(ns, "DiscriminatorEpilogue", src, module_state(
        {}, {}, epilogue_modules, {"in_channels": ch4, "cmap_dim": cmap_dim, "resolution": 4,
                                   "img_channels": in_img, "architecture": "resnet"})))
    attributes = {"c_dim": c_dim, "img_resolution": img_resolution, "img_resolution_log2": log2,
                  "img_channels": in_img, "block_resolutions": block_resolutions, "disc_c_noise": 0.0}
    state = module_state({}, {"resample_filter": setup_filter([1, 3, 3, 1])}, modules, attributes)
    init_kwargs = {"c_dim": c_dim, "img_resolution": img_resolution, "img_channels": img_channels,
                   "block_kwargs": easy(ns, {"freeze_layers": 0}), "mapping_kwargs": easy(ns, {}),
                   "epilogue_kwargs": easy(ns, {"mbstd_group_size": mbstd_group_size}),
                   "channel_base": channel_base, "channel_max": channel_max, "disc_c_noise": 0.0,
                   "num_fp16_res": num_fp16_res, "conv_clamp": conv_clamp}
    return _with_init(persistent_record(ns, "DualDiscriminator", module_src("training.dual_discriminator"), state),
                      init_kwargs)


# An orthonormal 2N-tap Daubechies lowpass (spectral factorisation of the maximally flat half-band filter), sum 1
# after normalisation; stands in for the 12-tap symlet the original's geometric augmentation filter is made from
# (same length and role, different phase).
def daubechies_lowpass(n: int) -> np.ndarray:
    from math import comb
    p = np.array([comb(n - 1 + k, k) for k in range(n)][::-1], dtype=np.float64)  # P(y), highest power first
    zeros = []
    for y in np.roots(p):  # y = (1 - cos w) / 2 = -(z - 1)^2 / (4 z)  =>  z^2 - (2 - 4y) z + 1 = 0
        pair = np.roots([1.0, -(2.0 - 4.0 * y), 1.0])
        zeros.append(pair[np.argmin(np.abs(pair))])
    h = np.real(np.poly(zeros + [-1.0] * n))
    return h / h.sum()


# The image-space filter bank of the original's AugmentPipe ([4, 43] for its 4-tap lowpass): band i is the
# half-band highpass product filter placed at octave i, the coarser octaves the lowpass product filter iterated.
def augment_filter_bank(lowpass: np.ndarray, bands: int = 4) -> np.ndarray:
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * ((-1.0) ** np.arange(lo.size))
    lo2, hi2 = np.convolve(lo, lo[::-1]) / 2, np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(bands, 1)
    for i in range(1, bands):
        upsampled = np.zeros([bands, bank.shape[1] * 2 - 1])
        upsampled[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in upsampled])
        start = (bank.shape[1] - hi2.size) // 2
        bank[i, start:start + hi2.size] += hi2
    return bank


# The ADA augmentation pipeline as the training loop saves it (the 'bgc' pipeline of EG3D's train.py): its current
# probability p, the geometric lowpass Hz_geom [12] and the filter bank Hz_fbank [4, 43], plus every float setting.
def augment_pipe_record(ns: OriginalNamespace, module_src: Callable[[str], str], p: float = 0.1) -> PersistentObject:
    enabled = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "lumaflip",
               "hue", "saturation")
    settings = dict(xflip=1.0, rotate90=1.0, xint=1.0, xint_max=0.125, scale=1.0, rotate=1.0, aniso=1.0, xfrac=1.0,
                    scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125, brightness=1.0, contrast=1.0,
                    lumaflip=1.0, hue=1.0, saturation=1.0, brightness_std=0.2, contrast_std=0.5, hue_max=1.0,
                    saturation_std=1.0, imgfilter=0.0, imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1.0, noise=0.0,
                    cutout=0.0, noise_std=0.1, cutout_size=0.5)
    sqrt3 = math.sqrt(3.0)
    db2 = np.array([1 + sqrt3, 3 + sqrt3, 3 - sqrt3, 1 - sqrt3]) / (4 * math.sqrt(2.0))  # = the 4-tap symlet
    buffers = {"p": torch.tensor(float(p)), "Hz_geom": setup_filter(torch.as_tensor(daubechies_lowpass(6))),
               "Hz_fbank": torch.as_tensor(augment_filter_bank(db2), dtype=torch.float32)}
    state = module_state({}, buffers, {}, settings)
    return _with_init(persistent_record(ns, "AugmentPipe", module_src("training.augment"), state),
                      {k: 1 for k in enabled})


# Module source text stored in every persistent record: a comment naming the module unless `module_src` is given
# (tests pass source that would leave a marker file if anything executed it).
def _source_for(module_src: str | None) -> Callable[[str], str]:
    if module_src is not None:
        return lambda module: module_src
    return lambda module: f"# source of {module} (not stored by tests/released_files.py)\n"


# An EG3D training snapshot as NVlabs/eg3d's training loop writes every network-snapshot-*.pkl (and so every released
# EG3D .pkl): {training_set_kwargs, G, D, G_ema, augment_pipe}, protocol-4 pickle of persistent-class records.
# G_ema holds G's weights; 'G' holds `G_train`'s (default: the same weights again, stored separately, as right after
# G_ema = deepcopy(G)). `config` ({"init_kwargs", "neural_rendering_resolution"}, e.g. a fixture's config.json)
# defaults to G's own. `label_std` adds the training loop's dataset_label_std buffer to G and G_ema;
# `drop_sr_antialias` removes sr_antialias from both rendering_kwargs (as in snapshots older than that key; the
# super-resolution module keeps its attribute); `with_d` / `with_augment` write the DualDiscriminator and AugmentPipe
# (else None, as for --aug=noaug). Weights are referenced, not copied.
def write_eg3d_snapshot(path: str | Path, G: torch.nn.Module, *, config: dict | None = None, label_std: bool = True,
                        drop_sr_antialias: bool = False, with_d: bool = True, with_augment: bool = True,
                        G_train: torch.nn.Module | None = None, with_g_ema: bool = True,
                        module_src: str | None = None) -> Path:
    path = Path(path)
    init_kwargs = dict((config or {}).get("init_kwargs") or G.init_kwargs)
    resolution = int((config or {}).get("neural_rendering_resolution") or G.neural_rendering_resolution)
    rendering_kwargs = dict(init_kwargs["rendering_kwargs"])
    if drop_sr_antialias:
        rendering_kwargs.pop("sr_antialias", None)
        init_kwargs["rendering_kwargs"] = dict(rendering_kwargs)
    src = _source_for(module_src)
    c_dim, img_resolution = int(init_kwargs["c_dim"]), int(init_kwargs["img_resolution"])
    extra = {"dataset_label_std": dataset_label_std(c_dim)} if label_std else {}
    with original_modules() as ns:
        training_set_kwargs = {"class_name": "training.dataset.ImageFolderDataset",
                               "path": f"/datasets/ffhq-{img_resolution}x{img_resolution}.zip", "use_labels": True,
                               "max_size": 140000, "xflip": True, "resolution": img_resolution, "random_seed": 0}
        data: dict[str, Any] = {"training_set_kwargs": training_set_kwargs}
        trained, trained_resolution = (G, resolution) if G_train is None else \
            (G_train, int(G_train.neural_rendering_resolution))
        data["G"] = generator_record(ns, trained, src, init_kwargs, rendering_kwargs, trained_resolution, extra)
        data["D"] = discriminator_record(
            ns, src, c_dim, img_resolution, int(init_kwargs.get("img_channels", 3)),
            int(init_kwargs.get("channel_base", 32768)), int(init_kwargs.get("channel_max", 512))) if with_d else None
        if with_g_ema:
            data["G_ema"] = generator_record(ns, G, src, init_kwargs, rendering_kwargs, resolution, extra)
        data["augment_pipe"] = augment_pipe_record(ns, src) if with_augment else None
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
    return path


# What the official GUIDE unlearn.py saves as last.pkl: {"G_ema": generator}, a plain protocol-4 pickle of a
# TriPlaneGenerator it built anew from the source checkpoint's init_args / init_kwargs (so without the training loop's
# dataset_label_std) under torch 2.1, in eval mode without gradients.
def write_guide_unlearned(path: str | Path, G: torch.nn.Module, *, module_src: str | None = None) -> Path:
    path = Path(path)
    src = _source_for(module_src)
    with original_modules() as ns:
        record = generator_record(ns, G, src, dict(G.init_kwargs), dict(G.rendering_kwargs),
                                  int(G.neural_rendering_resolution), torch_version="2.1")
        with open(path, "wb") as f:
            pickle.dump({"G_ema": record}, f, protocol=4)
    return path


# An IR-SE50 / IR-101 state dict as the released .pth files hold it: torch.save of the bare state dict. `old_bn`: saved
# by a torch older than BatchNorm's num_batches_tracked (0.4.0, like model_ir_se50.pth): no counters, no _metadata,
# the legacy (pre-zip) format. `zip_format` overrides the format (default: legacy exactly when old_bn).
def write_ir_state_dict(path: str | Path, state_dict: dict, old_bn: bool = True,
                        zip_format: bool | None = None) -> Path:
    path = Path(path)
    state = OrderedDict((k, v.detach()) for k, v in state_dict.items()
                        if not (old_bn and k.endswith(".num_batches_tracked")))
    if not old_bn and getattr(state_dict, "_metadata", None) is not None:
        state._metadata = state_dict._metadata
    torch.save(state, path, _use_new_zipfile_serialization=(not old_bn) if zip_format is None else zip_format)
    return path


# GOAE's encoder_FFHQ.pt: torch.save (zip format) of the bare GOAEncoder state dict, no wrapper, no prefix, buffers
# included: GOAE's infer code and GUIDE's unlearn.py both call encoder.load_state_dict(torch.load(path)) strictly.
def write_goae_checkpoint(path: str | Path, state_dict: dict) -> Path:
    path = Path(path)
    state = OrderedDict((k, v.detach()) for k, v in state_dict.items())
    if getattr(state_dict, "_metadata", None) is not None:
        state._metadata = state_dict._metadata
    torch.save(state, path)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# pSp / e4e / rosinality StyleGAN2 files (GUIDE-SG2)

@contextlib.contextmanager
def storages_tagged(location: str) -> Iterator[None]:
    """torch.save tags every storage with `location` (the released pSp / e4e files were saved from 'cuda:0'), without a
    GPU: a tagger registered ahead of torch's own for the duration of the block."""
    import torch.serialization as serialization

    entry = (-1, lambda storage: location, lambda storage, where: None)
    serialization._package_registry.insert(0, entry)
    try:
        yield
    finally:
        serialization._package_registry.remove(entry)


def write_inversion_checkpoint(path: str | Path, encoder_state: dict, decoder_state: dict, opts: dict,
                               latent_avg: torch.Tensor, location: str = "cuda:0") -> Path:
    """A file with the structure the pSp / e4e training coach writes: {'state_dict': OrderedDict('encoder.*' then
    'decoder.*'), 'opts': dict, 'latent_avg': tensor}, storages tagged `location`."""
    state = OrderedDict([(f"encoder.{k}", v) for k, v in encoder_state.items()]
                         + [(f"decoder.{k}", v) for k, v in decoder_state.items()])
    with storages_tagged(location):
        torch.save({"state_dict": state, "opts": dict(opts), "latent_avg": latent_avg}, path)
    return Path(path)


def write_stylegan2_checkpoint(path: str | Path, g_ema_state: dict, latent_avg: torch.Tensor) -> Path:
    """rosinality's converted `stylegan2-ffhq-config-f.pt`: {'g_ema': OrderedDict, 'latent_avg': tensor [512]}."""
    torch.save({"g_ema": OrderedDict(g_ema_state), "latent_avg": latent_avg}, path)
    return Path(path)


def random_fid_inception_state(seed: int) -> dict[str, torch.Tensor]:
    """pytorch-fid's FID Inception-v3 with random weights, built the way pytorch_fid.inception.fid_inception_v3
    assembles it (torchvision's Inception-v3 with 1008 classes, its blocks replaced by the FID variants), so its
    state_dict has the released file's keys and shapes."""
    import pytorch_fid.inception as fid

    torch.manual_seed(seed)
    net = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fid.FIDInceptionE_1(1280)
    net.Mixed_7c = fid.FIDInceptionE_2(2048)
    return net.state_dict()


def write_shared_networks(folder: Path) -> None:
    """The networks every released model shares, in their released formats with seeded random weights: IR-SE50 and
    IR-101 as torch 0.4 saved them, torchvision's VGG16 and pytorch-fid's Inception (file names from the manifest)."""
    import torchvision

    from guide_core import weights
    from guide_core.identity import IRBackbone

    torch.manual_seed(2)
    ir_se50 = IRBackbone(num_layers=50, mode="ir_se", drop_ratio=0.6, affine_output=True)
    write_ir_state_dict(folder / weights.entry("ir_se50")["file"], ir_se50.state_dict(), old_bn=True)
    torch.manual_seed(3)
    ir101 = IRBackbone(num_layers=100, mode="ir", drop_ratio=0.4, affine_output=False)
    write_ir_state_dict(folder / weights.entry("curricularface")["file"], ir101.state_dict(), old_bn=True)
    torch.manual_seed(4)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), folder / weights.entry("vgg16")["file"])
    torch.save(random_fid_inception_state(5), folder / weights.entry("inception")["file"])
