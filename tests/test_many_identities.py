# Forgetting several identities on a small random world: two in one run are both erased while a third, not given, is
# kept; a chain's second run keeps the first identity erased; chain records round-trip and a changed root or parent
# is refused; and the CLI forms `unlearn --image A B C`, `--images-dir`, `--base-run`, per-identity `eval`.
from __future__ import annotations

import json

import pytest
import torch

from guide_core import registry, runs, testing
from guide_core.__main__ import main
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning
from guide_core.methods.guide import ufo_target
from tests.test_cli import make_photo, run_cli
from tests.test_guide import SHORT, render_distance

MODEL = "random-small-many"
FAST = ["--device", "cpu", "--iters", "3", "--lr", "3e-3", "--preview-every", "0"]


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    return testing.random_bundle("small", seed=0)


# Three identities of the small world (random offsets from the mean code, seeds 5, 6, 7).
@pytest.fixture(scope="module")
def people(bundle):
    avg = bundle.w_avg_code()
    return [(avg + 0.8 * torch.randn(bundle.num_ws, 512, generator=torch.Generator().manual_seed(s)))[None]
            for s in (5, 6, 7)]


# How far G_u(w) still is from its UFO target, relative to where it started (1 = untouched, 0 = on the target).
def erasure_ratio(bundle, G_u, w) -> float:
    w_t = ufo_target(w, bundle.w_avg, LTUConfig().d)
    return render_distance(bundle, G_u, w, bundle.G, w_t) / render_distance(bundle, bundle.G, w, bundle.G, w_t)


# How much G_u changed a person's renders, relative to the distance an erasure would move them.
def drift_ratio(bundle, G_u, w) -> float:
    w_t = ufo_target(w, bundle.w_avg, LTUConfig().d)
    return render_distance(bundle, G_u, w, bundle.G, w) / render_distance(bundle, bundle.G, w, bundle.G, w_t)


def named(*names: str) -> list[dict]:
    return [runs.source_record(name) for name in names]


# Two identities share one Adam step per iteration, so they get twice a single run's iterations (measured on this
# world: after SHORT's 20, b was only at 0.80 of its distance to the target; after 40, 0.19).
@pytest.fixture(scope="module")
def two_at_once(bundle, people):
    return Unlearning(bundle, torch.cat(people[:2]), cfg=LTUConfig(**{**SHORT, "iters": 40}),
                      sources=named("a", "b")).run_all()


# A chain on disk: run 1 forgets a, run 2 continues from run 1's G_u and forgets b.
@pytest.fixture(scope="module")
def chain(bundle, people, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    first = Unlearning(bundle, people[0], cfg=LTUConfig(**SHORT), sources=named("a")).run_all()
    runs.save_run(folder / "run1", first)
    G_1 = runs.load_run(folder / "run1", bundle)
    link = runs.base_run_record(folder / "run1", runs.read_run(folder / "run1"), G_1)
    second = Unlearning(bundle, people[1], cfg=LTUConfig(**SHORT), sources=named("b"), base=G_1,
                        base_run=link, forgotten=runs.forgotten_codes(link)).run_all()
    runs.save_run(folder / "run2", second)
    return folder, first, second


def test_two_identities_in_one_run_are_both_erased_and_a_third_is_kept(bundle, people, two_at_once):
    for name, w in zip("ab", people[:2]):
        ratio = erasure_ratio(bundle, two_at_once.G_u, w)
        assert ratio <= 0.5, f"identity {name} only fell to {ratio:.3f} of its distance to the target"
    kept = drift_ratio(bundle, two_at_once.G_u, people[2])
    assert kept <= 0.1, f"identity c, not given, drifted by {kept:.3f} of an erasure"
    assert erasure_ratio(bundle, two_at_once.G_u, people[2]) >= 0.9


def test_adjacency_turns_cover_every_identity(bundle, people):
    from guide_core.engine.draws import adjacency_sources

    cfg = LTUConfig(n_adj_sources=2)
    seen = torch.cat([adjacency_sources(step, 3, cfg) for step in range(3)])
    assert torch.bincount(seen, minlength=3).tolist() == [2, 2, 2]
    assert adjacency_sources(0, 2, cfg) is None and adjacency_sources(0, 5, LTUConfig(n_adj_sources=0)) is None
    run = Unlearning(bundle, torch.cat(people), cfg=LTUConfig(**{**SHORT, "iters": 4, "n_adj_sources": 1}),
                     sources=named("a", "b", "c")).run_all()
    assert run.completed and all(r["adjacency"] > 0 for r in run.history)


def test_the_chain_keeps_the_first_identity_erased(bundle, people, chain):
    _, first, second = chain
    assert erasure_ratio(bundle, first.G_u, people[1]) >= 0.9  # b untouched by run 1
    for name, w in zip("ab", people[:2]):
        ratio = erasure_ratio(bundle, second.G_u, w)
        assert ratio <= 0.5, f"after run 2, identity {name} is at {ratio:.3f} of its distance to the target"


# Without the earlier identity in the global loss (n_glob_forgotten 0), run 2's pull toward the original G_s gives it
# back (measured: a at 0.42 of its distance to the target after run 1; after run 2, 0.57 without, 0.10 with it).
def test_earlier_identities_in_the_global_loss_keep_them_forgotten(bundle, people, chain):
    folder, _, second = chain
    G_1 = runs.load_run(folder / "run1", bundle)
    link = runs.base_run_record(folder / "run1", runs.read_run(folder / "run1"), G_1)
    without = Unlearning(bundle, people[1], cfg=LTUConfig(**SHORT, n_glob_forgotten=0), sources=named("b"), base=G_1,
                         base_run=link, forgotten=runs.forgotten_codes(link)).run_all()
    kept, drifted = erasure_ratio(bundle, second.G_u, people[0]), erasure_ratio(bundle, without.G_u, people[0])
    assert kept < drifted - 0.05, f"a at {kept:.3f} with the forgotten codes kept, {drifted:.3f} without"


def test_chain_records_round_trip(bundle, chain):
    folder, first, second = chain
    record = runs.read_run(folder / "run2")
    link = record["base_run"]
    assert link["path"] == str((folder / "run1").resolve()) and link["base_run"] is None
    assert link["sources"] == runs.read_run(folder / "run1")["sources"]
    assert link["delta_sha256"] == runs.read_run(folder / "run1")["delta"]["sha256"]
    assert link["fingerprint"] == runs.state_fingerprint(runs.load_run(folder / "run1", bundle))
    assert [(s["name"], s["run"]) for s in runs.chain_sources(record)] == [("a", 0), ("b", 1)]
    assert record["root_fingerprint"] == runs.state_fingerprint(bundle.G)
    G_2 = runs.load_run(folder / "run2", bundle)
    assert runs.state_fingerprint(G_2) == runs.state_fingerprint(second.G_u)
    w_u, w_t = runs.run_codes(record)
    assert torch.equal(w_u, second.w_u) and torch.equal(w_t, second.w_t)


def test_a_chain_whose_root_or_parent_changed_is_refused(bundle, people, chain, tmp_path):
    import shutil

    folder, _, _ = chain
    other = testing.random_bundle("small", seed=7)
    with pytest.raises(ValueError, match=r"root of its chain of runs\) changed since run"):
        runs.load_run(folder / "run2", other)
    copy = tmp_path / "chain"
    shutil.copytree(folder, copy)
    record = json.loads((copy / "run2" / "run.json").read_text())
    record["base_run"]["path"] = str((copy / "run1").resolve())
    (copy / "run2" / "run.json").write_text(json.dumps(record))
    assert runs.load_run(copy / "run2", bundle) is not None
    replaced = Unlearning(bundle, people[2], cfg=LTUConfig(**{**SHORT, "iters": 2}), sources=named("c")).run_all()
    runs.save_run(copy / "run1", replaced, overwrite=True)
    with pytest.raises(ValueError, match="which changed since"):
        runs.load_run(copy / "run2", bundle)
    shutil.rmtree(copy / "run1")  # a parent that is gone is no error: the delta is relative to the root
    assert runs.load_run(copy / "run2", bundle) is not None


def test_old_single_identity_records_are_read_in_the_current_shape(bundle, two_at_once, tmp_path):
    run_dir = runs.save_run(tmp_path / "run", two_at_once)
    record = json.loads((run_dir / "run.json").read_text())
    sources = record.pop("sources")
    record.update(format="guide-run/1", base_fingerprint=record.pop("root_fingerprint"),
                  w_u=[s["w_u"] for s in sources], w_t=[s["w_t"] for s in sources],
                  source={"path": "/photos/alice.jpg", "sha256": "1" * 64, "others": [{"path": "/photos/x.jpg"}]},
                  extra={"w_others": [sources[0]["w_u"]]})
    del record["base_run"]
    (run_dir / "run.json").write_text(json.dumps(record))
    upgraded = runs.read_run(run_dir)
    assert [s["name"] for s in upgraded["sources"]] == ["alice", "identity 2"]
    assert upgraded["sources"][0]["sha256"] == "1" * 64 and upgraded["sources"][0]["others"][0]["w"] == sources[0]["w_u"]
    assert runs.state_fingerprint(runs.load_run(run_dir, bundle)) == runs.state_fingerprint(two_at_once.G_u)


# ---- the CLI ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def registered(bundle):
    registry.register_model(MODEL, lambda device: bundle, "small random world for many-identity tests")
    registry.register_model(MODEL + "-other", lambda device: testing.random_bundle("small", seed=7), "")
    yield
    registry.unregister_model(MODEL)
    registry.unregister_model(MODEL + "-other")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return [make_photo(folder / f"p{k}.png", k) for k in range(4)]


@pytest.fixture(scope="module")
def cli_chain(photos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-chain")
    first, second = folder / "first", folder / "second"
    assert main(["unlearn", "--image", *map(str, photos[:3]), "--out", str(first), "--model", MODEL, *FAST]) == 0
    assert main(["unlearn", "--base-run", str(first), "--image", str(photos[3]), "--out", str(second), *FAST]) == 0
    return first, second


def test_unlearn_several_images_in_one_run(cli_chain):
    record = runs.read_run(cli_chain[0])
    assert [s["name"] for s in record["sources"]] == ["p0", "p1", "p2"] and record["base_run"] is None
    assert len({s["sha256"] for s in record["sources"]}) == 3
    rows = record["metrics"]["per_identity"]
    assert [r["name"] for r in rows] == ["p0", "p1", "p2"] and not any(r["earlier"] for r in rows)
    assert record["metrics"]["id"] == pytest.approx(sum(r["id"] for r in rows) / 3)


def test_base_run_continues_the_chain_and_eval_measures_every_identity(cli_chain, capsys):
    first, second = cli_chain
    record = runs.read_run(second)
    assert record["model"] == MODEL  # taken from the base run
    assert record["base_run"]["path"] == str(first.resolve())
    assert [s["name"] for s in record["base_run"]["sources"]] == ["p0", "p1", "p2"]
    code, out, err = run_cli(["eval", str(second), "--json", "--n-fid", "4", "--device", "cpu", "--no-save"], capsys)
    assert code == 0, err
    values = json.loads(out)
    assert [(r["name"], r["earlier"]) for r in values["per_identity"]] == [
        ("p0", True), ("p1", True), ("p2", True), ("p3", False)]
    assert values["id"] == pytest.approx(values["per_identity"][-1]["id"])
    G_1 = runs.load_run(first, registry.load_bundle(MODEL))
    G_2 = runs.load_run(second, registry.load_bundle(MODEL))
    assert runs.state_fingerprint(G_1) != runs.state_fingerprint(G_2)
    code, out, err = run_cli(["audit", str(second), "--json", "--steps", "1", "--samples", "4", "--refine-steps", "1",
                              "--device", "cpu", "--no-save"], capsys)
    assert code == 0, err
    audited = json.loads(out)
    assert audited["forgotten"] == ["p0", "p1", "p2", "p3"]  # the whole chain, one batch
    assert [r["name"] for r in audited["tiers"]["wplus"]["per_identity"]] == ["p0", "p1", "p2", "p3"]


def test_images_dir_layout_and_dry_run_plan(photos, cli_chain, tmp_path, capsys):
    people = tmp_path / "people"
    (people / "alice").mkdir(parents=True)
    (people / "bob").mkdir()
    for k, target in ((0, people / "alice" / "1.png"), (1, people / "alice" / "2.png"), (2, people / "bob" / "a.jpg")):
        target.write_bytes(photos[k].read_bytes())
    (people / "alice" / "notes.txt").write_text("not a photo")
    code, out, err = run_cli(["unlearn", "--images-dir", str(people), "--out", str(tmp_path / "r"), "--dry-run",
                              "--base-run", str(cli_chain[1]), *FAST], capsys)
    assert code == 0, err
    plan = json.loads(out)
    assert [(i["name"], len(i["others"])) for i in plan["identities"]] == [("alice", 1), ("bob", 0)]
    assert plan["identities"][0]["photo"].endswith("alice/1.png")
    assert plan["forgotten_before"] == ["p0", "p1", "p2", "p3"] and not (tmp_path / "r").exists()


def test_many_identity_flags_fail_with_one_line(photos, cli_chain, tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "x.png").write_bytes(photos[0].read_bytes())
    cases = [
        (["--image", str(photos[0]), str(photos[1]), "--others", str(photos[2])], "--others belongs to a single"),
        (["--images-dir", str(flat)], "put each person's photos in a folder of their own"),
        (["--image", str(photos[0]), str(flat / "x.png")], "the same photo is given for two identities"),
        ([], "nothing to forget"),
        (["--image", str(photos[0]), "--base-run", str(cli_chain[0]), "--model", MODEL + "-other"],
         "whose weights differ"),
    ]
    for flags, message in cases:
        code, _, err = run_cli(["unlearn", *flags, "--out", str(tmp_path / "r"), "--model", MODEL, *FAST]
                               if "--model" not in flags else ["unlearn", *flags, "--out", str(tmp_path / "r"), *FAST],
                               capsys)
        assert code == 2 and message in err, (flags, err)
        assert not (tmp_path / "r").exists()
