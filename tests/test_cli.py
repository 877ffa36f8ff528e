# `python -m guide_core unlearn / eval / audit` end to end on a registered small random world: run directories,
# --json keys, determinism of eval, flags generated from LTUConfig, and one-line errors with exit code 2.
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from guide_core import registry, runs, testing
from guide_core.config import LTUConfig
from guide_core.engine import Progress, Unlearning
from guide_core.__main__ import main

MODEL = "random-small-clitest"
FAST = ["--model", MODEL, "--device", "cpu", "--iters", "3", "--lr", "3e-3", "--preview-every", "0"]


@pytest.fixture(scope="module", autouse=True)
def registered_world():
    torch.set_num_threads(1)
    cached = {}

    def factory(device: str):
        if "b" not in cached:  # one build per test module; the generator is never modified by a run
            cached["b"] = testing.random_bundle("small", device=device, seed=0)
        return cached["b"]

    registry.register_model(MODEL, factory, "small random world for CLI tests")
    yield
    registry.unregister_model(MODEL)


# A synthetic "photo" (a smooth colour pattern, no real person) saved as PNG.
def make_photo(path, seed: int = 0):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    pixels = np.stack([np.sin(6 * xx + rng.rand() * 3), np.cos(5 * yy + rng.rand() * 3), xx * yy], axis=-1)
    Image.fromarray(((pixels * 0.5 + 0.5) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    photo, other = make_photo(folder / "photo.png", 0), make_photo(folder / "other.png", 1)
    out = folder / "run"
    assert main(["unlearn", "--image", str(photo), "--out", str(out), "--others", str(other), *FAST]) == 0
    return out


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unlearn_writes_a_complete_run(run_dir):
    record = runs.read_run(run_dir)
    assert record["model"] == MODEL and record["completed"] and record["steps_done"] == 3
    assert record["config"]["iters"] == 3 and record["config"]["d"] == 30.0  # flag given / default kept
    source, = record["sources"]
    assert len(source["sha256"]) == 64 and len(source["others"]) == 1
    assert isinstance(record["metrics"]["id"], float) and isinstance(record["metrics"]["id_others"], float)
    assert np.asarray([o["w"] for o in source["others"]]).shape == (1, len(source["w_u"]), 512)


def test_eval_json_keys_and_determinism(run_dir, capsys):
    argv = ["eval", str(run_dir), "--json", "--n-fid", "8", "--device", "cpu", "--no-save"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    values = json.loads(out)
    assert {"id", "id_others", "fid_pre", "delta_fid_real"} <= set(values)
    assert values["delta_fid_real"] is None  # the random world has no real-image statistics
    assert all(isinstance(values[k], float) for k in ("id", "id_others", "fid_pre"))
    from guide_core import metrics
    metrics._SOURCE_FEATURES.clear()
    code, again, _ = run_cli(argv, capsys)
    assert code == 0 and json.loads(again) == values


def test_eval_table_and_saved_metrics(run_dir, capsys):
    code, out, err = run_cli(["eval", str(run_dir), "--n-fid", "6", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "ID (lower = identity erased)" in out and "FID features: random conv features" in out
    assert runs.read_run(run_dir)["metrics"]["n_fid"] == 6


def test_eval_default_sample_count_on_cpu_is_printed_with_progress(run_dir, capsys, monkeypatch):
    from guide_core import metrics
    small = registry.load_bundle(MODEL, "cpu")
    assert metrics.default_n_fid(small) == metrics.N_FID_CPU_SMALL  # 32 px world on the CPU
    monkeypatch.setattr(metrics, "N_FID_CPU_SMALL", 5)  # the rule, not its value, is under test: keep it fast
    code, out, err = run_cli(["eval", str(run_dir), "--json", "--device", "cpu", "--no-save"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_fid"] == 5
    assert "FID on 5 samples per generator on cpu" in err and "--n-fid 5000" in err
    for stage in ("ID renders", "ID_others renders", "FID samples of G_u"):  # one tqdm bar per long stage
        assert stage in err, f"no progress bar for {stage!r} in {err!r}"


def test_audit_json(run_dir, capsys):
    fast = ["--steps", "2", "--samples", "8", "--refine-steps", "1", "--device", "cpu"]
    code, out, err = run_cli(["audit", str(run_dir), "--json", "--no-save", *fast], capsys)
    assert code == 0, err
    values = json.loads(out)
    assert list(values["tiers"]) == ["sample", "encoder", "encoder_refine", "typical_w", "typical_wplus", "w", "wplus"]
    for tier in values["tiers"].values():
        assert {"best_id_before", "best_id_after", "stranger_after", "held", "code_distance"} <= set(tier)
        assert isinstance(tier["held"], bool) and tier["code_distance"]["p99"] > tier["code_distance"]["median"] > 0
    assert len(values["strangers"]) == 3 and "strongest_held" in values and values["sentence"]
    assert values["best_id_after"] == max(t["best_id_after"] for t in values["tiers"].values())
    held = [name for name, tier in values["tiers"].items() if tier["held"]]
    assert values["held"] == held
    code, out, err = run_cli(["audit", str(run_dir), "--json", "--tiers", "encoder", "wplus", "--strangers", "1",
                              *fast], capsys)
    assert code == 0, err
    values = json.loads(out)
    assert list(values["tiers"]) == ["encoder", "wplus"] and len(values["strangers"]) == 1
    assert list(runs.read_run(run_dir)["metrics"]["audit"]["tiers"]) == ["encoder", "wplus"]
    code, out, err = run_cli(["audit", str(run_dir), *fast, "--tiers", "w", "--strangers", "1"], capsys)
    assert code == 0, err
    assert any(line.split()[:1] == ["w"] for line in out.splitlines()) and "The erasure" in out, out


def test_dry_run_writes_nothing(tmp_path, capsys):
    photo = make_photo(tmp_path / "p.png")
    code, out, err = run_cli(["unlearn", "--image", str(photo), "--out", str(tmp_path / "r"), "--dry-run", *FAST],
                             capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["identities"][0]["|w_t - w_avg|"] == pytest.approx(30.0, rel=1e-4)
    assert plan["config"]["alpha_max"] == 15.0 and plan["method"] == "guide"
    assert not (tmp_path / "r").exists()


def test_flags_come_from_ltu_config(capsys):
    with pytest.raises(SystemExit):
        main(["unlearn", "--help"])
    text = capsys.readouterr().out
    for flag in ("--d", "--alpha-max", "--lambda-l2", "--lambda-per", "--lambda-id", "--n-adj", "--n-glob",
                 "--lambda-adj", "--lambda-glob", "--lr", "--iters", "--yaw-range", "--pitch", "--seed", "--others",
                 "--dry-run"):
        assert flag in text, flag
    assert "default: 15.0" in text and "default: 1000" in text


# A model's own LTU defaults (bundle.ltu_defaults) fill the flags that were not given; given flags win.
def test_model_defaults_fill_missing_flags(tmp_path, capsys):
    def factory(device: str):
        world = testing.random_bundle("small", device=device, seed=0)
        world.ltu_defaults = LTUConfig(iters=2, alpha_max=5.0)
        return world

    registry.register_model("random-small-defaults", factory)
    try:
        photo = make_photo(tmp_path / "p.png")
        base = ["unlearn", "--image", str(photo), "--model", "random-small-defaults", "--device", "cpu",
                "--preview-every", "0", "--no-eval"]
        assert run_cli([*base, "--out", str(tmp_path / "a")], capsys)[0] == 0
        assert run_cli([*base, "--out", str(tmp_path / "b"), "--iters", "1"], capsys)[0] == 0
    finally:
        registry.unregister_model("random-small-defaults")
    a, b = runs.read_run(tmp_path / "a"), runs.read_run(tmp_path / "b")
    assert (a["steps_done"], a["config"]["alpha_max"], a["config"]["d"]) == (2, 5.0, 30.0)
    assert (b["steps_done"], b["config"]["alpha_max"]) == (1, 5.0)


def test_interrupt_leaves_no_run(tmp_path, capsys, monkeypatch):
    photo = make_photo(tmp_path / "p.png")

    def interrupted(self):
        yield Progress(step=1, total=3, losses={k: 0.0 for k in ("total", "local", "adjacency", "global")})
        raise KeyboardInterrupt

    monkeypatch.setattr(Unlearning, "run", interrupted)
    code, _, err = run_cli(["unlearn", "--image", str(photo), "--out", str(tmp_path / "r"), *FAST], capsys)
    assert code == 130 and "no run was written" in err
    assert not (tmp_path / "r").exists() and [p.name for p in tmp_path.iterdir()] == ["p.png"]


@pytest.mark.parametrize("case", ["missing_photo", "not_an_image", "unknown_model", "bad_run_dir", "missing_weights",
                                  "bad_setting", "existing_out"])
def test_errors_are_one_line_and_exit_2(case, tmp_path, capsys, run_dir):
    photo = make_photo(tmp_path / "p.png")
    (tmp_path / "text.png").write_text("not an image")
    argv = {
        "missing_photo": ["unlearn", "--image", str(tmp_path / "none.jpg"), "--out", str(tmp_path / "r"), *FAST],
        "not_an_image": ["unlearn", "--image", str(tmp_path / "text.png"), "--out", str(tmp_path / "r"), *FAST],
        "unknown_model": ["unlearn", "--image", str(photo), "--out", str(tmp_path / "r"), "--model", "nope"],
        "bad_run_dir": ["eval", str(tmp_path), "--json"],
        "missing_weights": ["unlearn", "--image", str(photo), "--out", str(tmp_path / "r"), "--model", "eg3d-ffhq"],
        "bad_setting": ["unlearn", "--image", str(photo), "--out", str(tmp_path / "r"), *FAST, "--n-adj", "-1"],
        "existing_out": ["unlearn", "--image", str(photo), "--out", str(run_dir), *FAST],
    }[case]
    if case == "missing_weights":
        from guide_core import weights
        if weights.is_installed("eg3d-ffhq"):
            pytest.skip("released weights installed here")
    code, out, err = run_cli(argv, capsys)
    assert code == 2, (case, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    expected = {"missing_photo": "does not exist", "not_an_image": "", "unknown_model": "known models",
                "bad_run_dir": "not a complete guide run", "missing_weights": "missing weight files",
                "bad_setting": "n_adj", "existing_out": "already exists"}[case]
    assert expected in lines[0], lines[0]


# The embedded default world end to end through the CLI (skipped until its weights are trained / shipped).
def test_default_world_end_to_end(tmp_path, capsys):
    try:
        world = registry.load_bundle("default")
    except (FileNotFoundError, RuntimeError) as exc:
        pytest.skip(f"default world not available: {exc}")
    if world.encoder is None or "photo" not in world.extras:
        pytest.skip("default world has no encoder / example photos yet")
    photo = tmp_path / "person.png"
    world.extras["photo"](0, 0).save(photo)
    other = tmp_path / "person_other.png"
    world.extras["photo"](0, 1).save(other)
    out = tmp_path / "run"
    code, _, err = run_cli(["unlearn", "--image", str(photo), "--out", str(out), "--others", str(other),
                            "--iters", "2", "--preview-every", "0", "--device", "cpu"], capsys)
    assert code == 0, err
    code, text, err = run_cli(["eval", str(out), "--json", "--n-fid", "4", "--device", "cpu"], capsys)
    assert code == 0, err
    values = json.loads(text)
    assert values["id"] is not None and values["id_others"] is not None and values["fid_pre"] is not None
    code, text, err = run_cli(["audit", str(out), "--json", "--steps", "1", "--device", "cpu"], capsys)
    assert code == 0, err


# A generator unlearned elsewhere (here: guide's .safetensors of a changed copy) becomes a run eval measures; the
# delta holds exactly the changed tensors; another architecture is refused.
def test_import_of_a_foreign_unlearned_generator(tmp_path, capsys):
    from guide_core.eg3d.io import save_generator

    base = registry.load_bundle(MODEL, "cpu").G
    G_u = __import__("copy").deepcopy(base)
    with torch.no_grad():
        G_u.backbone.synthesis.b4.conv1.weight.add_(0.05)
    save_generator(G_u, tmp_path / "foreign.safetensors")
    photo = make_photo(tmp_path / "p.png")
    out = tmp_path / "imported"
    code, text, err = run_cli(["import", str(tmp_path / "foreign.safetensors"), "--image", str(photo), "--out",
                               str(out), "--model", MODEL, "--device", "cpu"], capsys)
    assert code == 0, err
    record = runs.read_run(out)
    assert record["delta"]["keys"] == ["backbone.synthesis.b4.conv1.weight"]
    assert record["extra"]["imported_from"]["changed_tensors"] == 1 and record["steps_done"] == 0
    loaded = runs.load_run(out, registry.load_bundle(MODEL, "cpu"))
    assert runs.state_fingerprint(loaded) == runs.state_fingerprint(G_u)
    code, text, err = run_cli(["eval", str(out), "--json", "--n-fid", "4", "--device", "cpu", "--no-save"], capsys)
    assert code == 0, err and json.loads(text)["id"] < 1.0
    other = testing.random_bundle("small", seed=0)
    other.G.backbone.synthesis.b4.conv1.weight = torch.nn.Parameter(torch.zeros(2, 2, 3, 3))
    save_generator(other.G, tmp_path / "wrong.safetensors")
    code, _, err = run_cli(["import", str(tmp_path / "wrong.safetensors"), "--image", str(photo), "--out",
                            str(tmp_path / "x"), "--model", MODEL, "--device", "cpu"], capsys)
    assert code == 2 and "architecture" in err and not (tmp_path / "x").exists()


# The official GUIDE unlearn.py's last.pkl ({"G_ema": ...}, persistent-class records) imports the same way; a pickle
# that names a global outside the allowlist is refused in one line and writes nothing.
def test_import_of_the_official_last_pkl_and_a_hostile_one(tmp_path, capsys):
    import copy
    import os
    import pickle

    from tests import released_files

    base = registry.load_bundle(MODEL, "cpu").G
    G_u = copy.deepcopy(base)
    with torch.no_grad():
        G_u.backbone.synthesis.b8.conv0.weight.mul_(1.1)
    released_files.write_guide_unlearned(tmp_path / "last.pkl", G_u)
    photo = make_photo(tmp_path / "p.png")
    code, _, err = run_cli(["import", str(tmp_path / "last.pkl"), "--image", str(photo), "--out",
                            str(tmp_path / "run"), "--model", MODEL, "--device", "cpu"], capsys)
    assert code == 0, err
    assert runs.read_run(tmp_path / "run")["delta"]["keys"] == ["backbone.synthesis.b8.conv0.weight"]
    code, out, err = run_cli(["audit", str(tmp_path / "run"), "--json", "--steps", "2", "--device", "cpu",
                              "--no-save"], capsys)
    assert code == 0, err and "best_id_after" in json.loads(out)

    class Hostile:
        def __reduce__(self):
            return os.system, ("true",)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": Hostile()}))
    code, _, err = run_cli(["import", str(tmp_path / "evil.pkl"), "--image", str(photo), "--out",
                            str(tmp_path / "evil"), "--model", MODEL, "--device", "cpu"], capsys)
    assert code == 2 and "system" in err and len(err.strip().splitlines()) == 1 and "weights_only" not in err
    assert not (tmp_path / "evil").exists()
