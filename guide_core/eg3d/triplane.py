"""EG3D's tri-plane generator (Chan et al., "Efficient Geometry-aware 3D Generative Adversarial Networks", CVPR 2022):
StyleGAN2 backbone -> three 32-channel feature planes -> volume rendering through the OSG decoder -> super-resolution.
Constructor arguments, attribute names and state_dict keys match the original TriPlaneGenerator.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from guide_core.eg3d.networks import StyleGAN2Backbone
from guide_core.eg3d.rendering import ImportanceRenderer, OSGDecoder, RaySampler
from guide_core.eg3d.superresolution import superresolution_class
from guide_core.precision import mixed_precision

_REQUIRED_RENDERING_KEYS = ("superresolution_module", "sr_antialias", "depth_resolution",
                            "depth_resolution_importance", "ray_start", "ray_end", "box_warp", "clamp_mode",
                            "c_gen_conditioning_zero", "superresolution_noise_mode")


class TriPlaneGenerator(nn.Module):
    """The full generator: mapping(z, c) -> ws, get_planes(ws) -> tri-planes, synthesis(ws, c) -> images + depth."""
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 sr_num_fp16_res: int = 0, mapping_kwargs: dict | None = None, rendering_kwargs: dict | None = None,
                 sr_kwargs: dict | None = None, plane_resolution: int = 256, **synthesis_kwargs):
        super().__init__()
        rendering_kwargs = dict(rendering_kwargs or {})
        missing = [k for k in _REQUIRED_RENDERING_KEYS if k not in rendering_kwargs]
        if missing:
            raise ValueError(f"rendering_kwargs lacks {missing}")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.init_kwargs = copy.deepcopy(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                              img_channels=img_channels, sr_num_fp16_res=sr_num_fp16_res,
                                              mapping_kwargs=dict(mapping_kwargs or {}),
                                              rendering_kwargs=rendering_kwargs, sr_kwargs=dict(sr_kwargs or {}),
                                              **synthesis_kwargs))
        if plane_resolution != 256:  # guide extension; released checkpoints never carry this key
            self.init_kwargs["plane_resolution"] = plane_resolution
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        # The backbone's "image" is 3 planes x 32 channels at 256^2 (EG3D Sec. 4.1). plane_resolution (not in the
        # original) lets small CPU models use coarser planes with the same classes.
        self.backbone = StyleGAN2Backbone(z_dim, c_dim, w_dim, img_resolution=plane_resolution, img_channels=32 * 3,
                                          mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        sr_class = superresolution_class(rendering_kwargs["superresolution_module"])
        self.superresolution = sr_class(channels=32, img_resolution=img_resolution, sr_num_fp16_res=sr_num_fp16_res,
                                        sr_antialias=rendering_kwargs["sr_antialias"], **dict(sr_kwargs or {}))
        self.decoder = OSGDecoder(32, {"decoder_lr_mul": rendering_kwargs.get("decoder_lr_mul", 1),
                                       "decoder_output_dim": 32})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes: torch.Tensor | None = None

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """z + camera conditioning -> ws [N, num_ws, w_dim]; c is scaled by c_scale (0 when absent, as in the original).
        """
        if self.rendering_kwargs["c_gen_conditioning_zero"]:
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get("c_scale", 0), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def get_planes(self, ws: torch.Tensor, noise_mode: str = "const", update_emas: bool = False,
                   **synthesis_kwargs) -> torch.Tensor:
        """ws -> tri-planes [N, 96, 256, 256] (plane_resolution^2; the trainable StyleGAN2 synthesis backbone only)."""
        return self.backbone.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)

    def render_planes(self, planes: torch.Tensor, c: torch.Tensor, ws: torch.Tensor | None = None,
                      deterministic: bool = False, neural_rendering_resolution: int | None = None,
                      sr_dtype: torch.dtype | None = None, compiled: bool = False,
                      **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Render precomputed tri-planes [N, 96, H, W] from cameras c [N, 25] (or [1, 25] for all). ws feeds the
        super-resolution styles (its last row); without ws only image_raw and image_depth are returned. Two guide
        extensions for training speed: sr_dtype runs the super-resolution under autocast (its image comes back fp32),
        and compiled renders the rays through torch.compile (guide_core.eg3d.rendering.compiled_render_rays).
        """
        if planes.ndim != 4 or planes.shape[1] != 96:
            raise ValueError(f"planes must be [N, 96, H, W], got {list(planes.shape)}")
        n = planes.shape[0]
        if c.ndim != 2 or c.shape[1] != 25:
            raise ValueError(f"camera parameters c must be [N, 25], got {list(c.shape)}")
        if c.shape[0] != n:
            if c.shape[0] != 1:
                raise ValueError(f"{c.shape[0]} cameras for {n} tri-planes")
            c = c.expand(n, -1)
        if neural_rendering_resolution is None:
            neural_rendering_resolution = self.neural_rendering_resolution
        else:
            self.neural_rendering_resolution = neural_rendering_resolution
        cam2world_matrix = c[:, :16].reshape(-1, 4, 4)
        intrinsics = c[:, 16:25].reshape(-1, 3, 3)
        ray_origins, ray_directions = self.ray_sampler(cam2world_matrix, intrinsics, neural_rendering_resolution)
        planes = planes.view(n, 3, 32, planes.shape[-2], planes.shape[-1])
        feature_samples, depth_samples, _ = self.renderer(planes, self.decoder, ray_origins, ray_directions,
                                                          self.rendering_kwargs, deterministic=deterministic,
                                                          compiled=compiled)
        h = w = neural_rendering_resolution
        feature_image = feature_samples.permute(0, 2, 1).reshape(n, feature_samples.shape[-1], h, w).contiguous()
        depth_image = depth_samples.permute(0, 2, 1).reshape(n, 1, h, w)
        rgb_image = feature_image[:, :3]
        out = {"image_raw": rgb_image, "image_depth": depth_image}
        if ws is not None:
            sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != "noise_mode"}
            with mixed_precision(sr_dtype, planes.device.type):
                image = self.superresolution(rgb_image, feature_image, ws,
                                             noise_mode=self.rendering_kwargs["superresolution_noise_mode"],
                                             **sr_kwargs)
            out["image"] = image.float()
        return out

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, neural_rendering_resolution: int | None = None,
                  update_emas: bool = False, cache_backbone: bool = False, use_cached_backbone: bool = False,
                  noise_mode: str = "const", deterministic: bool = False,
                  **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """ws + cameras -> {"image" [N,3,R,R], "image_raw" [N,3,r,r], "image_depth" [N,1,r,r]} (r = neural resolution).
        """
        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes
        else:
            planes = self.get_planes(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes
        out = self.render_planes(planes, c, ws=ws, deterministic=deterministic,
                                 neural_rendering_resolution=neural_rendering_resolution, update_emas=update_emas,
                                 **synthesis_kwargs)
        return {"image": out["image"], "image_raw": out["image_raw"], "image_depth": out["image_depth"]}

    def sample(self, coordinates: torch.Tensor, directions: torch.Tensor, z: torch.Tensor, c: torch.Tensor,
               truncation_psi: float = 1.0, truncation_cutoff: int | None = None, update_emas: bool = False,
               **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Colour features and density at arbitrary points for latent z (shape extraction)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, update_emas=update_emas, **synthesis_kwargs)

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor,
                     truncation_psi: float = 1.0, truncation_cutoff: int | None = None, update_emas: bool = False,
                     noise_mode: str = "const", **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Same as sample, from ws."""
        planes = self.get_planes(ws, noise_mode=noise_mode, update_emas=update_emas, **synthesis_kwargs)
        planes = planes.view(len(planes), 3, 32, planes.shape[-2], planes.shape[-1])
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, neural_rendering_resolution: int | None = None,
                update_emas: bool = False, cache_backbone: bool = False, use_cached_backbone: bool = False,
                **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """Original forward: mapping then synthesis."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, neural_rendering_resolution=neural_rendering_resolution,
                              cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone,
                              **synthesis_kwargs)
