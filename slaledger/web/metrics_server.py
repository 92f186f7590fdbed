"""The projector's ``/metrics``: the SLA metrics (counters per member), for the support team.

It takes the same staff bearer token as the workers' ``/metrics`` (``access.bearer``, with
the same limit on refused tokens); ``/healthz`` alone is open, for the container's health
check. An aiohttp server on its own
event loop in a daemon thread, because the projector itself is synchronous; collecting runs
SQL, so it runs in the loop's executor.
"""

from __future__ import annotations

import asyncio
import threading

import structlog
from aiohttp import web as aioweb
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .access import BadRequest, bearer, json_errors
from .ports import Authenticator
from .throttle import FailureLimit, Network

log = structlog.get_logger(__name__)


def metrics_app(registry: CollectorRegistry, auth: Authenticator | None,
                trusted: tuple[Network, ...] = ()) -> aioweb.Application:
    """The server's application (``auth`` None: authentication turned off, like a worker's)."""
    failures = FailureLimit()

    async def metrics(request: aioweb.Request) -> aioweb.Response:
        if auth is not None:
            try:
                who = await bearer(request, auth, failures, trusted)
            except BadRequest as exc:
                return aioweb.json_response(exc.body(), status=exc.status, headers=exc.headers)
            if not who.reads_metrics:
                return aioweb.json_response({"error": "les métriques sont réservées à l'équipe support"}, status=403)
        body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
        return aioweb.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: aioweb.Request) -> aioweb.Response:
        """For the container's health check: alive, and nothing else said (the metrics need a token)."""
        return aioweb.json_response({"status": "ok"})

    app = aioweb.Application(middlewares=[json_errors])
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def serve_metrics(app: aioweb.Application, host: str, port: int) -> None:
    """Serve ``app`` from a daemon thread; returns once it listens (OSError when it cannot)."""
    loop = asyncio.new_event_loop()
    runner = aioweb.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(aioweb.TCPSite(runner, host, port).start())
    threading.Thread(target=loop.run_forever, name="metrics-server", daemon=True).start()
