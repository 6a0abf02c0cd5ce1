"""Errors as exceptions: what went wrong, with the HTTP status and title it answers with. Raised in the
server and in the inference workers alike (they cross the socket pickled); problems.py renders them."""

from __future__ import annotations

from typing import Any


class ProblemError(Exception):
    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled whole (headers and extra fields too): workers send these back to the server."""
        return type(self)._restore, (self.detail, self.__dict__)

    @classmethod
    def _restore(cls, detail: str, state: dict[str, Any]) -> ProblemError:
        error = cls.__new__(cls)
        Exception.__init__(error, detail)
        error.__dict__.update(state)
        return error

    @property
    def type(self) -> str:
        return f"/problems/{self.title.lower().replace(' ', '-')}"


class InternalError(ProblemError):
    """Something failed that no request should be able to cause; logged where it happened."""


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

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Connection": "close"}  # the rest of the body is never read


class Unauthorized(ProblemError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"WWW-Authenticate": 'Bearer realm="cnn-serve"'}


class TooManyRequests(ProblemError):
    status, title = 429, "Too many requests"

    def __init__(self, detail: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(ProblemError):
    status, title = 503, "Service unavailable"

    def __init__(self, detail: str, retry_after: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.headers = {"Retry-After": str(retry_after)}
