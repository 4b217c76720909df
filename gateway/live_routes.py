"""Routes for live events: /events (Server-Sent Events) and /webhooks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from facegrid.gateway import openapi as doc
from facegrid.gateway.core.errors import NotFound
from facegrid.gateway.core.live import EventBus, Filters, WebhookStore, new_webhook, parse_filters
from facegrid.gateway.core.model import parse_bool, parse_int
from facegrid.gateway.core.persons import parse_cam_ids
from facegrid.gateway.face_routes import Registrar
from facegrid.gateway.params import Params, read_params

KEEP_ALIVE = b": keep-alive\n\n"


def _filters(params: Params) -> Filters:
    friend = params.get("friend")
    return parse_filters(
        parse_cam_ids(params.get("cam_ids")),
        params.get("person_ids"),
        None if friend in (None, "") else parse_bool(friend, "friend"),
    )


def register(route: Registrar, bus: EventBus, webhooks: WebhookStore) -> None:
    @route(
        "/events",
        "GET",
        summary="Live face events (Server-Sent Events)",
        openapi_extra=doc.query(
            {**doc.FILTERS, "limit": doc.integer("End the stream after this many events", low=0)}
        ),
    )
    async def events(request: Request) -> StreamingResponse:
        """Each event is `id: <stream id>`, `event: face`, `data: <JSON>`. Reconnecting with
        `Last-Event-ID` resumes after that event. `cam_ids`, `person_ids` and `friend`
        filter; `limit` ends the stream after that many events."""
        params = Params(values=dict(request.query_params))
        filters = _filters(params)
        limit = parse_int(params.get("limit"), "limit", default=0, low=0, high=1_000_000)
        after = request.headers.get("last-event-id") or None

        async def stream() -> AsyncIterator[bytes]:
            sent = 0
            yield KEEP_ALIVE  # headers and a first line go out at once
            async for entry_id, body in bus.follow(after):
                if not entry_id:
                    yield KEEP_ALIVE
                    continue
                if not filters.match(body):
                    continue
                yield f"id: {entry_id}\nevent: face\ndata: {json.dumps(body)}\n\n".encode()
                sent += 1
                if limit and sent >= limit:
                    return

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @route(
        "/webhooks",
        "POST",
        status_code=201,
        summary="Register a webhook",
        openapi_extra=doc.body(
            {
                "url": doc.Param(
                    "Where events are POSTed", json={"type": "string", "format": "uri"}
                ),
                "secret": doc.Param("HMAC key for X-FaceGrid-Signature (one is made if left out)"),
                **doc.FILTERS,
            },
            required=("url",),
        ),
    )
    async def add_webhook(request: Request) -> JSONResponse:
        params = await read_params(request)
        hook = new_webhook(params.get("url"), params.get("secret"), _filters(params))
        await webhooks.add(hook)
        # The secret is shown once, here; receivers check X-FaceGrid-Signature with it.
        return JSONResponse(hook.as_dict(with_secret=True), status_code=201)

    @route("/webhooks", "GET", summary="Registered webhooks (without their secrets)")
    async def list_webhooks() -> dict[str, Any]:
        return {"results": [h.as_dict() for h in await webhooks.list()]}

    @route(
        "/webhooks/{webhook_id}",
        "DELETE",
        status_code=204,
        response_class=Response,
        summary="Remove a webhook",
    )
    async def delete_webhook(webhook_id: str) -> Response:
        if not await webhooks.delete(webhook_id):
            raise NotFound(f"no webhook {webhook_id!r}", param="id", value=webhook_id)
        return Response(status_code=204)
