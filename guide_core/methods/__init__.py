"""The unlearning methods, each registered with the engine's Method seam (guide_core.engine.method).

Importing this package registers the built-in ones; a new method is a new module here, imported below.
"""
from guide_core.methods import guide  # noqa: F401 - registers "guide"
from guide_core.methods import legato  # noqa: F401 - registers "legato"
from guide_core.methods import sugar  # noqa: F401 - registers "sugar"
