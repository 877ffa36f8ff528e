"""Resampling and activation primitives of StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of
StyleGAN", CVPR 2020, Sec. 2 and App. B) in plain PyTorch, with the conventions of rosinality/stylegan2-pytorch
(`op/upfirdn2d.py`, `op/fused_act.py`), the code pSp and e4e build their decoder from.

The originals ship CUDA kernels for these two operations; on the CPU they fall back to plain PyTorch expressions.
Written here as ordinary differentiable PyTorch, so the same code runs (and trains) on every device, with autograd
deriving the backward passes that the CUDA kernels hand-code.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

#: negative slope and output gain of StyleGAN2's leaky ReLU; sqrt(2) keeps the activations' second moment (He gain).
LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = LEAKY_SLOPE,
                     scale: float = LEAKY_GAIN) -> torch.Tensor:
    """``leaky_relu(x + bias) * scale``, bias per channel (dim 1): the "fused" bias + activation of StyleGAN2."""
    shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.reshape(shape), negative_slope=negative_slope) * scale


def make_blur_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel outer(taps, taps), normalised to sum to ``gain`` (float32).

    For upsampling by 2 the gain is 4: zero insertion leaves one non-zero sample in every 2x2 cell, and the filter
    must restore the mean intensity.
    """
    k = torch.tensor(list(taps), dtype=torch.float32)
    k = k[None, :] * k[:, None] if k.ndim == 1 else k
    return k / k.sum() * gain


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel`` (true convolution, i.e. the kernel flipped), downsample.

    ``x`` is [N, C, H, W]; each channel is filtered on its own. ``pad`` = (before, after), the same on both axes;
    negative values crop. Output side = (H * up + pad[0] + pad[1] - kernel_side + 1) // down (rounded up).
    """
    batch, channels, height, width = x.shape
    before, after = pad
    if up > 1:
        # Zero insertion: each sample goes to the top-left corner of an up x up cell (the original's convention).
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, [max(before, 0), max(after, 0), max(before, 0), max(after, 0)])
    if before < 0 or after < 0:
        x = x[:, :, max(-before, 0):x.shape[2] - max(-after, 0), max(-before, 0):x.shape[3] - max(-after, 0)]
    # Every channel is filtered on its own: a depthwise convolution (groups = channels), which CPU and GPU libraries
    # run without unfolding the image (a 1-channel convolution over N x C images unfolds gigabytes at 1024 px).
    # conv2d is a correlation; flipping gives the convolution upfirdn2d defines (a no-op for symmetric kernels).
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)[None, None]
    x = F.conv2d(x, weight.expand(channels, 1, *weight.shape[2:]), groups=channels)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample_conv_blur_pad(taps: int, kernel_size: int, factor: int = 2) -> tuple[int, int]:
    """Padding of the blur after a stride-``factor`` transposed convolution so the output is exactly factor x H.

    A transposed conv of an H-sample input gives factor * (H - 1) + kernel_size samples; filtering with ``taps``
    taps and this padding brings it back to factor * H, centred on the input grid.
    """
    p = (taps - factor) - (kernel_size - 1)
    return (p + 1) // 2 + factor - 1, p // 2 + 1


def upsample_pad(taps: int, factor: int = 2) -> tuple[int, int]:
    """Padding of upfirdn2d(up=factor) that maps H samples to exactly factor * H, centred (ToRGB skip upsampling)."""
    p = taps - factor
    return (p + 1) // 2 + factor - 1, p // 2
