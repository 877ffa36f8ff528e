"""The Method seam: how an unlearning method picks its targets, parameterises G_u and trains it.

The engine's loop (guide_core.engine.loop) owns what every method shares: the seeded draws, the camera, the optimiser,
progress, cancellation and the run record. A method answers the rest. GUIDE (guide_core.methods.guide) is the first:
UFO targets, the synthesis network fine-tuned, the local / adjacency / global losses, optionally robust. A new method
is a new module under guide_core/methods that calls ``register_method``; the loop is not edited.

Each method's settings are a dataclass (LTUConfig or a subclass of it), whose fields generate the CLI flags and the
studio's controls (guide_core.flags); run.json records the method's name beside them.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch

from guide_core.config import LTUConfig

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle
    from guide_core.engine.loop import Unlearning

# The package whose import registers the built-in methods (loaded on first lookup, like the model registry's worlds).
BUILTIN_METHODS = "guide_core.methods"
DEFAULT_METHOD = "guide"


class Method(Protocol):
    """One unlearning method, created per run by its registered factory."""

    name: str
    config_type: type
    learned_targets: bool  # targets come out of training (a dry run cannot show them without training)

    def targets(self, bundle: "ModelBundle", w_u: torch.Tensor, cfg: LTUConfig) -> torch.Tensor:
        """The target codes w_t [N, num_ws, w_dim] that the identities' renders are pulled to."""
        ...

    def generator(self, bundle: "ModelBundle", base: torch.nn.Module,
                  trainable_prefix: str | tuple[str, ...], cfg: LTUConfig) -> torch.nn.Module:
        """G_u: a trainable parameterisation of ``base`` (its parameters that train have requires_grad set)."""
        ...

    def start(self, run: "Unlearning") -> None:
        """Prepare what the method keeps over a run, after G_u exists and before the first iteration."""
        ...

    def losses(self, run: "Unlearning", step: int, draws: Any,
               camera: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One iteration's total loss and its named parts."""
        ...

    def finish(self, run: "Unlearning") -> None:
        """After the last iteration: add what run.json should keep to ``run.extra`` (and tensors that reproduce the
        run to ``run.method_tensors``, saved beside the delta)."""
        ...

    def rebuild(self, G: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Give a copy of the root generator the modules this method adds to G_u, for the keys of a saved delta that
        name them (a method that only changes existing tensors does nothing)."""
        ...


_METHODS: dict[str, tuple[Callable[[], Method], str]] = {}
_imported = False


def register_method(name: str, factory: Callable[[], Method], description: str = "") -> None:
    """Register a method by name; ``factory()`` makes one for a run. A later registration replaces it."""
    _METHODS[name] = (factory, description)


def _import_builtins() -> None:
    global _imported
    if not _imported:
        _imported = True
        importlib.import_module(BUILTIN_METHODS)


def available_methods() -> dict[str, str]:
    """Registered method names with one line each."""
    _import_builtins()
    return {name: text for name, (_, text) in _METHODS.items()}


def own_settings(method: "str | Method | None" = None) -> list:
    """The fields a method's settings add to LTUConfig (LEGATO's adapters, SUGAR's trigger and EWC), in order."""
    shared = {f.name for f in dataclasses.fields(LTUConfig)}
    return [f for f in dataclasses.fields(make_method(method).config_type) if f.name not in shared]


def method_config(method: "str | Method | None" = None, base: LTUConfig | None = None,
                  **values: Any) -> LTUConfig:
    """A method's settings: its dataclass's defaults, overridden by ``base`` (a model's or the caller's settings)
    where base differs from the paper's defaults, then by ``values``; validated.

    A base of the method's own settings type is taken whole. Settings another method's type adds are dropped, and a
    value for a setting this method does not have is an error naming the method.
    """
    config_type = make_method(method).config_type
    if type(base) is config_type and not values:
        return base.validate()
    own = config_type().to_dict()
    merged = dict(own)
    if base is not None:
        paper = LTUConfig().to_dict()
        merged.update({k: v for k, v in base.to_dict().items()
                       if k in own and (k not in paper or v != paper[k] or type(base) is config_type)})
    unknown = sorted(set(values) - set(own))
    if unknown:
        name = method if isinstance(method, str) else getattr(method, "name", DEFAULT_METHOD)
        raise ValueError(f"setting(s) {', '.join(unknown)} do not belong to method {name or DEFAULT_METHOD!r}")
    merged.update(values)
    return config_type.from_dict(merged)


def make_method(method: "str | Method | None" = None) -> Method:
    """A method by name (or one already made); unknown names fail loudly with the known ones."""
    if method is not None and not isinstance(method, str):
        return method
    name = method or DEFAULT_METHOD
    _import_builtins()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name][0]()
