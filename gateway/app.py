"""The REST application, built by a factory from the backends it is given.

The same routes answer under `/v0` and `/v1`, with and without a trailing slash, as the seed's
API did. Every error, including unknown routes and malformed parameters, comes back in the
FindFace error format; a client's mistake is never a 500.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from facegrid import __version__
from facegrid.gateway import camera_routes, face_routes, live_routes, timing, webui
from facegrid.gateway.core.cameras import CameraDirectory
from facegrid.gateway.core.errors import ApiError, BadParam, MethodNotAllowed, NotFound
from facegrid.gateway.core.faces import Faces
from facegrid.gateway.core.galleries import Galleries
from facegrid.gateway.core.live import EventBus, WebhookStore
from facegrid.gateway.core.ports import MediaStore, Quota, Unlimited
from facegrid.gateway.core.tokens import TokenStore, authenticate
from facegrid.gateway.openapi import ERROR_RESPONSES
from facegrid.gateway.params import Fetcher
from facegrid.observability import RequestMetrics

API_VERSIONS = ("v0", "v1")

ReadinessCheck = Callable[[], Awaitable[bool]]
F = TypeVar("F", bound=Callable[..., Any])

# Documented as a security scheme, so clients (and the fuzzer) know to send the header.
TOKEN_HEADER = APIKeyHeader(
    name="Authorization",
    scheme_name="Token",
    description="`Token <token>`, as made by `facegrid token`",
    auto_error=False,
)


@dataclass
class Backends:
    galleries: Galleries
    tokens: TokenStore
    registry: CollectorRegistry
    faces: Faces
    cameras: CameraDirectory
    events: EventBus
    webhooks: WebhookStore
    media: MediaStore
    # Fetches a photo URL (SSRF-guarded in production: facegrid.fetch).
    fetcher: Fetcher
    # Component name -> check; /readyz reports each and is ready only when all pass.
    readiness: dict[str, ReadinessCheck] = field(default_factory=dict)
    # The licence's cameras limit.
    camera_quota: Quota = field(default_factory=Unlimited)
    # Whether v1's gender, age and emotions flags are served (the seed's facenapi `gae`).
    gae: bool = True


class _Observe:
    """Times each request into the Server-Timing header, the request metrics and the log.

    Plain ASGI rather than `@app.middleware("http")`, whose extra task and stream per request
    cost more than the rest of the gateway's own share of a short request."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        start = time.perf_counter()
        token, tally = timing.begin()
        status = 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers.append("Server-Timing", timing.header(tally, time.perf_counter() - start))
            await send(message)

        try:
            await self._app(scope, receive, send_timed)
        finally:
            timing.end(token)
            # Label by route template, not raw path, so gallery names don't explode cardinality.
            path = getattr(scope.get("route"), "path", "unmatched")
            self._metrics.observe(
                "http", f"{scope['method']} {path}", str(status), time.perf_counter() - start
            )


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def _api_router(backends: Backends) -> APIRouter:
    async def require_token(
        authorization: Annotated[str | None, Depends(TOKEN_HEADER)] = None,
    ) -> None:
        await authenticate(backends.tokens, authorization)

    router = APIRouter(dependencies=[Depends(require_token)])

    def route(path: str, method: str, **kwargs: Any) -> Callable[[F], F]:
        def register(endpoint: F) -> F:
            status = kwargs.get("status_code", 200)

            # Handlers return plain JSON types: rendered directly, without FastAPI's
            # validation and `jsonable_encoder` pass (5 ms for a page of 100 faces).
            @functools.wraps(endpoint)
            async def respond(*args: Any, **params: Any) -> Any:
                result = await endpoint(*args, **params)
                return result if isinstance(result, Response) else JSONResponse(result, status)

            for variant in (path, f"{path}/"):
                router.add_api_route(
                    variant,
                    respond,
                    methods=[method],
                    include_in_schema=variant == path,
                    responses=ERROR_RESPONSES,
                    **kwargs,
                )
            return endpoint

        return register

    @route("/galleries", "GET", summary="List all galleries")
    async def list_galleries() -> dict[str, list[str]]:
        return {"results": await backends.galleries.list()}

    @route("/galleries/{gallery}", "POST", status_code=201, summary="Create a gallery")
    async def create_gallery(gallery: str) -> dict[str, str]:
        await backends.galleries.create(gallery)
        return {"name": gallery}

    @route(
        "/galleries/{gallery}",
        "DELETE",
        status_code=204,
        response_class=Response,
        summary="Delete a gallery and all faces in it",
    )
    async def delete_gallery(gallery: str) -> Response:
        await backends.galleries.check_deletable(gallery)
        await backends.faces.delete_gallery_faces(gallery)
        await backends.galleries.delete(gallery)
        await backends.faces.forget_gallery(gallery)
        return Response(status_code=204)

    face_routes.register(route, backends.faces, backends.fetcher)
    face_routes.register_persons(route, backends.faces)
    camera_routes.register(route, backends.cameras, backends.camera_quota)
    live_routes.register(route, backends.events, backends.webhooks)
    return router


def create_app(backends: Backends) -> FastAPI:
    app = FastAPI(
        title="FaceGrid API",
        version=__version__,
        description="FindFace Enterprise Server SDK-compatible face recognition API.",
        docs_url=None,
        redoc_url=None,
    )
    _register_docs(app)
    webui.mount(app)
    # The base of the media URLs in replies (face_routes.base_url); "": each request's own.
    app.state.public_url = backends.faces.public_url
    app.state.gae = backends.gae
    metrics = RequestMetrics("gateway", backends.registry)

    app.add_middleware(_Observe, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            return _error_response(NotFound(f"no such resource: {request.url.path}"))
        if error.status_code == 405:
            return _error_response(
                MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
            )
        return JSONResponse(
            {"code": "HTTP_ERROR", "reason": str(error.detail)}, status_code=error.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        param = str(first["loc"][-1]) if first.get("loc") else None
        return _error_response(BadParam(first["msg"], param=param, value=first.get("input")))

    face_routes.register_media(app, backends.media)
    router = _api_router(backends)
    for version in API_VERSIONS:
        app.include_router(router, prefix=f"/{version}", tags=[version])

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results = {name: await check() for name, check in backends.readiness.items()}
        ready = all(results.values())
        return JSONResponse(
            {
                "status": "ok" if ready else "unavailable",
                "components": {k: "ok" if v else "down" for k, v in results.items()},
            },
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(backends.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _register_docs(app: FastAPI) -> None:
    """/docs lists the documented versions; /docs/<version> is the interactive reference of
    one version, with its OpenAPI document. No token needed, and no CDN: Swagger UI's files are
    served from the swagger-ui-bundle package."""
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    def versions() -> dict[str, Any]:
        return {"versions": {v: f"/{v}/docs/{v}" for v in API_VERSIONS}}

    def openapi_of(version: str) -> dict[str, Any]:
        if version not in API_VERSIONS:
            raise NotFound(f"no API version {version!r}", param="version", value=version)
        document = dict(app.openapi())
        document["paths"] = {
            path: item
            for path, item in document["paths"].items()
            if path.startswith(f"/{version}/")
        }
        document["info"] = {**document["info"], "version": f"{__version__} ({version})"}
        return document

    def page(version: str) -> HTMLResponse:
        openapi_of(version)  # 404 for an unknown version
        return get_swagger_ui_html(
            openapi_url=f"/docs/{version}/openapi.json",
            title=f"FaceGrid API {version}",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.add_api_route("/docs", versions, include_in_schema=False)
    app.add_api_route("/docs/{version}/openapi.json", openapi_of, include_in_schema=False)
    # The seed's installer points at /v1/docs/v1/overview.html: the same page.
    for prefix in ("", *(f"/{p}" for p in API_VERSIONS)):
        if prefix:
            app.add_api_route(f"{prefix}/docs", versions, include_in_schema=False)
        for page_path in ("/docs/{version}", "/docs/{version}/overview.html"):
            app.add_api_route(f"{prefix}{page_path}", page, include_in_schema=False)
