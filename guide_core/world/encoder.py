"""The world's inversion encoder: its architecture, and loading it back from saved weights.

The role GOAE plays for EG3D FFHQ in GUIDE (Seo et al. CVPR 2024, Sec. 3.1): a small CNN mapping a 64 px photo of a
world person to w+ = w_avg + offset [N, num_ws, 512]. It is trained where the answer is known (``tools.world.encoder``):
a rendered photo of latent z has the code mapping(z), so most steps regress codes directly (cheap); every few steps the
predicted code is also rendered through the frozen generator and compared with the photo (the re-render losses that
GOAE-style encoders optimise: L1 and, with the world identity net, identity).
"""
from __future__ import annotations

import torch
from torch import nn

from guide_core.world.identity import IdentityNet, ResidualBlock


class WorldEncoder(nn.Module):
    """Image [-1,1] -> offset from w_avg for every w+ row: a shared w (the person) plus small per-row refinements."""

    def __init__(self, num_ws: int, w_dim: int = 512, widths: tuple[int, ...] = (32, 64, 96, 128), hidden: int = 256):
        super().__init__()
        self.config = {"num_ws": num_ws, "w_dim": w_dim, "widths": list(widths), "hidden": hidden}
        self.num_ws, self.w_dim = num_ws, w_dim
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.PReLU(widths[0]))
        self.stages = nn.Sequential(*(ResidualBlock(a, b) for a, b in zip(widths[:-1], widths[1:])))
        side = 64 // 2 ** len(widths)
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, hidden), nn.LeakyReLU(0.2))
        self.shared = nn.Linear(hidden, w_dim)
        self.per_row = nn.Linear(hidden, num_ws * w_dim)
        nn.init.zeros_(self.per_row.weight)
        nn.init.zeros_(self.per_row.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Offsets from w_avg [N, num_ws, w_dim] for images [N, 3, H, W] in [-1, 1]."""
        h = self.trunk(self.stages(self.stem(IdentityNet.prepare(x))))
        offset = self.shared(h)[:, None, :] + self.per_row(h).view(-1, self.num_ws, self.w_dim)
        return offset


def load_world_encoder(state: dict[str, torch.Tensor], config: dict) -> WorldEncoder:
    """An encoder from a saved state dict and its config (``WorldEncoder.config``), frozen, in eval mode."""
    enc = WorldEncoder(config["num_ws"], config["w_dim"], tuple(config["widths"]), config["hidden"])
    enc.load_state_dict(state)
    return enc.eval().requires_grad_(False)
