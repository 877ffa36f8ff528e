# benchmarks/paper_table.py (the GUIDE README experiment as one command) on a small random world: both methods run
# through guide's CLI, the baseline really is the average target with the local loss alone, and the table shows the
# measured numbers beside the published ones.
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from guide_core import registry, testing
from guide_core import runs
from tests.test_cli import make_photo

MODEL = "random-small-papertable"
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_table.py"


@pytest.fixture(scope="module")
def paper_table():
    spec = importlib.util.spec_from_file_location("paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.set_num_threads(1)
    cached = {}
    registry.register_model(MODEL, lambda device: cached.setdefault(
        "b", testing.random_bundle("small", device=device, seed=0)))
    yield module
    registry.unregister_model(MODEL)


def photos_dir(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"aligned_{k}.jpg" for k in range(1, 6)]):
        make_photo(tmp_path / name, seed=i)
    return tmp_path


def test_paper_table_runs_both_methods_and_prints_published_numbers(paper_table, tmp_path, capsys):
    photos = photos_dir(tmp_path / "photos")
    out = tmp_path / "runs"
    argv = ["--photos", str(photos), "--model", MODEL, "--device", "cpu", "--iters", "2", "--n-fid", "4",
            "--out", str(out), "--json"]
    assert paper_table.main(argv) == 0
    text = capsys.readouterr().out
    assert all(f"| {m} | " in text for m in ("baseline", "guide", "legato", "sugar"))
    assert "/ 0.0183" in text and "/ 7.4970" in text and "/ 0.0818" in text  # published values beside ours
    assert "/ 6.0900" in text and "/ —" in text  # LEGATO's published FID_pre; SUGAR publishes no row of this protocol
    results = json.loads(text.strip().splitlines()[-1])
    assert runs.read_run(out / "legato")["method"] == "legato" and runs.read_run(out / "sugar")["method"] == "sugar"
    for method in ("baseline", "guide", "legato", "sugar"):
        assert all(isinstance(results[method][k], float) for k in ("id", "id_others", "fid_pre"))
        record = runs.read_run(out / method)
        assert record["completed"] and record["steps_done"] == 2 and len(record["sources"][0]["others"]) == 4
    baseline = runs.read_run(out / "baseline")["config"]
    assert baseline["d"] == 0 and baseline["n_adj"] == 0 and baseline["n_glob"] == 0  # w_t = w̄, local loss only
    w_u, w_t = runs.run_codes(runs.read_run(out / "baseline"))
    w_avg = registry.load_bundle(MODEL, "cpu").w_avg
    assert torch.allclose(w_t, w_avg.expand_as(w_t), atol=1e-6)
    assert runs.read_run(out / "guide")["config"]["d"] == 30.0


def test_paper_table_dry_run_and_missing_photos(paper_table, tmp_path, capsys):
    photos = photos_dir(tmp_path / "photos")
    assert paper_table.main(["--photos", str(photos), "--model", MODEL, "--dry-run", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert text.count("python -m guide_core unlearn") == 4 and "--iters 1000" in text and "--method sugar" in text
    assert not (tmp_path / "r").exists()
    (photos / "aligned_3.jpg").unlink()
    with pytest.raises(SystemExit, match="lacks aligned_3.jpg"):
        paper_table.main(["--photos", str(photos), "--model", MODEL])
    with pytest.raises(SystemExit, match="--photos DIR"):
        paper_table.main(["--photos", ""])
