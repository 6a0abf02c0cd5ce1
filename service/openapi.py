"""The OpenAPI schema, completed with what only the running service knows: the limits that come from
settings and the names of the models it serves (a route's declaration is fixed at import time)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .settings import Settings

MODEL_PARAMETERS = {("path", "name"), ("query", "model")}


def complete_schema(app: FastAPI, settings: Settings) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI builds it once and caches it; what is set below stays set
        repository = getattr(app.state, "repository", None)
        names = repository.names() if repository is not None else []
        for operations in schema["paths"].values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    where = (parameter["in"], parameter["name"])
                    if where in MODEL_PARAMETERS and names:
                        parameter["schema"] = {**parameter["schema"], "enum": names}
                        parameter["schema"].pop("anyOf", None)
                    if where == ("query", "top_k"):
                        parameter["schema"]["maximum"] = settings.max_top_k
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
