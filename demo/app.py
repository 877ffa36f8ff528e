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
