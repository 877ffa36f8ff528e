"""Rendered training data of the world, training checkpoints, and the trainers' progress bar.

Data sets are people x photos with their latents, cameras, images and depth, written in chunks so that a long
background render can stop and resume. The identity network, the generator and the encoder all train on these renders
(the generator learns G(mapping(z), c) ~ render(params_from_z(z), c)).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from guide_core.files import atomic_path
from guide_core.progress import progress_bar
from guide_core.world.cameras import camera_params, sample_yaw_pitch
from guide_core.world.heads import random_z, render_z, same_identity_z

CHUNK_IDS = 32
# The rendered data sets, name: (people, photos per person, seed, supersampling). Rendering is cheap, so the generator
# sees 3072 training people. Training renders use one sample per pixel (4x cheaper): regressing onto many aliased edges
# converges to their average, the anti-aliased render. Held-out renders are 2x2 supersampled, the true picture every
# evaluation compares against (aliased targets would cap any generator's PSNR; docs/world.md).
DATASETS = {"train": (3072, 6, 0, 1), "heldout": (256, 4, 1, 2)}
# Seconds between redraws of a trainer's bar: long trainings run in the background with their output in a log file.
BAR_INTERVAL_S = 10


def training_bar(total: int, desc: str, initial: int = 0):
    """The progress bar of a trainer (guide_core.progress's), redrawn at most every BAR_INTERVAL_S seconds."""
    bar = progress_bar(total, desc, initial=initial)
    bar.mininterval = BAR_INTERVAL_S
    return bar


@dataclass
class WorldData:
    """A loaded data set: one row per photo."""

    z: torch.Tensor  # [N, Z_DIM] float32
    c: torch.Tensor  # [N, 25] float32
    image: torch.Tensor  # [N, 3, H, W] uint8
    depth: torch.Tensor  # [N, 1, H, W] float16, ray distance
    person: torch.Tensor  # [N] int64, identity label

    def __len__(self) -> int:
        return self.z.shape[0]

    def images(self, idx: torch.Tensor) -> torch.Tensor:
        """Images as float in [-1, 1] (the generator's range)."""
        return self.image[idx].float() / 127.5 - 1

    def to(self, device) -> "WorldData":
        """The same rows on another device (a GPU run keeps the whole set there: no copy per step)."""
        return WorldData(*(getattr(self, f.name).to(device) for f in fields(self)))


def render_chunk(k: int, photos: int, seed: int, resolution: int, supersample: int = 1) -> dict[str, torch.Tensor]:
    """Render chunk ``k``: CHUNK_IDS people x ``photos`` photos, seeded by (seed, k) so that chunks are independent."""
    base = seed * 1_000_003 + k * 7919
    anchors = random_z(CHUNK_IDS, base)
    z = torch.cat([same_identity_z(anchors[i], photos, base + 1 + i) for i in range(CHUNK_IDS)])
    yaw, pitch = sample_yaw_pitch(len(z), torch.Generator().manual_seed(base + 99991))
    c = camera_params(yaw, pitch)
    out = render_z(z, c, resolution, supersample=supersample)
    image = ((out.image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    person = torch.arange(CHUNK_IDS).repeat_interleave(photos) + k * CHUNK_IDS
    return {"z": z, "c": c, "image": image, "depth": out.depth.half(), "person": person}


def render_dataset(folder: Path, n_ids: int, photos: int, seed: int, supersample: int = 1, resolution: int = 64,
                   progress: bool = True, workers: int = 1) -> None:
    """Render (or resume rendering) a data set of ``n_ids`` people into folder/chunk_XXXX.pt."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_chunks = -(-n_ids // CHUNK_IDS)
    todo = [(folder, k, photos, seed, resolution, supersample) for k in range(n_chunks)
            if not (folder / f"chunk_{k:04d}.pt").exists()]
    bar = progress_bar(n_chunks, f"render {folder.name}", enabled=progress, unit="chunk",
                       initial=n_chunks - len(todo))
    if workers > 1 and len(todo) > 1:
        # Chunks are independent and seeded by their index: the same files whatever the number of workers.
        import multiprocessing
        with multiprocessing.get_context("spawn").Pool(workers, torch.set_num_threads, (1,)) as pool:
            for _ in pool.imap_unordered(_render_chunk_file, todo):
                bar.update(1)
    else:
        for job in todo:
            _render_chunk_file(job)
            bar.update(1)
    bar.close()


def _render_chunk_file(job: tuple) -> None:
    """One chunk rendered and written (a pool worker's job: picklable arguments, nothing returned)."""
    folder, k, photos, seed, resolution, supersample = job
    path = folder / f"chunk_{k:04d}.pt"
    chunk = render_chunk(k, photos, seed, resolution, supersample)
    with atomic_path(path) as tmp:  # a killed render never leaves a chunk that looks complete
        torch.save(chunk, tmp)


def load_dataset(folder: Path) -> WorldData:
    """Load every finished chunk of a folder (possibly while rendering continues)."""
    paths = sorted(Path(folder).glob("chunk_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no rendered chunks in {folder}; run `python -m tools.world render-data`")
    parts = [torch.load(p, weights_only=True) for p in paths]
    return WorldData(*(torch.cat([p[f.name] for p in parts]) for f in fields(WorldData)))


def save_checkpoint(path: Path, tensors: dict, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
                    history: list) -> None:
    """Write a training checkpoint of one of the world's networks.

    It holds the networks' tensors (``tensors``, e.g. {"G": state_dict}), optimiser, data-order RNG, step and loss
    history. Written atomically, so a run killed while saving keeps its previous checkpoint.
    """
    state = _on_cpu({**tensors, "opt": opt.state_dict(), "step": step, "history": json.dumps(history),
                     "gen": gen.get_state()})
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _on_cpu(obj):
    """Every tensor of a nested dict / list on the CPU: a checkpoint written by a GPU run opens without a GPU."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def load_checkpoint(path: Path, gen: torch.Generator) -> dict | None:
    """The state of a checkpoint written by save_checkpoint, with the RNG already restored; None when there is none.

    The caller loads its networks (and its optimiser, which may depend on them).
    """
    if not path.exists():
        return None
    state = torch.load(path, weights_only=True, map_location="cpu")
    gen.set_state(state["gen"])
    state["history"] = json.loads(state["history"])
    return state


def load_exported(weights_dir: Path, name: str) -> tuple[dict[str, torch.Tensor], str, dict]:
    """One exported network read back to go on training it: tensors, config text and metrics.

    Reads weights/default/<name>.safetensors + .json and its metrics.json section, so that sessions whose runs/ folder
    is gone go on from what was shipped.
    """
    from safetensors.torch import load_file
    path = Path(weights_dir) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no exported {name} in {weights_dir} ({path.name})")
    metrics = json.loads((Path(weights_dir) / "metrics.json").read_text()).get(name, {})
    return load_file(str(path)), (Path(weights_dir) / f"{name}.json").read_text(), metrics
