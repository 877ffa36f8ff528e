# Test helpers: tensor comparison that reports the max difference, and the fixtures' recipe-generated weights.
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from tests.fixtures.build import load_io, load_seeded  # noqa: F401  (fixture files with their seeded tensors put back)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, name: str = "tensor", rel: bool = False):
    """Fail with the max |error| (or max |error| / max |expected| when rel) in the message."""
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.detach().to(torch.float64).cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    if rel:
        err = err / max(expected.abs().max().item(), 1e-30)
    assert err <= atol, f"{name}: max {'relative ' if rel else ''}|error| {err:.3e} > {atol:.1e}"
    return err


def recipe_state_dict(folder: Path, check_sha: bool = False) -> dict[str, torch.Tensor]:
    """Full official state_dict of a recipe fixture (goae / ir_se50 / ir101 / stylegan2): regenerated params + stored
    (or seeded) buffers."""
    recipe = json.loads((folder / "weights_recipe.json").read_text())
    state = load_seeded(folder, "state_dict.safetensors")
    for key, spec in recipe["params"].items():
        shape = spec["shape"]
        codes = np.random.RandomState(spec["seed"]).randint(spec["low"], spec["high"] + 1, size=int(np.prod(shape)),
                                                             dtype=np.int64)
        values = (spec["offset"] + codes.astype(np.float64) * spec["scale"]).astype(np.float32).reshape(shape)
        if check_sha:
            digest = hashlib.sha256(values.astype("<f4").tobytes(order="C")).hexdigest()
            assert digest == spec["sha256"], f"recipe regeneration of {key} is not bit-exact"
        state[key] = torch.from_numpy(values)
    return state


def people_of(bundle, n: int, seed: int, yaw: float = 0.0) -> torch.Tensor:
    """n faces the bundle's generator draws from seeded z, at a yaw offset: the small worlds' stand-ins for photos."""
    z = torch.randn(n, bundle.z_dim, generator=torch.Generator().manual_seed(seed))
    return bundle.render(bundle.G, bundle.map(bundle.G, z), yaw)
