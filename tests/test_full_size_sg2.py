"""The 2D pipeline (GUIDE-SG2) end to end on a CPU at full size: a weights folder holding a pSp release file with the
full structure the pSp coach writes (GradualStyleEncoder + StyleGAN2 FFHQ 1024 + latent_avg, random weights, storages
tagged cuda:0) and the shared networks (IR-SE50, IR-101, VGG16, Inception) in their released formats; then the CLI as a
user runs it (unlearn, eval, audit) and the studio's handlers. Random weights say nothing about erasure; what is
checked is that the released format loads into the full-size 2D pipeline and each stage gives real, finite numbers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from guide_core import runs
from guide_core.__main__ import main as guide_main
from tests import released_files

MODEL = "sg2-ffhq"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory, fixtures_dir):
    from guide_core import weights
    from guide_core.encoders import GradualStyleEncoder
    from guide_core.stylegan2 import StyleGAN2Generator

    folder = tmp_path_factory.mktemp("weights_sg2")
    torch.manual_seed(0)
    G = StyleGAN2Generator(size=1024)
    latent_avg = G.mean_latent(1024, generator=torch.Generator().manual_seed(1)).expand(18, -1).clone()
    opts = json.loads((fixtures_dir / "psp" / "checkpoint_layout.json").read_text())["top_level"]["opts"]
    released_files.write_inversion_checkpoint(folder / weights.entry("psp-ffhq")["file"],
                                              GradualStyleEncoder().state_dict(), G.state_dict(),
                                              opts["typical_values"], latent_avg)
    del G
    released_files.write_shared_networks(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GUIDE_WEIGHTS_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def photo(data_dir) -> Path:
    return sorted((data_dir / "celebahq_1024").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def run_dir(weights_folder, photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("full_sg2") / "run"
    assert guide_main(["unlearn", "--model", MODEL, "--image", str(photo), "--out", str(out), "--iters", "2",
                       "--device", "cpu"]) == 0
    return out


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = guide_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unlearn_changes_the_full_size_2d_generator(run_dir):
    from guide_core.registry import load_bundle

    record = runs.read_run(run_dir)
    assert record["model"] == MODEL and record["completed"] and record["steps_done"] == 2
    bundle = load_bundle(MODEL, "cpu")
    assert bundle.G.img_resolution == 1024 and bundle.num_ws == 18 and not bundle.has_camera
    G_u = runs.load_run(run_dir, bundle)
    w_u, _ = runs.run_codes(record)
    before, after = bundle.render(bundle.G, w_u), bundle.render(G_u, w_u)
    assert before.shape == (1, 3, 256, 256)
    change = float((after - before).abs().max())
    assert change > 1e-4, f"two iterations left G_u's render unchanged (max |difference| {change:.2e})"
    assert not any(key.startswith("style.") for key in record["delta"]["keys"])
    assert math.isfinite(record["metrics"]["id"])


def test_eval_and_audit_give_finite_numbers(run_dir, capsys):
    code, out, err = cli(["eval", str(run_dir), "--n-fid", "4", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    values = json.loads(out)
    assert -1.0 <= values["id"] <= 1.0 and math.isfinite(values["fid_pre"]) and values["fid_pre"] >= 0.0
    code, out, err = cli(["audit", str(run_dir), "--steps", "2", "--json", "--device", "cpu", "--tiers", "encoder",
                          "typical_wplus", "--refine-steps", "1", "--strangers", "1", "--impostor-people", "4"],
                         capsys)
    assert code == 0, err
    values = json.loads(out)
    assert set(values["tiers"]) == {"encoder", "typical_wplus"}
    assert all(math.isfinite(values[k]) and -1.0 <= values[k] <= 1.0 for k in ("best_id_before", "best_id_after"))
    typical = values["tiers"]["typical_wplus"]["code_distance"]
    assert typical["after"] <= typical["p99"] * 1.001


def test_studio_flow_on_the_2d_model(weights_folder, photo):
    from demo import handlers

    assert MODEL in handlers.available_models()
    yaw, _ = handlers.pose_controls(MODEL)
    assert yaw["interactive"] is False
    source = handlers.upload_photo(str(photo), MODEL, 30.0, None)
    session = source.session
    assert session.current.w_u.shape == (18, 512) and source.aligned.shape[:2] == (256, 256)
    outputs = list(handlers.run_unlearning(session, 30.0, {"iters": 1}))
    assert session.run_state == "finished" and "Finished 1/1 iterations" in outputs[-1].status
    view = handlers.render_view(20.0, 0.0, session)
    assert view.before.shape == view.after.shape and not np.array_equal(view.before, view.after)
    report = handlers.report(session, audit_steps=0, n_fid=2)  # the ladder at full size: the audit test above
    assert math.isfinite(json.loads(Path(report.files[1]).read_text())["metrics"]["id"])
