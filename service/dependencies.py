"""What routes get injected: the app's settings, model repository and inference engine.

The getters are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies on its thread pool,
which cost three thread hops per request for what is an attribute lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from .inference import InferenceEngine
from .metrics import Metrics
from .repository import LoadedModel, ModelRepository
from .settings import Settings
from .workers import Upload


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


async def get_engine(request: Request) -> InferenceEngine:
    return request.app.state.engine


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

async def read_upload(request: Request) -> Upload:
    """The raw body of an image upload: the inference worker parses the form (workers.py says why)."""
    return Upload(await request.body(), request.headers.get("content-type", ""))


# What image-upload routes take, for the OpenAPI schema (FastAPI itself leaves the body unparsed).
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary",
                            "description": "the image: PNG, JPEG, BMP, WebP or GIF (first frame)"}}}}}}}

# The ?version= every model route takes.
VersionQuery = Annotated[str | None, Query(description="model version (default: the model's default version, else the latest)")]


def model_for(request: Request, repository: ModelRepository, name: str, version: str | None) -> LoadedModel:
    """The model version a request names (ModelNotFound lists the available ones), recorded on the
    request so the access log and the metrics carry its name."""
    model = repository.get(name, version)
    request.state.model = model.name
    return model
