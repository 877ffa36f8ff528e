"""Progress bars: the project's one helper for them.

Library calls stay quiet by default; a caller that wants a bar passes ``enabled=True``. Bars go to stderr so that
machine-readable output on stdout (``--json``) stays clean.
"""
from __future__ import annotations

import sys
from typing import Any


class _Silent:
    """A bar that draws nothing (the shape of a tqdm bar: update, close, context manager)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


def progress_bar(total: int | None, desc: str, enabled: bool = True, unit: str = "it", initial: int = 0,
                 bytes_: bool = False, leave: bool = False):
    """A tqdm bar on stderr, or a silent one when not ``enabled``; ``bytes_`` scales the counts as B / KB / MB;
    ``leave`` keeps the finished bar on screen."""
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    scaling = {"unit": "B", "unit_scale": True, "unit_divisor": 1024} if bytes_ else {"unit": unit}
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, leave=leave, **scaling)


def silent_tqdm_class():
    """A tqdm class whose bars never draw (for libraries such as huggingface_hub that take a class, not a switch)."""
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
    return Silent
