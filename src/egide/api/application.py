"""The ASGI application: routers, error mapping and security headers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from egide.api import access, alerts, audit, fhir, ledger, oauth, report, witness
from egide.api.context import ApiContext
from egide.api.responses import (
    egide_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_error_handler,
)
from egide.core.errors import EgideError

# OWASP ASVS 5.0 V3.4: security headers on every response.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}


logger = logging.getLogger("egide.api")


async def _repeat(work: Callable[[], object], interval: float, what: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(work)
        except Exception:
            logger.exception("%s failed", what)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    ctx: ApiContext = app.state.egide
    tasks = []
    if ctx.background is not None:
        tasks.append(
            asyncio.create_task(_repeat(ctx.background, ctx.background_interval, "background"))
        )
    if ctx.live is not None:
        # Live detection (issue 6): every ledger entry to the detector, in micro-batches.
        tasks.append(asyncio.create_task(_repeat(ctx.live, ctx.live_interval, "live detection")))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if ctx.live_stop is not None:
            await run_in_threadpool(ctx.live_stop)


def create_api(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        title="Égide",
        version=ctx.version,
        docs_url=None,  # no third-party JavaScript from a CDN on a closed network
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.egide = ctx
    app.add_exception_handler(EgideError, egide_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.get("/api/health")
    async def health() -> JSONResponse:
        """Liveness for load balancers; says nothing about data."""
        return JSONResponse({"status": "ok", "version": ctx.version})

    access.install(app)  # break-the-glass, investigations (issue 5)
    alerts.install(app)  # the security officer's alerts (issue 6)
    audit.install(app)
    oauth.install(app)  # before fhir: /fhir/.well-known/... is not a resource read
    fhir.install(app)
    ledger.install(app)
    report.install(app)
    witness.install(app)
    return app
