"""Plain-PyTorch versions of the StyleGAN2 low-level ops EG3D builds on (Karras et al., "Analyzing and Improving the
Image Quality of StyleGAN", CVPR 2020): FIR up/down-sampling, convolution with resampling, fused bias + activation.
They reproduce the numerics of the original reference (non-CUDA) code paths, so no compiled extension is needed.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

# Activation name -> (function(x, alpha), default alpha, default gain); the gains keep signal variance at init.
ACTIVATIONS = {
    "linear": (lambda x, alpha: x, 0.0, 1.0),
    "relu": (lambda x, alpha: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": (lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2)),
    "tanh": (lambda x, alpha: torch.tanh(x), 0.0, 1.0),
    "sigmoid": (lambda x, alpha: torch.sigmoid(x), 0.0, 1.0),
    "elu": (lambda x, alpha: F.elu(x), 0.0, 1.0),
    "selu": (lambda x, alpha: F.selu(x), 0.0, 1.0),
    "softplus": (lambda x, alpha: F.softplus(x), 0.0, 1.0),
    "swish": (lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def activation_gain(act: str) -> float:
    """Default gain of an activation (sqrt(2) for ReLU-like ones, 1 otherwise)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[act][2]


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = "linear",
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Bias add, activation, gain and optional symmetric clamp, in that order (StyleGAN2's bias_act)."""
    func, def_alpha, def_gain = ACTIVATIONS[act]
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = func(x, float(def_alpha if alpha is None else alpha))
    gain = float(def_gain if gain is None else gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(taps: Sequence[float] | torch.Tensor = (1, 3, 3, 1), normalize: bool = True,
                 gain: float = 1.0) -> torch.Tensor:
    """Normalised 2-D FIR filter from 1-D taps (outer product when short), as the checkpoints' resample_filter buffers
    hold.
    """
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    return f * (gain ** (f.ndim / 2))


def _padding4(padding: int | Sequence[int]) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    return tuple(padding)  # type: ignore[return-value]


def _filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: int | Sequence[int] = 0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative = crop), FIR-filter, downsample by decimation (StyleGAN2's upfirdn2d).
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, height, width = x.shape
    px0, px1, py0, py1 = _padding4(padding)
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = (f * (gain ** (f.ndim / 2))).to(dtype=x.dtype, device=x.device)
    if not flip_filter:  # conv2d correlates; flipping makes it a true convolution
        f = f.flip(list(range(f.ndim)))
    f = f[None, None].repeat([channels, 1] + [1] * f.ndim)
    if f.ndim == 4:
        x = F.conv2d(x, f, groups=channels)
    else:
        x = F.conv2d(x, f.unsqueeze(2), groups=channels)
        x = F.conv2d(x, f.unsqueeze(3), groups=channels)
    return x[:, :, ::down, ::down]


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2, gain: float = 1.0) -> torch.Tensor:
    """2x (or up x) upsampling with the FIR filter, padded so the output is exactly up times the input."""
    fw, fh = _filter_size(f)
    if up == 2 and f.ndim == 2 and (fw, fh) == (4, 4) and x.shape[2] * x.shape[3] >= 4096:
        # Zero insertion + 4x4 filter == one stride-2 transposed depthwise convolution: same sum of products,
        # without the 4x larger zero-filled temporary (about 2x faster on CPU for large maps).
        channels = x.shape[1]
        kernel = (f * (gain * up * up)).to(dtype=x.dtype, device=x.device)[None, None].repeat(channels, 1, 1, 1)
        return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=channels)
    pad = [(fw + up - 1) // 2, (fw - up) // 2, (fh + up - 1) // 2, (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=pad, gain=gain * up * up)


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int | Sequence[int] = 0, groups: int = 1,
          transpose: bool = False, flip_weight: bool = True) -> torch.Tensor:
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: int | Sequence[int] = 0, groups: int = 1, flip_weight: bool = True) -> torch.Tensor:
    """Convolution with optional up/down-sampling; padding is relative to the upsampled image (StyleGAN2's
    conv2d_resample). Upsampling runs as a strided transposed convolution followed by the FIR filter.
    """
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
    if down > 1 and up == 1:
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2)
        if down > 1:
            x = upfirdn2d(x, f, down=down)
        return x
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down)
    return x
