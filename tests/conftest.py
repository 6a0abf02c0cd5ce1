"""Shared fixtures: the real app on the shipped models, and real digit images. (Helpers: tests/helpers.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.schemas import PredictResponse
from service.settings import Settings
from tests.helpers import MODELS, running_server


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings(model_dir=MODELS, default_model="mnist_cnn_b", log_level="warning")


def answer_is_a_predict_response(response: httpx.Response) -> None:
    """/predict serialises its answer without building the model: every answer a test gets must still be exactly
    a PredictResponse (no field missing, none extra, every value of its type)."""
    if response.request.url.path == "/predict" and response.status_code == 200:
        response.read()
        assert PredictResponse.model_validate_json(response.content).model_dump(mode="json") == response.json()


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        test_client.event_hooks["response"].append(answer_is_a_predict_response)
        yield test_client


@pytest.fixture(scope="session")
def mnist_test():
    from training.data import mnist_digits

    return mnist_digits("test")


@pytest.fixture(scope="session")
def placed_test():
    from training.data import placed_digits

    return placed_digits("test")


@pytest.fixture(scope="session")
def server_url(settings: Settings) -> Iterator[str]:
    """The app on a real uvicorn server on loopback, for clients that speak HTTP themselves."""
    with running_server(create_app(settings)) as url:
        yield url
