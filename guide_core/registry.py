"""The model registry: every world that can be loaded by name registers a factory here.

The built-in worlds register themselves when their module is imported, which happens on first use, so an import error
inside a world surfaces as itself instead of as "not available"; a plug-in registers by calling register_model. A
generator file given by path goes to the loader registered for its suffix (the released EG3D models register one).
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable

import torch

from guide_core.bundle import ModelBundle

_REGISTRY: dict[str, tuple[Callable[[str], ModelBundle], str]] = {}
_REQUIRES: dict[str, Callable[[], list[str]]] = {}
_FILE_LOADERS: dict[str, Callable[[Path, str], ModelBundle]] = {}

# Modules that register the built-in worlds, in the order the studio lists them.
BUILTIN_MODULES = ("guide_core.world.bundle", "guide_core.released", "guide_core.sg2")
_imported = False


def _import_builtins() -> None:
    """Import the modules that register the built-in worlds, once."""
    global _imported
    if not _imported:
        _imported = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def register_model(name: str, factory: Callable[[str], ModelBundle], description: str = "",
                   requires: Callable[[], list[str]] | None = None) -> None:
    """Register a world by name; ``factory(device)`` builds its bundle; ``requires()`` names the weight files it needs
    (none: it ships with the package). A later registration replaces it."""
    _REGISTRY[name] = (factory, description)
    _REQUIRES[name] = requires or (lambda: [])


def required_weights(name: str) -> list[str]:
    """The weight names a registered world needs (what "installed" means for it); unknown names fail loudly."""
    _import_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(available_models())}")
    return _REQUIRES[name]()


def register_file_loader(suffixes: tuple[str, ...], loader: Callable[[Path, str], ModelBundle]) -> None:
    """Register ``loader(path, device)`` for generator files with these suffixes (e.g. ``.pkl``)."""
    for suffix in suffixes:
        _FILE_LOADERS[suffix] = loader


def unregister_model(name: str) -> None:
    """Remove a registered world (tests clean up after themselves)."""
    _REGISTRY.pop(name, None)
    _REQUIRES.pop(name, None)


def available_models() -> dict[str, str]:
    """Names that can be loaded, with one line each (what the studio offers): the default world first, then the
    others in the order they registered."""
    _import_builtins()
    names = sorted(_REGISTRY, key=lambda name: name != "default")
    return {name: _REGISTRY[name][1] or "registered model" for name in names}


def load_bundle(name: str = "default", device: str | torch.device = "cpu") -> ModelBundle:
    """Load a world by name (see available_models), or a path to a generator file (with the networks its loader
    pairs it with). Unknown names fail loudly with the known ones."""
    _import_builtins()
    device = str(device)
    if name in _REGISTRY:
        bundle = _REGISTRY[name][0](device)
        bundle.name = name  # runs record the name the model is loaded by
        return bundle
    path = Path(os.path.expanduser(name))
    if path.suffix in _FILE_LOADERS or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"generator file {path} does not exist")
        loader = _FILE_LOADERS.get(path.suffix)
        if loader is None:
            raise ValueError(f"no loader for generator files like {path.name}; known suffixes: "
                             f"{', '.join(sorted(_FILE_LOADERS))}")
        return loader(path, device)
    known = ", ".join(available_models())
    raise ValueError(f"unknown model {name!r}; known models: {known} (or a path to a generator file)")
