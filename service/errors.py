"""Errors as exceptions, turned into RFC 9457 problem details in one place."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("service")

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    @property
    def type(self) -> str:
        return f"/problems/{self.title.lower().replace(' ', '-')}"


class ModelNotFound(ProblemError):
    status, title = 404, "Model not found"


class UnsupportedImage(ProblemError):
    status, title = 415, "Unsupported media type"


class InvalidImage(ProblemError):
    status, title = 422, "Invalid image"


class InvalidParameter(ProblemError):
    status, title = 422, "Invalid parameter"


class PayloadTooLarge(ProblemError):
    status, title = 413, "Payload too large"


class ServiceUnavailable(ProblemError):
    status, title = 503, "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": str(retry_after)}


def problem_response(path: str, status: int, title: str, detail: str, type_: str = "about:blank",
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """Problem details, or under /v2 the Open Inference Protocol's ``{"error": ...}`` with 400 for bad requests."""
    if path == "/v2" or path.startswith("/v2/"):
        return JSONResponse({"error": detail}, status_code=400 if status == 422 else status, headers=headers)
    body = {"type": type_, "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _from_problem(request: Request, exc: ProblemError) -> JSONResponse:
    return problem_response(request.url.path, exc.status, exc.title, exc.detail, exc.type, exc.headers, **exc.extra)


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    return "; ".join(f"{e['field']}: {e['message']}" for e in errors), errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return _from_problem(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc)
        return problem_response(request.url.path, 422, "Invalid request", detail, "/problems/invalid-request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI wraps failures while reading a form body (our size limit among them) in a 400.
        if isinstance(exc.__cause__, ProblemError):
            return _from_problem(request, exc.__cause__)
        return problem_response(request.url.path, exc.status_code, _reason(exc.status_code), str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"request_id": getattr(request.state, "request_id", None)})
        return problem_response(request.url.path, 500, "Internal error", "the server failed to handle this request; it has been logged")


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
