"""Training of the embedded default world: data, trainers, export of the shipped weights, model card, CLI.

``python -m tools.world --help`` lists the commands. The world's architectures and loaders, which the shipped bundle
needs at run time, stay in ``guide_core.world``; docs/world.md describes the world and how its weights were trained.
"""
