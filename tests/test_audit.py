# The erasure audit: each re-inversion attack on the small random EG3D world (before / after a short unlearning), the
# audit as the best over its attacks, and on the default world (a real encoder) the person found in G_s.
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from guide_core import audit
from tests.test_guide import bundle, short_run, w_u  # noqa: F401  (module-scoped fixtures shared with the engine tests)

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def test_reinversion_attack_improves_and_repeats(bundle, w_u):  # noqa: F811
    photo = bundle.render(bundle.G, w_u)  # frontal render of the source identity
    start = bundle.w_avg_code()[None]
    a = audit.reinversion_attack(bundle, bundle.G, photo, start, steps=12, lr=0.05, check_every=3)
    b = audit.reinversion_attack(bundle, bundle.G, photo, start, steps=12, lr=0.05, check_every=3)
    assert a == b
    assert a.best_id >= a.start_id and a.best_id > a.start_id + 1e-4, (a.start_id, a.best_id)
    assert [h["step"] for h in a.history] == [0, 3, 6, 9, 12]


def test_erasure_audit_before_and_after(bundle, w_u, short_run):  # noqa: F811
    photo = bundle.render(bundle.G, w_u)
    result = audit.erasure_audit(bundle, short_run.G_u, photo, w_start=w_u, steps=6, lr=0.02)
    code = result.attack("code")
    assert code.before.best_id == pytest.approx(1.0, abs=1e-4)  # G_s reproduces its own render from w_u
    # Unlearning moved w_u's render away from the photo; the attacker then claws part of the identity back.
    assert code.after.start_id < code.before.start_id - 0.02, result.to_dict()
    assert code.after.start_id < code.after.best_id < code.before.best_id, result.to_dict()
    assert 0 < result.erased <= 1 and result.start == "given code"
    assert [a.name for a in result.attacks] == ["encoder", "code", "mean", "random-0", "random-1"]
    # The headline is the best attack on each side, and every attack has its curve.
    assert result.after.best_id == max(a.after.best_id for a in result.attacks)
    assert result.before.best_id == max(a.before.best_id for a in result.attacks)
    values = result.to_dict()
    assert values["best_id_after"] == result.after.best_id and values["strongest_attack"] in values["attacks"]
    assert all(len(v["curve_before"]) == len(v["curve_after"]) >= 2 for v in values["attacks"].values())
    same = audit.erasure_audit(bundle, bundle.G, photo, w_start=w_u, steps=2)
    assert same.before == same.after


# The G_s side of an audit depends only on the photo and the settings: a second audit lends it and gets the same result.
def test_audit_reuses_the_source_side(bundle, w_u, short_run):  # noqa: F811
    photo = bundle.render(bundle.G, w_u)
    first = audit.erasure_audit(bundle, bundle.G, photo, w_start=w_u, steps=3, lr=0.02, attacks=("code", "mean"))
    fresh = audit.erasure_audit(bundle, short_run.G_u, photo, w_start=w_u, steps=3, lr=0.02, attacks=("code", "mean"))
    lent = audit.erasure_audit(bundle, short_run.G_u, photo, w_start=w_u, steps=3, lr=0.02, attacks=("code", "mean"),
                               reuse_before=first)
    assert lent == fresh and lent.before is first.before
    with pytest.raises(ValueError, match="other settings"):
        audit.erasure_audit(bundle, short_run.G_u, photo, w_start=w_u, steps=4, lr=0.02, attacks=("code", "mean"),
                            reuse_before=first)


# The stronger audit (several starts, the loss-side identity term) recovers at least as much of the person from G_u
# as the single attack the audit used to be (w+ from the same code under LPIPS + L2 only), with the same budget.
def test_stronger_audit_finds_at_least_the_single_attack(bundle, w_u, short_run):  # noqa: F811
    photo = bundle.render(bundle.G, w_u)
    single = audit.reinversion_attack(bundle, short_run.G_u, photo, w_u, steps=8, lr=0.02, lambda_id=0.0)
    strong = audit.erasure_audit(bundle, short_run.G_u, photo, w_start=w_u, steps=8, lr=0.02)
    assert audit.attacker_identity_weight(bundle) > 0 and "identity loss (loss-side net)" in strong.objective
    assert strong.after.best_id >= single.best_id, (strong.after.best_id, single.best_id)
    # The identity term changes where the attack from the same code goes.
    assert strong.attack("code").after.history != single.history


def test_audit_refuses_to_optimise_the_metric_net(bundle, w_u):  # noqa: F811
    import dataclasses
    one_net = dataclasses.replace(bundle, id_loss_net=bundle.id_metric_net)
    photo = bundle.render(bundle.G, w_u)
    assert audit.attacker_identity_weight(one_net) == 0.0
    with pytest.raises(ValueError, match="metric's own network"):
        audit.reinversion_attack(one_net, bundle.G, photo, w_u, steps=1, lambda_id=0.5)
    result = audit.erasure_audit(one_net, bundle.G, photo, w_start=w_u, steps=1, attacks=("code",))
    assert "identity loss" not in result.objective and [a.name for a in result.attacks] == ["code"]
    with pytest.raises(ValueError, match="unknown audit attack"):
        audit.erasure_audit(bundle, bundle.G, photo, steps=1, attacks=("telepathy",))
    without_encoder = dataclasses.replace(bundle, encoder=None)
    with pytest.raises(ValueError, match="no encoder: pass the start code"):
        audit.erasure_audit(without_encoder, bundle.G, photo, steps=1)
    assert [a.name for a in audit.erasure_audit(without_encoder, bundle.G, photo, w_start=w_u, steps=1,
                                                random_starts=1).attacks] == ["code", "mean", "random-0"]


# The encoder's refinement on a generator's own renders: step 0 is the plain encoder code, the iteration is seeded by
# nothing (deterministic), and its best is never below where it started.
def test_encoder_attack_refines_on_the_generator(bundle, w_u, short_run):  # noqa: F811
    photo = bundle.render(bundle.G, w_u)
    a = audit.encoder_attack(bundle, short_run.G_u, photo, steps=4)
    assert a == audit.encoder_attack(bundle, short_run.G_u, photo, steps=4)
    assert [h["step"] for h in a.history] == [0, 1, 2, 3, 4] and a.best_id >= a.start_id
    from guide_core.identity import identity_similarity
    plain = bundle.render(short_run.G_u, bundle.invert(photo))
    assert a.start_id == pytest.approx(float(identity_similarity(bundle.id_metric_net, plain, photo).mean()), abs=1e-6)
    assert a.history[1]["id"] != a.history[0]["id"]  # the refinement moved the code


# On the default world, whose encoder is trained: every attacker finds the person in the unchanged generator.
def test_audit_finds_the_person_in_the_default_world():
    from guide_core.bundle import pil_to_tensor
    from guide_core.registry import load_bundle
    world = load_bundle("default")
    photo = pil_to_tensor(world.align(Image.open(EXAMPLES / "person000_photo0.png")))
    torch.manual_seed(0)
    result = audit.erasure_audit(world, world.G, photo, steps=10, lr=0.02)
    assert "identity loss" not in result.objective  # the world has one identity net
    assert result.before.best_id >= 0.8 and result.attack("encoder").before.best_id >= 0.8, result.to_dict()
    assert result.before == result.after and result.erased == pytest.approx(0.0, abs=1e-9)


# ---- robust unlearning -----------------------------------------------------------------------------------------------

ROBUST = dict(lr=3e-3, iters=12, preview_every=0, deterministic_render=True, adversarial_sources=2, attack_every=4,
              attack_steps=3)


def test_robust_unlearning_holds_the_attack_latents_to_the_target(bundle, w_u):  # noqa: F811
    from guide_core.config import LTUConfig
    from guide_core.engine import Unlearning
    photo = bundle.render(bundle.G, w_u)
    paper = dict(ROBUST, adversarial_sources=0)
    plain = Unlearning(bundle, w_u, cfg=LTUConfig(**paper)).run_all()
    # Without adversarial sources the photos change nothing: the paper's run, bit for bit.
    same = Unlearning(bundle, w_u, cfg=LTUConfig(**paper), photos=[photo]).run_all()
    assert all(torch.equal(a, b) for a, b in zip(plain.G_u.parameters(), same.G_u.parameters()))
    assert "adversarial" not in plain.history[-1]
    robust = Unlearning(bundle, w_u, cfg=LTUConfig(**ROBUST), photos=[photo]).run_all()
    memory = robust.method.memory
    # Attacks at iterations 0, 4, 8, each of the 2 chains (from w_u and from w̄) at once; the last 2 latents kept.
    assert memory.rounds == 3 and memory.codes[0].shape == (2, *w_u.shape[1:])
    assert len(memory.found_id) == 3 and all(-1 <= v <= 1 for v in memory.found_id)
    assert all(h["adversarial"] > 0 for h in robust.history)
    assert robust.extra["adversarial_attack_id"] == {"every": 4, "best_id": memory.found_id}
    assert any(not torch.equal(a, b) for a, b in zip(plain.G_u.parameters(), robust.G_u.parameters()))
    # Each chain moved its latent toward the photo in the G_u of its time: the newest are neither w_u nor w̄.
    assert not torch.equal(memory.codes[0][0], w_u[0])
    assert not torch.equal(memory.codes[0][1], bundle.w_avg_code())
    # More chains start from seeded random people, the same ones in every run with the same seed.
    chains = dict(ROBUST, attack_chains=4, adversarial_sources=8, iters=1)
    a, b = (Unlearning(bundle, w_u, cfg=LTUConfig(**chains), photos=[photo]).run_all().method.memory
            for _ in range(2))
    assert a.codes[0].shape[0] == 4 and torch.equal(a.codes[0], b.codes[0])
    assert (a.codes[0][2] - a.codes[0][3]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="photo batches for 1 identities"):
        Unlearning(bundle, w_u, cfg=LTUConfig(**ROBUST), photos=[photo, photo])
    with pytest.raises(ValueError, match="attack_every"):
        LTUConfig(**dict(ROBUST, attack_every=0)).validate()


# On the default world (the attacker matching pixels only, the world's perceptual being made of its identity net):
# robust unlearning leaves the attacker less of the person in G_u than the paper's LTU with the same seed and budget.
@pytest.mark.slow
def test_robust_unlearning_lowers_what_the_attacker_recovers():
    import dataclasses
    from guide_core.bundle import pil_to_tensor
    from guide_core.engine import Unlearning
    from guide_core.registry import load_bundle
    world = load_bundle("default")
    photo = pil_to_tensor(world.align(Image.open(EXAMPLES / "person000_photo0.png")))
    w_u = world.invert(photo)
    found = {}
    for name, extra in (("paper", {}), ("robust", dict(adversarial_sources=4, attack_every=10, attack_steps=20))):
        cfg = dataclasses.replace(world.ltu_defaults, iters=60, preview_every=0, **extra)
        G_u = Unlearning(world, w_u, cfg=cfg, photos=[photo]).run_all().G_u
        found[name] = audit.erasure_audit(world, G_u, photo, steps=50, attacks=("code",))
    assert found["paper"].objective.startswith("1 * MSE")  # pixels only on the world
    assert found["robust"].after.best_id < found["paper"].after.best_id - 0.02, \
        {k: v.after.best_id for k, v in found.items()}
    assert found["robust"].before == found["paper"].before  # the same attack on the same G_s
