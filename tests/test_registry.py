# The model registry (worlds found by name, failures that say what they are), the bundle's own LTU defaults, atomic
# file writes, and the fixtures' seeded inputs.
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from guide_core import files, registry, testing
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning
from tests.fixtures import build as fixtures

REPO = fixtures.HERE.parents[1]


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'nobody'.*default.*eg3d-ffhq-rebalanced"):
        registry.load_bundle("nobody")


# A world whose module fails to import fails with its own error, never as a quiet "not available".
def test_an_import_error_inside_a_world_surfaces_as_itself(tmp_path, monkeypatch):
    (tmp_path / "broken_world.py").write_text("import a_module_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "BUILTIN_MODULES", ("broken_world",))
    monkeypatch.setattr(registry, "_imported", False)
    with pytest.raises(ModuleNotFoundError, match="a_module_that_is_not_installed"):
        registry.available_models()


# Importing the library in a fresh interpreter pulls no world in: the registry imports them on first use only, and
# a world imports the registry, never the other way round at import time.
def test_no_import_circle_between_the_registry_and_the_worlds():
    code = ("import sys, guide_core.registry, guide_core.bundle; "
            "print(sorted(m for m in sys.modules if m.startswith('guide_core.world') or m == 'guide_core.released'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]", out
    code = "import guide_core.world.bundle, guide_core.registry as r; print(sorted(r._REGISTRY))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "['default']", out


# Unlearning without a cfg starts from the bundle's own defaults; an explicit cfg wins.
def test_unlearning_starts_from_the_bundles_ltu_defaults():
    bundle = testing.random_bundle("small", seed=0)
    bundle.ltu_defaults = LTUConfig(iters=7, lr=2e-3)
    w_u = bundle.w_avg_code().unsqueeze(0) + 1.0
    assert (Unlearning(bundle, w_u).cfg.iters, Unlearning(bundle, w_u).cfg.lr) == (7, 2e-3)
    assert Unlearning(bundle, w_u, cfg=LTUConfig(iters=3)).cfg.iters == 3
    assert registry.load_bundle("default").ltu_defaults.iters == 160  # the world's shorter schedule


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "record.json"
    files.atomic_write(target, "old")
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
    files.atomic_write(target, b"new")
    assert target.read_text() == "new"
    assert files.sha256_file(target) == "11507a0e2f5e69d5dfa40a62a1bd7b6ee57e6bcd85c67c9b8431b36fff21c437"


# build.py stores an input as its seed only when the seed regenerates it bit-exactly; load_io puts it back exactly.
def test_fixture_inputs_travel_as_seeds_only_when_they_regenerate(tmp_path, monkeypatch):
    source = tmp_path / "source" / "net"
    source.mkdir(parents=True)
    x = fixtures.seeded_tensor("uniform", 11, [2, 3, 4, 4])
    save_file({"x": x, "y": x.sum(dim=1)}, str(source / "io.safetensors"))
    (source / "config.json").write_text("{}")
    monkeypatch.setitem(fixtures.SEEDED, "net", {"x": ("uniform", 11)})
    fixtures.build(source.parent, tmp_path / "out")
    stored = load_file(str(tmp_path / "out" / "net" / "io.safetensors"))
    assert sorted(stored) == ["y"] and json.loads((tmp_path / "out" / "net" / "seeded_inputs.json").read_text())
    assert torch.equal(fixtures.load_io(tmp_path / "out" / "net")["x"], x)
    monkeypatch.setitem(fixtures.SEEDED, "net", {"x": ("uniform", 12)})
    with pytest.raises(SystemExit, match="does not regenerate"):
        fixtures.build(source.parent, tmp_path / "again")


# The fixtures in the repository are complete: every parity folder, seeded inputs restored with their shapes.
def test_the_parity_fixtures_travel_with_the_repository(fixtures_dir):
    for name in ("eg3d", "goae", "ir_se50", "ir101"):
        assert (fixtures_dir / name / "io.safetensors").is_file(), name
    io = fixtures.load_io(fixtures_dir / "ir_se50")
    assert io["img_a512"].shape == (2, 3, 512, 512) and float(io["img_a"].min()) >= -1.0


# An installed package (no checkout around the code) finds the manifest and the default world in the copy pip put
# under <prefix>/share/guide/weights, and downloads into the user's cache; a checkout keeps its own weights/ folder.
def test_an_installed_package_finds_its_shipped_weights(tmp_path, monkeypatch):
    from guide_core.weights import catalogue

    installed = tmp_path / "prefix" / "share" / "guide" / "weights"
    (installed / "default").mkdir(parents=True)
    (installed / catalogue.MANIFEST_FILE).write_text("{}")
    monkeypatch.setattr(catalogue, "INSTALLED_WEIGHTS", installed)
    assert catalogue._shipped_root() == catalogue.REPO / "weights"  # this checkout wins
    monkeypatch.setattr(catalogue, "REPO", tmp_path / "site-packages")
    assert catalogue._shipped_root() == installed
    monkeypatch.setattr(catalogue, "IN_CHECKOUT", False)
    monkeypatch.delenv("GUIDE_WEIGHTS_DIR", raising=False)
    assert catalogue.weights_dir() == Path.home() / ".cache" / "guide" / "weights"
    monkeypatch.setenv("GUIDE_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert catalogue.weights_dir() == (tmp_path / "mine").resolve()
