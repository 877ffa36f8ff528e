"""The commands of `python -m guide_core`: unlearn, eval, audit, import (one module each) and weights.

Expected failures (no face, missing weights, bad run directory, bad settings) print one line on stderr, exit code 2;
GUIDE_DEBUG=1 shows the traceback instead.
"""
from guide_core.cli.common import add_config_flags, config_from_args

__all__ = ["add_config_flags", "config_from_args"]
