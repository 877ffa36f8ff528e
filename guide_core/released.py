"""The released EG3D FFHQ worlds: the generator with GOAE, IR-SE50 (ArcFace role), IR-101 (CurricularFace role),
LPIPS-VGG, Inception for FID and the EG3D face crop, assembled from the weight files guide_core.weights manages.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from guide_core.bundle import ModelBundle
from guide_core.eg3d.camera import camera_params
from guide_core.config import LTUConfig
from guide_core.registry import register_file_loader, register_model

# Released-model worlds: bundle name -> (generator weight name, what it is). GUIDE's experiments use the rebalanced
# FFHQ checkpoint (unlearn.py's default `ffhqrebalanced512-128.pkl`).
EG3D_MODELS: dict[str, tuple[str, str]] = {
    "eg3d-ffhq": ("eg3d-ffhq", "EG3D FFHQ 512 (ffhq512-128) with GOAE, ArcFace, CurricularFace, LPIPS, Inception"),
    "eg3d-ffhq-rebalanced": ("eg3d-ffhq-rebalanced",
                             "EG3D FFHQ-rebalanced 512 (ffhqrebalanced512-128), the generator of the GUIDE paper"),
}
# Weight files the released-model bundle needs besides the generator (names known to guide_core.weights).
NET_WEIGHTS: dict[str, str] = {"encoder": "goae", "id_loss_net": "ir_se50", "id_metric_net": "curricularface",
                               "perceptual": "vgg16", "feature_net": "inception"}
INCEPTION_NOTE = "Inception-v3 pool features (pytorch-fid architecture, FID weights)"
# The paper's settings. compile_renderer stays an opt-in (--compile-renderer): its compiles (minutes on a CPU at 512 px,
# one per shape) are repaid over the paper's 1000 iterations, not over the short runs of a demo or a smoke test.
RELEASED_LTU_DEFAULTS = LTUConfig()


def released_generator_name(generator_name: str) -> str:
    """The weight name that fills a released generator: guide's converted .safetensors of it when installed (the same
    weights with no pickle to read; `weights publish` and a host's mirror provide it), else the original pickle. Only a
    manifest entry that declares itself converted from this very generator qualifies.
    """
    from guide_core import weights
    from guide_core.weights.catalogue import converted_name

    converted = converted_name(generator_name)
    return converted if converted is not None and weights.is_installed(converted) else generator_name


def required_weights(model: str) -> list[str]:
    """Every weight name a released model needs, its generator resolved as above (what "installed" means for a model).
    """
    return [released_generator_name(EG3D_MODELS.get(model, (model, ""))[0]), *NET_WEIGHTS.values()]


def require_all(names: dict[str, str]) -> dict[str, Path]:
    """Resolve every weight file a released-model bundle needs; one error names all that are missing."""
    from guide_core import weights

    found, missing = {}, []
    for role, weight_name in names.items():
        try:
            found[role] = Path(weights.require(weight_name))
        except Exception:  # noqa: BLE001 - every failure becomes one item of the combined message
            try:
                file = weights.entry(weight_name).get("file", "?")
            except Exception:  # noqa: BLE001 - an unknown name still gets listed
                file = "?"
            missing.append(f"{weight_name} ({file}, {role})")
    if missing:
        raise FileNotFoundError(f"missing weight files: {', '.join(missing)}; put them in {weights.weights_dir()} or "
                                "run `python -m guide_core weights fetch NAME` (how to get each: "
                                "`python -m guide_core weights status`)")
    return found


def _released_bundle(name: str, generator_name: str | None, generator_path: Path | None, device: str) -> ModelBundle:
    """The released EG3D generator with the real networks (GOAE encoder, IR-SE50 loss net, IR-101 metric net, LPIPS-VGG,
    Inception for FID, the EG3D face crop). Pivot (0, 0, 0): GUIDE's scripts read a rendering key that EG3D does not
    define (`avg_cam_pivot`) and so fall back to the origin; the paper's numbers were made with that camera.
    """
    from guide_core.eg3d import io as eg3d_io
    from guide_core.eg3d import mean_latent

    needed = dict(NET_WEIGHTS)
    if generator_name is not None:
        needed = {"generator": released_generator_name(generator_name), **needed}
    files = require_all(needed)
    G = eg3d_io.load_generator(files.get("generator", generator_path), device=device)
    w_avg = mean_latent.w_avg(G, generator_name or str(generator_path))

    from guide_core import faces
    from guide_core.encoders import load_goae
    from guide_core.encoders.absolute import OffsetEncoder
    from guide_core.identity import load_ir101, load_ir_se50
    from guide_core.perceptual import Perceptual

    goae = load_goae(files["encoder"], device=device)
    w_avg = torch.as_tensor(w_avg, dtype=torch.float32, device=device)

    encode = OffsetEncoder(goae, w_avg, lambda net, images: net.invert(images))  # GOAE predicts w+ - w̄

    cond_c = camera_params(0.0, 0.0, pivot=(0.0, 0.0, 0.0))
    return ModelBundle(
        name=name, G=G, w_avg=w_avg, cond_c=cond_c,
        id_loss_net=load_ir_se50(files["id_loss_net"], device=device).eval(),
        id_metric_net=load_ir101(files["id_metric_net"], device=device).eval(),
        perceptual=Perceptual(weights_dir=files["perceptual"].parent, device=device),
        encoder=encode, encoder_resolution=256,
        feature_net=InceptionFeatures(files["feature_net"], device), feature_note=INCEPTION_NOTE,
        align=lambda image: faces.align_face(image).image,
        pivot=(0.0, 0.0, 0.0), real_stats=optional_weight("ffhq-real-feat"),
        description=EG3D_MODELS.get(name, ("", f"generator {generator_path}"))[1], ltu_defaults=RELEASED_LTU_DEFAULTS)


def optional_weight(name: str) -> Path | None:
    """A weight file that improves a bundle but is not required (e.g. the real-image FID statistics)."""
    from guide_core import weights
    try:
        return Path(weights.require(name))
    except Exception:  # noqa: BLE001 - optional: absence only disables the metric that needs it
        return None


class InceptionFeatures(torch.nn.Module):
    """Inception-v3 pool features for FID, with pytorch-fid's architecture and the FID weights loaded from a LOCAL file.
    pytorch-fid fetches its weights by URL inside its constructor; it is handed the verified local state_dict instead,
    so nothing is ever downloaded. Images in [-1, 1] are snapped to 8-bit levels first, as the official evaluation
    saves PNGs and reads them back.
    """
    def __init__(self, weights_path: str | os.PathLike, device: str | torch.device = "cpu"):
        super().__init__()
        try:
            import pytorch_fid.inception as fid_inception
        except ImportError:
            raise RuntimeError("Inception features need the pytorch-fid package (pip install pytorch-fid==0.3.0)") \
                from None
        from guide_core.weights import load_torch_state_dict
        state = load_torch_state_dict(weights_path)
        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state
        try:
            self.net = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        finally:
            fid_inception.load_state_dict_from_url = original
        self.net.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        levels = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).float() / 255.0
        return self.net(levels)[0].flatten(1)


def released_file_bundle(path: Path, device: str) -> ModelBundle:
    """A bundle around a generator file given by path (a .pkl or .safetensors), with the released networks."""
    return _released_bundle(path.name, None, path, device)


for _name, (_weight, _text) in EG3D_MODELS.items():
    register_model(_name, lambda device, name=_name, weight=_weight: _released_bundle(name, weight, None, device), _text,
                   requires=lambda name=_name: required_weights(name))
register_file_loader((".pkl", ".safetensors"), released_file_bundle)
