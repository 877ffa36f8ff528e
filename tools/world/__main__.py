"""Command line of the embedded world: render data, train its networks, export the shipped weights, render examples.

  python -m tools.world render-data [--workers N]
  python -m tools.world train {identity,generator,encoder} [--steps N] [--resume] [--seed 0] [--out DIR]
                              [--device cuda] [--batch N] [... one flag per field of the network's
                              IdentityTrainConfig / GeneratorTrainConfig / EncoderTrainConfig; see --help]
  (order: identity, generator, identity again — now with the generator's renders —, encoder, export)
  python -m tools.world train-all --device cuda --minutes 9   (all of the above within a time budget)
  python -m tools.world export
  python -m tools.world render --out DIR

Every step is seeded and resumable; long trainings are meant to run in the background (nice, few threads).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from guide_core.flags import add_flags, given_values
from guide_core.world.bundle import RUNS_DIR as RUNS
from tools.world.data import CHUNK_IDS, DATASETS
from tools.world.encoder import EncoderTrainConfig
from tools.world.generator import GeneratorTrainConfig
from tools.world.identity import IdentityTrainConfig

# Each network's trainer config: `train NETWORK` has one flag per field, its default the config's.
TRAIN_CONFIGS = {"identity": IdentityTrainConfig, "generator": GeneratorTrainConfig, "encoder": EncoderTrainConfig}


def _render_data(which: list[str], workers: int = 1) -> None:
    """Render (or resume rendering) the named data sets under runs/world/data, holding the render lock meanwhile."""
    import os
    from tools.world.data import render_dataset
    lock = RUNS / "data" / "RENDERING"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        for name in which:
            n_ids, photos, seed, supersample = DATASETS[name]
            render_dataset(RUNS / "data" / name, n_ids, photos, seed, supersample, workers=workers)
    finally:
        lock.unlink(missing_ok=True)


def _rendering_elsewhere() -> bool:
    """True while another live process holds the render lock (then this one waits instead of rendering too)."""
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
    """Wait until the held-out set is complete and the training set has ``minimum`` chunks."""
    import time
    n_heldout = -(-DATASETS["heldout"][0] // CHUNK_IDS)
    while (len(list((RUNS / "data" / "heldout").glob("chunk_*.pt"))) < n_heldout
           or len(list((RUNS / "data" / "train").glob("chunk_*.pt"))) < minimum):
        time.sleep(30)


def _train(args: argparse.Namespace) -> int:
    """`train NETWORK`: one network, with the trainer config its flags ask for."""
    torch.set_num_threads(args.threads)
    if args.network == "identity" or not _rendering_elsewhere():
        _render_data(["heldout", "train"], args.threads)
    else:  # another process is rendering: train on the chunks as they appear
        _wait_for_chunks()
    out = Path(args.out) if args.out else RUNS / args.network
    config_type = TRAIN_CONFIGS[args.network]
    config = config_type(**given_values(config_type, args))
    if args.network == "identity":
        from tools.world.identity import train_identity
        # Two stages: before the generator exists, photos only (its perceptual loss needs this net); once trained,
        # the net is retrained on photos and the generator's renders (generator_renders says why).
        trained = (RUNS / "generator" / "ckpt.pt").exists() and config.generator_mix > 0
        generator_dir = RUNS / "generator" if trained else None
        print("identity net on photos" + (f" + {config.generator_mix:.0%} generator renders, each pulled onto its "
                                          f"photo (weight {config.lambda_pair:g})" if trained else " only"))
        result = train_identity(RUNS / "data" / "train", RUNS / "data" / "heldout", out, config=config,
                                generator_dir=generator_dir, resume=args.resume, device=args.device)
    elif args.network == "generator":
        from tools.world.generator import train_generator
        result = train_generator(RUNS / "data" / "train", RUNS / "data" / "heldout", out, config=config,
                                 identity_dir=RUNS / "identity", init_from=args.init_from or None, widen=args.widen,
                                 resume=args.resume, device=args.device)
    else:
        from tools.world.encoder import train_encoder
        result = train_encoder(out, RUNS / "generator", RUNS / "identity", config=config,
                               init_from=args.init_from or None, resume=args.resume, device=args.device)
    print(result)
    return 0


def _train_all(args: argparse.Namespace) -> int:
    """`train-all`: the whole chain within a time budget (or, with --dry-run, its resolved plan)."""
    import json
    from tools.world.pipeline import PLAN_ENCODER, PLAN_GENERATOR, WorldPlan, train_world
    plan = WorldPlan(args.device, args.minutes,
                     generator=dataclasses.replace(PLAN_GENERATOR, batch=args.generator_batch),
                     encoder=dataclasses.replace(PLAN_ENCODER, batch=args.encoder_batch))
    if args.dry_run:
        print(json.dumps({**plan.record(), "runs": str(RUNS), "workers": args.workers}, indent=2))
        print("generator, polish and encoder steps are sized on the device from measured step times")
        return 0
    torch.set_num_threads(max(1, args.workers))
    result = train_world(RUNS, plan, workers=args.workers)
    print(json.dumps(result, indent=2))
    print("repeat one network at a time with:")
    for command in plan.commands():
        print(f"  python -m tools.world {command}")
    return 0


def _parser() -> argparse.ArgumentParser:
    """The command line: render-data, train NETWORK, train-all, export, render."""
    from tools.world.pipeline import PLAN_ENCODER, PLAN_GENERATOR
    parser = argparse.ArgumentParser(prog="python -m tools.world", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("render-data", help="render (or resume rendering) the training / held-out photo sets")
    data.add_argument("--which", choices=["train", "heldout", "all"], default="all")
    data.add_argument("--workers", type=int, default=1, help="rendering processes (chunks are seeded: same files)")
    train = sub.add_parser("train", help="train one of the world's networks (resumable)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    common.add_argument("--out", default="", help="checkpoint folder (default runs/world/NETWORK)")
    common.add_argument("--threads", type=int, default=1, help="torch CPU threads (and data-rendering processes)")
    common.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda); checkpoints are saved "
                        "on the CPU either way")
    networks = train.add_subparsers(dest="network", required=True)
    helps = {"identity": "the identity net: stage 1 on photos, stage 2 (once runs/world/generator exists) on photos "
                         "and the generator's renders",
             "generator": "the tri-plane generator (main phase, then the MSE polish)",
             "encoder": "the inversion encoder, through the frozen generator"}
    for name, config_type in TRAIN_CONFIGS.items():
        network = networks.add_parser(name, parents=[common], help=helps[name],
                                      description=f"{helps[name]}; defaults are the shipped network's settings "
                                                  f"({config_type.__name__})")
        add_flags(network, config_type)
        if name in ("generator", "encoder"):
            network.add_argument("--init-from", default="",
                                 help="start from exported weights (e.g. weights/default: their step count, a fresh "
                                      "optimiser) when OUT has no checkpoint to resume")
        if name == "generator":
            network.add_argument("--widen", action="store_true",
                                 help="grow a resumed or --init-from generator to --channel-base / --channel-max; it "
                                      "draws the same pictures at first and trains into the new channels")
    everything = sub.add_parser("train-all", help="the whole chain (data, identity, generator, identity stage 2, "
                                "encoder) within a wall-clock budget; generator and encoder steps are sized from their "
                                "step times measured first on the device (meant for a GPU)")
    everything.add_argument("--device", default="cuda", help="torch device to train on")
    everything.add_argument("--minutes", type=float, default=9.0, help="wall-clock budget of the whole chain")
    everything.add_argument("--workers", type=int, default=1, help="data-rendering processes (and torch CPU threads)")
    everything.add_argument("--generator-batch", type=int, default=PLAN_GENERATOR.batch,
                            help="the generator's batch (default: %(default)s)")
    everything.add_argument("--encoder-batch", type=int, default=PLAN_ENCODER.batch,
                            help="the encoder's batch (default: %(default)s)")
    everything.add_argument("--dry-run", action="store_true", help="print the resolved plan and stop")
    export = sub.add_parser("export", help="write weights/default/*.safetensors + JSON configs from the checkpoints")
    export.add_argument("--runs", default=str(RUNS))
    render = sub.add_parser("render", help="write example renders (PNG) of random people")
    render.add_argument("--out", required=True)
    render.add_argument("--n", type=int, default=6)
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--resolution", type=int, default=128)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command of the world's command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "render-data":
        _render_data(["train", "heldout"] if args.which == "all" else [args.which], args.workers)
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "train-all":
        return _train_all(args)
    if args.command == "export":
        from tools.world.export import export_weights
        print(export_weights(Path(args.runs)))
        return 0
    from guide_core.world.examples import write_examples
    for path in write_examples(Path(args.out), args.n, args.seed, args.resolution):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
