"""`cxrlm serve`: run the HTTP API and web viewer for one model; `--add-key NAME` creates an API key and exits.

See docs/SERVING.md. FastAPI, uvicorn and SQLAlchemy are the `serve` extra, imported only when the verb runs.
"""

import argparse
import os
from pathlib import Path

from cxrlm.cli.gate import add_gate_option
from cxrlm.cli.model_options import add_model_options, load_model_from_args
from cxrlm.limits import MAX_IMAGES, MAX_PROMPT_TOKENS, MAX_TEXT_CHARS


def default_data_dir() -> Path:
    return Path(os.environ.get("CXRLM_SERVE_DIR") or Path.home() / ".local" / "share" / "cxrlm" / "serve")


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="OpenAI-compatible API, task endpoints and a web viewer")
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (beyond loopback needs API keys)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", help="sqlite:///PATH or postgresql://... (default: sqlite in --data-dir)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where study PNGs (and the default SQLite file) live "
                             "(default: $CXRLM_SERVE_DIR or ~/.local/share/cxrlm/serve)")
    parser.add_argument("--add-key", metavar="NAME", help="create an API key, print it once, and exit")
    parser.add_argument("--revoke-key", metavar="KEY_ID", help="revoke an API key by its id, and exit")
    parser.add_argument("--max-queue", type=int, default=8, help="requests waiting for the model before 429")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request, queueing included")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted image file")
    parser.add_argument("--max-pixels", type=int, default=40_000_000, help="largest accepted image, in pixels")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="cap on tokens generated per request")
    parser.add_argument("--max-text-chars", type=int, default=MAX_TEXT_CHARS,
                        help="characters of text per request, all messages together")
    parser.add_argument("--max-prompt-tokens", type=int, default=MAX_PROMPT_TOKENS,
                        help="the same text in the model's tokens (counted before generation)")
    parser.add_argument("--max-images", type=int, default=MAX_IMAGES,
                        help="images per request (the views of one study): a chat message's, or a task's study_ids")
    parser.add_argument("--rate-limit", type=int, default=120, help="requests per minute per API key (0: off)")
    add_gate_option(parser)
    parser.add_argument("--pacs", metavar="URL", help="show a worklist of this PACS's recent chest studies in the "
                        "viewer (its DICOMweb root; credentials from the environment, docs/PACS.md)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser calls from this origin (repeatable; CORS is off by default)")
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from cxrlm.errors import ConfigError

    _check_limits(args, ConfigError)
    try:
        import uvicorn

        from cxrlm.serve.app import ServeSettings, create_app
        from cxrlm.serve.security import check_exposure, is_loopback
        from cxrlm.serve.storage import Store
    except ImportError as err:
        raise ConfigError(f"`cxrlm serve` needs the serve extra ({err.name} is missing): "
                          "pip install 'cxrlm[serve]'") from None

    data_dir = args.data_dir or default_data_dir()
    store = Store(args.db or f"sqlite:///{data_dir / 'cxrlm.db'}", data_dir)
    if args.add_key:
        key_id, key = store.add_key(args.add_key)
        print(f"API key {key_id} ({args.add_key}); shown once, store it now:\n{key}")
        return 0
    if args.revoke_key:
        if not store.revoke_key(args.revoke_key):
            raise ConfigError(f"no live API key with id {args.revoke_key!r}")
        print(f"revoked API key {args.revoke_key}")
        return 0
    has_keys = store.has_keys()
    check_exposure(args.host, has_keys)  # before the (slow) model load
    pacs = _pacs_client(args.pacs) if args.pacs else None

    model = load_model_from_args(args)
    settings = ServeSettings(
        max_queue=args.max_queue, timeout_s=args.timeout, max_upload_bytes=int(args.max_upload_mb * 1_000_000),
        max_pixels=args.max_pixels, max_new_tokens=args.max_new_tokens, rate_per_minute=args.rate_limit,
        max_text_chars=args.max_text_chars, max_prompt_tokens=args.max_prompt_tokens, max_images=args.max_images,
        require_keys=has_keys or not is_loopback(args.host), cors_origins=tuple(args.cors_origin), gate=args.gate,
    )
    app = create_app(model, store, settings)
    if pacs is not None:
        from cxrlm.serve.pacs_routes import add_pacs_routes

        add_pacs_routes(app, pacs)
    print(f"cxrlm serve: {model.name} on http://{args.host}:{args.port}/ (API keys "
          f"{'required' if settings.require_keys else 'off: loopback only'})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0


def _pacs_client(url: str):
    """The PACS of the worklist: URL and credentials are checked now, before the model loads."""
    from cxrlm.pacs import PacsClient

    return PacsClient.from_env(url)


def _check_limits(args, error) -> None:
    for name in ("max_queue", "max_new_tokens", "max_pixels", "port", "max_text_chars", "max_prompt_tokens",
                 "max_images"):
        if getattr(args, name) < 1:
            raise error(f"--{name.replace('_', '-')} must be at least 1")
    if args.timeout <= 0 or args.max_upload_mb <= 0:
        raise error("--timeout and --max-upload-mb must be positive")
