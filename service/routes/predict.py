"""POST /predict: classify an uploaded image.

The service's hot path, so its handler takes the bare ``Request`` and returns a ``Response``: the
innermost middleware (``service.middleware.DirectRoutes``) calls it directly, past FastAPI's router and
per-request machinery (0.04 ms of the server's CPU a request), and refuses at startup a route here that
takes parameters or dependencies. The query is one pydantic model, ``PredictQuery``: validated here in one
call (once per distinct query string: clients send the same few), and the source of the parameters the
OpenAPI schema shows (service/openapi.py).
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from ..dependencies import UPLOAD_BODY, VERSION_RULES, model_for, read_upload
from ..engine import Engine
from ..errors import InvalidParameter
from ..openapi import query_parameters
from ..postprocessing import judgement
from ..schemas import PredictResponse
from ..settings import Settings
from .problems import PROBLEM_RESPONSES

router = APIRouter(tags=["predict"])


class PredictQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # frozen: one instance serves every request that sent it

    model: str | None = Field(None, min_length=1, max_length=128, examples=["lenet5"],
                              description="model name (default: the configured default model)")
    version: str | None = Field(None, **VERSION_RULES)
    top_k: int = Field(5, ge=1, description="how many classes to return (at most max_top_k)")


@lru_cache(maxsize=256)
def predict_query(query_string: bytes) -> PredictQuery:
    """The query, parsed as Starlette's ``request.query_params`` would be (the last of a repeated name wins) and
    validated: 12–17 µs of the server's CPU a request, against under 1 for a string seen before. Invalid ones
    raise, and are not kept."""
    return PredictQuery.model_validate(dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)))


@router.post("/predict", response_model=PredictResponse, responses=PROBLEM_RESPONSES,
             openapi_extra={**UPLOAD_BODY, "parameters": query_parameters(PredictQuery)},
             summary="Classify an image with a model from the repository")
async def predict(request: Request) -> Response:
    try:
        query = predict_query(request.scope["query_string"])
    except ValidationError as exc:  # rendered like every other invalid parameter
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]) from None
    state = request.app.state
    engine: Engine = state.engine
    settings: Settings = state.settings
    served = model_for(request, engine, query.model or settings.default_model, query.version)
    if query.top_k > settings.max_top_k:
        raise InvalidParameter(f"top_k must be at most {settings.max_top_k}; got {query.top_k}")
    labels, calibration = served.entry.manifest.labels, served.entry.manifest.calibration
    result = await served.classify(await read_upload(request), min(query.top_k, len(labels)))
    threshold = None if calibration is None else calibration.unsure_below
    unsure, message = judgement(result.probabilities, result.order, labels, threshold or 0.0)
    # The answer, PredictResponse's fields from the service's own typed values, goes straight to JSON: pydantic's
    # serialiser without validating it again (validating and dumping it as a model cost 8 µs of the server's
    # CPU a request, this 2). The tests hold every answer to PredictResponse.
    body = {
        "model": served.entry.name, "version": served.entry.version,
        "predictions": [{"index": i, "label": labels[i], "probability": p} for i, p in result.top],
        "provider": served.entry.providers[0], "inverted": result.inverted,
        "confidence": {"unsure": unsure, "probability": result.top[0][1], "unsure_below": threshold,
                       "message": message},
        "timings": result.timings_ms,
    }
    return Response(to_json(body), media_type="application/json")
