# The model registry: every world that can be loaded by name registers a factory here. The built-in worlds register
# themselves when their module is imported, which happens on first use, so an import error inside a world surfaces as
# itself instead of as "not available"; a plug-in registers by calling register_model.
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

import torch

from guide_core.bundle import ModelBundle

_REGISTRY: dict[str, tuple[Callable[[str], ModelBundle], str]] = {}

# Modules that register the built-in worlds, in the order the studio lists them.
BUILTIN_MODULES = ("guide_core.world.bundle", "guide_core.released")
_imported = False


def _import_builtins() -> None:
    global _imported
    if not _imported:
        _imported = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


# Register a world by name; `factory(device)` builds its bundle. A later registration of the same name replaces it.
def register_model(name: str, factory: Callable[[str], ModelBundle], description: str = "") -> None:
    _REGISTRY[name] = (factory, description)


# Remove a registered world (tests clean up after themselves).
def unregister_model(name: str) -> None:
    _REGISTRY.pop(name, None)


# Names that can be loaded, with one line each (what the studio offers): the default world first, then the others in
# the order they registered.
def available_models() -> dict[str, str]:
    _import_builtins()
    names = sorted(_REGISTRY, key=lambda name: name != "default")
    return {name: _REGISTRY[name][1] or "registered model" for name in names}


# Load a world by name (see available_models), or a path to a released generator file (used with the released
# networks). Unknown names fail loudly with the known ones.
def load_bundle(name: str = "default", device: str | torch.device = "cpu") -> ModelBundle:
    _import_builtins()
    device = str(device)
    if name in _REGISTRY:
        bundle = _REGISTRY[name][0](device)
        bundle.name = name  # runs record the name the model is loaded by
        return bundle
    path = Path(os.path.expanduser(name))
    if path.suffix in (".pkl", ".safetensors", ".pt", ".pth") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"generator file {path} does not exist")
        from guide_core.released import released_file_bundle
        return released_file_bundle(path, device)
    known = ", ".join(available_models())
    raise ValueError(f"unknown model {name!r}; known models: {known} (or a path to a generator file)")
