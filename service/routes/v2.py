"""The Open Inference Protocol (KServe V2) REST endpoints, beside the service's own API.

Inference goes through the same per-version batchers, body limit and metrics as /predict. Errors come
back in the protocol's ``{"error": "..."}`` shape, with 400 for a bad request: this router's route class
renders the service's exceptions that way.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ..dependencies import EngineDep, ReadinessDep, RepositoryDep, model_for
from ..errors import ProblemError
from ..http_errors import validation_detail
from ..openinference import (
    HEADER_LENGTH,
    ErrorResponse,
    InferenceResponse,
    ModelMetadata,
    RepositoryEntry,
    ServerMetadata,
    TensorMetadata,
)
from ..worker.protocol import Infer, Inferred


class ProtocolRoute(APIRoute):
    """Errors in the protocol's shape: ``{"error": "..."}``, 400 where the service's own API says 422."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ProblemError as exc:
                return JSONResponse({"error": exc.detail}, status_code=400 if exc.status == 422 else exc.status,
                                    headers=exc.headers)
            except RequestValidationError as exc:
                return JSONResponse({"error": validation_detail(exc)[0]}, status_code=400)

        return route


router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], route_class=ProtocolRoute)
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (400, 404, 413, 503)}
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository"]
# The protocol's health answers: 200 for true, a 4xx for false (an empty body either way).
HEALTH: dict[int | str, dict[str, Any]] = {200: {"description": "true", "content": None},
                                           400: {"description": "false", "content": None}}


def _ready(ready: bool) -> Response:
    return Response(status_code=200 if ready else 400)


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name="cnn-serve", version=request.app.version, extensions=EXTENSIONS)


@router.get("/health/live", response_class=Response, responses=HEALTH, summary="The server is alive (200)")
async def live() -> Response:
    return _ready(True)


@router.get("/health/ready", response_class=Response, responses=HEALTH,
            summary="Models are loaded and warmed up and every inference worker runs (200; 400 if not)")
async def ready(readiness: ReadinessDep) -> Response:
    return _ready(readiness.ready)


@router.post("/repository/index", response_model=list[RepositoryEntry], summary="Every model version and its state")
async def repository_index(repository: RepositoryDep) -> list[RepositoryEntry]:
    return [RepositoryEntry(name=m.name, version=m.version, state="READY" if m.status == "ready" else "UNAVAILABLE",
                            reason=m.error or "") for m in repository.all_versions()]


@router.get("/models/{name}", response_model=ModelMetadata, responses=ERRORS,
            summary="Model metadata: inputs and outputs")
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=ERRORS,
            include_in_schema=False)
async def model_metadata(request: Request, name: str, engine: EngineDep, repository: RepositoryDep,
                         version: str | None = None) -> ModelMetadata:
    m = model_for(request, engine, name, version).entry.manifest
    return ModelMetadata(
        name=m.name, versions=repository.versions(m.name), platform="onnxruntime_onnx",
        inputs=[TensorMetadata(name=m.input.name, datatype="FP32", shape=m.input.shape)],
        outputs=[TensorMetadata(name=t.name, datatype="FP32", shape=t.shape)
                 for t in (m.outputs.logits, m.outputs.features)],
    )


@router.get("/models/{name}/ready", response_class=Response, responses={**HEALTH, **ERRORS},
            summary="The model is loaded and warmed up (200)")
@router.get("/models/{name}/versions/{version}/ready", response_class=Response, include_in_schema=False)
async def model_ready(request: Request, name: str, engine: EngineDep, version: str | None = None) -> Response:
    model_for(request, engine, name, version)  # 404 when unknown or unavailable
    return _ready(True)


@router.post("/models/{name}/infer", responses={200: {"model": InferenceResponse}, **ERRORS},
             summary="Run the model on FP32 tensors (JSON or binary tensor data)",
             description="Body: the protocol's inference request (`inputs` as FP32 tensors of shape [N, C, H, W]; "
                         "optional `outputs` with `classification` / `binary_data` parameters). With the "
                         f"`{HEADER_LENGTH}` header, the JSON header is followed by the binary tensor data.")
@router.post("/models/{name}/versions/{version}/infer", include_in_schema=False)
async def infer(request: Request, name: str, engine: EngineDep, version: str | None = None) -> Response:
    served = model_for(request, engine, name, version)
    # Parsed, run and encoded in a worker: a request's JSON can be megabytes, too much for the event loop.
    job = Infer(served.entry.key, await request.body(), request.headers.get(HEADER_LENGTH), light_only=True)
    reply = await served.ask(job)
    assert isinstance(reply, Inferred)
    return Response(reply.content, headers=reply.headers)
