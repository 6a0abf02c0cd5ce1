"""Optional API keys (stored as digests, compared in constant time) and the per-key rate limit."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import digest, new_key
from tests.helpers import EXAMPLES, assert_problem, upload

DIGIT = upload((EXAMPLES / "digit_7.png").read_bytes())


@pytest.fixture(scope="module")
def keyed(settings, tmp_path_factory):
    key, line = new_key("alice")
    keys_file = tmp_path_factory.mktemp("keys") / "api-keys.txt"
    keys_file.write_text(f"# clients\n{line}\n\n")
    app = create_app(settings.model_copy(update={"default_model": "lenet5", "api_keys_file": keys_file,
                                                 "rate_limit_per_s": 1.0, "rate_limit_burst": 3}))
    with TestClient(app) as client:
        yield client, key


def test_new_keys_are_stored_as_digests_only():
    key, line = new_key("bob")
    assert line == f"bob:{digest(key)}" and key not in line and len(key) >= 40
    printed = subprocess.run([sys.executable, "-m", "service", "--new-key", "carol"], capture_output=True, text=True,
                             check=True).stdout
    shown_key = printed.split("it is not stored): ")[1].split()[0]
    assert f"carol:{digest(shown_key)}" in printed


def test_requests_need_a_valid_key_and_probes_do_not(keyed):
    client, key = keyed
    missing = client.post("/predict", files=DIGIT)
    assert_problem(missing, 401, "Authorization: Bearer")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.post("/predict", files=DIGIT, headers={"Authorization": "Bearer nope"}), 401, "not valid")
    assert_problem(client.get("/models", headers={"Authorization": f"Basic {key}"}), 401)
    assert_problem(client.get("/metrics"), 401)
    for open_path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/", "/docs", "/openapi.json"):
        assert client.get(open_path).status_code == 200, open_path
    answered = client.post("/predict", files=DIGIT, headers={"Authorization": f"Bearer {key}"})
    assert answered.status_code == 200 and answered.json()["predictions"][0]["label"] == "7"


def test_each_key_has_a_token_bucket(keyed):
    client, key = keyed
    auth = {"Authorization": f"Bearer {key}"}
    statuses = [client.get("/models/lenet5", headers=auth).status_code for _ in range(8)]
    assert statuses.count(429) >= 4 and statuses[0] == 200  # a burst of 3, then 1 a second
    limited = client.get("/models/lenet5", headers=auth)
    assert_problem(limited, 429, "rate limit")
    assert int(limited.headers["retry-after"]) >= 1


def test_docs_and_metrics_follow_their_settings(settings):
    key, line = new_key("ops")
    app = create_app(settings.model_copy(update={"api_keys": [line], "protect_docs": True, "protect_metrics": False}))
    with TestClient(app) as client:
        assert client.get("/docs").status_code == 401 and client.get("/openapi.json").status_code == 401
        assert client.get("/metrics").status_code == 200
        assert client.get("/docs", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_a_key_stored_in_the_clear_is_refused_at_start(settings):
    with pytest.raises(ValueError, match="digests, never keys"):
        create_app(settings.model_copy(update={"api_keys": ["alice:my-secret-key"]}))
