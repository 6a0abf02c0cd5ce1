"""The chaos and fuzz suite runs against one real server (the service's own: uvicorn with uvloop and its
connection limits), the way clients reach it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.app import create_app
from service.settings import Settings
from tests.helpers import MODELS, running_server


@pytest.fixture(scope="package")
def fuzzed_url() -> Iterator[str]:
    with running_server(create_app(Settings(model_dir=MODELS, default_model="lenet5", log_level="error"))) as url:
        yield url
