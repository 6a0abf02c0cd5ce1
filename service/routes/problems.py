"""The problem-details responses routes declare in OpenAPI."""

from typing import Any

PROBLEM = {"application/problem+json": {"schema": {"type": "object", "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}}}}}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "unknown model (the detail lists the available ones)", "content": PROBLEM},
    413: {"description": "upload or image dimensions over the limit", "content": PROBLEM},
    415: {"description": "not an image in an accepted format", "content": PROBLEM},
    422: {"description": "empty, truncated or corrupt image; bad parameter or form field", "content": PROBLEM},
    503: {"description": "busy: try again after Retry-After seconds", "content": PROBLEM},
}
