"""``python -m service`` (or ``cnn-serve``): run the API with uvicorn, settings from CNNSERVE_* variables."""

from __future__ import annotations

import argparse

import uvicorn

from .app import create_app
from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cnn-serve", description="Serve the model repository over HTTP.")
    parser.add_argument("--host", help="bind address (default: CNNSERVE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: CNNSERVE_PORT or 8000)")
    parser.add_argument("--model-dir", help="model repository (default: CNNSERVE_MODEL_DIR or ./models)")
    args = parser.parse_args(argv)
    given = {"host": args.host, "port": args.port, "model_dir": args.model_dir}
    overrides = {name: value for name, value in given.items() if value is not None}
    settings = Settings(**overrides)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                access_log=False)  # our middleware writes one structured line per request


if __name__ == "__main__":
    main()
