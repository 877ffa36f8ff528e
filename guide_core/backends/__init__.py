"""Generator families behind one seam: what the engine, the audit and the metrics need from a generator.

``Backend`` (guide_core.backends.base) is the protocol; ``EG3DBackend`` (guide_core.backends.eg3d) is its first
implementation, serving the released EG3D models and the embedded world (an EG3D-architecture generator);
``StyleGAN2Backend`` (guide_core.backends.stylegan2) serves the 2D StyleGAN2 models of GUIDE-SG2. A new
family is a new module with a class that satisfies the protocol; a model bundle names its backend.
"""
from guide_core.backends.base import Backend, RenderSettings
from guide_core.backends.eg3d import EG3DBackend
from guide_core.backends.stylegan2 import StyleGAN2Backend

__all__ = ["Backend", "RenderSettings", "EG3DBackend", "StyleGAN2Backend"]
