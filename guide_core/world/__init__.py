"""The embedded default world: procedural 3D heads with exact identities, and the small networks trained on them.

The identity net, tri-plane generator and encoder let GUIDE run end to end on a CPU without downloaded weights. This
package holds their architectures and loaders and the bundle that registers the world as the "default" model; their
training lives in ``tools.world`` (docs/world.md).
"""
from __future__ import annotations

from guide_core.world.cameras import camera_params, frontal_camera, sample_yaw_pitch
from guide_core.world.heads import (HeadParams, HeadRender, params_from_z, random_z, render_heads, render_z,
                                    same_identity_z)

__all__ = ["HeadParams", "HeadRender", "camera_params", "frontal_camera", "params_from_z", "random_z", "render_heads",
           "render_z", "same_identity_z", "sample_yaw_pitch"]

