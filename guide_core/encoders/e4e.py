"""e4e inversion encoder (Tov et al., "Designing an Encoder for StyleGAN Image Manipulation", SIGGRAPH 2021 / ACM
TOG 40(4), the encoder4editing Encoder4Editing of its Sec. 4), the encoder of the released `e4e_ffhq_encode.pt`.

Same modules and parameter names as pSp's GradualStyleEncoder (guide_core.encoders.psp), but the w+ code is built
to stay close to W, which is what makes e4e's inversions editable: one base code w0 = head 0 (coarsest map) is
repeated on all 18 rows, and heads 1..17 each add a delta to their own row only. During training the deltas are
switched on one row at a time (the "progressive stage"); a constructed or loaded encoder is at the Inference stage
(18), i.e. every delta is active, and that is what the released checkpoint computes. The encoder returns the w+
OFFSETS [N, 18, 512]; the caller adds the checkpoint's `latent_avg` [18, 512] before decoding.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from .psp import N_STYLES, IRSEStyleEncoderBase, load_encoder

# e4e's ProgressiveStage: WTraining (0) trains w0 alone, stage k adds the delta of row k, Inference (18) uses all.
STAGE_W_ONLY = 0
STAGE_INFERENCE = N_STYLES


class Encoder4Editing(IRSEStyleEncoderBase):
    """e4e's encoder: images [N, 3, 256, 256] in [-1, 1] -> w+ offsets [N, 18, 512] = w0 on every row + per-row deltas.

    `progressive_stage` (0..18) says how many deltas are active: rows 1..min(stage, 17) get theirs. It is 18 after
    construction and loading, as in the original; lower values only reproduce the training schedule."""

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", n_styles: int = N_STYLES):
        super().__init__(num_layers, mode, n_styles)
        self.progressive_stage = STAGE_INFERENCE

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, 256, 256] -> codes [N, 18, 512] at the current progressive stage."""
        return self.codes_from_features(*self.features(images))

    def codes_from_features(self, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
                            stage: int | None = None) -> torch.Tensor:
        """The heads on precomputed body taps -> codes [N, 18, 512]; `stage` overrides `progressive_stage`."""
        stage = self.progressive_stage if stage is None else int(stage)
        if not 0 <= stage <= N_STYLES:
            raise ValueError(f"progressive stage must be in 0..{N_STYLES}, got {stage}")
        w0 = self.styles[0](c3)
        rows = [w0] * self.n_styles
        # The pyramid levels are built only when a delta needs them (the original builds them lazily too).
        levels: dict[str, torch.Tensor] = {"coarse": c3}
        for i in range(1, min(stage + 1, self.n_styles)):
            level = self.level_of(i)
            if level not in levels:
                if "middle" not in levels:
                    levels["middle"] = self.pyramid_middle(c2, c3)
                if level == "fine":
                    levels["fine"] = self.pyramid_fine(c1, levels["middle"])
            rows[i] = w0 + self.styles[i](levels[level])
        return torch.stack(rows, dim=1)


def load_e4e_encoder(state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu") -> Encoder4Editing:
    """e4e's Encoder4Editing from the `encoder.*` tensors of `e4e_ffhq_encode.pt` (prefix stripped or not), at the
    Inference stage (all deltas), eval mode, frozen."""
    return load_encoder(Encoder4Editing, state, device)
