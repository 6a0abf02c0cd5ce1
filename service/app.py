"""The app factory: settings in, a FastAPI app with every model verified, loaded and warmed up out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from .auth import ApiKeyMiddleware, load_keys
from .engine import Engine
from .heap import freeze_startup_objects
from .http_errors import install_error_handlers
from .logs import AccessLog, configure_logging
from .metrics import Metrics
from .middleware import AccessMiddleware, BodyLimitMiddleware, DirectRoutes, RequestIdMiddleware
from .openapi import complete_schema
from .repository import ModelRepository
from .routes import cam, health, models, page, predict, v2
from .settings import Settings, get_settings

EXPOSED_HEADERS = ["X-Request-ID", "X-Class-Index", "X-Class-Label", "X-Score", "X-Method", "X-Scaled-From"]
DESCRIPTION = """Classify images with the CNN zoo and see why: top-k predictions, architecture summaries,
and CAM / Grad-CAM heatmaps, all computed with ONNX Runtime. Errors are RFC 9457 problem details."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics()
    access_log = AccessLog()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        repository = ModelRepository(settings)
        repository.load_all()
        engine = Engine(settings, metrics, repository)
        await engine.start()  # the workers load and warm every version before the first request
        app.state.repository, app.state.engine = repository, engine
        freeze_startup_objects()
        try:
            yield
        finally:
            await engine.close()
            access_log.flush()

    # FastAPI's native OpenTelemetry hook looked up the global tracer provider (environment reads) on every
    # request; this service exports Prometheus metrics and JSON logs itself, so it is off.
    app = FastAPI(title="CNN serve", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.draining = False  # set by the server when it starts shutting down: /readyz turns 503
    install_error_handlers(app)
    app.add_middleware(DirectRoutes, routes=predict.router.routes)  # added first: innermost
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_upload_bytes)
    keys = load_keys(settings)
    if keys:
        app.add_middleware(ApiKeyMiddleware, settings=settings, keys=keys)
    if settings.allowed_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.allowed_origins, allow_methods=["GET", "POST"],
                           allow_headers=["*"], expose_headers=EXPOSED_HEADERS)
    app.add_middleware(AccessMiddleware, metrics=metrics, access_log=access_log)
    app.add_middleware(RequestIdMiddleware)  # added last: outermost
    for router in (predict.router, models.router, cam.router, health.router, v2.router, page.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")
    complete_schema(app, settings)
    return app
