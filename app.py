"""Pronunciation Coach: the Gradio app (learner page, teacher tab, `/assess` API).

    python app.py                                  # http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 8080 --model DIR_OR_HUB_ID --adapter DIR|none [--analytics]

`--host/--port` default to GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Spaces sets 0.0.0.0:7860),
else 127.0.0.1:7860; `--model/--adapter` to apa.config (APA_MODEL / APA_ADAPTER, then apa-mini
with the shipped adapter). No share link, no extra `allowed_paths`, no outbound connection unless
a Hub id is given or `--analytics` (webapp.security).

API (also under "Use via API" in the page footer):

    from gradio_client import Client, handle_file
    result = Client("http://127.0.0.1:7860/").predict(
        handle_file("clip.wav"), "WE CALL IT BEAR", api_name="/assess")   # Assessment.to_dict()

Bad input raises gradio_client.exceptions.AppError: `.title` is a code (apa.errors.user_error),
`.message` the sentence shown to learners.

`import app` builds the page (`demo`) but loads no model, so tests can inject a fake
(`build_demo(scorer=fake)`); `python app.py` loads it before launching, and so does a plain
import on Spaces (env SPACE_ID), so the first learner never waits for the model. The code lives
in webapp/ (README "Layout"); limits and privacy are in README "Limits and privacy".
"""

from __future__ import annotations

import argparse
import logging

from apa.config import ADAPTER_HELP, MODEL_HELP, gradio_analytics, on_spaces, server_address
from webapp import scorer, security

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Pronunciation Coach web app")
    host, port = server_address(DEFAULT_HOST, DEFAULT_PORT)
    p.add_argument("--host", default=host)
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--adapter", default=None, help=ADAPTER_HELP)
    p.add_argument(
        "--analytics", action="store_true", help="let Gradio send analytics and check its version (env APA_ANALYTICS)"
    )
    return p.parse_args(argv)


# Before gradio (and so huggingface_hub) is imported: both read their settings at import.
_START = parse_args() if __name__ == "__main__" else parse_args([])
security.quiet_outbound(_START.model, _START.adapter, analytics=_START.analytics or gradio_analytics())

from webapp.layout import build_demo, launch_kwargs  # noqa: E402

demo = build_demo()

if on_spaces() and __name__ != "__main__":
    scorer.get_scorer()  # on Spaces: load at import, before the first learner arrives
    scorer.warm_up()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    scorer.configure(args.model, args.adapter)
    scorer.get_scorer()
    scorer.warm_up()
    demo.launch(server_name=args.host, server_port=args.port, **launch_kwargs())


if __name__ == "__main__":
    main()
