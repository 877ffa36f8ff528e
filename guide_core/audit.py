"""The erasure audit (beyond the paper): is the identity gone from the generator, or only from the stored latent w_u?
(`guide audit` and the studio run the attacker ladder, guide_core.ladder, built on the same optimiser; this module's
attacks remain the benchmarks' fixed protocol.)
GUIDE, LEGATO and SUGAR score G_u(w_u) against G_s(w_u); an attacker instead inverts the photo again into G_u. The
audit runs several such attacks against G_s and against G_u and reports the best identity similarity to the photo
each reaches, scored by the metric identity net (the CurricularFace role), which the attacker never optimises:
  encoder  the encoder's code refined on the generator's own renders, w <- w + E(photo) - E(G(w)) (the iterative
           refinement of ReStyle, Alaluf et al. ICCV 2021): no gradient through G, cheap, adapts to G_u
  code     w+ optimisation from the encoder's code (or the code given)
  mean     w+ optimisation from the mean latent w̄
  random-k w+ optimisation from mapping(z_k) for seeded random z_k
The optimisation attacks minimise LPIPS + lambda_l2 * MSE + lambda_id * (1 - cos) under the LOSS-side identity net
(the ArcFace role), never the metric net: where a bundle has a single identity net the identity term is left out,
and where its perceptual distance is built on the metric net (the embedded world) so is the perceptual term, and the
attacker matches pixels only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from guide_core.identity import embedding_similarity
from guide_core.inversion import (LAMBDA_ID, attacker_identity_weight, attacker_perceptual_weight, optimise_codes,
                                  photo_batch, to_resolution)
from guide_core.progress import progress_bar

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

# Every attack, in the order the audit runs and reports them; "random" stands for RANDOM_STARTS attacks random-0, ….
ATTACKS = ("encoder", "code", "mean", "random")
RANDOM_STARTS = 2
# Steps of the encoder's refinement: it settles within a few (ReStyle uses 5); more only repeat renders.
ENCODER_REFINE_STEPS = 10


@dataclass
class AttackResult:
    """Result of one attack on one generator: best / final / starting identity similarity to the photo, the step of the
    best, and the curve (identity, and the attacker's loss where it has one, every check_every steps and at both ends).
    """
    best_id: float
    final_id: float
    start_id: float
    best_step: int
    history: list[dict[str, float]]


def objective_text(lambda_per: float, lambda_l2: float, lambda_id: float) -> str:
    """The attacker's objective in words (run.json, reports)."""
    terms = (["LPIPS"] if lambda_per else []) + [f"{lambda_l2:g} * MSE"]
    terms += [f"{lambda_id:g} * identity loss (loss-side net)"] if lambda_id else []
    return " + ".join(terms) + "; scored by the metric identity net"


class _Scorer:
    """Identity similarity to the photo's metric embedding, as the audit scores a render."""
    def __init__(self, bundle: "ModelBundle", photo: torch.Tensor):
        self.net, self.similarity = bundle.id_metric_net, embedding_similarity
        with torch.no_grad():
            self.target = self.net.embed(photo)

    def __call__(self, image: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.similarity(self.net.embed(image), self.target).mean())


def _finish(history: list[dict[str, float]]) -> AttackResult:
    best = max(history, key=lambda h: h["id"])
    return AttackResult(best_id=best["id"], final_id=history[-1]["id"], start_id=history[0]["id"],
                        best_step=int(best["step"]), history=history)


def reinversion_attack(bundle: "ModelBundle", G: torch.nn.Module, photo: torch.Tensor, w_init: torch.Tensor,
                       steps: int = 200, lr: float = 0.01, lambda_l2: float = 1.0, lambda_id: float = 0.0,
                       lambda_per: float = 1.0, seed: int = 0, check_every: int = 10,
                       progress: str | None = None) -> AttackResult:
    """Re-inversion by optimisation (optimise_codes), scored every `check_every` steps and at both ends."""
    torch.manual_seed(seed)
    photo = photo_batch(bundle, photo)
    score = _Scorer(bundle, photo)
    history: list[dict[str, float]] = []
    bar = progress_bar(steps, progress or "", progress is not None)
    for step, image, loss, _ in optimise_codes(bundle, G, photo, w_init, steps, lr, lambda_l2, lambda_id, lambda_per):
        if step % check_every == 0 or step == steps:
            history.append({"step": step, "id": score(image), **({"loss": loss} if loss is not None else {})})
        if step < steps:
            bar.update(1)
    bar.close()
    return _finish(history)


def encoder_attack(bundle: "ModelBundle", G: torch.nn.Module, photo: torch.Tensor,
                   steps: int = ENCODER_REFINE_STEPS) -> AttackResult:
    """Re-inversion by the encoder alone, refined on G's own renders: w_0 = E(photo), w_{k+1} = w_k + E(photo) -
    E(G(w_k)).
    A generator that only moved w_u's render away still renders E(photo)'s neighbours; the refinement follows them.
    """
    if steps < 0:
        raise ValueError(f"audit steps must be >= 0, got {steps}")
    photo = photo_batch(bundle, photo)
    score = _Scorer(bundle, photo)
    w_photo = bundle.invert(photo)
    w = w_photo.clone()
    history: list[dict[str, float]] = []
    for step in range(steps + 1):
        image = bundle.render(G, w)
        history.append({"step": step, "id": score(image)})
        if step < steps:
            w = w + w_photo - bundle.invert(to_resolution(image, photo.shape[-1]))
    return _finish(history)


@dataclass
class AttackPair:
    """One attack against G_s (before) and G_u (after), from the same start with the same seed."""
    name: str
    start: str
    before: AttackResult
    after: AttackResult

    @property
    def erased(self) -> float:
        return erased_fraction(self.before.best_id, self.after.best_id)


def erased_fraction(best_before: float, best_after: float) -> float:
    """Fraction of the attacker's identity similarity that unlearning removed (1 = nothing left, 0 = unchanged)."""
    if best_before <= 0:
        return float("nan")
    return 1.0 - max(best_after, 0.0) / best_before


def _curve(result: AttackResult) -> list[list[float]]:
    return [[h["step"], h["id"]] for h in result.history]


@dataclass
class AuditResult:
    """Audit of one photo: every attack against G_s and G_u. The headline numbers are the best over all attacks, on each
    side: what the strongest attacker reaches.
    """
    attacks: list[AttackPair]
    steps: int
    start: str
    objective: str

    @property
    def before(self) -> AttackResult:
        return max((a.before for a in self.attacks), key=lambda r: r.best_id)

    @property
    def after(self) -> AttackResult:
        return max((a.after for a in self.attacks), key=lambda r: r.best_id)

    @property
    def erased(self) -> float:
        return erased_fraction(self.before.best_id, self.after.best_id)

    def attack(self, name: str) -> AttackPair:
        for pair in self.attacks:
            if pair.name == name:
                return pair
        raise KeyError(f"no attack {name!r} in this audit; it ran {[a.name for a in self.attacks]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: the headline numbers at the top level, then each attack's bests and curves ([step, id]
        pairs).
        """
        strongest = max(self.attacks, key=lambda a: a.after.best_id)
        return {"before": asdict(self.before), "after": asdict(self.after), "steps": self.steps, "start": self.start,
                "objective": self.objective, "best_id_before": self.before.best_id,
                "best_id_after": self.after.best_id, "erased": self.erased, "strongest_attack": strongest.name,
                "attacks": {a.name: {"start": a.start, "best_id_before": a.before.best_id,
                                     "best_id_after": a.after.best_id, "erased": a.erased,
                                     "curve_before": _curve(a.before), "curve_after": _curve(a.after)}
                            for a in self.attacks}}


def attack_names(attacks: tuple[str, ...] = ATTACKS, random_starts: int = RANDOM_STARTS) -> list[str]:
    """The attack names an audit with `random_starts` random starts runs, for `attacks` drawn from ATTACKS."""
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown audit attack(s) {unknown}; known: {', '.join(ATTACKS)}")
    names = []
    for name in ATTACKS:
        if name in attacks:
            names += [f"random-{k}" for k in range(random_starts)] if name == "random" else [name]
    return names


def erasure_audit(bundle: "ModelBundle", G_u: torch.nn.Module, photo: torch.Tensor, w_start: torch.Tensor | None = None,
                  steps: int = 200, lr: float = 0.01, lambda_l2: float = 1.0, lambda_id: float = LAMBDA_ID,
                  seed: int = 0, attacks: tuple[str, ...] = ATTACKS, random_starts: int = RANDOM_STARTS,
                  progress: bool = False, reuse_before: AuditResult | None = None) -> AuditResult:
    """Run the audit for a photo (aligned, [-1, 1]). `w_start`: the code the "code" attack starts from (default: the
    encoder's); the "encoder" attack needs the bundle's encoder and is skipped without one. Every attack is seeded, so
    its G_s side is the same for every G_u: `reuse_before`, an earlier audit of the same photo with the same settings,
    lends its G_s results (comparing several unlearnings of one person costs one G_s side).
    """
    photo = photo_batch(bundle, photo)
    names = attack_names(attacks, random_starts)
    if bundle.encoder is None:
        names = [n for n in names if n != "encoder"]
        if w_start is None and "code" in names:
            raise ValueError(f"model {bundle.name!r} has no encoder: pass the start code of the 'code' attack")
    if not names:
        raise ValueError("the audit has no attack to run")
    if w_start is None and bundle.encoder is not None:
        w_start, start = bundle.invert(photo), "encoder"
    else:
        start = "given code"
    weight, per = attacker_identity_weight(bundle, lambda_id), attacker_perceptual_weight(bundle)
    objective = objective_text(per, lambda_l2, weight)
    if reuse_before is not None and (reuse_before.steps, reuse_before.start, reuse_before.objective,
                                     [a.name for a in reuse_before.attacks]) != (steps, start, objective, names):
        raise ValueError("reuse_before comes from an audit with other settings (steps, start, objective or attacks)")

    def on_G_s(name: str, run: Callable[[], AttackResult]) -> AttackResult:
        return run() if reuse_before is None else reuse_before.attack(name).before

    kwargs = dict(steps=steps, lr=lr, lambda_l2=lambda_l2, lambda_id=weight, lambda_per=per, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for name in names:
        if name == "encoder":
            refine = min(steps, ENCODER_REFINE_STEPS)
            before = on_G_s(name, lambda: encoder_attack(bundle, bundle.G, photo, refine))
            pairs.append(AttackPair(name, "encoder", before, encoder_attack(bundle, G_u, photo, refine)))
            continue
        if name == "code":
            w0, where = w_start, start
        elif name == "mean":
            w0, where = bundle.w_avg_code()[None], "mean latent"
        else:  # random-k: G_s and G_u share the mapping network (unlearning changes the synthesis only)
            z = torch.randn(1, bundle.z_dim, generator=gen).to(bundle.device)
            w0 = bundle.map(bundle.G, z)
            where = f"mapping of random z (seed {seed}, draw {name.split('-')[1]})"
        label = (lambda side: f"attack {name} on {side}") if progress else (lambda side: None)
        before = on_G_s(name, lambda: reinversion_attack(bundle, bundle.G, photo, w0, **kwargs, progress=label("G_s")))
        pairs.append(AttackPair(name, where, before,
                                reinversion_attack(bundle, G_u, photo, w0, **kwargs, progress=label("G_u"))))
    return AuditResult(attacks=pairs, steps=steps, start=start, objective=objective)
