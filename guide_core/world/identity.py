"""The world's identity network: its architecture, its perceptual distance, and loading it back from saved weights.

The face-recognition role that ArcFace IR-SE50 plays for real photos in GUIDE (Seo et al. CVPR 2024): a small residual
CNN mapping a 64 px render to an L2-normalised embedding, trained with the CosFace large-margin loss (Wang et al. CVPR
2018) across identities, poses, expressions, lighting and glasses (the trainer is ``tools.world.identity``). Its
intermediate feature maps also serve as the world's perceptual distance and its embeddings as the world's FID-style
features (stated in weights/default/MODEL_CARD.md and wherever a metric is shown).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 64


class ResidualBlock(nn.Module):
    """Residual block with a strided projection shortcut (the IR block of ArcFace backbones, shrunk)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Half the resolution, ``cout`` channels."""
        return self.body(x) + self.shortcut(x)


class IdentityNet(nn.Module):
    """Image [-1,1] -> unit embedding; ``features`` exposes the stage maps used as the world's perceptual features."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), embed_dim: int = 128):
        super().__init__()
        self.config = {"widths": list(widths), "embed_dim": embed_dim}
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 5, 2, 2, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.PReLU(widths[0]))
        self.stages = nn.ModuleList(ResidualBlock(a, b) for a, b in zip(widths[:-1], widths[1:]))
        side = INPUT_SIZE // 2 ** len(widths)
        self.head = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.Flatten(), nn.Dropout(0.1),
                                  nn.Linear(widths[-1] * side * side, embed_dim), nn.BatchNorm1d(embed_dim))

    @staticmethod
    def prepare(x: torch.Tensor) -> torch.Tensor:
        """Bring any image batch to the network's input size (bilinear, antialiased when shrinking)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's and every stage's feature maps, shallowest first."""
        h = self.stem(self.prepare(x))
        maps = [h]
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit embeddings [B, embed_dim] of images in [-1, 1]."""
        return F.normalize(self.head(self.features(x)[-1]), dim=1)


def identity_similarity(net: IdentityNet, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the identities in two image batches (the GUIDE ID metric's role)."""
    return (net(a) * net(b)).sum(1)


class WorldPerceptual(nn.Module):
    """The world's perceptual distance, built on the identity net's feature maps.

    Channel-normalised feature maps, squared differences averaged over positions and stages (LPIPS's recipe, Zhang et
    al. CVPR 2018, with unit channel weights), divided by 4 (the largest squared distance of unit vectors) so that it
    spans [0, 1] like LPIPS and GUIDE's lambda_per keeps its scale.
    """

    def __init__(self, net: IdentityNet, stages: int = 3):
        super().__init__()
        self.net, self.stages = net, stages

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance [B] in [0, 1] between two image batches in [-1, 1]."""
        fa, fb = self.net.features(a), self.net.features(b)
        total = a.new_zeros(a.shape[0])
        for x, y in list(zip(fa, fb))[: self.stages]:
            x = x / (x.norm(dim=1, keepdim=True) + 1e-8)
            y = y / (y.norm(dim=1, keepdim=True) + 1e-8)
            total = total + (x - y).pow(2).sum(1).mean((1, 2))
        return total / (4 * self.stages)


def load_identity_net(state: dict[str, torch.Tensor], config: dict) -> IdentityNet:
    """Build the network from a state dict saved by training or export (config travels alongside as JSON)."""
    net = IdentityNet(tuple(config["widths"]), config["embed_dim"])
    net.load_state_dict(state)
    return net.eval()
