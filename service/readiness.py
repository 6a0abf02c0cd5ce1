"""Whether this replica can take traffic, and whether it is alive at all: computed here once, for
``/readyz``, ``/healthz`` and the Open Inference Protocol's health routes."""

from __future__ import annotations

from .engine import Engine
from .repository import ModelRepository
from .schemas import Health, Readiness
from .settings import Settings


def readiness(settings: Settings, repository: ModelRepository, engine: Engine, draining: bool) -> Readiness:
    """Ready: not shutting down, every worker running, the repository readable as configured, and something
    to serve (with require_all_models: every version). A failed version is listed with its reason either way."""
    versions = repository.all_versions()
    failed = [f"{v.name}/{v.version}: {v.error}" for v in versions if v.error is not None]
    errors = repository.problems + failed
    workers = {lane.name: f"{lane.running}/{lane.count}" for lane in engine.lanes}
    complete = not errors if settings.require_all_models else any(v.status == "ready" for v in versions)
    ready = (not draining and complete and not repository.blocking
             and all(lane.running == lane.count for lane in engine.lanes))
    if draining:
        errors = ["shutting down: finishing the requests in flight", *errors]
    return Readiness(ready=ready, models={name: repository.versions(name) for name in repository.names()},
                     workers=workers, errors=errors)


def liveness(engine: Engine) -> Health:
    """Alive unless a worker lane could not be restored within worker_restore_s: restarting the container
    is then the remedy."""
    down = [lane.name for lane in engine.lanes if not lane.healthy]
    if down:
        return Health(status="failing",
                      detail=f"no {' or '.join(down)} inference worker could be restarted; restart the service")
    return Health(status="ok")
