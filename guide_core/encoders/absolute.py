"""An inversion encoder that predicts offsets from the mean latent, as a module that returns absolute codes.

GOAE and the embedded world's encoder predict w+ - w̄; a bundle's encoder returns w+ itself. Keeping that sum a
module (rather than a closure) lets its parameters be copied and fine-tuned, as encoder-side unlearning does.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class OffsetEncoder(nn.Module):
    """images [N, 3, H, W] in [-1, 1] -> ``offset(images) + w_avg``; ``net`` holds the parameters, ``offset`` is how
    it is called (default: ``net`` itself)."""

    def __init__(self, net: nn.Module, w_avg: torch.Tensor,
                 offset: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.net = net
        self.register_buffer("w_avg", w_avg.detach().clone())
        self._offset = offset

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        offset = self.net(images) if self._offset is None else self._offset(self.net, images)
        return offset + self.w_avg
