# The attacker ladder: the model's own code distribution and its typical ball, each tier's attacker, the stranger
# baseline, "held" and the strongest tier held, on a small random world (the default world's run is in the slow tier).
from __future__ import annotations

import copy
import json

import pytest
import torch

from guide_core import ladder, testing
from guide_core.inversion import optimise_codes
from guide_core.typical import code_distribution
from tests.util import people_of


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    return testing.random_bundle("small", seed=0)


def test_mapped_codes_sit_inside_the_typical_ball_and_far_codes_do_not(bundle):
    codes = code_distribution(bundle, n=2048)
    assert 0 < codes.median < codes.p99
    z = torch.randn(512, bundle.z_dim, generator=torch.Generator().manual_seed(99))
    fresh = codes.distance(bundle.map(bundle.G, z))
    inside = float((fresh <= codes.p99).float().mean())
    assert 0.95 <= inside <= 1.0, f"{inside:.3f} of fresh mapped codes inside the 99 % ball"
    far = bundle.w_avg_code()[None] + 20 * torch.randn(2, bundle.num_ws, 512, generator=torch.Generator().manual_seed(1))
    assert bool((codes.distance(far) > 3 * codes.p99).all())
    pulled = codes.project(far)
    assert float(codes.row_distance(pulled).max()) == pytest.approx(codes.p99, rel=1e-4)
    typical = bundle.map(bundle.G, z[:4])
    kept = codes.project(typical)
    near = codes.row_distance(typical) <= codes.p99
    assert torch.equal(kept[near], typical[near])


def test_w_space_and_the_ball_constrain_the_optimiser(bundle):
    codes = code_distribution(bundle, n=2048)
    photo = people_of(bundle, 1, 3)
    start = bundle.w_avg_code()[None] + 5 * torch.randn(1, bundle.num_ws, 512, generator=torch.Generator().manual_seed(2))
    *_, (_, _, _, found_w) = optimise_codes(bundle, bundle.G, photo, start, 5, lr=0.5, space="w")
    assert torch.equal(found_w, found_w[:, :1].expand_as(found_w))  # one row shared by all
    *_, (_, _, _, found) = optimise_codes(bundle, bundle.G, photo, start, 5, lr=0.5, project=codes.project)
    assert float(codes.row_distance(found).max()) <= codes.p99 * (1 + 1e-4)
    *_, (_, _, _, free) = optimise_codes(bundle, bundle.G, photo, start, 5, lr=0.5)
    assert float(codes.row_distance(free).max()) > codes.p99


def test_an_untouched_generator_holds_no_tier_and_g_s_is_reused(bundle):
    forgotten, strangers = people_of(bundle, 1, 10), people_of(bundle, 2, 11)
    budget = ladder.LadderBudget(samples=32, refine_steps=2, steps=4, check_every=2)
    same = copy.deepcopy(bundle.G)
    result = ladder.attack_ladder(bundle, same, forgotten, strangers, ["p"], ["s1", "s2"], budget=budget)
    values = result.to_dict()
    assert list(values["tiers"]) == list(ladder.TIERS)
    for name, tier in values["tiers"].items():
        assert tier["best_id_before"] == pytest.approx(tier["best_id_after"], abs=1e-5), name
        assert tier["stranger_before"] == pytest.approx(tier["stranger_after"], abs=1e-5), name
        assert {"best_id_before", "best_id_after", "stranger_after", "held", "code_distance"} <= set(tier)
        assert tier["code_distance"]["p99"] > 0 and tier["code_distance"]["after"] >= 0
    # nothing was erased: a tier holds exactly where it cannot find the person in the model as it was
    for name, tier in values["tiers"].items():
        assert tier["held"] == (tier["best_id_before"] < values["threshold"]), name
    optimised = values["tiers"]["wplus"]
    assert optimised["best_id_after"] >= values["tiers"]["encoder"]["best_id_after"] - 1e-6
    assert values["tiers"]["typical_wplus"]["code_distance"]["after"] <= optimised["code_distance"]["p99"] * 1.0001
    again = ladder.attack_ladder(bundle, same, forgotten, strangers, ["p"], ["s1", "s2"], budget=budget,
                                 reuse_before=result)
    assert again.tiers["wplus"][0] is result.tiers["wplus"][0]
    assert again.to_dict()["tiers"]["wplus"]["best_id_after"] == pytest.approx(optimised["best_id_after"], abs=1e-5)
    # a G_s side kept as JSON serves a later ladder of the same photos: its values are read, not computed again
    kept = json.loads(json.dumps(result.g_s_side()))
    kept["tiers"]["wplus"]["best"] = [0.5, 0.25, 0.125]
    later = ladder.attack_ladder(bundle, same, forgotten, strangers, ["p"], ["s1", "s2"], budget=budget,
                                 reuse_before=ladder.Ladder.from_g_s_side(kept, bundle))
    assert later.tiers["wplus"][0].best == [0.5, 0.25, 0.125]
    assert later.to_dict()["tiers"]["wplus"]["best_id_before"] == 0.5
    for name in ladder.TIERS[:-1]:
        assert later.tiers[name][0].best == result.tiers[name][0].best, name
        assert later.tiers[name][0].curve == result.tiers[name][0].curve, name
    with pytest.raises(ValueError, match="other people"):
        ladder.attack_ladder(bundle, same, forgotten, strangers, ["q"], ["s1", "s2"], budget=budget,
                             reuse_before=result)
    with pytest.raises(ValueError, match="seed"):  # another seed draws other samples and starts: not the same G_s side
        ladder.attack_ladder(bundle, same, forgotten, strangers, ["p"], ["s1", "s2"], budget=budget, seed=1,
                             reuse_before=ladder.Ladder.from_g_s_side(kept, bundle))
    del kept["seed"]
    with pytest.raises(ValueError, match="has no seed"):  # a side from before seeds were kept cannot vouch for one
        ladder.Ladder.from_g_s_side(kept, bundle)
    with pytest.raises(ValueError, match="unknown ladder tier"):
        ladder.attack_ladder(bundle, same, forgotten, strangers, tiers=("relearn_everything",))


def fake_ladder(after: dict[str, float], strangers_after: float = 0.9) -> ladder.Ladder:
    codes = code_distribution(testing.random_bundle("small", seed=0), n=256)
    runs = {name: (ladder.TierRun([0.9, 0.9], [1.0, 1.0]), ladder.TierRun([value, strangers_after], [1.0, 1.0]))
            for name, value in after.items()}
    return ladder.Ladder(runs, ["p"], ["s"], 0.5, ladder.LadderBudget(), codes)


def test_held_needs_the_person_below_threshold_and_the_strangers_kept():
    values = fake_ladder({"sample": 0.1, "encoder": 0.2, "encoder_refine": 0.3, "typical_w": 0.45,
                          "typical_wplus": 0.6, "w": 0.4, "wplus": 0.8}).to_dict()
    assert values["strongest_held"] == "typical_w"  # w holds too, but typical_wplus below it does not
    assert values["held"] == ["sample", "encoder", "encoder_refine", "typical_w", "w"]
    assert "typical codes" in values["sentence"] and "0.60" in values["sentence"]
    lost = fake_ladder({"sample": 0.1, "encoder": 0.2}, strangers_after=0.8).to_dict()  # strangers fell by 0.1
    assert lost["strongest_held"] is None and not lost["tiers"]["sample"]["held"]
    assert lost["sentence"].startswith("The erasure does not hold even against sampling")


# The default world after a short GUIDE run: the person is found in G_s by the encoder tiers, typical tiers stay inside
# the ball while unconstrained ones leave it, and the strangers are drawn as well by G_u as by G_s.
@pytest.mark.slow
def test_the_ladder_on_the_default_world():
    import dataclasses

    from guide_core.bundle import pil_to_tensor
    from guide_core.engine import Unlearning
    from guide_core.registry import load_bundle
    from guide_core.world.examples import person_photos

    world = load_bundle("default")
    photo = pil_to_tensor([world.align(person_photos(0, 1, 64)[0])])
    cfg = dataclasses.replace(world.ltu_defaults, preview_every=0, iters=60)
    G_u = Unlearning(world, world.invert(photo), cfg=cfg).run_all().G_u
    strangers, names = ladder.default_strangers(world, 2)
    budget = ladder.LadderBudget(samples=128, steps=60)
    values = ladder.attack_ladder(world, G_u, photo, strangers, ["person 0"], names, budget=budget).to_dict()
    tiers = values["tiers"]
    assert values["threshold"] == pytest.approx(world.extras["id_threshold"])
    assert tiers["encoder"]["best_id_before"] >= 0.8 and tiers["wplus"]["best_id_before"] >= 0.8
    assert tiers["encoder"]["best_id_after"] < tiers["encoder"]["best_id_before"] - 0.2  # the stored latent moved
    for name in ("typical_w", "typical_wplus"):
        assert tiers[name]["code_distance"]["after"] <= values["code_distribution"]["p99"] * 1.001, name
    assert tiers["wplus"]["code_distance"]["after"] > values["code_distribution"]["p99"]
    for tier in tiers.values():
        assert abs(tier["stranger_after"] - tier["stranger_before"]) < 0.1
