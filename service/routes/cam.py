"""POST /models/{name}/cam: where in the image the evidence for a class lies."""

from __future__ import annotations

import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from PIL import Image

from .. import cam
from ..dependencies import UPLOAD_BODY, EngineDep, RepositoryDep, VersionQuery, model_for, read_upload
from ..schemas import CamMethod, CamResponse, ClassScore
from .problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/models", tags=["heatmaps"])


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@router.post("/{name}/cam", response_model=CamResponse, responses={
    **PROBLEM_RESPONSES, 200: {"content": {"application/json": {}, "image/png": {}},
                               "description": "JSON heatmap, or a PNG when format is png or overlay"}},
    openapi_extra=UPLOAD_BODY, summary="CAM / Grad-CAM heatmap for an uploaded image")
async def class_activation_map(
    request: Request,
    name: str,
    repository: RepositoryDep,
    engine: EngineDep,
    class_: Annotated[str | None, Query(alias="class", description="class index or label (default: the top-1 class)", examples=["7"])] = None,
    method: Annotated[CamMethod | None, Query(description="cam (GAP nets) or gradcam (every net); default: cam where supported")] = None,
    format: Annotated[Literal["json", "png", "overlay"], Query(description="json map, png heatmap, or overlay on the image")] = "json",
    opacity: Annotated[float, Query(ge=0, le=1, description="heatmap opacity for format=overlay")] = 0.5,
    version: VersionQuery = None,
):
    loaded = model_for(request, repository, name, version)
    result = await engine.explain(loaded, await read_upload(request), class_, method)
    labels = loaded.manifest.labels
    score = float(result.probabilities[result.class_index])
    if format == "json":
        top = int(result.probabilities.argmax())
        return CamResponse(
            model=loaded.name, version=loaded.version, method=result.method, class_index=result.class_index,
            label=labels[result.class_index], score=score,
            predicted=ClassScore(index=top, label=labels[top], probability=float(result.probabilities[top])),
            feature_size=list(result.heatmap.shape), heatmap=result.heatmap.round(5).tolist(),
            input_size=list(result.heatmap_input.shape), heatmap_input=result.heatmap_input.round(5).tolist(),
        )
    image = result.prepared.image
    on_image = cam.to_image_space(result.heatmap_input, image.size, result.prepared.scale, result.prepared.offset)
    picture = cam.overlay(image, on_image, opacity) if format == "overlay" else Image.fromarray(cam.colormap(on_image))
    headers = {"X-Class-Index": str(result.class_index), "X-Class-Label": labels[result.class_index],
               "X-Score": f"{score:.6f}", "X-Method": result.method}
    return Response(_png(picture), media_type="image/png", headers=headers)
