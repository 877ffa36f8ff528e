# The studio application: picks the models and examples, builds the page, and configures the queue.
from __future__ import annotations

import os
from pathlib import Path

# No analytics calls home, before gradio is imported anywhere (issue 6: nothing reaches the internet at start).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from demo import handlers, layout  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "assets" / "examples"


# Build the Blocks app with its queue: heavy events share one worker, the queue shows each visitor's position.
def build_app(max_queue: int = 16) -> gr.Blocks:
    from guide_core.guide import LTUConfig

    models = handlers.available_models()
    if not models:
        raise RuntimeError("no generator is available: the embedded default world's weights are missing from weights/ "
                           "(see weights/README.md)")
    default_model = models[0]
    defaults = handlers.config_defaults(default_model)
    app = layout.build(layout.example_paths(EXAMPLES_DIR), models, default_model, LTUConfig, defaults)
    return app.queue(max_size=max_queue, default_concurrency_limit=1)


# Launch options shared by app.py and the tests: upload size limit, no analytics, no telemetry pages.
def launch_kwargs() -> dict:
    return dict(max_file_size=handlers.MAX_UPLOAD, show_error=True, footer_links=["api"],
                allowed_paths=[str(EXAMPLES_DIR)])


# On a Hugging Face Space: fetch the released weights through the weights manager at start-up (GUIDE_SPACE_MODELS,
# comma-separated bundle names; default the paper's generator). A failure is printed and the app falls back to the
# embedded world, so a Space without network access or licences still starts.
def fetch_released_weights(models: str | None = None) -> list[str]:
    from guide_core import bundle, weights

    wanted = (models or os.environ.get("GUIDE_SPACE_MODELS", "eg3d-ffhq-rebalanced")).split(",")
    failures = []
    for model in filter(None, (m.strip() for m in wanted)):
        names = [bundle.EG3D_MODELS.get(model, (model, ""))[0], *bundle.NET_WEIGHTS.values()]
        for name in names:
            try:
                weights.fetch(name, progress=False)
            except Exception as error:  # noqa: BLE001 - report every missing file, keep starting
                failures.append(f"{name}: {error}")
    for line in failures:
        print(f"[guide studio] weight not fetched: {line}")
    return failures
