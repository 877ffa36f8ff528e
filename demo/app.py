# The studio's layout. Placeholder until the studio issue lands: it says what is missing instead of pretending.
from __future__ import annotations

import gradio as gr

MISSING = """
# guide studio

The interactive studio (upload → UFO → live unlearning → multi-view → t-SNE → report) is not built yet.

What exists today is the library: `python -m guide_core --help`.
"""


def build_app() -> gr.Blocks:
    with gr.Blocks(title="guide") as app:
        gr.Markdown(MISSING)
    return app
