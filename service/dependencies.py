"""What routes get injected: the app's settings, model repository, inference engine and metrics.

The getters are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies on its thread pool,
which cost three thread hops per request for what is an attribute lookup."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request

from .engine import Engine, RemoteModel
from .metrics import Metrics
from .readiness import readiness
from .repository import ModelRepository
from .schemas import Readiness
from .settings import Settings
from .uploads import FIELD, RAW_TYPES
from .worker.protocol import Upload


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_repository(request: Request) -> ModelRepository:
    repository: ModelRepository = request.app.state.repository
    return repository


async def get_engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_readiness(request: Request) -> Readiness:
    state = request.app.state
    return readiness(state.settings, state.repository, state.engine, state.draining)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]


async def read_upload(request: Request) -> Upload:
    """The raw body of an image upload: an inference worker parses the form (service/uploads.py says why)."""
    return Upload(await request.body(), request.headers.get("content-type", ""))


# What image-upload routes take, for the OpenAPI schema (FastAPI itself leaves the body unparsed).
_IMAGE = {"type": "string", "format": "binary", "description": "the image: PNG, JPEG, BMP, WebP or GIF (first frame)"}
UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": [FIELD], "properties": {FIELD: _IMAGE}}},
    **{media_type: {"schema": _IMAGE} for media_type in RAW_TYPES}}}}

# The ?version= every model route takes: its rules, for Query here and for /predict's PredictQuery model.
VERSION_RULES: dict[str, Any] = {
    "min_length": 1, "max_length": 64,
    "description": "model version (default: the model's default version, else the latest)"}
VersionQuery = Annotated[str | None, Query(**VERSION_RULES)]


def model_for(request: Request, engine: Engine, name: str, version: str | None) -> RemoteModel:
    """The model version a request names (ModelNotFound lists the available ones), recorded on the
    request so the access log and the metrics carry its name."""
    model = engine.model(name, version)
    request.state.model = model.entry.name
    return model
