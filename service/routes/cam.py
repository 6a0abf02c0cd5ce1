"""POST /models/{name}/cam: where in the image the evidence for a class lies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from ..dependencies import UPLOAD_BODY, EngineDep, VersionQuery, model_for, read_upload
from ..schemas import CamResponse, ClassScore
from ..worker.explain import METHODS
from ..worker.protocol import Explain, Explained, HeatmapArrays, HeatmapFormat
from .problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/models", tags=["heatmaps"])


@router.post("/{name}/cam", response_model=CamResponse, responses={
    **PROBLEM_RESPONSES, 200: {"content": {"application/json": {}, "image/png": {}},
                               "description": "JSON heatmap, or a PNG when format is png or overlay"}},
    openapi_extra=UPLOAD_BODY, summary="CAM / Grad-CAM heatmap for an uploaded image")
async def class_activation_map(
    request: Request,
    name: str,
    engine: EngineDep,
    class_: Annotated[str | None, Query(
        alias="class", max_length=64, description="class index or label (default: the top-1 class)",
        examples=["7"])] = None,
    method: Annotated[str | None, Query(
        description="heatmap method (default: the model's best: cam where it has a GAP head)",
        json_schema_extra={"enum": list(METHODS)})] = None,
    format: Annotated[HeatmapFormat, Query(
        description="json map, png heatmap, or overlay on the image (png and overlay: at most overlay_max_side px "
                    "a side)")] = "json",
    opacity: Annotated[float, Query(ge=0, le=1, description="heatmap opacity for format=overlay")] = 0.5,
    version: VersionQuery = None,
) -> Response | CamResponse:
    served = model_for(request, engine, name, version)
    class_index, chosen = served.check_explain(class_, method)  # a 422 before the upload is even read
    job = Explain(served.entry.key, await read_upload(request), class_index, chosen, format, opacity, light_only=True)
    result = await served.ask(job)
    assert isinstance(result, Explained)
    labels = served.entry.manifest.labels
    score = float(result.probabilities[result.class_index])
    heatmap = result.heatmap
    if isinstance(heatmap, HeatmapArrays):
        top = int(result.probabilities.argmax())
        return CamResponse(
            model=served.entry.name, version=served.entry.version, method=chosen, class_index=result.class_index,
            label=labels[result.class_index], score=score,
            predicted=ClassScore(index=top, label=labels[top], probability=float(result.probabilities[top])),
            feature_size=list(heatmap.feature_map.shape), heatmap=heatmap.feature_map.round(5).tolist(),
            input_size=list(heatmap.input_map.shape), heatmap_input=heatmap.input_map.round(5).tolist(),
        )
    headers = {"X-Class-Index": str(result.class_index), "X-Class-Label": labels[result.class_index],
               "X-Score": f"{score:.6f}", "X-Method": chosen}
    if heatmap.size != heatmap.source_size:  # a large upload: the picture is scaled down to overlay_max_side
        headers["X-Scaled-From"] = "{}x{}".format(*heatmap.source_size)
    return Response(heatmap.png, media_type="image/png", headers=headers)
