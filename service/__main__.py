"""``python -m service`` (or ``cnn-serve``): serve the model repository, settings from CNNSERVE_* variables."""

from __future__ import annotations

import argparse

from .app import create_app
from .auth import new_key
from .server import build_server
from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cnn-serve", description="Serve the model repository over HTTP.")
    parser.add_argument("--host", help="bind address (default: CNNSERVE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: CNNSERVE_PORT or 8000)")
    parser.add_argument("--model-dir", help="model repository (default: CNNSERVE_MODEL_DIR or ./models)")
    parser.add_argument("--new-key", metavar="NAME", help="make an API key for NAME, print it and the line to add to "
                                                          "the keys file (CNNSERVE_API_KEYS_FILE), and exit")
    args = parser.parse_args(argv)
    if args.new_key:
        key, line = new_key(args.new_key)
        print(f"key (give it to the client; it is not stored): {key}\nline for the keys file: {line}")
        return
    given = {"host": args.host, "port": args.port, "model_dir": args.model_dir}
    settings = Settings(**{name: value for name, value in given.items() if value is not None})
    build_server(create_app(settings), settings).run()


if __name__ == "__main__":
    main()
