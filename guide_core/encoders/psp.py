"""pSp inversion encoder (Richardson et al., "Encoding in Style: a StyleGAN Encoder for Image-to-Image Translation",
CVPR 2021, the pixel2style2pixel GradualStyleEncoder of its Fig. 2), the encoder of the released
`psp_ffhq_encode.pt` that inverts a 256x256 FFHQ-aligned face into the w+ space of StyleGAN2 FFHQ 1024.

An IR-SE50 body (the ArcFace backbone without its embedding head) gives three feature maps; a feature pyramid
merges them top-down, and 18 "map2style" heads (strided convs down to 1x1, then an equalised linear layer) read
one w+ row each: rows 0-2 from the coarsest map, 3-6 from the middle, 7-17 from the finest. The encoder returns the
w+ OFFSETS [N, 18, 512]; the released model was trained with `start_from_latent_avg`, so the caller adds the
checkpoint's `latent_avg` [18, 512] before decoding.

The shared pieces (body, pyramid, heads, the strict loader) live here too, because e4e (guide_core.encoders.e4e)
has the same modules and parameter names and differs only in how the heads' outputs are combined. Parameter names
follow the `encoder.*` part of the released checkpoints, prefix stripped, so those tensors load with strict keys.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from guide_core.identity.backbone import ir_stem_and_body
# The original imports this layer from its bundled StyleGAN2 model: the same maths and parameter names as guide's
# (weight scaled by lr_mul / sqrt(in_dim) at every call, the original's operation order and float32 rounding).
from guide_core.stylegan2.networks import EqualLinear

# StyleGAN2 FFHQ 1024 has 2 * log2(1024) - 2 = 18 w+ rows of 512 values.
N_STYLES = 18
W_DIM = 512
# The encoders were trained on 256x256 crops: the finest pyramid level is then 64x64 and six stride-2 convs take it to
# the 1x1 that the heads' linear layers expect. Any other size would not end at 1x1.
INPUT_SIZE = 256
# Rows [0, COARSE_END) read the coarsest map, [COARSE_END, MIDDLE_END) the middle one, the rest the finest.
COARSE_END, MIDDLE_END = 3, 7
# Body units whose outputs are tapped (0-based, 24 units of IR-SE50): the ends of stages 2, 3 and 4.
TAP_FINE, TAP_MIDDLE, TAP_COARSE = 6, 20, 23


class EncoderWeightsError(ValueError):
    """A state dict that does not fit the pSp / e4e encoder (missing, unexpected or mis-shaped entries)."""


class GradualStyleBlock(nn.Module):
    """One "map2style" head: log2(spatial) stride-2 3x3 convs (each with bias and LeakyReLU(0.01)) reduce a
    [N, 512, spatial, spatial] map to 1x1, then EqualLinear(512, 512) gives one w+ row [N, 512]."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        self.out_channels = out_channels
        layers: list[nn.Module] = []
        for index in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(in_channels if index == 0 else out_channels, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels, lr_mul=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map [N, C, s, s] -> style row [N, out_channels]."""
        return self.linear(self.convs(x).reshape(-1, self.out_channels))


def upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """One top-down pyramid step: bilinear resize of `top` to the lateral map's size with align_corners=True (what
    the released encoders were trained with; align_corners=False moves the codes by ~0.5), plus the lateral map."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class IRSEStyleEncoderBase(nn.Module):
    """The modules pSp's GradualStyleEncoder and e4e's Encoder4Editing share (identical parameter names and shapes):
    IR-SE50 stem and body, the two lateral 1x1 convs of the feature pyramid and 18 map2style heads. Subclasses define
    how the heads' outputs become w+ offsets."""

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", n_styles: int = N_STYLES):
        super().__init__()
        # The feature taps are the unit indices of the 50-layer body (as hard-coded in the originals); every released
        # pSp / e4e FFHQ encoder is IR-SE50.
        if num_layers != 50 or mode not in ("ir", "ir_se"):
            raise ValueError(f"unsupported body: num_layers={num_layers} (only 50), mode={mode!r}")
        self.n_styles = n_styles
        # The same stem and body as the identity backbone (IR-SE50), under the same names.
        self.input_layer, self.body = ir_stem_and_body(num_layers, mode)
        # Head i reads a 16x16 (coarse), 32x32 (middle) or 64x64 (fine) map, hence 4, 5 or 6 stride-2 convs.
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, 512, 16 if i < COARSE_END else 32 if i < MIDDLE_END else 64)
            for i in range(n_styles))
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)

    def _check_input(self, images: torch.Tensor) -> None:
        """A readable error for a wrong layout, instead of a reshape error deep inside a head."""
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"{type(self).__name__} expects a floating-point image tensor in [-1, 1]")
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"{type(self).__name__} expects FFHQ-aligned faces [N, 3, {INPUT_SIZE}, {INPUT_SIZE}] in "
                             f"[-1, 1], got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body taps (c1, c2, c3): [N, 128, 64, 64], [N, 256, 32, 32], [N, 512, 16, 16] for 256x256 input."""
        self._check_input(images)
        x = self.input_layer(images)
        taps = {}
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in (TAP_FINE, TAP_MIDDLE, TAP_COARSE):
                taps[index] = x
        return taps[TAP_FINE], taps[TAP_MIDDLE], taps[TAP_COARSE]

    def pyramid_middle(self, c2: torch.Tensor, c3: torch.Tensor) -> torch.Tensor:
        """p2 [N, 512, 32, 32]: c3 upsampled onto the lateral projection of c2."""
        return upsample_add(c3, self.latlayer1(c2))

    def pyramid_fine(self, c1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
        """p1 [N, 512, 64, 64]: p2 upsampled onto the lateral projection of c1."""
        return upsample_add(p2, self.latlayer2(c1))

    def level_of(self, row: int) -> str:
        """Which pyramid level head `row` reads: 'coarse' (c3), 'middle' (p2) or 'fine' (p1)."""
        return "coarse" if row < COARSE_END else "middle" if row < MIDDLE_END else "fine"


class GradualStyleEncoder(IRSEStyleEncoderBase):
    """pSp's encoder: images [N, 3, 256, 256] in [-1, 1] -> w+ offsets [N, 18, 512] (add latent_avg to decode).

    Each w+ row comes from its own head, independently of the others (unlike e4e, no shared base code)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, 256, 256] -> codes [N, 18, 512]."""
        return self.codes_from_features(*self.features(images))

    def codes_from_features(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor) -> torch.Tensor:
        """The heads on precomputed body taps -> codes [N, 18, 512]."""
        p2 = self.pyramid_middle(c2, c3)
        levels = {"coarse": c3, "middle": p2, "fine": self.pyramid_fine(c1, p2)}
        return torch.stack([head(levels[self.level_of(i)]) for i, head in enumerate(self.styles)], dim=1)


def encoder_part(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a state dict: either already prefix-free, or a whole pSp / e4e `state_dict` whose
    `encoder.*` entries are taken (prefix stripped) and whose `decoder.*` entries are left for the generator."""
    if state and all(key.startswith(("encoder.", "decoder.")) for key in state):
        return {key[len("encoder."):]: value for key, value in state.items() if key.startswith("encoder.")}
    return dict(state)


def check_encoder_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """One EncoderWeightsError naming every missing, unexpected and mis-shaped entry (none: the state fits)."""
    expected = model.state_dict()
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    not_tensors = [k for k in state if not isinstance(state[k], torch.Tensor)]
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file != model)", mis_shaped),
                         ("not tensors", not_tensors)):
        if items:
            problems.append(f"{len(items)} {label}: " + ", ".join(items[:6]) + (", ..." if len(items) > 6 else ""))
    if problems:
        raise EncoderWeightsError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))


def load_encoder(cls: type[IRSEStyleEncoderBase], state: Mapping[str, torch.Tensor],
                 device: str | torch.device = "cpu") -> IRSEStyleEncoderBase:
    """Build `cls` from a state dict with strict keys, in eval mode and frozen.

    The module is built on the meta device and takes the given tensors (no random initialisation of its 267 M
    parameters, no copy); they are converted to float32 first where they are not (a half-precision export)."""
    state = encoder_part(state)
    with torch.device("meta"):
        model = cls()
    check_encoder_state(model, state, f"{cls.__name__} weights")
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device).eval().requires_grad_(False)


def load_psp_encoder(state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu") -> GradualStyleEncoder:
    """pSp's GradualStyleEncoder from the `encoder.*` tensors of `psp_ffhq_encode.pt` (prefix stripped or not)."""
    return load_encoder(GradualStyleEncoder, state, device)
