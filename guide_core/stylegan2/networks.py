"""StyleGAN2 generator (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020: config F,
Fig. 2 weight demodulation, Fig. 7 skip-connection output) laid out like rosinality/stylegan2-pytorch's
`model.Generator`, the decoder that pSp (Richardson et al., CVPR 2021) and e4e (Tov et al., SIGGRAPH 2021) build as
`Generator(1024, 512, 8, channel_multiplier=2)`.

Module and parameter names follow that class, so the released `stylegan2-ffhq-config-f.pt['g_ema']` (and the
`decoder.*` part of the pSp / e4e checkpoints) loads with `strict=True`. Conventions that a converted TF checkpoint
relies on and that are easy to get wrong:
- equalised learning rate: weights are stored unscaled and multiplied by lr_mul / sqrt(fan_in) at use;
- the modulation bias is used as stored (the converter already folded in TF's run-time +1);
- w+ rows: conv1 <- 0, to_rgb1 <- 1, then per block k: convs[2k] <- 2k+1, convs[2k+1] <- 2k+2, to_rgbs[k] <- 2k+3
  (an odd row feeds a ToRGB and the next block's upsampling conv);
- the noise map is added right after the modulated conv, before the activation bias.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from guide_core.stylegan2.ops import (fused_leaky_relu, make_blur_kernel, upfirdn2d, upsample_conv_blur_pad,
                                      upsample_pad)

NOISE_MODES = ("const", "random", "none")

#: Parameter-name prefixes (relative to the generator) of the synthesis network: what unlearning fine-tunes. The
#: mapping network `style.*` is everything else and stays frozen, so z -> w, the mean latent and the encoders'
#: latent space are unchanged by an edit. The noise maps are buffers, never trained.
TRAINABLE_PREFIXES = ("input.", "conv1.", "to_rgb1.", "convs.", "to_rgbs.")
FROZEN_PREFIXES = ("style.",)


def is_trainable(name: str) -> bool:
    """Whether a generator parameter name (as in ``named_parameters()``) belongs to the trained synthesis network."""
    return name.startswith(TRAINABLE_PREFIXES)


def base_channels(resolution: int, channel_multiplier: int = 2) -> int:
    """Feature channels at a resolution in rosinality's table (512 up to 32 px, then halving from 64 px)."""
    if resolution <= 32:
        return 512
    return int(2 ** (14 - math.log2(resolution))) * channel_multiplier


class PixelNorm(nn.Module):
    """Scale each vector to unit mean square over dim 1 (StyleGAN's normalisation of z before the mapping MLP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate (Karras et al., ICLR 2018, Sec. 4.1): weight stored as N(0, 1) / lr_mul
    and scaled by lr_mul / sqrt(in_dim) at use, bias scaled by lr_mul; optionally followed by the fused leaky ReLU.
    """

    def __init__(self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class Blur(nn.Module):
    """FIR low-pass filter (upfirdn2d without resampling) after a transposed convolution; the kernel is a buffer."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 upsampling by zero insertion + FIR filter (gain 4), used on the ToRGB skip path; zero padding at borders."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, factor ** 2))
        self.factor = factor
        self.pad = upsample_pad(len(taps), factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per sample and input channel by an affine function of w (modulation) and,
    optionally, renormalised per output channel (demodulation, StyleGAN2 Sec. 2.2, Eq. 1-3). Runs as one grouped
    convolution over the batch with per-sample weights. ``upsample`` = stride-2 transposed conv followed by a blur.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            # Gain 4: the transposed conv spreads each sample over a 2x2 cell, as zero insertion would.
            self.blur = Blur(blur_kernel, upsample_conv_blur_pad(len(blur_kernel), kernel_size), gain=4.0)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        # bias 1: an unmodulated start (converted checkpoints store TF's mod_bias + 1, used as is).
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = x.shape
        k = self.kernel_size
        style = self.modulation(w).reshape(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * style  # [batch, out, in, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.reshape(batch, self.out_channel, 1, 1, 1)
        x = x.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            # conv_transpose2d wants [in, out / groups, k, k] per group.
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.reshape(batch, self.out_channel, out.shape[2], out.shape[3]))
            return out
        weight = weight.reshape(batch * self.out_channel, in_channel, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.reshape(batch, self.out_channel, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Adds a learned per-layer strength times a one-channel noise map (broadcast over channels)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        # None = no noise (noise_mode "none"): adding weight * 0 would change nothing but the graph.
        return x if noise is None else x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    """Per-channel bias + leaky ReLU(0.2) * sqrt(2); holds the bias that follows each styled convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class ConstantInput(nn.Module):
    """The learned 4x4 constant the synthesis network starts from (StyleGAN, Sec. 2), repeated over the batch."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + leaky ReLU: one synthesis layer, fed by one w+ row."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB (no demodulation) + bias, added to the upsampled image so far (StyleGAN2 Fig. 7b)."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        return out if skip is None else out + self.upsample(skip)


class StyleGAN2Generator(nn.Module):
    """rosinality's StyleGAN2 ``Generator(size, style_dim, n_mlp, channel_multiplier)``: mapping MLP ``style`` and a
    skip-architecture synthesis network from a 4x4 constant to ``size`` px, state_dict layout of its ``g_ema``.

    ``forward(ws)`` renders absolute w+ codes [N, num_ws, w_dim] to images [N, 3, size, size] (no tanh, no clamp;
    FFHQ images lie roughly in [-1, 1]). ``noise_mode``: "const" = the stored ``noises.noise_i`` buffers (one map
    shared by every sample, like ``randomize_noise=False``), "random" = fresh N(0, 1) maps per sample and call (the
    original's default), "none" = no noise.

    ``max_channels`` caps every layer's width (default 512 = the original's table); only for small test models.
    """

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01, max_channels: int = 512):
        super().__init__()
        log_size = int(math.log2(size))
        if 2 ** log_size != size or size < 8:
            raise ValueError(f"size must be a power of two >= 8, got {size}")
        self.size = self.img_resolution = size
        self.style_dim = self.z_dim = self.w_dim = style_dim
        self.log_size = log_size
        self.num_layers = (log_size - 2) * 2 + 1  # styled convs: one at 4x4, two per later resolution
        self.num_ws = self.n_latent = log_size * 2 - 2  # one w row per styled conv and one for the last ToRGB
        self.channels = {2 ** r: min(base_channels(2 ** r, channel_multiplier), max_channels)
                         for r in range(2, log_size + 1)}
        blur_kernel = tuple(blur_kernel)

        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True)
                                                  for _ in range(n_mlp)])
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(self.num_layers):
            side = 2 ** ((i + 5) // 2)  # noise_0 at 4x4, then two maps per resolution
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, side, side))
        # Recompute each resolution's activations in the backward pass instead of keeping them (set by whoever trains
        # the generator: at 1024 px the kept activations of one code take gigabytes).
        self.checkpointing = False
        in_channel = self.channels[4]
        for r in range(3, log_size + 1):
            out_channel = self.channels[2 ** r]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

    # -- mapping ---------------------------------------------------------------------------------------------------

    def mapping(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_latent: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim] -> w+ [N, num_ws, w_dim]: the MLP's w, truncated towards ``truncation_latent`` (w_avg, shape
        [w_dim] or [1, w_dim]) as ``w_avg + psi * (w - w_avg)``, then repeated on every row (no cutoff).
        ``truncation_psi`` 1 leaves w untouched (bit for bit) and needs no ``truncation_latent``.
        """
        w = self.style(z)
        if truncation_psi != 1:
            if truncation_latent is None:
                raise ValueError("truncation_psi != 1 needs truncation_latent (e.g. mean_latent(4096) or latent_avg)")
            w = truncation_latent + truncation_psi * (w - truncation_latent)
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean of the mapping over ``n`` z ~ N(0, I) drawn from ``generator`` (default: torch's global RNG),
        [1, w_dim], without autograd (a statistic, e.g. the truncation centre). With the global RNG seeded alike, equals
        the original's ``mean_latent(n)``.
        """
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=generator, device=device)
        return self.style(z.to(self.input.input.dtype)).mean(0, keepdim=True)

    # -- synthesis -------------------------------------------------------------------------------------------------

    def noise_inputs(self, batch: int, noise_mode: str = "const") -> list[torch.Tensor | None]:
        """The noise map of each styled conv (``num_layers`` entries) for a noise mode."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        buffers = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if noise_mode == "const":
            return buffers
        if noise_mode == "none":
            return [None] * self.num_layers
        return [torch.randn(batch, 1, *b.shape[2:], device=b.device, dtype=b.dtype) for b in buffers]

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Absolute w+ [N, num_ws, w_dim] -> images [N, 3, size, size]."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        noise = self.noise_inputs(ws.shape[0], noise_mode)
        x = self.conv1(self.input(ws.shape[0]), ws[:, 0], noise[0])
        skip = self.to_rgb1(x, ws[:, 1])
        # Each layer's activations are recomputed in the backward pass when checkpointing (only its input is kept).
        layer = ((lambda module, *args: checkpoint(module, *args, use_reentrant=False))
                 if self.checkpointing and torch.is_grad_enabled() else (lambda module, *args: module(*args)))
        for k, to_rgb in enumerate(self.to_rgbs):
            x = layer(self.convs[2 * k], x, ws[:, 2 * k + 1], noise[2 * k + 1])
            x = layer(self.convs[2 * k + 1], x, ws[:, 2 * k + 2], noise[2 * k + 2])
            skip = layer(to_rgb, x, ws[:, 2 * k + 3], skip)
        return skip

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """Images [N, 3, size, size] of absolute w+ codes ``ws`` [N, num_ws, w_dim] (see ``synthesis``)."""
        return self.synthesis(ws, noise_mode)

    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of the synthesis network (``TRAINABLE_PREFIXES``), what unlearning fine-tunes."""
        return ((name, p) for name, p in self.named_parameters() if is_trainable(name))
