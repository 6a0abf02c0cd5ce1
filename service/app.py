"""The app factory: settings in, a FastAPI app with every model loaded and warmed up out."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .errors import install_error_handlers
from .inference import InferenceEngine
from .metrics import Metrics
from .middleware import RequestContextMiddleware, configure_logging
from .repository import ModelRepository
from .routes import cam, health, models, page, predict, v2
from .settings import Settings, get_settings
from .workers import WorkerPool

DESCRIPTION = """Classify images with the CNN zoo and see why: top-k predictions, architecture summaries,
and CAM / Grad-CAM heatmaps, all computed with ONNX Runtime. Errors are RFC 9457 problem details."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        repository = ModelRepository(settings)
        repository.load_all()
        pool = WorkerPool(settings)
        # The workers load and warm every model before the first request is served.
        repository.record_sessions(await pool.start(repository.verified()))
        app.state.repository = repository
        app.state.engine = InferenceEngine(settings, metrics, pool)
        try:
            yield
        finally:
            await app.state.engine.close()
            await pool.close()

    app = FastAPI(title="CNN serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=["X-Request-ID", "X-Class-Index", "X-Class-Label", "X-Score"])
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_upload_bytes)
    for router in (predict.router, models.router, cam.router, health.router, v2.router, page.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    return app
