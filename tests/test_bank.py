# Bank then erase: the typical-ball attacker banks codes that render the person in G_s, every row inside the model's
# own code distribution; a run holds them to the target, keeps the strangers' banked codes, and says what it banked; a
# refresh sends banked codes after the person in the current G_u.
from __future__ import annotations

import dataclasses

import pytest
import torch

from guide_core import testing
from guide_core.config import LTUConfig
from guide_core.engine import Unlearning
from guide_core.methods.bank import RecoveryBank
from guide_core.typical import code_distribution
from tests.util import people_of

BANK = LTUConfig(lr=3e-3, iters=16, preview_every=0, deterministic_render=True, bank_codes=6, bank_strangers=4,
                 bank_steps=25, bank_batch=3, lambda_bank=1.0, lambda_bank_keep=1.0)


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(1)
    return testing.random_bundle("small", seed=0)


def far_from(bundle, G, codes: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Per code, the MSE between G's frontal render of it and the given images."""
    with torch.no_grad():
        return (bundle.render(G, codes) - images).pow(2).flatten(1).mean(1)


def test_the_bank_holds_typical_codes_that_render_the_person(bundle):
    photo = people_of(bundle, 1, 3, yaw=0.1)
    w_u = bundle.invert(photo)
    bank = RecoveryBank(bundle, w_u, [photo], BANK)
    assert bank.codes.shape == (6, bundle.num_ws, 512) and bank.owner.tolist() == [0] * 6
    assert bank.kept.shape == (4, bundle.num_ws, 512)
    distribution = code_distribution(bundle)
    rows = distribution.row_distance(torch.cat([bank.codes, bank.kept]))
    assert float(rows.max()) <= distribution.p99 * 1.0001, f"a banked row lies at {float(rows.max()):.2f}"
    # The second start is w̄, pulled toward the photo's mirror image: the attacker brought it nearer.
    assert torch.equal(bank.views[1], photo[0].flip(-1))
    assert float(far_from(bundle, bundle.G, bank.codes[1:2], bank.views[1:2])) < float(
        far_from(bundle, bundle.G, bundle.w_avg_code()[None], bank.views[1:2]))
    assert float(torch.cdist(bank.codes.flatten(1), bank.codes.flatten(1)).triu(1).max()) > 1e-2  # not one code
    summary = bank.summary
    assert summary["codes"] == 6 and summary["strangers"] == 4 and len(summary["reached_id"]) == 1
    assert summary["code_distance"] <= summary["typical_p99"] + 1e-3
    # The same seed banks the same codes.
    assert torch.equal(RecoveryBank(bundle, w_u, [photo], BANK).codes, bank.codes)


def test_a_banked_run_sends_the_banked_codes_to_the_target_and_keeps_the_strangers(bundle):
    photo = people_of(bundle, 1, 3, yaw=0.1)
    w_u = bundle.invert(photo)
    banked = Unlearning(bundle, w_u, cfg=BANK, photos=[photo]).run_all()
    plain = Unlearning(bundle, w_u, cfg=dataclasses.replace(BANK, bank_codes=0), photos=[photo]).run_all()
    assert "bank" not in plain.history[-1] and "bank" not in plain.extra
    assert all(h["bank"] > 0 and h["bank_keep"] >= 0 for h in banked.history)
    assert banked.extra["bank"]["codes"] == 6
    bank = banked.method.bank
    with torch.no_grad():
        target = bundle.render(bundle.G, banked.w_t).expand(len(bank.codes), -1, -1, -1)
    # Held to the target, the banked codes render nearer to G_s(w_t) in the banked G_u than in the plain one.
    to_target_banked = far_from(bundle, banked.G_u, bank.codes, target)
    to_target_plain = far_from(bundle, plain.G_u, bank.codes, target)
    assert float(to_target_banked.mean()) < 0.8 * float(to_target_plain.mean()), (to_target_banked, to_target_plain)
    # The strangers' banked codes move far less than the person's.
    with torch.no_grad():
        kept_before = bundle.render(bundle.G, bank.kept)
        moved_person = far_from(bundle, banked.G_u, bank.codes, bundle.render(bundle.G, bank.codes)).mean()
    moved_stranger = far_from(bundle, banked.G_u, bank.kept, kept_before).mean()
    assert float(moved_stranger) < 0.5 * float(moved_person), (float(moved_stranger), float(moved_person))


def test_a_refresh_moves_a_chunk_of_the_bank_toward_the_person_in_the_current_generator(bundle):
    photo = people_of(bundle, 1, 3, yaw=0.1)
    w_u = bundle.invert(photo)
    G_u = Unlearning(bundle, w_u, cfg=dataclasses.replace(BANK, bank_codes=0, iters=8)).run_all().G_u
    cfg = dataclasses.replace(BANK, bank_refresh_every=4, bank_refresh_steps=10)
    bank = RecoveryBank(bundle, w_u, [photo], cfg)
    banked = bank.codes.clone()
    bank.refresh(bundle, G_u, 3, cfg)  # not due
    bank.refresh(bundle, G_u, 0, cfg)  # the bank was just gathered
    assert torch.equal(bank.codes, banked) and bank.summary["refreshes"] == 0
    bank.refresh(bundle, G_u, 4, cfg)
    assert bank.summary["refreshes"] == 1
    before, after = far_from(bundle, G_u, banked, bank.views), far_from(bundle, G_u, bank.codes, bank.views)
    assert float(after.mean()) < 0.9 * float(before.mean()), (before, after)
    distribution = code_distribution(bundle)
    assert float(distribution.row_distance(bank.codes).max()) <= distribution.p99 * 1.0001
    # A run with refreshes every 4 of its 16 iterations refreshes at iterations 4, 8 and 12, and says so.
    run = Unlearning(bundle, w_u, cfg=cfg, photos=[photo]).run_all()
    assert run.extra["bank"]["refreshes"] == 3
    assert not torch.equal(run.method.bank.codes, banked)  # the same seed banked `banked`; the refreshes moved it


def test_bank_settings_are_checked():
    with pytest.raises(ValueError, match="bank_steps"):
        dataclasses.replace(BANK, bank_steps=0).validate()
    with pytest.raises(ValueError, match="lambda_bank"):
        dataclasses.replace(BANK, lambda_bank=-1.0).validate()
    with pytest.raises(ValueError, match="bank_refresh_steps"):
        dataclasses.replace(BANK, bank_refresh_steps=0).validate()
