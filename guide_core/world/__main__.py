# Command line of the embedded world: render data, train its networks, export the shipped weights, render examples.
#   python -m guide_core.world render-data
#   python -m guide_core.world train {identity,generator,encoder} [--steps N] [--resume] [--seed 0] [--out DIR]
#                                    [--device cuda] [--batch N]
#   (order: identity, generator, identity again — now with the generator's renders —, encoder, export)
#   python -m guide_core.world train-all --device cuda --minutes 9   (all of the above within a time budget)
#   python -m guide_core.world export
#   python -m guide_core.world render --out DIR
# Every step is seeded and resumable; long trainings are meant to run in the background (nice, few threads).
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from guide_core.world.data import CHUNK_IDS, DATASETS
from guide_core.world.generator import (CHANNEL_BASE, CHANNEL_MAX, LR, MAPPING_LAYERS, PLANE_RESOLUTION, POLISH_LR,
                                        POLISH_STEPS)
from guide_core.world.identity import LAMBDA_PAIR

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "runs" / "world"


def _render_data(which: list[str], workers: int = 1) -> None:
    import os
    from guide_core.world.data import render_dataset
    lock = RUNS / "data" / "RENDERING"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        for name in which:
            n_ids, photos, seed, supersample = DATASETS[name]
            render_dataset(RUNS / "data" / name, n_ids, photos, seed, supersample, workers=workers)
    finally:
        lock.unlink(missing_ok=True)


# True while another live process holds the render lock (then this one waits instead of rendering too).
def _rendering_elsewhere() -> bool:
    import os
    lock = RUNS / "data" / "RENDERING"
    if not lock.exists():
        return False
    try:
        os.kill(int(lock.read_text()), 0)
        return True
    except (ValueError, OSError):
        return False


def _wait_for_chunks(minimum: int = 4) -> None:
    import time
    n_heldout = -(-DATASETS["heldout"][0] // CHUNK_IDS)
    while (len(list((RUNS / "data" / "heldout").glob("chunk_*.pt"))) < n_heldout
           or len(list((RUNS / "data" / "train").glob("chunk_*.pt"))) < minimum):
        time.sleep(30)


def _train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.network == "identity" or not _rendering_elsewhere():
        _render_data(["heldout", "train"], args.threads)
    else:  # another process is rendering: train on the chunks as they appear
        _wait_for_chunks()
    out = Path(args.out) if args.out else RUNS / args.network
    batch = {"batch": args.batch} if args.batch else {}  # absent: each trainer's own default
    if args.network == "identity":
        from guide_core.world.identity import train_identity
        # Two stages: before the generator exists, photos only (its perceptual loss needs this net); once trained,
        # the net is retrained on photos and the generator's renders (generator_renders says why).
        trained = (RUNS / "generator" / "ckpt.pt").exists() and args.generator_mix > 0
        generator_dir = RUNS / "generator" if trained else None
        print("identity net on photos" + (f" + {args.generator_mix:.0%} generator renders, each pulled onto its photo "
                                          f"(weight {args.lambda_pair:g})" if trained else " only"))
        result = train_identity(RUNS / "data" / "train", RUNS / "data" / "heldout", out, steps=args.steps or 3000,
                                seed=args.seed, resume=args.resume, generator_dir=generator_dir,
                                generator_mix=args.generator_mix, lambda_pair=args.lambda_pair, device=args.device,
                                **batch)
    elif args.network == "generator":
        from guide_core.world.generator import train_generator
        result = train_generator(RUNS / "data" / "train", RUNS / "data" / "heldout", out, steps=args.steps or 17000,
                                 seed=args.seed, resume=args.resume, identity_dir=RUNS / "identity",
                                 plane_resolution=args.plane_resolution, mapping_layers=args.mapping_layers,
                                 polish_steps=args.polish_steps, normalize_z=args.normalize_z, device=args.device,
                                 init_from=args.init_from or None, channel_base=args.channel_base,
                                 channel_max=args.channel_max, widen=args.widen, lr=args.lr,
                                 polish_lr=args.polish_lr, **batch)
    else:
        from guide_core.world.encoder import train_encoder
        result = train_encoder(out, generator_dir=RUNS / "generator", identity_dir=RUNS / "identity",
                               steps=args.steps or 16000, seed=args.seed, resume=args.resume, device=args.device,
                               init_from=args.init_from or None, **batch)
    print(result)
    return 0


def _train_all(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict
    from guide_core.world.pipeline import WorldPlan, train_world
    plan = WorldPlan(args.device, args.minutes, args.generator_batch, args.encoder_batch)
    if args.dry_run:
        print(json.dumps({**asdict(plan), "runs": str(RUNS), "workers": args.workers}, indent=2))
        print("generator, polish and encoder steps are sized on the device from measured step times")
        return 0
    torch.set_num_threads(max(1, args.workers))
    result = train_world(RUNS, plan, workers=args.workers)
    print(json.dumps(result, indent=2))
    print("repeat one network at a time with:")
    for command in plan.commands():
        print(f"  python -m guide_core.world {command}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guide_core.world", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("render-data", help="render (or resume rendering) the training / held-out photo sets")
    data.add_argument("--which", choices=["train", "heldout", "all"], default="all")
    data.add_argument("--workers", type=int, default=1, help="rendering processes (chunks are seeded: same files)")
    train = sub.add_parser("train", help="train one of the world's networks (resumable)")
    train.add_argument("network", choices=["identity", "generator", "encoder"])
    train.add_argument("--steps", type=int, default=0, help="total optimisation steps (0 = the network's default)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="", help="checkpoint folder (default runs/world/NETWORK)")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (and data-rendering processes)")
    train.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda); checkpoints are saved "
                       "on the CPU either way")
    train.add_argument("--batch", type=int, default=0,
                       help="batch size (0 = the network's default: identity 128, generator 8, encoder 32)")
    train.add_argument("--generator-mix", type=float, default=0.25,
                       help="identity only: fraction of each batch that are renders of the trained generator "
                            "(used once runs/world/generator exists; 0 = photos only)")
    train.add_argument("--plane-resolution", type=int, default=PLANE_RESOLUTION,
                       help="generator only: tri-plane resolution (EG3D: 256; the shipped world: 64)")
    train.add_argument("--mapping-layers", type=int, default=MAPPING_LAYERS,
                       help="generator only: depth of the mapping network (StyleGAN and the world's default: 8; "
                            "the v5 weights: 4)")
    train.add_argument("--normalize-z", action="store_true",
                       help="generator only: divide z by its RMS before the mapping, as EG3D does (the world's "
                            "parameters depend on z's length, so by default z goes in as it is)")
    train.add_argument("--init-from", default="",
                       help="generator and encoder: start from exported weights (e.g. weights/default: their step "
                            "count, a fresh optimiser) when OUT has no checkpoint to resume")
    train.add_argument("--channel-base", type=int, default=CHANNEL_BASE,
                       help="generator only: synthesis width, EG3D's channel_base (a block at resolution r has "
                            "min(base // r, max) channels)")
    train.add_argument("--channel-max", type=int, default=CHANNEL_MAX,
                       help="generator only: synthesis width cap, EG3D's channel_max")
    train.add_argument("--widen", action="store_true",
                       help="generator only: grow a resumed or --init-from generator to the widths above; it draws "
                            "the same pictures at first and trains into the new channels")
    train.add_argument("--polish-steps", type=int, default=POLISH_STEPS,
                       help="generator only: steps after --steps with MSE and no perceptual loss (train_generator)")
    train.add_argument("--lr", type=float, default=LR,
                       help="generator only: Adam's peak learning rate in the main phase, cosine to a tenth "
                            "(default %(default)g)")
    train.add_argument("--polish-lr", type=float, default=POLISH_LR,
                       help="generator only: Adam's peak learning rate in the polish phase, cosine to zero "
                            "(default %(default)g)")
    train.add_argument("--lambda-pair", type=float, default=LAMBDA_PAIR,
                       help="identity only: weight of the loss pulling a render's embedding onto its own photo's")
    everything = sub.add_parser("train-all", help="the whole chain (data, identity, generator, identity stage 2, "
                                "encoder) within a wall-clock budget; generator and encoder steps are sized from their "
                                "step times measured first on the device (meant for a GPU)")
    everything.add_argument("--device", default="cuda", help="torch device to train on")
    everything.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of the whole chain")
    everything.add_argument("--workers", type=int, default=1, help="data-rendering processes (and torch CPU threads)")
    everything.add_argument("--generator-batch", type=int, default=32)
    everything.add_argument("--encoder-batch", type=int, default=64)
    everything.add_argument("--dry-run", action="store_true", help="print the resolved plan and stop")
    export = sub.add_parser("export", help="write weights/default/*.safetensors + JSON configs from the checkpoints")
    export.add_argument("--runs", default=str(RUNS))
    render = sub.add_parser("render", help="write example renders (PNG) of random people")
    render.add_argument("--out", required=True)
    render.add_argument("--n", type=int, default=6)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--resolution", type=int, default=128)
    args = parser.parse_args(argv)
    if args.command == "render-data":
        _render_data(["train", "heldout"] if args.which == "all" else [args.which], args.workers)
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "train-all":
        return _train_all(args)
    if args.command == "export":
        from guide_core.world.export import export_weights
        print(export_weights(Path(args.runs)))
        return 0
    from guide_core.world.examples import write_examples
    for path in write_examples(Path(args.out), args.n, args.seed, args.resolution):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
