"""The IR / IR-SE residual face-recognition backbone (ArcFace, Deng et al., CVPR 2019; CurricularFace, Huang et al.,
CVPR 2020) with the module names of the released checkpoints, so `model_ir_se50.pth` (IDLoss, GUIDE §4 local loss)
and `CurricularFace_Backbone.pth` (the ID metric, GUIDE §5) load with strict key matching.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Units per stage for each supported depth; the four stages have widths 64/128/256/512.
UNITS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)
# The backbone is defined for 112x112 faces: four stride-2 stages leave a 7x7 map for the output projection.
INPUT_SIZE = 112
EMBEDDING_DIM = 512


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation gate (Hu et al., CVPR 2018): channel weights from the global mean, 1x1 convs without bias.
    """
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class ResidualUnit(nn.Module):
    """One improved-residual unit: pre-activation BN, two 3x3 convs (the second one strided), optional SE gate."""
    def __init__(self, in_channels: int, depth: int, stride: int, squeeze_excitation: bool):
        super().__init__()
        # A width change needs a learned projection; otherwise the 1x1 max-pool is plain stride-s subsampling.
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if squeeze_excitation:
            layers.append(SqueezeExcitation(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_stem_and_body(num_layers: int, mode: str) -> tuple[nn.Sequential, nn.Sequential]:
    """The stem (3x3 conv, BN, PReLU) and the four stages of residual units of an IR / IR-SE network; the first unit
    of each stage halves the resolution (stride 2, on its second conv). Shared with the pSp / e4e encoders' body."""
    stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
    units: list[nn.Module] = []
    in_channels = 64
    for width, count in zip(STAGE_WIDTHS, UNITS_PER_STAGE[num_layers]):
        for index in range(count):
            units.append(ResidualUnit(in_channels, width, 2 if index == 0 else 1, mode == "ir_se"))
            in_channels = width
    return stem, nn.Sequential(*units)


class IRBackbone(nn.Module):
    """The whole backbone: stem, four stages of residual units, then BN -> dropout -> linear -> BN1d to a 512-d vector.
    """
    def __init__(self, num_layers: int = 50, mode: str = "ir_se", drop_ratio: float = 0.6, affine_output: bool = True):
        super().__init__()
        if num_layers not in UNITS_PER_STAGE:
            raise ValueError(f"num_layers must be one of {sorted(UNITS_PER_STAGE)}, got {num_layers}")
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"mode must be 'ir' or 'ir_se', got {mode!r}")
        self.num_layers, self.mode = num_layers, mode
        self.input_layer, self.body = ir_stem_and_body(num_layers, mode)
        final_size = INPUT_SIZE // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),  # (C, H, W) order, as the released linear weights expect
            nn.Linear(512 * final_size * final_size, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM, affine=affine_output),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d feature before the final L2 normalisation ([N,3,112,112] in [-1,1] -> [N,512])."""
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"IR backbone expects faces of shape [N,3,{INPUT_SIZE},{INPUT_SIZE}], got {tuple(x.shape)}")
        return self.output_layer(self.body(self.input_layer(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length embedding; divided by the plain L2 norm (no epsilon), as the released models do."""
        feat = self.features(x)
        return feat / feat.norm(p=2, dim=1, keepdim=True)
