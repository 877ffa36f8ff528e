"""Export of the shipped weights: training checkpoints (runs/world/*/ckpt.pt) -> weights/default/.

Writes *.safetensors + JSON configs + metrics.json (the numbers of the model card, measured here on held-out people so
they are reproducible) + MODEL_CARD.md (``tools.world.card``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from guide_core.files import atomic_path
from guide_core.world.bundle import WEIGHTS_DIR
from guide_core.world.encoder import load_world_encoder
from guide_core.world.generator import generator_config, generator_from_checkpoint, synthesis_channels_of
from guide_core.world.identity import load_identity_net
from tools.world.card import model_card
from tools.world.data import load_dataset, load_exported
from tools.world.evaluate import (evaluate_encoder, evaluate_generator, multiview_psnr, render_verification,
                                  verification_tar)

SIZE_LIMIT_MB = 30.0


def _save(state: dict[str, torch.Tensor], config: dict, name: str, out: Path) -> Path:
    """One network as out/<name>.safetensors (float32, readable by everyone) with its config as out/<name>.json."""
    from safetensors.torch import save_file
    path = out / f"{name}.safetensors"
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().float() for k, v in state.items()}, str(tmp))
        tmp.chmod(0o644)  # shipped files, readable by everyone
    (out / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


@torch.no_grad()
def export_weights(runs: Path, out: Path = WEIGHTS_DIR) -> dict:
    """Export every trained network found under ``runs`` and measure its held-out metrics; returns metrics.json."""
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heldout = load_dataset(runs / "data" / "heldout")
    metrics: dict = {}
    idnet = None
    identity = _trained(runs, out, "identity", "net")
    if identity is not None:
        tensors, config, facts = identity
        idnet = load_identity_net(tensors, config)
        metrics["identity"] = {**facts, **verification_tar(idnet, heldout, far=0.01)}
        _save(idnet.state_dict(), config, "identity", out)
    G = None
    if (runs / "generator" / "ckpt.pt").exists():
        state = torch.load(runs / "generator" / "ckpt.pt", weights_only=True)
        G = generator_from_checkpoint(state)
        metrics["generator"] = {"steps": state["step"], "plane_resolution": G.backbone.synthesis.img_resolution,
                                "mapping_layers": G.backbone.mapping.num_layers,
                                "normalize_z": G.backbone.mapping.normalize_z,
                                **dict(zip(("channel_base", "channel_max"), synthesis_channels_of(state["G"]))),
                                "legs": json.loads(state.get("legs", "[]")), **_train_config(state),
                                **evaluate_generator(G, heldout, n=len(heldout)), **multiview_psnr(G)}
        _save(G.state_dict(), generator_config(G), "generator", out)
        if idnet is not None:
            metrics["identity"].update(render_verification(idnet, G, heldout))
    encoder = _trained(runs, out, "encoder", "enc") if G is not None else None
    if encoder is not None:
        tensors, config, facts = encoder
        enc = load_world_encoder(tensors, config)
        w_avg = G.backbone.mapping.w_avg
        metrics["encoder"] = {**facts, **evaluate_encoder(enc, G, w_avg, idnet, heldout, n=len(heldout))}
        _save(enc.state_dict(), config, "encoder", out)
    total = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2 ** 20
    metrics["total_size_mb"] = round(total, 2)
    if total > SIZE_LIMIT_MB:
        raise RuntimeError(f"exported weights take {total:.1f} MB, over the {SIZE_LIMIT_MB} MB budget")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(model_card(metrics))
    return metrics


def _train_config(state: dict) -> dict:
    """The training settings a checkpoint records, as metrics.json keeps them.

    The trainer's config of its last call (dataclasses.asdict); {} for a checkpoint written before it recorded them.
    """
    return {"train_config": json.loads(state["train_config"])} if "train_config" in state else {}


def _trained(runs: Path, out: Path, name: str, key: str) -> tuple[dict, dict, dict] | None:
    """A network's weights, config and training facts, or None when there is none.

    Facts: steps; the identity net's generator mix and pair weight; the trainer's config. From its training checkpoint
    under ``runs``, else the copy already exported in ``out`` (a session whose runs/ folder is gone, or a generator
    retrained alone), re-measured like a new one and marked as kept.
    """
    ckpt = runs / name / "ckpt.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        tensors, config, facts = state[key], json.loads(state["config"]), {"steps": state["step"]}
        recorded = {k: float(v) for k, v in state.items() if k in ("generator_mix", "lambda_pair")}
        recorded.update(_train_config(state))
    elif (out / f"{name}.safetensors").exists():
        tensors, text, metrics = load_exported(out, name)
        config, facts = json.loads(text), {"steps": metrics.get("steps", 0), "kept_from_export": True}
        recorded = {k: v for k, v in metrics.items() if k in ("generator_mix", "lambda_pair", "train_config")}
    else:
        return None
    if name == "identity":
        facts.update({"generator_mix": 0.0, "lambda_pair": 0.0})
    facts.update(recorded)
    return tensors, config, facts
