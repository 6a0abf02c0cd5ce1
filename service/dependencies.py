"""What routes get injected: the app's settings, model repository and inference engine."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .inference import InferenceEngine
from .metrics import Metrics
from .repository import ModelRepository
from .settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_repository(request: Request) -> ModelRepository:
    return request.app.state.repository


def get_engine(request: Request) -> InferenceEngine:
    return request.app.state.engine


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
