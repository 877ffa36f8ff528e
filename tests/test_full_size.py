# The real path end to end on a CPU, at full size: a weights folder holding every file of the eg3d-ffhq-rebalanced
# bundle in its released format (an EG3D training snapshot of the FULL ffhq512-128 architecture, GOAE, IR-SE50,
# IR-101, VGG16, Inception and real-image features, all with seeded random weights), then the CLI exactly as a user
# runs it (unlearn, eval, audit) and the studio's handlers (upload → UFO → unlearning → views → report).
# Random weights say nothing about erasure quality; what is checked is that every released format loads into the
# full-size pipeline and each stage produces real, finite numbers. About half an hour on 2 cores, hence `slow`.
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

MODEL = "eg3d-ffhq-rebalanced"
pytestmark = pytest.mark.slow


# The released ffhq512-128 generator architecture (keys_full.json of the EG3D fixture) with seeded random weights;
# w_avg set like a trained mapping's running mean, so w̄ comes from the buffer as for the real file.
def random_full_generator(fixtures_dir: Path, seed: int):
    from guide_core.eg3d import TriPlaneGenerator, camera_params

    config = json.loads((fixtures_dir / "eg3d" / "keys_full.json").read_text())
    torch.manual_seed(seed)
    G = TriPlaneGenerator(**config["init_kwargs"])
    G.neural_rendering_resolution = int(config["neural_rendering_resolution"])
    c = camera_params(0.0, 0.0).reshape(1, -1)
    with torch.no_grad():
        G.backbone.mapping.w_avg.copy_(G.mapping(torch.randn(256, 512), c.expand(256, -1)).mean(dim=(0, 1)))
    return G.eval(), config


# Every file of the bundle, in the released formats, in one weights folder.
@pytest.fixture(scope="module")
def weights_folder(tmp_path_factory, fixtures_dir):
    from guide_core import weights
    from guide_core.encoders.goae import GOAEncoder

    folder = tmp_path_factory.mktemp("weights")
    G, config = random_full_generator(fixtures_dir, seed=0)
    released_files.write_eg3d_snapshot(folder / weights.entry(MODEL)["file"], G, config=config)
    torch.manual_seed(1)
    released_files.write_goae_checkpoint(folder / weights.entry("goae")["file"], GOAEncoder().state_dict())
    released_files.write_shared_networks(folder)
    real = np.random.RandomState(6).rand(16, 2048).astype(np.float32)  # the shape of ffhq_real_feat.npy rows
    np.save(folder / weights.entry("ffhq-real-feat")["file"], real)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GUIDE_WEIGHTS_DIR", str(folder))
        torch.set_num_threads(max(1, torch.get_num_threads()))
        yield folder


@pytest.fixture(scope="module")
def photo(data_dir) -> Path:
    return sorted((data_dir / "celebahq_1024").glob("*.jpg"))[0]


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = guide_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# `unlearn --model eg3d-ffhq-rebalanced --iters 2`, as a user types it.
@pytest.fixture(scope="module")
def run_dir(weights_folder, photo, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    code = guide_main(["unlearn", "--model", MODEL, "--image", str(photo), "--out", str(out), "--iters", "2",
                       "--device", "cpu"])
    assert code == 0
    return out


def test_unlearn_changes_the_full_size_generator(run_dir):
    from guide_core.registry import load_bundle
    from guide_core.metrics import render_views

    record = runs.read_run(run_dir)
    assert record["model"] == MODEL and record["completed"] and record["steps_done"] == 2
    bundle = load_bundle(MODEL, "cpu")
    assert bundle.G.img_resolution == 512 and bundle.G.neural_rendering_resolution == 128
    G_u = runs.load_run(run_dir, bundle)
    w_u, _ = runs.run_codes(record)
    yaws = torch.zeros(1)
    before, after = render_views(bundle, bundle.G, w_u, yaws, 0.0), render_views(bundle, G_u, w_u, yaws, 0.0)
    assert before.shape == (1, 3, 512, 512)
    change = float((after - before).abs().max())
    assert change > 1e-4, f"two iterations left G_u's render unchanged (max |difference| {change:.2e})"
    assert math.isfinite(record["metrics"]["id"])


def test_eval_gives_finite_metrics(run_dir, capsys):
    code, out, err = cli(["eval", str(run_dir), "--n-fid", "8", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    values = json.loads(out)
    assert values["n_fid"] == 8
    for key in ("id", "fid_pre", "delta_fid_real"):
        assert values[key] is not None and math.isfinite(values[key]), (key, values[key])
    assert -1.0 <= values["id"] <= 1.0 and values["fid_pre"] >= 0.0
    assert "FID samples of G_u" in err  # the long stages show progress


def test_audit_runs(run_dir, photo, capsys):
    code, out, err = cli(["audit", str(run_dir), "--steps", "2", "--json", "--device", "cpu", "--tiers", "sample",
                          "encoder", "wplus", "--samples", "2", "--refine-steps", "1", "--strangers", "1",
                          "--impostor-people", "4"], capsys)
    assert code == 0, err
    values = json.loads(out)
    assert list(values["tiers"]) == ["sample", "encoder", "wplus"] and len(values["strangers"]) == 1
    for tier in values["tiers"].values():
        for key in ("best_id_before", "best_id_after", "stranger_after"):
            assert math.isfinite(tier[key]) and -1.0 <= tier[key] <= 1.0, (key, tier[key])
        assert math.isfinite(tier["code_distance"]["after"]) and isinstance(tier["held"], bool)
    assert math.isfinite(values["threshold"]) and values["sentence"]


def test_studio_flow_at_full_size(weights_folder, photo):
    from demo import handlers

    assert MODEL in handlers.available_models()
    source = handlers.upload_photo(str(photo), MODEL, 30.0, None)
    session = source.session
    assert session.current.w_u is not None and source.inversion.shape == (512, 512, 3)
    w_t = session.current.w_t
    assert float((w_t - session.current.w_u).norm()) > 0
    outputs = list(handlers.run_unlearning(session, 30.0, {"iters": 2}))
    assert session.run_state == "finished" and session.job.steps_done == 2
    assert "Finished 2/2 iterations" in outputs[-1].status
    view = handlers.render_view(20.0, 0.0, session)
    assert view.before.shape == view.after.shape == (512, 512, 3)
    assert not np.array_equal(view.before, view.after)
    # The ladder at full size is test_audit_runs's; here the report packages the run without it.
    report = handlers.report(session, audit_steps=0, n_fid=4)
    delta, run_json = (Path(p) for p in report.files)
    assert delta.is_file() and run_json.is_file() and "Attacker ladder" not in report.markdown
    record = json.loads(run_json.read_text())
    assert math.isfinite(record["metrics"]["id"]) and math.isfinite(record["metrics"]["fid_pre"])
    G_u = runs.load_run(run_json.parent, handlers.get_bundle(MODEL))
    assert runs.state_fingerprint(G_u) == runs.state_fingerprint(session.generator_u)


# What the official GUIDE unlearn.py writes ({"G_ema": ...} as last.pkl) imports as a run on the same base model,
# tensor for tensor, so eval and audit measure the official code's result like guide's own.
def test_official_unlearned_file_imports_onto_the_released_model(run_dir, photo, tmp_path, capsys):
    from guide_core.registry import load_bundle

    bundle = load_bundle(MODEL, "cpu")
    G_u = runs.load_run(run_dir, bundle)
    released_files.write_guide_unlearned(tmp_path / "last.pkl", G_u)
    out = tmp_path / "imported"
    code, text, err = cli(["import", str(tmp_path / "last.pkl"), "--image", str(photo), "--out", str(out),
                           "--model", MODEL, "--device", "cpu"], capsys)
    assert code == 0, err
    record = runs.read_run(out)
    assert sorted(record["delta"]["keys"]) == sorted(runs.read_run(run_dir)["delta"]["keys"])
    assert runs.state_fingerprint(runs.load_run(out, bundle)) == runs.state_fingerprint(G_u)
