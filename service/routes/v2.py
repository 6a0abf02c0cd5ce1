"""The Open Inference Protocol (KServe V2) REST endpoints, beside the service's own API.

Inference goes through the same per-version batchers, body limit and metrics as /predict. Errors come
back in the protocol's ``{"error": "..."}`` shape, with 400 for a bad request: this router's route class
renders the service's exceptions that way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ..dependencies import EngineDep, ReadinessDep, RepositoryDep, SettingsDep, model_for
from ..errors import InvalidParameter, ProblemError
from ..http_errors import validation_detail
from ..manifest import Manifest
from ..openinference import (
    HEADER_LENGTH,
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    RepositoryEntry,
    ServerMetadata,
    TensorMetadata,
    classification,
    encode_response,
    input_tensors,
    parse_request,
)


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
async def infer(request: Request, name: str, engine: EngineDep, settings: SettingsDep,
                version: str | None = None) -> Response:
    served = model_for(request, engine, name, version)
    manifest = served.entry.manifest
    body = await request.body()
    # Decoding a large JSON tensor takes milliseconds: off the event loop.
    parsed, tensors = await asyncio.to_thread(_decode, body, request.headers.get(HEADER_LENGTH))
    logits, features = await served.infer(_model_input(manifest, tensors, settings.max_batch_size))
    by_name = {manifest.outputs.logits.name: logits, manifest.outputs.features.name: features}
    outputs = await asyncio.to_thread(_select_outputs, parsed, by_name, manifest)
    content, headers = encode_response(manifest.name, manifest.version, parsed.id, outputs)
    return Response(content, headers=headers)


def _decode(body: bytes, header_length: str | None) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    parsed, binary = parse_request(body, header_length)
    return parsed, input_tensors(parsed, binary)


def _model_input(manifest: Manifest, tensors: dict[str, np.ndarray], max_batch: int) -> np.ndarray:
    spec = manifest.input
    if list(tensors) != [spec.name]:
        raise InvalidParameter(f"model {manifest.name} takes one input named {spec.name!r}; got {list(tensors)}")
    batch = tensors[spec.name]
    if batch.ndim != 4 or list(batch.shape[1:]) != spec.shape[1:] or not 1 <= len(batch) <= max_batch:
        raise InvalidParameter(f"input {spec.name!r} must have shape [N, {', '.join(map(str, spec.shape[1:]))}] "
                               f"with 1 <= N <= {max_batch}; got {list(batch.shape)}")
    if not np.isfinite(batch).all():
        raise InvalidParameter(f"input {spec.name!r} holds NaN or infinite values")
    return np.ascontiguousarray(batch)


def _select_outputs(parsed: InferenceRequest, by_name: dict[str, np.ndarray],
                    manifest: Manifest) -> list[tuple[str, np.ndarray, bool]]:
    """The outputs asked for (all of them when none are named), in binary where asked, with the
    classification extension applied where an output asks for it."""
    binary_default = bool(parsed.parameters.get("binary_data_output", False))
    if parsed.outputs is None:
        return [(name, array, binary_default) for name, array in by_name.items()]
    selected = []
    for wanted in parsed.outputs:
        if wanted.name not in by_name:
            raise InvalidParameter(f"model {manifest.name} has no output {wanted.name!r}; "
                                   f"its outputs are {list(by_name)}")
        array = by_name[wanted.name]
        k = wanted.parameters.get("classification")
        if k is not None:
            if array.ndim != 2 or not isinstance(k, int) or k < 1:
                raise InvalidParameter(f"classification needs a positive integer on the "
                                       f"{manifest.outputs.logits.name!r} output; got {k!r} on {wanted.name!r}")
            array = classification(array, min(k, array.shape[1]), manifest.labels)
        selected.append((wanted.name, array, bool(wanted.parameters.get("binary_data", binary_default))))
    return selected
