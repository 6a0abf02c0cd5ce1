"""The OpenAPI schema, completed with what only the running service knows: the limits that come from
settings and the names of the models it serves (a route's declaration is fixed at import time)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from .settings import Settings

MODEL_PARAMETERS = {("path", "name"), ("query", "model")}


def query_parameters(query: type[BaseModel]) -> list[dict[str, Any]]:
    """OpenAPI query parameters from a pydantic model of a route's query (a route that validates its query
    itself, as one model, still documents it)."""
    schema = query.model_json_schema()
    required = set(schema.get("required", []))
    parameters = []
    for name, field in schema["properties"].items():
        description = field.pop("description", None)
        examples = field.pop("examples", None)
        field.pop("title", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": field}
        if description:
            parameter["description"] = description
        if examples:
            parameter["example"] = examples[0]
        parameters.append(parameter)
    return parameters


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
