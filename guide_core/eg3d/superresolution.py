"""EG3D's super-resolution modules (Chan et al., CVPR 2022, Sec. 4.2): two StyleGAN2 blocks, styled by the last w,
that turn the 32-channel neural rendering into the final image. Widths are fixed by the original design, not by
channel_base/channel_max, which these modules ignore.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from guide_core.eg3d.networks import SynthesisBlock, SynthesisBlockNoUp
from guide_core.eg3d.ops import setup_filter

# sr_kwargs keys the original accepts and ignores (they configure the backbone, not these fixed-width blocks).
_IGNORED = ("num_fp16_res", "conv_clamp", "channel_base", "channel_max")


class _SuperresolutionBase(nn.Module):
    # Per variant: first block type, block widths, input = img_resolution // input_divisor, whether to resize only
    # smaller renderings, and whether the original registers an (unused) resample_filter buffer.
    """Shared body: resize the rendering to the input resolution, then block0 and block1 with ws[:, -1] repeated 3
    times.
    """
    block0_cls: type = SynthesisBlock
    widths: tuple[int, int] = (128, 64)
    input_divisor: int = 4
    resize_if_smaller_only = False
    has_filter = True

    def __init__(self, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool = True,
                 **block_kwargs):
        super().__init__()
        for key in _IGNORED:
            block_kwargs.pop(key, None)
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"{type(self).__name__}: img_resolution must be a power of two >= 8, got {img_resolution}")
        # The released configs fix one resolution per module; any power of two works with the same parameter shapes.
        use_fp16 = sr_num_fp16_res > 0
        self.input_resolution = img_resolution // self.input_divisor
        self.sr_antialias = sr_antialias
        mid_resolution = self.input_resolution if self.block0_cls is SynthesisBlockNoUp else self.input_resolution * 2
        clamp = 256 if use_fp16 else None  # fp16 checkpoints were trained with clamped convolutions, CPU included
        self.block0 = self.block0_cls(channels, self.widths[0], w_dim=512, resolution=mid_resolution, img_channels=3,
                                      is_last=False, use_fp16=use_fp16, conv_clamp=clamp, **block_kwargs)
        self.block1 = SynthesisBlock(self.widths[0], self.widths[1], w_dim=512, resolution=img_resolution,
                                     img_channels=3, is_last=True, use_fp16=use_fp16, conv_clamp=clamp, **block_kwargs)
        if self.has_filter:
            self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        size = x.shape[-1]
        if (size < self.input_resolution) if self.resize_if_smaller_only else (size != self.input_resolution):
            target = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=self.sr_antialias)
            rgb = F.interpolate(rgb, size=target, mode="bilinear", align_corners=False, antialias=self.sr_antialias)
        x, rgb = self.block0(x, rgb, ws, **block_kwargs)
        x, rgb = self.block1(x, rgb, ws, **block_kwargs)
        return rgb


class SuperresolutionHybrid8XDC(_SuperresolutionBase):
    """128 -> 512 (released FFHQ/AFHQ 512 models): two upsampling blocks of width 256 and 128 ("DC" = double channels).
    """
    widths = (256, 128)
    has_filter = False


class SuperresolutionHybrid8X(_SuperresolutionBase):
    """128 -> 512 with half the width of the DC variant."""
    widths = (128, 64)


class SuperresolutionHybrid4X(_SuperresolutionBase):
    """128 -> 256 (released ShapeNet cars): a same-resolution block, then one upsampling block."""
    block0_cls = SynthesisBlockNoUp
    input_divisor = 2
    resize_if_smaller_only = True


class SuperresolutionHybrid2X(_SuperresolutionBase):
    """64 -> 128: same structure as 4X at half the resolution."""
    block0_cls = SynthesisBlockNoUp
    input_divisor = 2


class SuperresolutionHybridDeepfp32(_SuperresolutionBase):
    """4X variant without antialiased resizing (kept so older configs resolve)."""
    block0_cls = SynthesisBlockNoUp
    input_divisor = 2
    resize_if_smaller_only = True

    def __init__(self, channels: int, img_resolution: int, sr_num_fp16_res: int, sr_antialias: bool = False,
                 **block_kwargs):
        super().__init__(channels, img_resolution, sr_num_fp16_res, sr_antialias=False, **block_kwargs)


SUPERRESOLUTION_MODULES: dict[str, type[_SuperresolutionBase]] = {
    cls.__name__: cls for cls in (SuperresolutionHybrid8XDC, SuperresolutionHybrid8X, SuperresolutionHybrid4X,
                                  SuperresolutionHybrid2X, SuperresolutionHybridDeepfp32)}


def superresolution_class(name: str) -> type[_SuperresolutionBase]:
    """Resolve rendering_kwargs["superresolution_module"] ("training.superresolution.X" or "X") to our class."""
    short = str(name).rsplit(".", 1)[-1]
    if short not in SUPERRESOLUTION_MODULES:
        raise ValueError(f"unknown superresolution_module {name!r}; supported: {sorted(SUPERRESOLUTION_MODULES)}")
    return SUPERRESOLUTION_MODULES[short]
