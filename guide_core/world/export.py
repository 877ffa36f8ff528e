# Export of the shipped weights: training checkpoints (runs/world/*/ckpt.pt) -> weights/default/*.safetensors + JSON
# configs + metrics.json (the numbers of the model card), measured here on held-out people so they are reproducible.
from __future__ import annotations

import json
from pathlib import Path

import torch

from guide_core.world.bundle import WEIGHTS_DIR

SIZE_LIMIT_MB = 30.0


def _save(state: dict[str, torch.Tensor], config: dict, name: str, out: Path) -> Path:
    from safetensors.torch import save_file
    path = out / f"{name}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().float() for k, v in state.items()}, str(tmp))
    tmp.rename(path)
    (out / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


# Export every trained network found under `runs` and measure its held-out metrics.
@torch.no_grad()
def export_weights(runs: Path, out: Path = WEIGHTS_DIR) -> dict:
    from guide_core.world.data import load_dataset
    from guide_core.world.encoder import evaluate_encoder, load_world_encoder
    from guide_core.world.generator import (GENERATOR_KWARGS, NEURAL_RENDERING_RESOLUTION, PLANE_RESOLUTION,
                                            evaluate_generator, load_world_generator)
    from guide_core.world.identity import load_identity_net, verification_tar
    runs, out = Path(runs), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    heldout = load_dataset(runs / "data" / "heldout")
    metrics: dict = {}
    idnet = None
    if (runs / "identity" / "ckpt.pt").exists():
        state = torch.load(runs / "identity" / "ckpt.pt", weights_only=True)
        config = json.loads(state["config"])
        idnet = load_identity_net(state["net"], config)
        metrics["identity"] = {"steps": state["step"], **verification_tar(idnet, heldout, far=0.01)}
        _save(idnet.state_dict(), config, "identity", out)
    G = None
    if (runs / "generator" / "ckpt.pt").exists():
        state = torch.load(runs / "generator" / "ckpt.pt", weights_only=True)
        G = load_world_generator(state["G"])
        metrics["generator"] = {"steps": state["step"], **evaluate_generator(G, heldout, n=64)}
        config = {"init_kwargs": GENERATOR_KWARGS, "plane_resolution": PLANE_RESOLUTION,
                  "neural_rendering_resolution": NEURAL_RENDERING_RESOLUTION}
        _save(G.state_dict(), config, "generator", out)
    if G is not None and (runs / "encoder" / "ckpt.pt").exists():
        state = torch.load(runs / "encoder" / "ckpt.pt", weights_only=True)
        config = json.loads(state["config"])
        enc = load_world_encoder(state["enc"], config)
        w_avg = G.backbone.mapping.w_avg
        metrics["encoder"] = {"steps": state["step"], **evaluate_encoder(enc, G, w_avg, idnet, heldout, n=64)}
        _save(enc.state_dict(), config, "encoder", out)
    total = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2 ** 20
    metrics["total_size_mb"] = round(total, 2)
    if total > SIZE_LIMIT_MB:
        raise RuntimeError(f"exported weights take {total:.1f} MB, over the {SIZE_LIMIT_MB} MB budget")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
