"""The loading contract of the 2D release files: a pSp / e4e file with the full structure the training coach writes
(recipe-regenerated official weights from the parity fixtures, storages tagged cuda:0) goes through
``guide_core.weights.load_inversion_checkpoint`` to networks that reproduce the original outputs."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from guide_core.weights import load_inversion_checkpoint
from tests.released_files import write_inversion_checkpoint, write_stylegan2_checkpoint
from tests.util import assert_close, load_io, recipe_state_dict

FILES = {"psp": "psp_ffhq_encode.pt", "e4e": "e4e_ffhq_encode.pt"}


def released_file(fixtures_dir, tmp_path, name: str):
    """The fixture's model written as the released file, and the original's outputs."""
    folder = fixtures_dir / name
    state, io = recipe_state_dict(folder), load_io(folder)
    opts = dict(json.loads((folder / "checkpoint_layout.json").read_text())["top_level"]["opts"]["typical_values"])
    opts["device"] = "cuda:0"  # as saved on the authors' GPU
    split = {part: {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
             for part in ("encoder", "decoder")}
    path = write_inversion_checkpoint(tmp_path / FILES[name], split["encoder"], split["decoder"], opts,
                                      io["latent_avg"])
    return path, io


def check_contract(path, io):
    torch.set_num_threads(max(1, torch.get_num_threads()))
    encoder, generator, latent_avg = load_inversion_checkpoint(path)
    assert torch.equal(latent_avg, io["latent_avg"])
    with torch.no_grad():
        codes = encoder(io["imgs"])
        assert_close(codes, io["w_plus"], 1e-4, "absolute w+ (latent_avg added)")
        image = generator(io["w_plus"])
    assert image.shape == (2, 3, 1024, 1024)
    assert_close(F.adaptive_avg_pool2d(image, (256, 256)), io["image_pool256"], 1e-4, "image_pool256")
    assert_close(image[:, :, ::4, ::4], io["image_sub4"], 1e-4, "image_sub4")
    return generator


def test_a_psp_release_file_loads_to_the_original_networks(fixtures_dir, tmp_path):
    path, io = released_file(fixtures_dir, tmp_path, "psp")
    generator = check_contract(path, io)
    # the standalone rosinality file of the same decoder loads as generator-only
    sg2 = write_stylegan2_checkpoint(tmp_path / "stylegan2-ffhq-config-f.pt", generator.state_dict(),
                                     io["latent_avg"][0])
    encoder, alone, latent_avg = load_inversion_checkpoint(sg2)
    assert encoder is None and latent_avg.shape == (512,)
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), generator.state_dict().values()))


@pytest.mark.slow
def test_an_e4e_release_file_loads_to_the_original_networks(fixtures_dir, tmp_path):
    check_contract(*released_file(fixtures_dir, tmp_path, "e4e"))
