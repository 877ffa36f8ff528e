# Forgetting several people of the embedded default world, at once and one after another (GUIDE's Latent Target
# Unlearning, Seo et al. CVPR 2024, extended to N identities; SUGAR, WACV 2026, is the published anchor for many).
# World persons 0..N-1 each give a source photo (the one unlearned) and three other photos (ID_others).
#   at once:     one run with N sources, each with its UFO target, for N in --at-once;
#   one by one:  a chain of runs, run k continuing from run k-1's G_u (`unlearn --base-run`), saved and reloaded
#                through run folders as the CLI does; after every run every identity forgotten so far is measured.
# Per row: wall time of the unlearning, each identity's ID (the paper's metric, world identity net, 11 views) and
# ID_others, the least-kept far person (24 random people, far = below the identity net's FAR-1 % threshold against
# every source photo, as benchmarks/world_erasure.py counts them) and FID_pre against the root G_s.
# Usage: python benchmarks/many_identities.py [--at-once 1 2 4 8] [--sequential 8] [--json-out FILE] [LTU flags]
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from guide_core.cli import add_config_flags, config_from_args  # noqa: E402 (after the path)

N_PEOPLE = 24
PEOPLE_SEED = 987_654


def main() -> int:
    parser = argparse.ArgumentParser(description="many identities on the default world: at once and one by one")
    parser.add_argument("--at-once", type=int, nargs="*", default=[1, 2, 4, 8], help="identity counts of one run")
    parser.add_argument("--sequential", type=int, default=8, help="length of the chain of runs (0 = none)")
    parser.add_argument("--n-fid", type=int, default=None, help="FID_pre samples (default: metrics.default_n_fid)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json-out", default=None, help="write every row here as it is measured")
    add_config_flags(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from guide_core import metrics, runs
    from guide_core.bundle import pil_to_tensor
    from guide_core.registry import load_bundle
    from guide_core.engine import Unlearning
    from guide_core.world.bundle import WEIGHTS_DIR
    from guide_core.world.examples import person_photos
    from guide_core.world.heads import random_z

    bundle = load_bundle("default")
    cfg = config_from_args(args, dataclasses.replace(bundle.ltu_defaults, preview_every=0))
    n_fid = args.n_fid or metrics.default_n_fid(bundle)
    most = max([*args.at_once, args.sequential, 1])
    photos = [pil_to_tensor([bundle.align(p) for p in person_photos(k, 4, 64)]) for k in range(most)]
    codes = [bundle.invert(x) for x in photos]
    sources = [runs.source_record(f"person {k}", others=[({"name": f"person {k} photo {j}"}, codes[k][j])
                                                         for j in range(1, 4)]) for k in range(most)]
    idnet = bundle.id_metric_net
    threshold = json.loads((WEIGHTS_DIR / "metrics.json").read_text())["identity"]["threshold"]
    with torch.no_grad():
        people = bundle.G.mapping(random_z(N_PEOPLE, PEOPLE_SEED), bundle.cond_c.expand(N_PEOPLE, -1))
        people_emb = idnet.embed(bundle.render(bundle.G, people, 0.0, 0.0))

    # The random people that none of the first n source photos' identities resembles.
    def far_people(n: int) -> torch.Tensor:
        with torch.no_grad():
            source_emb = idnet.embed(torch.cat([x[:1] for x in photos[:n]]))
        return people[(people_emb @ source_emb.T).max(dim=1).values < threshold]

    # Each of the first n identities' ID / ID_others in G_u, the least-kept far person and FID_pre.
    def measure(G_u: torch.nn.Module, n: int) -> dict:
        ids = metrics.id_similarity(bundle, bundle.G, G_u, torch.cat([c[:1] for c in codes[:n]])).tolist()
        others = [float(metrics.id_similarity(bundle, bundle.G, G_u, c[1:]).mean()) for c in codes[:n]]
        far = far_people(n)
        kept = metrics.id_similarity(bundle, bundle.G, G_u, far)
        return {"id": ids, "id_others": others, "far_n": len(far), "far_min": float(kept.min()),
                "far_mean": float(kept.mean()), "fid_pre": metrics.fid_pre(bundle, G_u, n_fid)}

    rows: list[dict] = []

    def record(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"config": cfg.to_dict(), "n_fid": n_fid, "rows": rows},
                                                      indent=1))

    for n in args.at_once:
        start = time.perf_counter()
        job = Unlearning(bundle, torch.cat([c[:1] for c in codes[:n]]), cfg=cfg, sources=sources[:n]).run_all()
        seconds = time.perf_counter() - start
        record({"mode": "at once", "n": n, "seconds": round(seconds, 1), **measure(job.G_u, n)})

    with tempfile.TemporaryDirectory() as tmp:
        parent_dir, total = None, 0.0
        for k in range(args.sequential):
            base = base_run = None
            if parent_dir is not None:
                base = runs.load_run(parent_dir, bundle)
                base_run = runs.base_run_record(parent_dir, runs.read_run(parent_dir), base)
            start = time.perf_counter()
            job = Unlearning(bundle, codes[k][:1], cfg=cfg, sources=[sources[k]], base=base,
                             base_run=base_run, forgotten=runs.forgotten_codes(base_run)).run_all()
            total += time.perf_counter() - start
            parent_dir = Path(tmp) / f"run{k + 1}"
            runs.save_run(parent_dir, job)
            record({"mode": "one by one", "n": k + 1, "seconds": round(total, 1),
                    **measure(runs.load_run(parent_dir, bundle), k + 1)})

    print("\n| identities | mode | time (s) | ID after, each identity | max ID | max ID_others | least-kept far "
          "| FID_pre |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ids = " ".join(f"{v:.2f}" for v in row["id"])
        print(f"| {row['n']} | {row['mode']} | {row['seconds']:.0f} | {ids} | {max(row['id']):.2f} | "
              f"{max(row['id_others']):.2f} | {row['far_min']:.2f} ({row['far_n']} far) | {row['fid_pre']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
