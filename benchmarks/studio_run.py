# The studio's unlearning against the CLI's, same model, photo and settings: seconds per iteration of the library loop
# alone (what `guide unlearn` runs), of the studio's handler consumed directly, and of the handler run the way Gradio
# runs it (in a worker thread, each streamed update serialised to JSON on another thread, as the server does before
# sending it). Goal: studio <= 2x the CLI.
#   python benchmarks/studio_run.py                  # the embedded default world, person000_photo0, its defaults
#   python benchmarks/studio_run.py --iters 40
from __future__ import annotations

import argparse
import dataclasses
import json
import queue
import sys
import threading
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from demo import handlers  # noqa: E402
from guide_core.engine import Unlearning  # noqa: E402


# Seconds per iteration of the library loop on the session's source (the CLI's path after inversion).
def cli_seconds(session, cfg) -> float:
    bundle = handlers.get_bundle(session.model)
    run = Unlearning(bundle, session.current.w_u[None], cfg=cfg)
    run.run_all()
    return run.seconds / run.steps_done


# Seconds per iteration the handler reports for its own run; with `served`, in a worker thread while another thread
# serialises every update's plot to JSON (Gradio's postprocessing).
def studio_seconds(session, cfg, served: bool) -> tuple[float, int]:
    # the studio's controls are its numeric settings; the rest come from the model's defaults, as in the studio
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                if f.name != "d" and type(getattr(cfg, f.name)) in (int, float)}
    updates: queue.Queue = queue.Queue()

    def consume() -> None:
        for out in handlers.run_unlearning(session, cfg.d, settings, start_over=True):
            updates.put(out)
        updates.put(None)

    def serialise() -> int:
        count = 0
        while (out := updates.get()) is not None:
            json.dumps(out.loss_plot.to_plotly_json(), default=str)
            count += 1
        return count

    if served:
        worker = threading.Thread(target=consume)
        worker.start()
        count = serialise()
        worker.join()
    else:
        consume()
        count = serialise()
    return session.job.seconds / session.job.steps_done, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--photo", default=str(REPO / "assets" / "examples" / "person000_photo0.png"))
    parser.add_argument("--iters", type=int, default=40, help="LTU iterations of each run")
    parser.add_argument("--dry-run", action="store_true", help="print the settings, run nothing")
    args = parser.parse_args(argv)
    session = handlers.upload_photo(args.photo, args.model, 30.0, None).session
    cfg = dataclasses.replace(handlers.config_defaults(args.model), iters=args.iters)
    print(f"model {args.model}, photo {Path(args.photo).name}, {args.iters} iterations, preview every "
          f"{cfg.preview_every}, torch threads {torch.get_num_threads()}")
    if args.dry_run:
        return 0
    cli = cli_seconds(session, cfg)
    direct, _ = studio_seconds(session, cfg, served=False)
    served, updates = studio_seconds(session, cfg, served=True)
    print(f"{'path':<44}{'s / iteration':>14}{'x CLI':>8}")
    for name, value in (("library loop (the CLI)", cli), ("studio handler, consumed directly", direct),
                        (f"studio handler, served ({updates} updates)", served)):
        print(f"{name:<44}{value:>14.3f}{value / cli:>8.2f}")
    print(f"goal studio <= 2x CLI: {'met' if served <= 2 * cli else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
