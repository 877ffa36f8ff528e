# Rendered data sets of the world: people x photos with their latents, cameras, images and depth, written in chunks
# so that a long background render can stop and resume. The identity network, the generator and the encoder all
# train on these renders (the generator learns G(mapping(z), c) ~ render(params_from_z(z), c)).
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from guide_core.files import atomic_path
from guide_core.world.cameras import camera_params, sample_yaw_pitch
from guide_core.world.heads import random_z, render_z, same_identity_z

CHUNK_IDS = 32
# The rendered data sets, name: (people, photos per person, seed, supersampling). Rendering is cheap (about 5 s per 32
# people on one core), so the generator sees 3072 training people. Training renders use one sample per pixel (4x
# cheaper): regressing onto many aliased edges converges to their average, the anti-aliased render. Held-out renders are
# 2x2 supersampled, the true picture every evaluation compares against (one sample per pixel would cap any generator's
# PSNR near 29 dB: that is how far the aliased render sits from the 4x4-supersampled one).
DATASETS = {"train": (3072, 6, 0, 1), "heldout": (256, 4, 1, 2)}


# A loaded data set: one row per photo.
@dataclass
class WorldData:
    z: torch.Tensor  # [N, Z_DIM] float32
    c: torch.Tensor  # [N, 25] float32
    image: torch.Tensor  # [N, 3, H, W] uint8
    depth: torch.Tensor  # [N, 1, H, W] float16, ray distance
    person: torch.Tensor  # [N] int64, identity label

    def __len__(self) -> int:
        return self.z.shape[0]

    # Images as float in [-1, 1] (the generator's range).
    def images(self, idx: torch.Tensor) -> torch.Tensor:
        return self.image[idx].float() / 127.5 - 1

    # The same rows on another device (a GPU run keeps the whole set there: no copy per step).
    def to(self, device) -> "WorldData":
        return WorldData(*(getattr(self, f.name).to(device) for f in fields(self)))


# Render chunk `k`: CHUNK_IDS people with `photos` photos each; seeds derive from (seed, k) so chunks are independent.
def render_chunk(k: int, photos: int, seed: int, resolution: int, supersample: int = 1) -> dict[str, torch.Tensor]:
    base = seed * 1_000_003 + k * 7919
    anchors = random_z(CHUNK_IDS, base)
    z = torch.cat([same_identity_z(anchors[i], photos, base + 1 + i) for i in range(CHUNK_IDS)])
    yaw, pitch = sample_yaw_pitch(len(z), torch.Generator().manual_seed(base + 99991))
    c = camera_params(yaw, pitch)
    out = render_z(z, c, resolution, supersample=supersample)
    image = ((out.image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    person = torch.arange(CHUNK_IDS).repeat_interleave(photos) + k * CHUNK_IDS
    return {"z": z, "c": c, "image": image, "depth": out.depth.half(), "person": person}


# Render (or resume rendering) a data set of n_ids people into folder/chunk_XXXX.pt.
def render_dataset(folder: Path, n_ids: int, photos: int, seed: int, supersample: int = 1, resolution: int = 64,
                   progress: bool = True, workers: int = 1) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_chunks = -(-n_ids // CHUNK_IDS)
    todo = [(folder, k, photos, seed, resolution, supersample) for k in range(n_chunks)
            if not (folder / f"chunk_{k:04d}.pt").exists()]
    bar = tqdm(total=n_chunks, initial=n_chunks - len(todo), desc=f"render {folder.name}", disable=not progress)
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


# One chunk rendered and written (a pool worker's job: picklable arguments, nothing returned).
def _render_chunk_file(job: tuple) -> None:
    folder, k, photos, seed, resolution, supersample = job
    path = folder / f"chunk_{k:04d}.pt"
    chunk = render_chunk(k, photos, seed, resolution, supersample)
    with atomic_path(path) as tmp:  # a killed render never leaves a chunk that looks complete
        torch.save(chunk, tmp)


# Load every finished chunk of a folder (possibly while rendering continues).
def load_dataset(folder: Path) -> WorldData:
    paths = sorted(Path(folder).glob("chunk_*.pt"))
    if not paths:
        raise FileNotFoundError(f"no rendered chunks in {folder}; run `python -m guide_core.world render-data`")
    parts = [torch.load(p, weights_only=True) for p in paths]
    return WorldData(*(torch.cat([p[f.name] for p in parts]) for f in fields(WorldData)))


# Training checkpoints of the world's networks: the networks' tensors (`tensors`, e.g. {"G": state_dict}), optimiser,
# data-order RNG, step and loss history. Written atomically, so a run killed while saving keeps its previous
# checkpoint.
def save_checkpoint(path: Path, tensors: dict, opt: torch.optim.Optimizer, gen: torch.Generator, step: int,
                    history: list) -> None:
    state = _on_cpu({**tensors, "opt": opt.state_dict(), "step": step, "history": json.dumps(history),
                     "gen": gen.get_state()})
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


# Every tensor of a nested dict / list on the CPU: a checkpoint written by a GPU run opens on a machine without one.
def _on_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


# The state of a checkpoint written by save_checkpoint, with the RNG already restored; the caller loads its networks
# (and its optimiser, which may depend on them). None when there is nothing to resume.
def load_checkpoint(path: Path, gen: torch.Generator) -> dict | None:
    if not path.exists():
        return None
    state = torch.load(path, weights_only=True, map_location="cpu")
    gen.set_state(state["gen"])
    state["history"] = json.loads(state["history"])
    return state


# One exported network (weights/default/<name>.safetensors + .json, its metrics.json section) read back to go on
# training it: tensors, config text and metrics. Sessions whose runs/ folder is gone go on from what was shipped.
def load_exported(weights_dir: Path, name: str) -> tuple[dict[str, torch.Tensor], str, dict]:
    from safetensors.torch import load_file
    path = Path(weights_dir) / f"{name}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no exported {name} in {weights_dir} ({path.name})")
    metrics = json.loads((Path(weights_dir) / "metrics.json").read_text()).get(name, {})
    return load_file(str(path)), (Path(weights_dir) / f"{name}.json").read_text(), metrics
