"""GOAE inversion encoder (Yuan et al., "Make Encoder Great Again in 3D GAN Inversion through Geometry and
Occlusion-Aware Encoding", ICCV 2023, its geometry-aware encoder and Fig. 3), the network GUIDE (Seo et al.,
CVPR 2024) uses to invert a photo into EG3D's W+ space: w_u = w_avg + E(x).

A Swin-V2 backbone yields features at four depths. The base code w0 comes from the deepest, normalised map; the
per-layer deltas of W+ rows 1-3 / 4-6 / 7-13 are queries (from the last stage's input) that cross-attend to key/value
maps built from progressively finer features ("coarse", "mid", "fine"). Parameter names follow the released
`encoder_FFHQ.pt` so that it loads with strict key matching."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from guide_core.weights.safe_load import load_safetensors, load_torch, tensor_file_refusal

from .swin_v2 import SwinFeatures, SwinTransformerV2, SwinV2Config

# EG3D's W+ has 14 rows (7 synthesis resolutions x 2 style inputs); GOAE splits them 1 (base) + 3 + 3 + 7.
NUM_WS = 14
W_DIM = 512
COARSE_ROWS = slice(1, 4)
MID_ROWS = slice(4, 7)
FINE_ROWS = slice(7, 14)
# The encoder's input resolution; unlearn.py resizes every photo to this size with PIL before scaling to [-1, 1].
INPUT_SIZE = 256
# Progressive training stages of GOAE (W+ deltas switched on level by level): which delta paths are active.
STAGE_BASE, STAGE_COARSE, STAGE_MID, STAGE_FINE = 0, 1, 2, 3


class GOAEWeightsError(ValueError):
    """Raised when a checkpoint does not fit the GOAE architecture (missing / unexpected keys, wrong shapes) or
    cannot be read as plain tensor data."""


def mapper_mlp(in_dim: int, out_dim: int, mlp_layer: int = 2) -> nn.Sequential:
    """The "mapper" MLP of GOAE: (mlp_layer - 1) x [Linear(d, d), LeakyReLU(0.01)], then Linear(d, out)."""
    modules: list[nn.Module] = []
    for _ in range(mlp_layer - 1):
        modules += [nn.Linear(in_dim, in_dim), nn.LeakyReLU()]
    modules.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*modules)


def leaky_stack(*dims: int) -> nn.Sequential:
    """Linear layers each followed by LeakyReLU(0.01): the key/value channel and spatial mappers."""
    modules: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        modules += [nn.Linear(d_in, d_out), nn.LeakyReLU()]
    return nn.Sequential(*modules)


class CrossAttention(nn.Module):
    """GOAE's cross-attention block (DETR-style decoder layer without self-attention): W+ queries attend to the feature
    tokens, then a residual ReLU FFN. Only one LayerNorm (no affine) is applied, after the attention residual; the
    FFN residual is left un-normalised, exactly as in the released model."""

    def __init__(self, d_model: int = W_DIM, nhead: int = 4, dim_feedforward: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """W+ queries [N, rows, 512] attending to feature tokens `memory` [N, T, 512] -> [N, rows, 512]."""
        attended = self.multihead_attn(queries, memory, memory, need_weights=False)[0]
        x = self.norm(queries + self.dropout2(attended))
        return x + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(x)))))


class GOAEncoder(nn.Module):
    """The GOAE encoder: image [N, 3, 256, 256] in [-1, 1] -> (ws, ws_base), both [N, 14, 512], offsets from w_avg."""

    def __init__(self, swin_config: SwinV2Config = SwinV2Config(), mlp_layer: int = 2,
                 stage_list: Sequence[int] = (10000, 20000, 30000)):
        super().__init__()
        # `stage` selects how many delta paths run (0 base only ... 3 all); the released model is used at 3.
        self.stage = STAGE_FINE
        self.stage_list = list(stage_list)
        self.swin_model = SwinTransformerV2(swin_config)
        top_dim = swin_config.embed_dim * 8
        top_tokens = (swin_config.img_size // swin_config.patch_size // 8) ** 2
        c1, c2, c3 = swin_config.embed_dim, swin_config.embed_dim * 2, swin_config.embed_dim * 4
        n_mid, n_coarse = (swin_config.img_size // swin_config.patch_size // 2) ** 2, top_tokens * 4

        # Base path: a learned spatial pooling plus a max pooling of the top map give one w0 row.
        self.mapper_base_spatial = mapper_mlp(top_tokens, 1, mlp_layer)
        self.mapper_base_channel = mapper_mlp(top_dim, W_DIM, mlp_layer)
        # Query path: the last stage's input, pooled into 3 / 3 / 7 W+ rows the same way.
        self.mapper_query_spatial_coarse = mapper_mlp(top_tokens, COARSE_ROWS.stop - COARSE_ROWS.start, mlp_layer)
        self.mapper_query_channel_coarse = mapper_mlp(top_dim, W_DIM, mlp_layer)
        self.mapper_query_spatial_mid = mapper_mlp(top_tokens, MID_ROWS.stop - MID_ROWS.start, mlp_layer)
        self.mapper_query_channel_mid = mapper_mlp(top_dim, W_DIM, mlp_layer)
        self.mapper_query_spatial_fine = mapper_mlp(top_tokens, FINE_ROWS.stop - FINE_ROWS.start, mlp_layer)
        self.mapper_query_channel_fine = mapper_mlp(top_dim, W_DIM, mlp_layer)
        # Key/value path: each level's features lifted to 512 channels; finer levels also receive the coarser level's
        # key/value map, upsampled along the token axis by an MLP (a learned spatial pyramid, GOAE Fig. 3).
        self.mapper_coarse_channel = leaky_stack(c3, W_DIM)
        self.mapper_mid_channel = leaky_stack(c2, W_DIM)
        self.mapper_fine_channel = leaky_stack(c1, c2, W_DIM)
        self.mapper_coarse_to_mid_spatial = leaky_stack(n_coarse, 2 * n_coarse, n_mid)
        self.mapper_mid_to_fine_spatial = leaky_stack(n_mid, 2 * n_mid, 4 * n_mid)
        self.cross_att_coarse = CrossAttention()
        self.cross_att_mid = CrossAttention()
        self.cross_att_fine = CrossAttention()

    def set_stage(self, iteration: int) -> int:
        """Training schedule of the progressive stages: stage i while iteration < stage_list[i]; note that an iteration
        equal to the last boundary stays in stage 2 (the original's loop), only later ones reach stage 3."""
        if iteration > self.stage_list[-1]:
            self.stage = STAGE_FINE
        else:
            self.stage = next((i for i, bound in enumerate(self.stage_list) if iteration < bound),
                              len(self.stage_list) - 1)
        return self.stage

    @staticmethod
    def _pooled_codes(x: torch.Tensor, spatial: nn.Module, channel: nn.Module) -> torch.Tensor:
        """Pool a channels-first map [B, C, T] to `rows` codes: learned token mixing plus the global max, then
        channels."""
        return channel(spatial(x).transpose(1, 2) + x.amax(dim=2, keepdim=True).transpose(1, 2))

    def _check_input(self, imgs: torch.Tensor) -> None:
        """Inputs checked here so that a wrong layout fails with a readable message instead of a matmul shape error."""
        size = self.swin_model.config.img_size
        if not isinstance(imgs, torch.Tensor):
            raise TypeError(f"GOAEncoder expects a tensor, got {type(imgs).__name__}")
        if imgs.ndim != 4 or imgs.shape[1] != 3 or tuple(imgs.shape[-2:]) != (size, size):
            raise ValueError(f"GOAEncoder expects images [N, 3, {size}, {size}] in [-1, 1], got {tuple(imgs.shape)}; "
                             f"use .invert() to resize other sizes")
        if not imgs.is_floating_point():
            raise TypeError(f"GOAEncoder expects floating-point images in [-1, 1], got {imgs.dtype}")

    def forward(self, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N, 3, 256, 256] in [-1, 1] -> (ws, ws_base); ws is the W+ offset that unlearn.py adds to w_avg."""
        self._check_input(imgs)
        return self.heads(self.swin_model(imgs))

    def heads(self, feats: SwinFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """The GOAE heads on precomputed backbone features, at the current `stage` -> (ws, ws_base)."""
        ws_base = self._pooled_codes(feats.x_base, self.mapper_base_spatial, self.mapper_base_channel)
        ws_base = ws_base.repeat(1, NUM_WS, 1)
        if self.stage <= STAGE_BASE:
            return ws_base, ws_base

        # Every active level: queries from the last stage's input, keys/values from its own feature level.
        levels = [("coarse", COARSE_ROWS), ("mid", MID_ROWS), ("fine", FINE_ROWS)][:self.stage]
        kv_coarse = self.mapper_coarse_channel(feats.x_coarse)
        kv = {"coarse": kv_coarse}
        if self.stage >= STAGE_MID:
            kv["mid"] = self.mapper_mid_channel(feats.x_mid) + \
                self.mapper_coarse_to_mid_spatial(kv_coarse.transpose(1, 2)).transpose(1, 2)
        if self.stage >= STAGE_FINE:
            kv["fine"] = self.mapper_fine_channel(feats.x_fine) + \
                self.mapper_mid_to_fine_spatial(kv["mid"].transpose(1, 2)).transpose(1, 2)

        ws_delta = ws_base.new_zeros(ws_base.shape)
        for name, rows in levels:
            queries = self._pooled_codes(feats.x_query, getattr(self, f"mapper_query_spatial_{name}"),
                                         getattr(self, f"mapper_query_channel_{name}"))
            ws_delta[:, rows] = getattr(self, f"cross_att_{name}")(queries, kv[name])
        return ws_base + ws_delta, ws_base

    @torch.no_grad()
    def invert(self, images, quantize: bool = True) -> torch.Tensor:
        """Photo(s) -> W+ offset [N, 14, 512] (add w_avg to get w_u), without gradients. Preprocessing follows GUIDE's
        unlearn.py: PIL `resize((256, 256))` (bicubic, Pillow's default), uint8, then x / 127.5 - 1. PIL images take
        exactly that path. Tensors [N, 3, H, W] or [3, H, W] in [-1, 1] are, by default (quantize=True), snapped to
        the 8-bit grid and resized by `pil_bicubic_resize`, which reproduces Pillow (bit-exact for 512 / 1024 -> 256;
        other sizes differ by one level on < 1e-4 of the pixels, from Pillow's fixed-point filter weights);
        quantize=False resizes in float with one antialiased bicubic (differentiable, within ~1-2 levels)."""
        device = next(self.parameters()).device
        batch = preprocess_for_goae(images, size=self.swin_model.config.img_size, quantize=quantize)
        return self(batch.to(device=device, dtype=next(self.parameters()).dtype))[0]


def _pil_to_tensor(image, size: int) -> torch.Tensor:
    """GUIDE's unlearn.py image loader: PIL resize to size x size (bicubic default), uint8 -> [-1, 1] float32."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    pixels = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.uint8)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float() / 127.5 - 1


def pil_bicubic_resize(levels: torch.Tensor, size: int) -> torch.Tensor:
    """Pillow's bicubic resize of 8-bit levels [N, C, H, W] (floats 0..255): separable Keys (a = -0.5) filter whose
    support widens with the downscale factor (antialiasing), horizontal pass first, each pass rounded half-up and
    clipped to 0..255 as Pillow stores its intermediate image in uint8. torch's antialiased bicubic uses the same
    taps."""
    h, w = levels.shape[-2:]
    x = levels
    if w != size:
        x = F.interpolate(x, size=(h, size), mode="bicubic", align_corners=False, antialias=True)
        x = torch.floor(x + 0.5).clamp(0, 255)
    if h != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = torch.floor(x + 0.5).clamp(0, 255)
    return x


def preprocess_for_goae(images, size: int = INPUT_SIZE, quantize: bool = True) -> torch.Tensor:
    """Any of: PIL image, list of PIL images, tensor [3, H, W] or [N, 3, H, W] in [-1, 1] -> [N, 3, size, size]
    float32."""
    if isinstance(images, torch.Tensor):
        x = images.unsqueeze(0) if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image tensor [N, 3, H, W] or [3, H, W] in [-1, 1], "
                             f"got {tuple(images.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected a floating-point tensor in [-1, 1], got {x.dtype}")
        x = x.float()
        if quantize:
            levels = torch.floor((x.clamp(-1, 1) + 1) * 127.5 + 0.5)
            return pil_bicubic_resize(levels, size) / 127.5 - 1
        if tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp(-1, 1)  # Pillow clips the bicubic overshoot to the 8-bit range
        return x
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if len(images) == 0:
            raise ValueError("no images to invert")
        return torch.stack([_pil_to_tensor(im, size) for im in images])
    return _pil_to_tensor(images, size).unsqueeze(0)


def _as_state_dict(obj, source: str) -> dict[str, torch.Tensor]:
    """Normalise a loaded checkpoint to a flat {name: tensor} state dict."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise GOAEWeightsError(f"{source}: expected a state dict (mapping of names to tensors), "
                               f"got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise GOAEWeightsError(f"{source}: entries that are not named tensors: {bad[:5]}")
    state = dict(obj)
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file without executing code: safetensors, or torch.load(weights_only=True)."""
    if not path.is_file():
        raise FileNotFoundError(f"GOAE encoder weights not found: {path} (the GOAE release's encoder_FFHQ.pt; "
                                f"see `python -m guide_core weights status`)")
    if path.suffix == ".safetensors":
        return _as_state_dict(load_safetensors(path)[0], str(path))
    try:
        obj = load_torch(path)
    except Exception as err:  # pickles that need code, truncated or foreign files: said in our words, not torch's
        raise GOAEWeightsError(f"{path}: cannot be read as plain tensor data with weights_only=True "
                               f"({tensor_file_refusal(path, err)})") from None
    return _as_state_dict(obj, str(path))


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Compare a state dict with the model's layout; one error listing missing, unexpected and mis-shaped entries."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape (file != model)", mis_shaped)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise GOAEWeightsError(f"{source} does not match the GOAE encoder architecture; " + "; ".join(problems))


def load_goae(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
              mlp_layer: int = 2) -> GOAEncoder:
    """Build the GOAE encoder and load weights strictly (a file path or an in-memory state dict); eval mode, frozen. The
    original runs the encoder in train mode (never calls .eval()), so its stochastic depth (rate up to 0.2) and
    cross-attention dropout (0.1) make every inversion random; here the encoder is deterministic by default."""
    if isinstance(path_or_state_dict, Mapping):
        state, source = _as_state_dict(path_or_state_dict, "state dict"), "state dict"
    elif isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        state, source = _read_checkpoint(path), str(path)
    else:
        raise TypeError(f"load_goae expects a path or a state dict, got {type(path_or_state_dict).__name__}")
    encoder = GOAEncoder(mlp_layer=mlp_layer)
    check_state_dict(encoder, state, source)
    encoder.load_state_dict(state, strict=True)
    return encoder.to(device).eval().requires_grad_(False)
