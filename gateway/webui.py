"""The web UI: static files (plain HTML, CSS and JavaScript modules) served by the gateway.

The UI is a client of the public REST API like any other (it sends `Authorization: Token ...`
to /v1), so the gateway only serves its files. There is no build step and nothing is fetched
from elsewhere: the Content-Security-Policy below lets the pages load scripts, styles, images
and API responses from this gateway alone.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

UI_DIR = Path(__file__).resolve().parent / "ui"
PREFIX = "/ui"

# `blob:` for previews of the photos a user picks before they are uploaded.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


class _UiFiles(StaticFiles):
    """StaticFiles with the UI's security headers on every response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                # Revalidated on each load (ETag), so an upgraded gateway serves its own UI.
                headers["Cache-Control"] = "no-cache"
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def mount(app: FastAPI) -> None:
    """Serve the UI at /ui/ and send / there."""
    app.mount(PREFIX, _UiFiles(directory=UI_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)
