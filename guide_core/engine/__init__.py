"""The unlearning engine: seeded draws, the LTU losses, the Method seam and the loop that runs a method.

``Unlearning`` and ``unlearn`` (guide_core.engine.loop) are the entry points; ``LTUConfig`` (guide_core.config) holds
the settings.
"""
from guide_core.engine.loop import Progress, Unlearning, as_codes, to_uint8, unlearn
from guide_core.engine.method import Method, available_methods, make_method, register_method

__all__ = ["Progress", "Unlearning", "as_codes", "to_uint8", "unlearn", "Method", "available_methods",
           "make_method", "register_method"]
