"""The HTTP surface while ``sopbot run`` is still starting (e.g. waiting out a Mattermost outage):
``/healthz`` says the process is alive, ``/readyz`` says why it is not ready yet, so Kubernetes
neither restarts the pod nor sends it traffic. Replaced by the full app once the bot is up."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


def starting_app(reason: Callable[[], str]) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def not_ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "not ready", "reason": reason()}, status=503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", not_ready)
    app.router.add_post("/mattermost/command", not_ready)
    app.router.add_post("/alertmanager", not_ready)  # Alertmanager retries a 5xx
    return app
