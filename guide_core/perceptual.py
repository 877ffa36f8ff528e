"""LPIPS-VGG perceptual distance (Zhang et al., CVPR 2018), used by GUIDE's local and global losses (§4) through the
`lpips` package. Its linear heads ship inside the lpips wheel; the VGG16 ImageNet backbone comes from
weights/vgg16-397923af.pth (torchvision's file). Nothing is ever downloaded: lpips would ask torchvision for
pretrained weights, so the backbone is built empty and filled from the local file.

The perceptual-net protocol: any feature net used in place of LPIPS (e.g. the embedded world's) is a module called as
`net(x, y) -> [N]`, x and y [N,3,H,W] images in [-1,1] of equal shape, returning a per-sample distance that is >= 0,
0 for identical images, symmetric, and differentiable in both inputs; its own parameters stay frozen."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

VGG16_FILE = "vgg16-397923af.pth"
VGG16_WEIGHTS_NAME = "vgg16"  # the weights manager's name for that file
# torchvision's vgg16.features indices that lpips keeps, per slice (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
LPIPS_VGG_SLICES: tuple[tuple[int, range], ...] = (
    (1, range(0, 4)), (2, range(4, 9)), (3, range(9, 16)), (4, range(16, 23)), (5, range(23, 30)))
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


@runtime_checkable
class PerceptualNet(Protocol):
    """The call signature every perceptual net of the project provides (see the module docstring)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


def lpips_heads_path() -> Path:
    """Where the lpips wheel keeps its linear heads (v0.1, the calibrated release)."""
    import lpips
    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "vgg.pth"


def vgg16_path(weights_dir: str | Path | None = None) -> Path:
    """The VGG16 file to read: `weights_dir/vgg16-397923af.pth`, or the weights manager's location ($GUIDE_WEIGHTS_DIR
    or weights/); absent -> a FileNotFoundError saying where to put it and how to fetch it."""
    from guide_core.weights import MissingWeightsError, path_of
    path = Path(weights_dir) / VGG16_FILE if weights_dir is not None else path_of(VGG16_WEIGHTS_NAME)
    if not path.is_file():
        raise MissingWeightsError(
            f"LPIPS-VGG needs the torchvision VGG16 ImageNet weights {VGG16_FILE}, not found at {path}. Put the file "
            f"in {path.parent}/ (the project's weights/ folder by default, or $GUIDE_WEIGHTS_DIR), or run "
            f"`python -m guide_core weights fetch {VGG16_WEIGHTS_NAME}`.")
    return path


def vgg16_to_lpips(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision VGG16 keys (features.<i>.weight/bias) -> lpips keys (net.slice<s>.<i>.weight/bias); other keys, such
    as the classifier, are not used by LPIPS and are ignored."""
    slice_of = {index: number for number, indices in LPIPS_VGG_SLICES for index in indices}
    missing = [f"features.{i}.{p}" for i in VGG16_CONV_INDICES for p in ("weight", "bias")
               if f"features.{i}.{p}" not in state]
    if missing:
        raise ValueError(f"not a torchvision VGG16 state_dict: missing {len(missing)} keys: {', '.join(missing[:6])}"
                         + (" ..." if len(missing) > 6 else ""))
    return {f"net.slice{slice_of[i]}.{i}.{p}": state[f"features.{i}.{p}"]
            for i in VGG16_CONV_INDICES for p in ("weight", "bias")}


class Perceptual(nn.Module):
    """The LPIPS-VGG distance as a frozen module: Perceptual(...)(x, y) -> [N] for images in [-1,1].

    The VGG16 backbone is read from `vgg_state_dict` when given, else from `weights_dir` (default: the weights
    manager's vgg16 file) through the safe loaders; the linear heads from the lpips wheel."""

    def __init__(self, weights_dir: str | Path | None = None,
                 vgg_state_dict: Mapping[str, torch.Tensor] | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        import lpips
        from guide_core.weights import load_torch_state_dict
        if vgg_state_dict is None:
            vgg_state_dict = load_torch_state_dict(vgg16_path(weights_dir))
        state = vgg16_to_lpips(vgg_state_dict)
        heads = load_torch_state_dict(lpips_heads_path())
        # lpips keeps each head twice in its state_dict: as lin<k> and as lins.<k> (the same module).
        for key, value in heads.items():
            state[key] = value
            state["lins." + key[len("lin"):]] = value
        scaling = lpips.ScalingLayer()  # fixed ImageNet shift/scale buffers
        state["scaling_layer.shift"], state["scaling_layer.scale"] = scaling.shift, scaling.scale
        # pnet_rand=True keeps torchvision from fetching weights; building on the meta device skips a useless random
        # initialisation of the whole VGG16 (seconds); every tensor is then set from `state` by the strict load.
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # torchvision's deprecation notice for `pretrained=False`
            model = lpips.LPIPS(pretrained=False, net="vgg", pnet_rand=True, verbose=False)
        model.to_empty(device="cpu")
        expected = model.state_dict()
        wrong = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
                 if k in expected and v.shape != expected[k].shape]
        if wrong:
            raise ValueError(f"VGG16 / LPIPS weights have wrong shapes: {', '.join(wrong[:6])}")
        model.load_state_dict(state, strict=True)
        self.lpips = model.to(device)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Perceptual":
        """Always evaluated as released (the heads' dropout off), whatever a parent module's mode."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample LPIPS distance [N] between two [N,3,H,W] batches in [-1,1]; gradients flow into both inputs."""
        if x.shape != y.shape:
            raise ValueError(f"Perceptual: images must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Perceptual: expected images [N,3,H,W] in [-1,1], got {tuple(x.shape)}")
        if min(x.shape[2:]) < 16:
            raise ValueError(f"Perceptual: images of {tuple(x.shape[2:])} are too small for VGG16's 4 poolings")
        return self.lpips(x, y, normalize=False).reshape(x.shape[0])
