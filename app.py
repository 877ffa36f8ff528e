# Entry point of the guide studio (also the Hugging Face Spaces app_file): `python app.py [--host H] [--port P] [--share]`.
from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description="guide studio", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 on a Space)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    args = parser.parse_args()
    from demo.app import build_app

    build_app().queue().launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
