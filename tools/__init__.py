"""Developer tools of the repository, kept outside the ``guide_core`` package.

Nothing in ``guide_core`` or ``demo`` imports them at run time; they import the library, never the other way round.
"""
