"""DirectRoutes: a hot route served from the middleware answers and fails exactly as the router would."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.testclient import TestClient

from service.errors import InvalidParameter
from service.http_errors import install_error_handlers
from service.middleware import DirectRoutes

router = APIRouter()


@router.post("/echo")
async def echo(request: Request) -> Response:
    body = await request.body()
    if not body:
        raise InvalidParameter("send a body")
    if body == b"boom":
        raise RuntimeError("not a problem the handlers know")
    return Response(body + b" via " + request.scope["route"].path.encode(), media_type="text/plain")


def app_with(direct: bool) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    if direct:
        app.add_middleware(DirectRoutes, routes=router.routes)
    app.include_router(router)
    return app


@pytest.mark.parametrize("direct", [False, True])
def test_a_direct_route_answers_and_fails_as_through_the_router(direct):
    with TestClient(app_with(direct), raise_server_exceptions=False) as client:
        ok = client.post("/echo", content=b"hello")
        assert ok.status_code == 200 and ok.text == "hello via /echo"
        problem = client.post("/echo", content=b"")
        assert problem.status_code == 422 and problem.headers["content-type"] == "application/problem+json"
        assert problem.json()["detail"] == "send a body"
        assert client.post("/echo", content=b"boom").status_code == 500
        assert client.get("/echo").status_code == 405  # other methods still go to the router


def test_only_a_post_taking_just_the_request_can_be_direct():
    other = APIRouter()

    @other.post("/scaled")
    async def scaled(request: Request, factor: int = 1) -> Response:
        return Response(str(factor))

    @other.get("/fetched")
    async def fetched(request: Request) -> Response:
        return Response("")

    for route in other.routes:
        with pytest.raises(ValueError, match="only the Request"):
            DirectRoutes(FastAPI(), routes=[route])
