"""StyleGAN2 (Karras et al., CVPR 2020) as rosinality/stylegan2-pytorch lays it out: the 1024 px FFHQ decoder of pSp
and e4e, in pure PyTorch (no custom CUDA ops), loadable from the released ``g_ema`` state dict with strict=True.
"""
from guide_core.stylegan2.networks import (FROZEN_PREFIXES, NOISE_MODES, TRAINABLE_PREFIXES, StyleGAN2Generator,
                                           is_trainable)
from guide_core.stylegan2.ops import fused_leaky_relu, make_blur_kernel, upfirdn2d

__all__ = ["FROZEN_PREFIXES", "NOISE_MODES", "TRAINABLE_PREFIXES", "StyleGAN2Generator", "is_trainable",
           "fused_leaky_relu", "make_blur_kernel", "upfirdn2d"]
