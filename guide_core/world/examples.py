"""Example photos of world people (the studio's and the CLI's "photos" when the default world is used)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from guide_core.world.cameras import camera_params
from guide_core.world.heads import random_z, render_z, same_identity_z

# People of the examples come from their own seed range, apart from the training and held-out sets.
EXAMPLE_SEED = 5_000_000


def person_latents(person: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and cameras of ``n`` photos of world person ``person``.

    Photo 0 faces the camera; later ones vary pose, expression and light.
    """
    anchor = random_z(1, EXAMPLE_SEED + person)
    z = torch.cat([anchor, same_identity_z(anchor, n - 1, EXAMPLE_SEED + person + 10_000_000)]) if n > 1 else anchor
    g = torch.Generator().manual_seed(EXAMPLE_SEED + person)
    yaw = torch.cat([torch.zeros(1), (torch.rand(n - 1, generator=g) - 0.5) * 0.8])
    pitch = torch.cat([torch.zeros(1), (torch.rand(n - 1, generator=g) - 0.5) * 0.3])
    return z, camera_params(yaw, pitch)


def person_photos(person: int, n: int = 1, resolution: int = 64) -> list[Any]:
    """PIL photos of one person."""
    from PIL import Image
    z, c = person_latents(person, n)
    images = render_z(z, c, resolution).image
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(p) for p in pixels]


def write_examples(out: Path, n: int = 6, seed: int = 0, resolution: int = 128) -> list[Path]:
    """Write ``n`` people x 3 photos as PNG files; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for person in range(seed, seed + n):
        for k, photo in enumerate(person_photos(person, 3, resolution)):
            path = out / f"person{person:03d}_photo{k}.png"
            photo.save(path)
            paths.append(path)
    return paths
