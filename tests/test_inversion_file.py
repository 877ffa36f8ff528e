"""Reading pSp / e4e / StyleGAN2 release files as data: the kind is told from the file, and a truncated, foreign or
hostile file gets a one-line error that names the problem, with nothing in it run."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from guide_core.weights import UnsafeCheckpointError, load_inversion_checkpoint, read_inversion_checkpoint
from tests.released_files import write_inversion_checkpoint, write_stylegan2_checkpoint

OPTS = {"psp": {"encoder_type": "GradualStyleEncoder", "output_size": 1024, "device": "cuda:0"},
        "e4e": {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "device": "cuda:0"}}


def fake(tmp_path, kind: str = "psp", **changes):
    parts = {"encoder_state": {"body.0.weight": torch.ones(2, 2)}, "decoder_state": {"style.1.weight": torch.ones(3)},
             "opts": OPTS[kind], "latent_avg": torch.zeros(18, 512), **changes}
    return write_inversion_checkpoint(tmp_path / f"{kind}.pt", **parts)


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_the_file_says_whether_it_is_psp_or_e4e(tmp_path, kind):
    ckpt = read_inversion_checkpoint(fake(tmp_path, kind))
    assert ckpt.kind == kind and list(ckpt.encoder) == ["body.0.weight"] and list(ckpt.decoder) == ["style.1.weight"]
    assert ckpt.latent_avg.shape == (18, 512) and ckpt.latent_avg.device.type == "cpu"


def test_a_stylegan2_file_reads_as_generator_only(tmp_path):
    path = write_stylegan2_checkpoint(tmp_path / "sg2.pt", {"style.1.weight": torch.ones(3)}, torch.zeros(512))
    ckpt = read_inversion_checkpoint(path)
    assert ckpt.kind == "stylegan2" and not ckpt.encoder and ckpt.latent_avg.shape == (512,)


@pytest.mark.parametrize("change, message", [
    ({"opts": {"encoder_type": "BackboneEncoderUsingLastLayerIntoW"}}, "encoder_type"),
    ({"opts": {}}, "encoder_type"),
    ({"latent_avg": None}, "no latent_avg"),
    ({"decoder_state": {}}, "no decoder"),
])
def test_incomplete_or_foreign_layouts_are_refused_by_name(tmp_path, change, message):
    with pytest.raises(UnsafeCheckpointError, match=message):
        read_inversion_checkpoint(fake(tmp_path, **change))


def test_a_truncated_file_is_refused_in_one_line(tmp_path):
    path = fake(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnsafeCheckpointError) as error:
        read_inversion_checkpoint(path)
    assert "\n" not in str(error.value) and "truncated" in str(error.value)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_file_is_refused_and_nothing_in_it_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "psp_ffhq_encode.pt"
    torch.save({"state_dict": {"encoder.x": torch.ones(1)}, "opts": Payload(marker), "latent_avg": torch.zeros(1)},
               path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(UnsafeCheckpointError, match="nothing in it was run") as error:
        load_inversion_checkpoint(path)
    assert "system" in str(error.value) and not marker.exists()


def test_a_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_inversion_checkpoint(tmp_path / "nowhere.pt")
