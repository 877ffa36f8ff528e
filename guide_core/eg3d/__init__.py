"""guide's own pure-PyTorch EG3D (Chan et al., CVPR 2022): the tri-plane generator, camera helpers and safe loading of
the released checkpoints (.pkl without executing their code, or our .safetensors).
"""
from guide_core.eg3d.camera import camera_params, fov_to_intrinsics, lookat_pose
from guide_core.eg3d.triplane import TriPlaneGenerator

__all__ = ["TriPlaneGenerator", "camera_params", "fov_to_intrinsics", "lookat_pose", "load_generator_file",
           "save_generator"]


def __getattr__(name: str):
    """Lazy re-exports keep `import guide_core.eg3d` light (io pulls in safetensors and the pickle reader)."""
    if name in ("load_generator_file", "save_generator"):
        from guide_core.eg3d import io
        return getattr(io, name)
    raise AttributeError(name)
