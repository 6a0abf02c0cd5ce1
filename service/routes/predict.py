"""POST /predict: classify an uploaded image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ..dependencies import UPLOAD_BODY, EngineDep, SettingsDep, VersionQuery, model_for, read_upload
from ..errors import InvalidParameter
from ..postprocessing import judgement
from ..schemas import ClassScore, Confidence, PredictResponse, Timings
from .problems import PROBLEM_RESPONSES

router = APIRouter(tags=["predict"])


@router.post("/predict", response_model=PredictResponse, responses=PROBLEM_RESPONSES, openapi_extra=UPLOAD_BODY,
             summary="Classify an image with a model from the repository")
async def predict(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    model: Annotated[str | None, Query(max_length=128, description="model name (default: the configured default model)",
                                       examples=["lenet5"])] = None,
    version: VersionQuery = None,
    top_k: Annotated[int, Query(ge=1, description="how many classes to return (at most max_top_k)")] = 5,
) -> Response:
    served = model_for(request, engine, model or settings.default_model, version)
    if top_k > settings.max_top_k:
        raise InvalidParameter(f"top_k must be at most {settings.max_top_k}; got {top_k}")
    labels, calibration = served.entry.manifest.labels, served.entry.manifest.calibration
    result = await served.classify(await read_upload(request), min(top_k, len(labels)))
    threshold = None if calibration is None else calibration.unsure_below
    unsure, message = judgement(result.probabilities, labels, threshold or 0.0)
    body = PredictResponse(
        model=served.entry.name, version=served.entry.version,
        predictions=[ClassScore(index=i, label=labels[i], probability=p) for i, p in result.top],
        provider=served.entry.providers[0], inverted=result.inverted,
        confidence=Confidence(unsure=unsure, probability=result.top[0][1], unsure_below=threshold, message=message),
        timings=Timings(**result.timings_ms),
    )
    # Serialised by pydantic directly: the hot path skips FastAPI re-validating what it just built.
    return Response(body.model_dump_json(), media_type="application/json")
