"""Swin Transformer V2 backbone of the GOAE encoder (Liu et al., "Swin Transformer V2: Scaling Up Capacity and
Resolution", CVPR 2022), written for GOAE (Yuan et al., "Make Encoder Great Again in 3D GAN Inversion through
Geometry and Occlusion-Aware Encoding", ICCV 2023), which reads five feature maps out of it.

V2 differs from V1 in three places, all reproduced here: residual post-norm (LayerNorm after attention / MLP,
inside the residual branch), scaled cosine attention with a learnable per-head logit scale clamped at ln(100),
and a continuous relative position bias produced by a small MLP over log-spaced relative coordinates.
Parameter and buffer names follow the released GOAE checkpoint (`encoder_FFHQ.pt`) so that it loads strictly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Swin-V2 §3.2 (scaled cosine attention): the learnable logit scale is clamped so that its exp never exceeds 100.
LOGIT_SCALE_MAX = float(torch.log(torch.tensor(100.0)).item())
# The CPB MLP output is squashed to (0, 16) before it joins the logits (Swin-V2's released models, GOAE's included).
CPB_BIAS_BOUND = 16.0
# Logit added to attention between tokens that a cyclic shift brought from different image regions (Swin §3.2).
SHIFT_MASK_VALUE = -100.0


@dataclass(frozen=True)
class SwinV2Config:
    """The backbone configuration; the defaults are GOAE's swinv2.yaml merged over the Swin defaults."""
    img_size: int = 256
    patch_size: int = 4
    in_chans: int = 3
    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 16
    pretrained_window_sizes: tuple[int, ...] = (12, 12, 12, 6)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.2
    cpb_hidden: int = 512
    layernorm_eps: float = 1e-5


class SwinFeatures(NamedTuple):
    """The five feature maps GOAE reads from the backbone (deepest first, the order of the original's return tuple)."""
    x_base: torch.Tensor    # final LayerNorm output, channels-first [B, 8C, L/64]
    x_query: torch.Tensor   # input of the last stage, channels-first [B, 8C, L/64]
    x_coarse: torch.Tensor  # input of stage 2, tokens-first [B, L/16, 4C]
    x_mid: torch.Tensor     # input of stage 1, tokens-first [B, L/4, 2C]
    x_fine: torch.Tensor    # patch-embedding output, tokens-first [B, L, C]


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Split a [B, H, W, C] map into non-overlapping windows [B * nW, w*w, C] (row-major over windows, then tokens)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of window_partition: [B * nW, w*w, C] back to [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def log_spaced_coords_table(window: int, pretrained_window: int) -> torch.Tensor:
    """Swin-V2 §3.3 (log-spaced coordinates): relative offsets of a window, normalised by the PRETRAINED window - 1 (so
    a fine-tuned larger window extrapolates the bias instead of rescaling it), mapped to sign(x) log2(1 + |8x|) / 3.
    """
    offsets = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1).unsqueeze(0)  # [1, 2w-1, 2w-1, 2]
    table = table / (pretrained_window - 1 if pretrained_window > 0 else window - 1)
    table = table * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> torch.Tensor:
    """For every (query, key) token pair of a window, the flat index of their offset in the (2w-1)^2 coordinate table.
    """
    grid = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0) + (window - 1)  # [w*w, w*w, 2], both >= 0
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Swin §3.2: after a cyclic shift by `shift`, windows on the border mix up to 9 image regions; tokens may only
    attend within their own region, so every other pair gets SHIFT_MASK_VALUE. Returns [nW, w*w, w*w].
    """
    region = torch.zeros(1, height, width, 1)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            region[:, rows, cols, :] = label
            label += 1
    region = window_partition(region, window).squeeze(-1)  # [nW, w*w]
    differs = region.unsqueeze(1) != region.unsqueeze(2)
    return torch.zeros(differs.shape).masked_fill(differs, SHIFT_MASK_VALUE)


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop a whole residual branch per sample in training, rescale survivors."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> exact (erf) GELU -> Linear."""
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Window multi-head self-attention of Swin-V2: cosine similarity times a clamped learnable scale plus the
    continuous position bias (CPB MLP over the log-spaced table), softmax, output projection.
    """
    def __init__(self, dim: int, window: int, num_heads: int, pretrained_window: int, qkv_bias: bool = True,
                 cpb_hidden: int = 512):
        super().__init__()
        self.dim, self.window, self.num_heads = dim, window, num_heads
        # Registration order (scale, biases, then buffers) reproduces the official state-dict order.
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        # V2 biases only q and v: a k bias adds the same logit to every key of a query and cancels in softmax.
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.register_buffer("relative_coords_table", log_spaced_coords_table(window, pretrained_window))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, cpb_hidden), nn.ReLU(inplace=True),
                                     nn.Linear(cpb_hidden, num_heads, bias=False))
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """Per-head position bias [heads, w*w, w*w], bounded to (0, 16) by 16 * sigmoid."""
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        n = self.window * self.window
        bias = table[self.relative_position_index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return CPB_BIAS_BOUND * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b_windows, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b_windows, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*nW, heads, n, d]
        # Swin-V2 §3.2: cosine attention keeps logits bounded where dot products grew without limit in V1.
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logits = logits * torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()
        logits = logits + self.position_bias().unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            logits = logits.view(-1, n_windows, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            logits = logits.view(-1, self.num_heads, n, n)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_windows, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """One Swin-V2 block: (shifted-)window attention and MLP, each as x + LayerNorm(branch(x)) — V2's res-post-norm."""
    def __init__(self, dim: int, resolution: tuple[int, int], num_heads: int, window: int, shift: int,
                 pretrained_window: int, mlp_ratio: float, qkv_bias: bool, drop_path: float, cpb_hidden: int,
                 eps: float):
        super().__init__()
        self.resolution = resolution
        # A grid no larger than the window is one window: nothing to shift across.
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must lie in [0, window {window})")
        self.window, self.shift, self.drop_path = window, shift, drop_path
        mask = shifted_window_mask(*resolution, window, shift) if shift > 0 else None
        self.register_buffer("attn_mask", mask)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = WindowAttention(dim, window, num_heads, pretrained_window, qkv_bias, cpb_hidden)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"SwinBlock expects {h}x{w}={h * w} tokens, got {length}")
        grid = x.view(b, h, w, c)
        if self.shift:
            grid = torch.roll(grid, shifts=(-self.shift, -self.shift), dims=(1, 2))
        attended = self.attn(window_partition(grid, self.window), self.attn_mask)
        grid = window_merge(attended, self.window, h, w)
        if self.shift:
            grid = torch.roll(grid, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + drop_path(self.norm1(grid.reshape(b, h * w, c)), self.drop_path, self.training)
        return x + drop_path(self.norm2(self.mlp(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """Swin-V2 patch merging: concatenate each 2x2 neighbourhood (order (0,0), (1,0), (0,1), (1,1)), project 4C -> 2C,
    then LayerNorm (V2 normalises after the reduction, V1 before).
    """
    def __init__(self, resolution: tuple[int, int], dim: int, eps: float):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, _, c = x.shape
        grid = x.view(b, h, w, c)
        merged = torch.cat([grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2], grid[:, 1::2, 1::2]], -1)
        return self.norm(self.reduction(merged.view(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """One resolution stage: `depth` blocks alternating plain and shifted windows, then an optional patch merging."""
    def __init__(self, dim: int, resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 pretrained_window: int, mlp_ratio: float, qkv_bias: bool, drop_paths: list[float], downsample: bool,
                 cpb_hidden: int, eps: float):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, pretrained_window,
                      mlp_ratio, qkv_bias, drop_paths[i], cpb_hidden, eps)
            for i in range(depth))
        self.downsample = PatchMerging(resolution, dim, eps) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: a strided convolution, then LayerNorm over channels."""
    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, eps: float):
        super().__init__()
        self.img_size = img_size
        self.grid = img_size // patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"PatchEmbed expects {self.img_size}x{self.img_size} images, got {tuple(x.shape[-2:])}")
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformerV2(nn.Module):
    """The hierarchical backbone: patch embedding, four stages (grids 64/32/16/8 for 256 px, channels C..8C), final
    LayerNorm. Returns the five feature maps GOAE consumes (SwinFeatures), not a classification.
    """
    def __init__(self, config: SwinV2Config = SwinV2Config()):
        super().__init__()
        self.config = cfg = config
        n_stages = len(cfg.depths)
        if not (len(cfg.num_heads) == len(cfg.pretrained_window_sizes) == n_stages):
            raise ValueError("depths, num_heads and pretrained_window_sizes must have one entry per stage")
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.layernorm_eps)
        # Stochastic-depth rates grow linearly over all blocks (active only in train mode).
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.layers = nn.ModuleList()
        grid = self.patch_embed.grid
        for i in range(n_stages):
            first = sum(cfg.depths[:i])
            self.layers.append(SwinStage(
                cfg.embed_dim * 2 ** i, (grid // 2 ** i, grid // 2 ** i), cfg.depths[i], cfg.num_heads[i],
                cfg.window_size, cfg.pretrained_window_sizes[i], cfg.mlp_ratio, cfg.qkv_bias,
                rates[first:first + cfg.depths[i]], i < n_stages - 1, cfg.cpb_hidden, cfg.layernorm_eps))
        self.norm = nn.LayerNorm(cfg.embed_dim * 2 ** (n_stages - 1), eps=cfg.layernorm_eps)

    def forward(self, imgs: torch.Tensor) -> SwinFeatures:
        if len(self.layers) != 4:
            raise ValueError("GOAE's feature taps assume a four-stage backbone")
        x = self.patch_embed(imgs)
        stage_inputs = []
        for layer in self.layers:
            stage_inputs.append(x)
            x = layer(x)
        x_fine, x_mid, x_coarse, x_query = stage_inputs
        return SwinFeatures(self.norm(x).transpose(1, 2), x_query.transpose(1, 2), x_coarse, x_mid, x_fine)
