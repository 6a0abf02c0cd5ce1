"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..dependencies import EngineDep, MetricsDep, RepositoryDep
from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}},
            summary="Every model is loaded and warmed up, and every inference worker is running")
async def readyz(repository: RepositoryDep, engine: EngineDep):
    body = Readiness(ready=repository.ready and engine.ready, workers=engine.workers,
                     models={n: repository.versions(n) for n in repository.names()}, errors=repository.errors)
    return body if body.ready else JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
