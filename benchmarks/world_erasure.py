# Does GUIDE erase a person in the embedded default world, on a CPU, in minutes? The point of the default world.
# One world person's reference photo is inverted by the world encoder and unlearned with Latent Target Unlearning
# (GUIDE, Seo et al. CVPR 2024) at the world's default settings (bundle.ltu_defaults: fewer, larger steps,
# more preservation weight than the paper and global latents near w_u, see guide_core/world/bundle.py); then identity
# similarities are measured with the world identity net (NOT ArcFace: this world's own network, see
# weights/default/MODEL_CARD.md):
#   source:  cos(id(G(w_u) frontal), id(photo)) before (G_s) and after (G_u) — should fall from >= 0.9 to <= 0.3;
#   others:  the same for three other photos of the person (their own inverted codes) — should fall too;
#   far:     paper-style ID between G_s and G_u renders (11 yaws, pitch -0.2) of random people far from the source
#            — should stay >= 0.8. Of 24 random people (fixed seed), "far" are those the identity net does not take
#            for the source: similarity to the source photo below its verification threshold at FAR 1 %
#            (weights/default/metrics.json). The others are the source's lookalikes, reported apart ("near"):
#            erasing a person may rightly move them too;
#   id:      the paper's ID metric for w_u (G_s vs G_u renders over the 11 views);
#   far_least_kept: how far in w the least-kept far person lies from w_u, next to the median (README: the edit
#            spreads to w-neighbours).
#   audit:   (--audit-steps N) the best identity the erasure audit's attackers reach in G_s and in G_u
#            (guide_core/audit.py); FID_pre with --n-fid N.
# Usage: python benchmarks/world_erasure.py [--person K] [--threads T] [--json] [--audit-steps N] [--n-fid N]
#        [any LTU flag of `python -m guide_core unlearn`, e.g. --iters N --d D --n-glob 6 --adversarial-sources 4]
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide_core.cli import add_config_flags, config_from_args  # noqa: E402 (after the path)

# Random people (fixed seed) from which the far ones and the lookalikes are drawn.
N_PEOPLE = 24


# The world's random people (fixed seed) [N_PEOPLE, num_ws, 512], each one's identity similarity to the source photo,
# and the identity net's verification threshold at FAR 1 %: "far" people are those below it.
def random_people(bundle, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    from guide_core.identity import identity_similarity
    from guide_core.world.bundle import WEIGHTS_DIR
    from guide_core.world.heads import random_z
    with torch.no_grad():
        people = bundle.G.mapping(random_z(N_PEOPLE, 987_654), bundle.cond_c.expand(N_PEOPLE, -1))
        renders = bundle.render(bundle.G, people, 0.0, 0.0)
        to_source = identity_similarity(bundle.id_metric_net, renders, photo.expand(N_PEOPLE, -1, -1, -1))
    threshold = json.loads((WEIGHTS_DIR / "metrics.json").read_text())["identity"]["threshold"]
    return people, to_source, threshold


def main() -> int:
    parser = argparse.ArgumentParser(description="GUIDE erasure on the embedded default world (time, ID similarities)")
    parser.add_argument("--person", type=int, default=0, help="world person of the example set")
    add_config_flags(parser)  # any LTUConfig field, e.g. --n-glob 6; absent ones take the world's defaults
    parser.add_argument("--audit-steps", type=int, default=0,
                        help="also run the erasure audit on the source photo with this many steps per attack (0 = no)")
    parser.add_argument("--audit-attacks", nargs="+", default=None, help="the audit's attacks (default: all)")
    parser.add_argument("--n-fid", type=int, default=0, help="also measure FID_pre with this many samples (0 = no)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from guide_core.registry import load_bundle
    from guide_core.config import LTUConfig
    from guide_core.engine import Unlearning
    from guide_core.identity import identity_similarity
    from guide_core.metrics import id_similarity
    from guide_core.world.examples import person_photos
    bundle = load_bundle("default")
    idnet = bundle.id_metric_net
    photos = person_photos(args.person, 4, 64)
    from guide_core.bundle import pil_to_tensor
    x = pil_to_tensor([bundle.align(p) for p in photos])
    codes = bundle.invert(x)
    w_u, w_others = codes[:1], codes[1:]

    def photo_similarity(G: torch.nn.Module, ws: torch.Tensor, images: torch.Tensor) -> list[float]:
        with torch.no_grad():
            renders = bundle.render(G, ws, 0.0, 0.0)
            return identity_similarity(idnet, renders, images).tolist()

    people, to_source, threshold = random_people(bundle, x[:1])
    is_near = to_source >= threshold
    far, near = people[~is_near], people[is_near]

    before_source = photo_similarity(bundle.G, w_u, x[:1])
    before_others = photo_similarity(bundle.G, w_others, x[1:])
    given = {f.name: getattr(args, f.name) for f in fields(LTUConfig) if hasattr(args, f.name)}
    cfg = config_from_args(args, dataclasses.replace(bundle.ltu_defaults, preview_every=0))
    start = time.perf_counter()
    run = Unlearning(bundle, w_u, cfg=cfg, photos=[x]).run_all()  # robust unlearning attacks all 4 photos
    seconds = time.perf_counter() - start
    G_u = run.G_u
    result = {
        "iters": cfg.iters, "d": cfg.d, "overrides": given, "seconds": round(seconds, 1),
        "threads": args.threads,
        "source_before": before_source[0], "source_after": photo_similarity(G_u, w_u, x[:1])[0],
        "others_before": sum(before_others) / 3, "others_after": sum(photo_similarity(G_u, w_others, x[1:])) / 3,
        "id": float(id_similarity(bundle, bundle.G, G_u, w_u).mean()),
        "id_others": float(id_similarity(bundle, bundle.G, G_u, w_others).mean()),
    }
    far_sim = id_similarity(bundle, bundle.G, G_u, far)
    result["far_mean"], result["far_min"], result["far_n"] = float(far_sim.mean()), float(far_sim.min()), len(far)
    # Who is least kept: in this world the edit spreads to the codes nearest w_u (README), so report the least-kept far
    # person's distance from w_u (whole-code norm, as UFO's d) next to the median and its rank by that distance.
    far_dist = (far - w_u).flatten(1).norm(dim=1)
    worst = int(far_sim.argmin())
    result["far_least_kept"] = {"w_distance": float(far_dist[worst]), "median_w_distance": float(far_dist.median()),
                                "distance_rank": int((far_dist < far_dist[worst]).sum()) + 1,
                                "similarity_to_source": float(to_source[~is_near][worst])}
    result["threshold"] = threshold
    if run.method.memory is not None:  # robust unlearning: what its own attacker reached, round by round
        result["robust_attack_id"] = [round(v, 3) for v in run.method.memory.found_id]
    if args.n_fid:
        from guide_core.metrics import fid_pre
        result["fid_pre"] = fid_pre(bundle, G_u, n=args.n_fid)
    if args.audit_steps:
        from guide_core import audit
        start = time.perf_counter()
        found = audit.erasure_audit(bundle, G_u, x[:1], steps=args.audit_steps,
                                    attacks=tuple(args.audit_attacks or audit.ATTACKS))
        result["audit"] = {"steps": args.audit_steps, "objective": found.objective,
                           "best_id_before": found.before.best_id, "best_id_after": found.after.best_id,
                           "erased": found.erased, "seconds": round(time.perf_counter() - start, 1),
                           "attacks": {a.name: [a.before.best_id, a.after.best_id] for a in found.attacks}}
    kept = id_similarity(bundle, bundle.G, G_u, near) if len(near) else []
    result["near"] = [{"similarity_to_source": float(s), "kept": float(k)}
                      for s, k in zip(to_source[is_near], kept)]
    result["bars"] = {"source_before>=0.9": result["source_before"] >= 0.9,
                      "source_after<=0.3": result["source_after"] <= 0.3,
                      "others_drop": result["others_after"] < result["others_before"],
                      "far_min>=0.8": result["far_min"] >= 0.8, "time<=180s": seconds <= 180}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"GUIDE on the default world: {cfg.iters} LTU iterations (d = {cfg.d:g}) in {seconds:.1f} s "
              f"({args.threads} threads)")
        print("similarities from the world identity net (not ArcFace):")
        for key in ("source_before", "source_after", "others_before", "others_after", "id", "id_others",
                    "far_mean", "far_min"):
            print(f"  {key:14s} {result[key]: .3f}")
        least = result["far_least_kept"]
        print(f"  least-kept far person: w distance to w_u {least['w_distance']:.1f} (median {least['median_w_distance']:.1f}, "
              f"nearest rank {least['distance_rank']}), similarity to the source {least['similarity_to_source']:.2f}")
        print(f"  far people: {result['far_n']} of {N_PEOPLE} (similarity to the source < {threshold:.2f}); lookalikes kept: "
              + (", ".join(f"{n['kept']:.2f} (to source {n['similarity_to_source']:.2f})" for n in result["near"])
                 or "none"))
        if "fid_pre" in result:
            print(f"  FID_pre ({args.n_fid} samples, world features) {result['fid_pre']:.2f}")
        if "audit" in result:
            found = result["audit"]
            print(f"  audit ({found['steps']} steps per attack; {found['objective']}): best identity reached in G_s "
                  f"{found['best_id_before']:.3f}, in G_u {found['best_id_after']:.3f}")
        print("bars:", ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in result["bars"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
