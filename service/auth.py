"""Optional API keys and a per-key rate limit (pure ASGI middleware, outside the app's routing).

Keys are configured as SHA-256 digests only (``CNNSERVE_API_KEYS`` or a file, ``CNNSERVE_API_KEYS_FILE``,
one ``name:digest`` per line); ``cnn-serve --new-key NAME`` makes a key and prints the line to store. A
request sends ``Authorization: Bearer <key>``; the key is hashed and compared with every stored digest in
constant time. Probes (``/healthz``, ``/readyz``, the protocol's health routes) and the web page stay open;
``/metrics`` and the API docs need a key unless configured otherwise. Each key has a token bucket:
``rate_limit_per_s`` requests a second on average, ``rate_limit_burst`` at once; past it, 429 with
Retry-After. With no keys configured, nothing here applies.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import ProblemError, TooManyRequests, Unauthorized
from .http_errors import from_problem
from .middleware import header
from .settings import Settings

OPEN = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/", "/favicon.ico")
DOCS = ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect")
_DIGEST = re.compile(r"[0-9a-f]{64}")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str) -> tuple[str, str]:
    """A fresh key, and the line that stores it (its digest, never the key itself)."""
    key = secrets.token_urlsafe(32)
    return key, f"{name}:{digest(key)}"


def load_keys(settings: Settings) -> dict[str, str]:
    """digest → key name, from the settings and the keys file. Refuses anything but SHA-256 digests."""
    lines = list(settings.api_keys)
    if settings.api_keys_file is not None:
        lines += settings.api_keys_file.read_text().splitlines()
    keys = {}
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, value = line.rpartition(":")
        value = value.strip().lower()
        if not _DIGEST.fullmatch(value):
            raise ValueError(f"API key entry {number} is not 'name:<sha256 hex digest>' (store digests, never keys; "
                             "`cnn-serve --new-key NAME` makes both)")
        keys[value] = name.strip() or value[:12]
    return keys


@dataclass
class Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, keys: dict[str, str]) -> None:
        self.app = app
        self.keys = keys
        self.rate = settings.rate_limit_per_s
        self.burst = settings.rate_limit_burst
        self.open = OPEN + (() if settings.protect_metrics else ("/metrics",)) + (() if settings.protect_docs else DOCS)
        self._buckets: dict[str, Bucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or path in self.open or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        try:
            name = self._authenticate(header(scope, b"authorization"))
            self._spend(name)
        except ProblemError as error:
            await from_problem(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authenticate(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this service needs an API key: send it as 'Authorization: Bearer <key>'")
        presented = digest(token.strip())
        # Compare with every stored digest, each in constant time: nothing about the keys leaks through timing.
        matches = [name for stored, name in self.keys.items() if hmac.compare_digest(stored, presented)]
        if not matches:
            raise Unauthorized("the API key is not valid")
        return matches[0]

    def _spend(self, name: str) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        bucket = self._buckets.setdefault(name, Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self.rate)
            raise TooManyRequests(f"the rate limit for this key is {self.rate:g} requests/s (bursts of {self.burst}); "
                                  f"retry in {wait} s", retry_after=wait)
        bucket.tokens -= 1
