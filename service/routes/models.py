"""GET /models, /models/{name}, /models/{name}/summary."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from ..dependencies import EngineDep, RepositoryDep, SettingsDep, VersionQuery, model_for
from ..manifest import MODEL_FILE
from ..repository import ModelRepository, ModelVersion
from ..schemas import InputInfo, ModelInfo, ModelList, RunInfo, SummaryResponse, SummaryTotals
from ..summary_table import render_summary
from ..worker.explain import METHODS
from .problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/models", tags=["models"])


def model_info(model: ModelVersion, repository: ModelRepository) -> ModelInfo:
    m = model.manifest
    return ModelInfo(
        name=m.name, version=m.version, versions=repository.versions(m.name),
        default_version=repository.default_version(m.name), precision=m.precision, architecture=m.architecture,
        description=m.description,
        input=InputInfo(channels=m.input.channels, height=m.input.height, width=m.input.width,
                        color=m.preprocessing.color),
        labels=m.labels, test_accuracy=m.metrics.test_accuracy, test_dataset=m.metrics.dataset,
        external=m.metrics.external, calibration=m.calibration,
        parameters=m.summary.total_params, heatmap_methods=model.methods,
        heatmap_titles={name: METHODS[name].title for name in model.methods}, heatmap_layer=m.heatmaps.layer,
        providers=model.providers, provider_fallback=model.fallback, status=model.status, error=model.error,
        runs=None if model.plan is None else RunInfo(threads=model.plan.threads, channels_filled=model.plan.blocked),
    )


def summary_response(model: ModelVersion) -> SummaryResponse:
    s = model.manifest.summary
    totals = SummaryTotals(total_params=s.total_params, trainable_params=s.trainable_params,
                           non_trainable_params=s.total_params - s.trainable_params, macs=s.macs,
                           size_bytes=s.size_bytes, onnx_bytes=model.manifest.files[MODEL_FILE].bytes)
    return SummaryResponse(model=model.name, version=model.version, input_shape=s.input_shape, layers=s.layers,
                           totals=totals)


@router.get("", response_model=ModelList, summary="Every model in the repository (each at its default version)")
async def list_models(repository: RepositoryDep, settings: SettingsDep) -> ModelList:
    defaults = [repository.models[name][repository.default_version(name)] for name in repository.names()]
    return ModelList(default_model=settings.default_model, models=[model_info(m, repository) for m in defaults])


@router.get("/{name}", response_model=ModelInfo, responses=PROBLEM_RESPONSES, summary="One model's metadata")
async def get_model(request: Request, name: str, repository: RepositoryDep, version: VersionQuery = None) -> ModelInfo:
    model = repository.find(name, version)  # a failed version too: its status and error say why
    request.state.model = model.name
    return model_info(model, repository)


@router.get("/{name}/summary", response_model=SummaryResponse, responses={
    **PROBLEM_RESPONSES, 200: {"content": {"application/json": {}, "text/plain": {"example": "Layer (type) ..."}}}},
    summary="Architecture summary: layers, output shapes, parameters, multiply-adds")
async def get_summary(request: Request, name: str, engine: EngineDep, version: VersionQuery = None,
                      format: Annotated[Literal["json", "text"], Query(
                          description="json, or a fixed-width text table")] = "json") -> Response | SummaryResponse:
    summary = summary_response(model_for(request, engine, name, version).entry)
    return PlainTextResponse(render_summary(summary)) if format == "text" else summary
