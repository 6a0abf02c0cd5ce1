"""Requests generated from the service's own OpenAPI schema (schemathesis), schema-valid and schema-invalid,
for every operation: none may get a 5xx, and every answer must be what the schema promises (status codes,
content types, bodies). The one check left out, "a schema-valid request is accepted", cannot hold for an
image service: a byte string that fits ``format: binary`` is rarely an image, and 415 is the right answer."""

from __future__ import annotations

from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = pytest.mark.slow
EXAMPLES = 250  # per operation and generation mode (operations with few distinct inputs generate fewer)


def test_generated_requests_get_no_server_error_and_match_the_schema(fuzzed_url):
    schema = schemathesis.openapi.from_url(f"{fuzzed_url}/openapi.json")
    statuses: Counter[int] = Counter()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:
                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                def exchange(case: schemathesis.Case) -> None:
                    response = case.call(base_url=fuzzed_url, session=session)
                    statuses[response.status_code] += 1
                    case.validate_response(response, excluded_checks=[positive_data_acceptance])

                try:
                    exchange()
                except Unsatisfiable:  # no schema-invalid request exists for an operation that takes no input
                    assert mode is GenerationMode.NEGATIVE
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses.total() >= 3000 and len(statuses) >= 5, statuses  # many requests, many outcomes
    print(f"schemathesis: {statuses.total()} requests, statuses {dict(sorted(statuses.items()))}")
