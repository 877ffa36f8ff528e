"""Entry point of the guide studio (also the Hugging Face Spaces app_file):
`python app.py [--host H] [--port P] [--share]`.
"""
from __future__ import annotations

import argparse
import os

# Gradio must not call home at start (analytics) and must not ask for a share link unless told to.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    """Launch the studio (locally, or on a Hugging Face Space when SPACE_ID is set)."""
    on_space = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description="guide studio", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="0.0.0.0" if on_space else "127.0.0.1",
                        help="interface to bind (0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    args = parser.parse_args()
    from demo.app import build_app, fetch_released_weights, launch_kwargs

    if on_space or os.environ.get("GUIDE_HF_REPO"):  # a host's mirror of the released weights: fetch it at start
        fetch_released_weights()
    build_app().launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())


if __name__ == "__main__":
    main()
