"""Errors as HTTP answers: RFC 9457 problem details, rendered in one place. (The Open Inference Protocol
routes render the same exceptions in that protocol's own shape: routes/v2.py.)"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ProblemError

PROBLEM_JSON = "application/problem+json"


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(status: int, title: str, detail: str, type_: str = "about:blank",
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def from_problem(exc: ProblemError) -> JSONResponse:
    return problem_response(exc.status, exc.title, exc.detail, exc.type, exc.headers, **exc.extra)


def validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return from_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = validation_detail(exc)
        return problem_response(422, "Invalid request", detail, "/problems/invalid-request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI wraps failures while reading a form body (our size limit among them) in a 400.
        if isinstance(exc.__cause__, ProblemError):
            return from_problem(exc.__cause__)
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(exc.status_code, reason(exc.status_code), str(exc.detail), headers=headers)
