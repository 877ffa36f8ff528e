"""The attacker ladder (beyond the paper): which threat does an erasure hold against?

GUIDE, LEGATO and SUGAR score only the stored latent; the erasure audit (guide_core.audit) asks whether re-inversion
brings the person back. The ladder orders the attackers from the weakest to the strongest and runs each against G_s
and G_u with the same seed and budget, for the forgotten people and for strangers who were never forgotten:

  sample          the best of N codes sampled from z: does the model produce the person at all (generation threat)
  encoder         one pass of the inversion encoder
  encoder_refine  the encoder refined on the generator's own renders (ReStyle-style, Alaluf et al. ICCV 2021)
  typical_w       one W code optimised, kept inside the 99 % typical ball of mapped codes (guide_core.typical)
  typical_wplus   w+ optimised, every row kept inside that ball
  w               one W code optimised, unconstrained
  wplus           w+ optimised, unconstrained (the audit's optimisation attacks)

The optimisation tiers start from w̄ and from the encoder's code, all people and starts in one batch. A tier is
**held** when the forgotten person's best in G_u stays below the metric's impostor threshold while the strangers'
mean best in G_u stays within STRANGER_TOLERANCE of what the same tier reaches for them in G_s: the erasure removed
this person, not the generator's ability to draw faces. Every code found is placed against the model's own codes: its Mahalanobis
distance (mean over rows) next to the distribution's median and 99th percentile. Scores come from the metric identity
net, which no attacker optimises (guide_core.inversion).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from guide_core.inversion import (LAMBDA_ID, attacker_identity_weight, attacker_perceptual_weight, optimise_codes,
                                  photo_batch, to_resolution)
from guide_core.progress import progress_bar
from guide_core.tables import Table, number
from guide_core.typical import CodeDistribution, code_distribution

if TYPE_CHECKING:
    from guide_core.bundle import ModelBundle

TIERS = ("sample", "encoder", "encoder_refine", "typical_w", "typical_wplus", "w", "wplus")
OPTIMISED = {"typical_w": ("w", True), "typical_wplus": ("wplus", True), "w": ("w", False), "wplus": ("wplus", False)}
STRANGER_TOLERANCE = 0.05
IMPOSTOR_FAR = 0.01  # the impostor threshold's false-accept rate where a model states none
STRANGER_PERSONS = 1000  # the world's default strangers start here, far from the example persons people forget


@dataclass
class LadderBudget:
    """What each tier may spend: codes sampled, encoder refinements, optimisation steps and learning rate."""

    samples: int = 256
    refine_steps: int = 10
    steps: int = 100
    lr: float = 0.01
    check_every: int = 10
    impostor_people: int = 64  # random people whose pairs give the impostor threshold where a model states none

    @classmethod
    def scaled(cls, steps: int) -> "LadderBudget":
        """A budget that grows with one number (the studio's slider): ``steps`` per optimisation tier, twice as many
        sampled codes, at most 10 refinements and as many as steps."""
        return cls(samples=min(256, max(4, 2 * steps)), refine_steps=min(10, steps), steps=steps,
                   check_every=max(1, min(10, steps)), impostor_people=min(64, max(8, 4 * steps)))

    def of(self, tier: str) -> str:
        """A tier's budget in words (the report states it)."""
        if tier == "sample":
            return f"best of {self.samples} mapped codes"
        if tier == "encoder":
            return "one encoder pass"
        if tier == "encoder_refine":
            return f"{self.refine_steps} refinements"
        return f"{self.steps} Adam steps (lr {self.lr:g}) from w̄ and from the encoder's code"


@dataclass
class TierRun:
    """One tier on one generator for a batch of people: each person's best identity, the distance of the code that
    reached it, and the curve of the batch's bests ([step, best so far per person])."""

    best: list[float]
    distance: list[float]
    curve: list[list[float]] = field(default_factory=list)


class _Scores:
    """Metric-net similarity of renders to each person's photo."""

    def __init__(self, bundle: "ModelBundle", photos: torch.Tensor):
        self.net = bundle.id_metric_net
        with torch.no_grad():
            self.target = self.net.embed(photos)

    def __call__(self, images: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (self.net.embed(images) * self.target[owner]).sum(dim=1)

    def matrix(self, images: torch.Tensor) -> torch.Tensor:
        """Similarity of every render to every person's photo, [renders, people] (one embedding per render)."""
        with torch.no_grad():
            return self.net.embed(images) @ self.target.T


class _Best:
    """Running best per person over batches of (score, code distance)."""

    def __init__(self, people: int):
        self.best = torch.full((people,), -2.0)
        self.distance = torch.zeros(people)
        self.curve: list[list[float]] = []

    def update(self, scores: torch.Tensor, distances: torch.Tensor, owner: torch.Tensor, step: int) -> None:
        for s, d, o in zip(scores.tolist(), distances.tolist(), owner.tolist()):
            if s > self.best[o]:
                self.best[o], self.distance[o] = s, d
        self.curve.append([step, *self.best.tolist()])

    def result(self) -> TierRun:
        return TierRun(self.best.tolist(), self.distance.tolist(), self.curve)


def run_tier(bundle: "ModelBundle", G: torch.nn.Module, tier: str, photos: torch.Tensor, budget: LadderBudget,
             codes: CodeDistribution, seed: int = 0, encoder: torch.nn.Module | None = None) -> TierRun:
    """One tier against one generator for every photo of a batch (aligned, [-1, 1]); ``encoder`` replaces the
    bundle's where the generator is served with its own (a run's encoder-side unlearning)."""
    photos = photo_batch(bundle, photos)
    people = len(photos)
    scores, best = _Scores(bundle, photos), _Best(people)
    everyone = torch.arange(people)
    if tier == "sample":
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, budget.samples, 64):
            z = torch.randn(min(64, budget.samples - start), bundle.z_dim, generator=gen)
            w = bundle.map(bundle.G, z)  # G_s and G_u share the mapping network
            similarity = scores.matrix(bundle.render(G, w)).cpu()
            distance = codes.distance(w).cpu()
            for person in range(people):
                best.update(similarity[:, person], distance, torch.full((len(w),), person), start + len(w))
        return best.result()
    if bundle.encoder is None:
        raise ValueError(f"model {bundle.name!r} has no encoder: the {tier!r} tier needs one")

    def invert(images: torch.Tensor) -> torch.Tensor:
        if encoder is None:
            return bundle.invert(images)
        with torch.no_grad():
            return encoder(images)

    w_photo = invert(photos)
    if tier in ("encoder", "encoder_refine"):
        w = w_photo.clone()
        for step in range(budget.refine_steps + 1 if tier == "encoder_refine" else 1):
            images = bundle.render(G, w)
            best.update(scores(images, everyone), codes.distance(w).cpu(), everyone, step)
            w = w + w_photo - invert(to_resolution(images, photos.shape[-1]))
        return best.result()
    if tier not in OPTIMISED:
        raise ValueError(f"unknown ladder tier {tier!r}; known: {', '.join(TIERS)}")
    space, typical = OPTIMISED[tier]
    starts = torch.cat([bundle.w_avg_code()[None].expand(people, -1, -1), w_photo])
    owner = everyone.repeat(2)
    targets = photos[owner]
    weight, per = attacker_identity_weight(bundle, LAMBDA_ID), attacker_perceptual_weight(bundle)
    torch.manual_seed(seed)
    for step, images, _, found in optimise_codes(bundle, G, targets, starts, budget.steps, budget.lr, 1.0, weight,
                                                 per, space=space, project=codes.project if typical else None):
        if step % budget.check_every == 0 or step == budget.steps:
            best.update(scores(images, owner), codes.distance(found).cpu(), owner, step)
    return best.result()


def impostor_threshold(bundle: "ModelBundle", people: int = 64, seed: int = 12_345) -> float:
    """The metric net's similarity above which two faces pass for one person: the model's stated threshold
    (``extras["id_threshold"]``), else the similarity that IMPOSTOR_FAR of pairs of distinct random people reach."""
    stated = bundle.extras.get("id_threshold")
    if stated is not None:
        return float(stated)
    z = torch.randn(people, bundle.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        emb = bundle.id_metric_net.embed(bundle.render(bundle.G, bundle.map(bundle.G, z)))
    pairs = (emb @ emb.T)[torch.triu(torch.ones(people, people, dtype=torch.bool), diagonal=1)]
    return float(torch.quantile(pairs, 1 - IMPOSTOR_FAR))


def held(forgotten_after: float, stranger_before: float, stranger_after: float, threshold: float) -> bool:
    """A tier holds: the forgotten person's best in G_u is below the impostor threshold while the strangers' mean best
    in G_u stays within STRANGER_TOLERANCE of their G_s level."""
    return bool(forgotten_after < threshold and stranger_after >= stranger_before - STRANGER_TOLERANCE)


@dataclass
class Ladder:
    """The ladder for the forgotten people and the strangers: per tier, each side's runs."""

    tiers: dict[str, tuple[TierRun, TierRun]]  # tier -> (on G_s, on G_u), people = forgotten then strangers
    forgotten: list[str]
    strangers: list[str]
    threshold: float
    budget: LadderBudget
    codes: CodeDistribution
    seed: int = 0

    def tier(self, name: str) -> dict[str, Any]:
        """One tier as the audit reports it (the forgotten person the attacker recovers best is the headline)."""
        before, after = self.tiers[name]
        k = len(self.forgotten)
        worst = max(range(k), key=lambda i: after.best[i])
        stranger_before, stranger_after = before.best[k:], after.best[k:]
        mean = (lambda v: sum(v) / len(v))  # noqa: E731
        return {"best_id_before": before.best[worst], "best_id_after": after.best[worst],
                "name": self.forgotten[worst],
                "stranger_before": mean(stranger_before), "stranger_after": mean(stranger_after),
                "held": held(after.best[worst], mean(stranger_before), mean(stranger_after), self.threshold),
                "code_distance": {"before": before.distance[worst], "after": after.distance[worst],
                                  **self.codes.summary()},
                "budget": self.budget.of(name),
                "per_identity": [{"name": n, "best_id_before": before.best[i], "best_id_after": after.best[i]}
                                 for i, n in enumerate(self.forgotten)],
                "curve_before": [[c[0], c[1 + worst]] for c in before.curve],
                "curve_after": [[c[0], c[1 + worst]] for c in after.curve]}

    def g_s_side(self) -> dict[str, Any]:
        """What another ladder of the same photos reuses (``reuse_before``), as plain JSON values: the G_s runs with
        the people, budget, seed and threshold they were made with."""
        return {"forgotten": self.forgotten, "strangers": self.strangers, "threshold": self.threshold,
                "budget": asdict(self.budget), "seed": self.seed,
                "tiers": {name: asdict(runs[0]) for name, runs in self.tiers.items()}}

    @classmethod
    def from_g_s_side(cls, values: dict[str, Any], bundle: "ModelBundle") -> "Ladder":
        """A ladder holding only a saved G_s side (its G_u runs are the G_s ones), fit to pass as ``reuse_before``."""
        missing = [k for k in ("tiers", "forgotten", "strangers", "threshold", "budget", "seed") if k not in values]
        if missing:
            raise ValueError(f"this saved G_s side has no {', '.join(missing)}: it is not a ladder's G_s side, or one "
                             "written before the ladder kept its seed; audit G_s again to write a complete one")
        tiers = {name: (TierRun(**run), TierRun(**run)) for name, run in values["tiers"].items()}
        return cls(tiers, list(values["forgotten"]), list(values["strangers"]), float(values["threshold"]),
                   LadderBudget(**values["budget"]), code_distribution(bundle), int(values["seed"]))

    def to_dict(self) -> dict[str, Any]:
        """The ladder as `audit --json` and run.json keep it."""
        tiers = {name: self.tier(name) for name in self.tiers}
        order = [t for t in TIERS if t in tiers]
        held = [t for t in order if tiers[t]["held"]]
        strongest = None
        for t in order:  # the strongest tier held with every weaker tier held too
            if not tiers[t]["held"]:
                break
            strongest = t
        return {"tiers": tiers, "strongest_held": strongest, "held": held, "threshold": self.threshold,
                "stranger_tolerance": STRANGER_TOLERANCE, "forgotten": self.forgotten, "strangers": self.strangers,
                "code_distribution": self.codes.summary(),
                "best_id_before": max(tiers[t]["best_id_before"] for t in order),
                "best_id_after": max(tiers[t]["best_id_after"] for t in order),
                "sentence": sentence(tiers, order, strongest)}


def sentence(tiers: dict[str, Any], order: list[str], strongest: str | None) -> str:
    """What the erasure holds against, and what it does not, in plain words."""
    words = {"sample": "sampling the model", "encoder": "one encoder pass", "encoder_refine": "a refined encoder",
             "typical_w": "W optimisation kept to typical codes", "typical_wplus": "w+ kept to typical codes",
             "w": "unconstrained W optimisation", "wplus": "unconstrained w+ optimisation"}
    failed = [t for t in order if not tiers[t]["held"]]
    if strongest is None:
        first = failed[0]
        return (f"The erasure does not hold even against {words[first]}: it brings the person back to "
                f"{tiers[first]['best_id_after']:.2f} in G_u (strangers {tiers[first]['stranger_after']:.2f}).")
    text = f"The erasure holds up to {words[strongest]}"
    if failed:
        first = failed[0]
        return (text + f"; {words[first]} brings the person back to {tiers[first]['best_id_after']:.2f} "
                f"(strangers {tiers[first]['stranger_after']:.2f}, threshold exceeded or strangers lost).")
    return text + ", the strongest attacker tried."


def attack_ladder(bundle: "ModelBundle", G_u: torch.nn.Module, forgotten: torch.Tensor, strangers: torch.Tensor,
                  forgotten_names: list[str] | None = None, stranger_names: list[str] | None = None,
                  tiers: tuple[str, ...] = TIERS, budget: LadderBudget | None = None, seed: int = 0,
                  reuse_before: Ladder | None = None, progress: bool = False,
                  encoder_u: torch.nn.Module | None = None) -> Ladder:
    """Every tier against G_s and G_u for the forgotten people's photos and the strangers' (aligned, [-1, 1]), all
    people in one batch. ``reuse_before``: an earlier ladder of the same photos, tiers, budget and seed lends its G_s
    side (comparing several unlearnings of the same people costs one G_s side). ``encoder_u``: the encoder G_u is
    served with (a run's encoder-side unlearning); G_s keeps the bundle's."""
    unknown = [t for t in tiers if t not in TIERS]
    if unknown:
        raise ValueError(f"unknown ladder tier(s) {unknown}; known: {', '.join(TIERS)}")
    if len(strangers) == 0:
        raise ValueError("the ladder needs at least one stranger: someone never forgotten to compare with")
    budget = budget or LadderBudget()
    forgotten_names = forgotten_names or [f"forgotten {i}" for i in range(len(forgotten))]
    stranger_names = stranger_names or [f"stranger {i}" for i in range(len(strangers))]
    photos = torch.cat([photo_batch(bundle, forgotten), photo_batch(bundle, strangers)])
    if reuse_before is not None and (reuse_before.budget != budget or list(reuse_before.tiers) != list(tiers) or
                                     reuse_before.seed != seed or
                                     reuse_before.forgotten + reuse_before.strangers != forgotten_names +
                                     stranger_names):
        raise ValueError("reuse_before comes from a ladder with other people, tiers, budget or seed")
    codes = code_distribution(bundle)
    ordered = [t for t in TIERS if t in tiers]
    bar = progress_bar(len(ordered) * (1 if reuse_before else 2), "attack ladder", progress)
    runs: dict[str, tuple[TierRun, TierRun]] = {}
    for name in ordered:
        if reuse_before is None:
            before = run_tier(bundle, bundle.G, name, photos, budget, codes, seed)
            bar.update(1)
        else:
            before = reuse_before.tiers[name][0]
        runs[name] = (before, run_tier(bundle, G_u, name, photos, budget, codes, seed, encoder_u))
        bar.update(1)
    bar.close()
    threshold = impostor_threshold(bundle, budget.impostor_people)
    return Ladder(runs, list(forgotten_names), list(stranger_names), threshold, budget, codes, seed)


def default_strangers(bundle: "ModelBundle", k: int = 3, seed: int = 4_242) -> tuple[torch.Tensor, list[str]]:
    """K people never forgotten: the world's seeded persons where the model has them, else G_s's frontal renders of
    seeded random people."""
    photo = bundle.extras.get("photo")
    if photo is not None:
        from guide_core.bundle import pil_to_tensor

        people = [STRANGER_PERSONS + i for i in range(k)]
        return pil_to_tensor([bundle.align(photo(p, 0)) for p in people]), [f"world person {p}" for p in people]
    z = torch.randn(k, bundle.z_dim, generator=torch.Generator().manual_seed(seed))
    return bundle.render(bundle.G, bundle.map(bundle.G, z)), [f"random person {i} (seed {seed})" for i in range(k)]


def ladder_table(values: dict[str, Any]) -> Table:
    """The ladder as a table: per tier, the forgotten person before / after, the strangers, held, code distance."""
    rows = []
    for name, tier in values["tiers"].items():
        distance = tier["code_distance"]
        rows.append((name, number(tier["best_id_before"]), number(tier["best_id_after"]),
                     f"{number(tier['stranger_before'])} → {number(tier['stranger_after'])}",
                     "held" if tier["held"] else "not held",
                     f"{distance['after']:.0f} (median {distance['median']:.0f}, 99 % {distance['p99']:.0f})",
                     tier["budget"]))
    return Table(("tier", "forgotten in G_s", "in G_u", "strangers G_s → G_u", "held", "code distance",
                  "budget"), rows)
