"""GUIDE-SG2, the paper's 2D variant (Seo et al., CVPR 2024, App. A.7, Table 6): StyleGAN2 FFHQ 1024 with pSp or e4e.

One released file (``psp_ffhq_encode.pt`` / ``e4e_ffhq_encode.pt``) holds the encoder, the generator and latent_avg
(w̄); the identity loss is IR-SE50 and the metric IR-101, as for EG3D, both on the 256² pooled renders with pSp's IDLoss
crop; LPIPS-VGG and Inception as for EG3D. Photos are put in the FFHQ crop (guide_core.faces_ffhq). There is no
camera: the StyleGAN2 backend makes the local loss compare images (guide_core.backends.stylegan2).
"""
from __future__ import annotations

from pathlib import Path


from guide_core.backends import StyleGAN2Backend
from guide_core.bundle import ModelBundle
from guide_core.config import LTUConfig
from guide_core.registry import register_file_loader, register_model
from guide_core.released import INCEPTION_NOTE, InceptionFeatures, optional_weight, require_all

# Model name -> (the released file's weight name, what it is).
SG2_MODELS: dict[str, tuple[str, str]] = {
    "sg2-ffhq": ("psp-ffhq", "StyleGAN2 FFHQ 1024 (2D) with pSp, ArcFace, CurricularFace, LPIPS, Inception: GUIDE-SG2"),
    "sg2-ffhq-e4e": ("e4e-ffhq", "StyleGAN2 FFHQ 1024 (2D) with e4e, ArcFace, CurricularFace, LPIPS, Inception"),
}
# Weight files a 2D bundle needs besides its inversion file (names known to guide_core.weights).
NET_WEIGHTS: dict[str, str] = {"id_loss_net": "ir_se50", "id_metric_net": "curricularface", "perceptual": "vgg16",
                               "feature_net": "inception"}
# The paper's settings; the synthesis recomputes its activations in the backward pass, since at 1024 px each code's
# kept activations take several GB (a CPU with 24 GB cannot hold the 5 codes of one iteration otherwise).
SG2_LTU_DEFAULTS = LTUConfig(checkpoint_synthesis=True)


def required_weights(model: str) -> list[str]:
    """Every weight name a 2D model needs (what "installed" means for it)."""
    return [SG2_MODELS[model][0], *NET_WEIGHTS.values()]


def sg2_bundle(name: str, inversion_name: str | None, inversion_path: Path | None, device: str) -> ModelBundle:
    """A StyleGAN2 world from a pSp / e4e file (by weight name or path) and the shared identity / perceptual nets."""
    from guide_core.faces_ffhq import align_face_ffhq
    from guide_core.identity import load_ir101, load_ir_se50
    from guide_core.perceptual import Perceptual
    from guide_core.weights import load_inversion_checkpoint

    needed = dict(NET_WEIGHTS) if inversion_name is None else {"inversion": inversion_name, **NET_WEIGHTS}
    files = require_all(needed)
    encoder, G, latent_avg = load_inversion_checkpoint(files.get("inversion", inversion_path), device)
    if encoder is None:
        raise ValueError(f"{inversion_path} holds a generator only; a 2D model needs a pSp or e4e file (its encoder "
                         "turns photos into codes)")
    w_avg = latent_avg if latent_avg.ndim == 2 else latent_avg.expand(G.num_ws, -1)
    return ModelBundle(
        name=name, G=G, w_avg=w_avg, cond_c=None, backend=StyleGAN2Backend(),
        id_loss_net=load_ir_se50(files["id_loss_net"], device=device).eval(),
        id_metric_net=load_ir101(files["id_metric_net"], device=device, preprocessing="idloss").eval(),
        perceptual=Perceptual(weights_dir=files["perceptual"].parent, device=device),
        encoder=encoder, encoder_resolution=256,
        feature_net=InceptionFeatures(files["feature_net"], device), feature_note=INCEPTION_NOTE,
        align=lambda image: align_face_ffhq(image, 256).image,
        real_stats=optional_weight("ffhq-real-feat"),
        description=SG2_MODELS.get(name, ("", f"StyleGAN2 from {inversion_path}"))[1],
        ltu_defaults=SG2_LTU_DEFAULTS)


def sg2_file_bundle(path: Path, device: str) -> ModelBundle:
    """A 2D world around a pSp / e4e file given by path."""
    return sg2_bundle(path.name, None, path, device)


for _name, (_weight, _text) in SG2_MODELS.items():
    register_model(_name, lambda device, name=_name, weight=_weight: sg2_bundle(name, weight, None, device), _text,
                   requires=lambda name=_name: required_weights(name))
register_file_loader((".pt", ".pth"), sg2_file_bundle)
