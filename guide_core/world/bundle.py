"""The embedded world as a ModelBundle, registered as the "default" model.

The tiny tri-plane generator, its w_avg, the encoder (GOAE role), the identity net in the ArcFace / CurricularFace
roles, its feature maps as the perceptual distance (LPIPS role) and its embeddings as FID-style features. Weights come
from weights/default/ (shipped), or, before an export, from the training checkpoints in runs/world/ (written by
``python -m tools.world``). Nothing is downloaded; safetensors and weights_only torch.load only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from guide_core.bundle import ModelBundle
from guide_core.encoders.absolute import OffsetEncoder
from guide_core.config import LTUConfig
from guide_core.registry import register_model
from guide_core.weights.catalogue import SHIPPED_ROOT
from guide_core.world.cameras import AVG_CAMERA_PIVOT, AVG_CAMERA_RADIUS, FOV_DEGREES, frontal_camera

REPO = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = SHIPPED_ROOT / "default"  # the checkout's weights/default, or the installed package's copy
RUNS_DIR = REPO / "runs" / "world"
PHOTO_RESOLUTION = 64
FEATURE_NOTE = ("world identity-net embeddings (128-d, before normalisation) — the embedded world's FID-style "
                "features, not Inception: numbers are comparable only within the default world")


class WorldIdentity(torch.nn.Module):
    """The identity net behind the ``.embed`` interface of the engine and metrics (unit embeddings of images)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit identity embeddings of images in [-1, 1]."""
        return self.net(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The same unit embeddings as ``embed``."""
        return self.net(images)


class WorldFeatures(torch.nn.Module):
    """FID-style features: the identity net's embedding before L2 normalisation."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features [B, 128] of images in [-1, 1]."""
        return self.net.head(self.net.features(images)[-1])


def align_world_photo(image: Any) -> Any:
    """The world's photos are already aligned renders: check the picture and bring it to the encoder's 64 px."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    w, h = image.size
    if min(w, h) < 32:
        raise ValueError(f"photo is {w}x{h}; the default world needs at least 32x32 px")
    if abs(w - h) > 0.05 * max(w, h):
        raise ValueError(f"photo is {w}x{h}; the default world expects a square render of one of its people "
                         "(python -m tools.world render --out DIR writes some)")
    return image.convert("RGB").resize((PHOTO_RESOLUTION, PHOTO_RESOLUTION), Image.LANCZOS)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors as float32."""
    from safetensors.torch import load_file
    return {k: v.float() for k, v in load_file(str(path)).items()}


def _load_states() -> dict[str, tuple[dict[str, torch.Tensor], dict]]:
    """State dicts + configs of the three networks, from weights/default/ or else from the training checkpoints."""
    from guide_core.world.generator import checkpoint_config
    if (WEIGHTS_DIR / "generator.safetensors").exists():
        out = {}
        for name in ("generator", "identity", "encoder"):
            path = WEIGHTS_DIR / f"{name}.safetensors"
            if path.exists():
                config = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
                out[name] = (_read_safetensors(path), config)
        return out
    out = {}
    ckpt = RUNS_DIR / "generator" / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        out["generator"] = (state["G"], checkpoint_config(state))
    ckpt = RUNS_DIR / "identity" / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        out["identity"] = (state["net"], json.loads(state["config"]))
    ckpt = RUNS_DIR / "encoder" / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        out["encoder"] = (state["enc"], json.loads(state["config"]))
    return out


def load_world_nets(device: str = "cpu") -> dict[str, torch.nn.Module]:
    """The world's networks as plain modules: {"G", "identity", "encoder" (when trained)}."""
    from guide_core.world.encoder import load_world_encoder
    from guide_core.world.generator import load_world_generator
    from guide_core.world.identity import load_identity_net
    states = _load_states()
    missing = [name for name in ("generator", "identity") if name not in states]
    if missing:
        raise FileNotFoundError(
            f"the default world's {', '.join(missing)} weights are missing: expected {WEIGHTS_DIR}/*.safetensors "
            f"(shipped with the repository) or training checkpoints in {RUNS_DIR}; train them with "
            "`python -m tools.world train identity` / `train generator` and `python -m tools.world export`")
    nets = {"G": load_world_generator(*states["generator"]).to(device),
            "identity": load_identity_net(*states["identity"]).to(device)}
    if "encoder" in states:
        nets["encoder"] = load_world_encoder(*states["encoder"]).to(device)
    return nets


def world_photo(person: int, photo: int = 0, resolution: int = PHOTO_RESOLUTION) -> Any:
    """A photo of world person ``person`` as PIL (photo 0 is the reference photo, others vary expression/light/pose)."""
    from guide_core.world.examples import person_photos
    return person_photos(person, photo + 1, resolution)[photo]


def load_bundle(device: str = "cpu"):
    """ModelBundle of the default world (the engine, CLI and studio use it when nothing else is installed)."""
    from guide_core.world.identity import WorldPerceptual
    nets = load_world_nets(device)
    G = nets["G"]
    w_avg = G.backbone.mapping.w_avg.detach().clone()
    identity = WorldIdentity(nets["identity"])
    perceptual = WorldPerceptual(identity.net).eval().requires_grad_(False)
    # The world's encoder predicts an offset from the mean latent; the bundle's encoder returns absolute codes.
    encoder = OffsetEncoder(nets["encoder"], w_avg).eval() if "encoder" in nets else None
    return ModelBundle(
        name="default", G=G, w_avg=w_avg, cond_c=frontal_camera(1).to(device),
        id_loss_net=identity, id_metric_net=identity, perceptual=perceptual, encoder=encoder,
        encoder_resolution=PHOTO_RESOLUTION, feature_net=WorldFeatures(identity.net), feature_note=FEATURE_NOTE,
        align=align_world_photo, radius=AVG_CAMERA_RADIUS, fov_deg=FOV_DEGREES, pivot=AVG_CAMERA_PIVOT,
        description="embedded tiny world: procedural 3D heads, 64 px tri-plane generator, world identity net "
                    "(perceptual / ID / FID features are the world's own, see weights/default/MODEL_CARD.md)",
        ltu_defaults=WORLD_LTU_DEFAULTS, perceptual_uses_metric_net=True,
        extras={"photo": world_photo, "world": True, "id_threshold": identity_threshold()})


def identity_threshold() -> float:
    """The world identity net's verification threshold at FAR 1 %, measured on 522k impostor pairs when it was
    trained (weights/default/metrics.json)."""
    return float(json.loads((WEIGHTS_DIR / "metrics.json").read_text())["identity"]["threshold"])


# Where a run on the world starts (the CLI, the studio and the Python API alike); the measurements behind each value
# are in docs/world.md (benchmarks/world_erasure.py on persons 0-5). 160 LTU iterations instead of the paper's 1000,
# with lr 3e-4 instead of 1e-4 to make up for it, so that a run takes minutes on a CPU. N_g 4 and lambda_glob 5
# instead of 2 and 1, because the world's perceptual distance (identity-net features, not LPIPS) is smaller for the
# same change, so the paper's weights leave unrelated people too little protection. 3 of the 4 global latents are the
# random people nearest to w_u (n_glob_near, not in the paper): the edit spreads to w-neighbours, which uniformly
# random latents rarely are. alpha_max 7.5 instead of 15: a whole-code norm, as UFO's d, scaled to this world's
# distances in w. fp32 throughout: its 64 px convolutions are too small for bf16 to pay.
WORLD_LTU_DEFAULTS = LTUConfig(iters=160, preview_every=20, lr=3e-4, n_glob=4, n_glob_near=3, lambda_glob=5.0,
                               alpha_max=7.5, precision="fp32")

register_model("default", load_bundle, "the embedded tiny world (procedural heads, small networks, runs on a CPU)")
