"""guide: generative identity unlearning for face generators (GUIDE, Seo et al., CVPR 2024, and its relatives).

Layers and seams: docs/architecture.md.
"""
__version__ = "0.1.0"
