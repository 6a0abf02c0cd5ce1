"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..dependencies import EngineDep, MetricsDep, ReadinessDep
from ..readiness import liveness
from ..schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, response_model_exclude_none=True,
            responses={503: {"model": Health, "description": "restart me"}},
            summary="The process is alive and can keep its inference workers running")
async def healthz(engine: EngineDep) -> Response | Health:
    health = liveness(engine)
    return health if health.status == "ok" else JSONResponse(health.model_dump(), status_code=503)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}},
            summary="Models are loaded and warmed up, every inference worker runs, and the server is not shutting down")
async def readyz(readiness: ReadinessDep) -> Response | Readiness:
    return readiness if readiness.ready else JSONResponse(readiness.model_dump(), status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
