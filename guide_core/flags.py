"""Settings dataclasses as command-line flags and studio controls: the project's one generator of them.

A settings dataclass (``LTUConfig``, a method's settings, a world trainer's config) declares each setting once, with
its default, its help text (``metadata["help"]``) and, where a slider fits, its range (``metadata["range"]``) or its
choices (``metadata["choices"]``). ``add_flags`` turns the fields into argparse flags (``alpha_max`` ->
``--alpha-max``), ``given_values`` reads them back, ``cast_settings`` types the floats a slider sends.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def field_kind(config_type: type, name: str) -> type:
    """The Python type of a field (``int | None`` -> ``int``), resolved from string annotations."""
    kind = typing.get_type_hints(config_type)[name]
    return next((t for t in typing.get_args(kind) if t is not type(None)), kind)


def add_flags(parser: argparse.ArgumentParser | Any, config_type: type, defaults: Any = None,
              suppress: bool = False) -> None:
    """One flag per field of ``config_type``, help from its metadata and the default shown.

    ``defaults`` (an instance) supplies the shown defaults, else the dataclass's own. With ``suppress`` a flag that is
    not given stays absent from the namespace, so a model's own defaults can fill it (an explicit flag always wins);
    without, the namespace holds every field.
    """
    defaults = defaults if defaults is not None else config_type()
    for f in dataclasses.fields(config_type):
        value, kind = getattr(defaults, f.name), field_kind(config_type, f.name)
        shown = round(value, 6) if isinstance(value, float) else value
        text = f.metadata.get("help", f.name).replace("%", "%%")
        help_text = text if value is None else f"{text} (default: {shown})"
        flag = "--" + f.name.replace("_", "-")
        default = argparse.SUPPRESS if suppress else value
        if kind is bool:
            parser.add_argument(flag, dest=f.name, default=default, action=argparse.BooleanOptionalAction,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default, help=help_text,
                                choices=f.metadata.get("choices"), metavar=None if "choices" in f.metadata else "X")


def given_values(config_type: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of ``config_type`` present in a parsed namespace (all of them unless flags were suppressed)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_type) if hasattr(args, f.name)}


def cast_settings(config_type: type, settings: dict[str, Any]) -> dict[str, Any]:
    """Slider values arrive as floats: integer fields get ints back, unknown names are an error."""
    known = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
    return {name: int(round(float(value))) if field_kind(config_type, name) is int else float(value)
            for name, value in settings.items()}
