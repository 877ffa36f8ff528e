"""The studio application: picks the models and examples, builds the page, and configures the queue."""
from __future__ import annotations

import os
import sys
from pathlib import Path

# No analytics calls home, set before gradio is imported anywhere: nothing reaches the internet at start.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from demo import handlers, layout  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "assets" / "examples"


def build_app(max_queue: int = 16) -> gr.Blocks:
    """Build the Blocks app with its queue: heavy events share one worker, the queue shows each visitor's position."""
    from guide_core.config import LTUConfig

    models = handlers.available_models()
    if not models:
        raise RuntimeError("no generator is available: the embedded default world's weights are missing from weights/ "
                           "(see weights/README.md)")
    default_model = models[0]
    defaults = handlers.config_defaults(default_model)
    app = layout.build(layout.example_paths(EXAMPLES_DIR), models, default_model, LTUConfig, defaults)
    return app.queue(max_size=max_queue, default_concurrency_limit=1)


def launch_kwargs() -> dict:
    """Launch options shared by app.py and the tests: upload size limit, no analytics, no telemetry pages."""
    return dict(max_file_size=handlers.MAX_UPLOAD, show_error=True, footer_links=["api"],
                allowed_paths=[str(EXAMPLES_DIR)])


def fetch_released_weights(models: str | None = None) -> list[str]:
    """Fetch every file of the released bundles at start-up on a Hugging Face Space; returns what was not fetched.

    Runs on a Space or wherever GUIDE_HF_REPO names a host's mirror; the bundles are GUIDE_SPACE_MODELS
    (comma-separated; default the paper's generator), fetched through guide_core.fetching. With GUIDE_HF_REPO set every
    file comes from that repository, the generator as the converted .safetensors that `weights publish` put there
    (files its preload_from_hub already placed in the Hugging Face cache are copied, not downloaded). The EG3D licence
    must be accepted by the host (GUIDE_ACCEPT_LICENCE=1). A failure is printed and the app falls back to the embedded
    world, so a Space without network access or an accepted licence still starts.
    """
    from guide_core import fetching, weights

    wanted = (models or os.environ.get("GUIDE_SPACE_MODELS", fetching.DEFAULT_MODEL)).split(",")
    failures = []
    for model in filter(None, (m.strip() for m in wanted)):
        try:
            report = fetching.fetch_all(model, progress=False, out=sys.stdout)
        except weights.WeightsError as error:  # an unknown model or a licence not accepted: nothing was fetched
            failures.append(f"{model}: {error}")
            continue
        failures += [f"{name}: {why}" for name, why in report.failed.items()]
        failures += [f"{name} (optional): {why}" for name, why in report.optional_failed.items()]
    for line in failures:
        print(f"[guide studio] weight not fetched: {line}")
    return failures
