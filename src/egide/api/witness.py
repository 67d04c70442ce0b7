"""This instance as a witness of other logs over HTTP, under `/api/witness`.

Security role (DESIGN.md, contract 5). Another Égide (or any C2SP tlog-witness client) pushes
its ledger's signed checkpoints here; this witness cosigns a checkpoint only when it is signed
by a key configured for its origin (`witness_logs`) and proven, by an RFC 9162 consistency
proof, to extend the last one it cosigned. See `egide.ledger.witness` for the protocol
(https://c2sp.org/tlog-witness, https://c2sp.org/tlog-cosignature) and
`egide.ledger.witness_store` for the append-only memory.

* `POST /api/witness/add-checkpoint`: the tlog-witness body as text; 200 with the cosignature
  line(s) as text/plain, 409 with the size this witness holds as `text/x.tlog.size`; other
  refusals (400, 403, 404, 413, 422, 429) as OperationOutcomes, like every error of the API.
* `GET /api/witness/public-key`: the witness's verifier key (note vkey, type 0x04).

No bearer token: as tlog-witness says, requests are authenticated by the log's signature on
the checkpoint, and a request without one changes nothing. What an anonymous caller can cost
is bounded instead: the body is capped (`MAX_REQUEST_BYTES`, checked while streaming) and each
source address gets `witness_rate_per_minute` requests a minute. Witnessing is not a ledger
entry of this instance: it concerns no patient and no security state of ours, and would grow
our ledger on every push; accepted checkpoints are logged, forks raise a critical alarm.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from egide.api.context import ApiContext
from egide.api.responses import NO_STORE, outcome_response
from egide.core.errors import (
    BadRequest,
    Conflict,
    EgideError,
    Forbidden,
    Issue,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
)
from egide.core.ratelimit import RateLimiter
from egide.ledger.witness import MAX_REQUEST_BYTES, SIZE_MEDIA_TYPE, Refusal, RefusalKind
from egide.ledger.witness_store import Cosigned, Witness

TEXT = "text/plain; charset=utf-8"

router = APIRouter(prefix="/api/witness", tags=["witness"])


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


def _witness(request: Request) -> Witness:
    witness = _ctx(request).witness
    if witness is None:
        msg = "this server is not a witness"
        raise NotFound(msg)
    return witness


def _limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.witness_limiter
    return limiter


async def _body(request: Request) -> bytes:
    """The body, refused as soon as it exceeds MAX_REQUEST_BYTES (checked while streaming)."""
    declared = request.headers.get("content-length")
    too_large = f"the request is larger than the {MAX_REQUEST_BYTES} bytes allowed"
    if declared is not None and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


_ERRORS: dict[RefusalKind, type[EgideError]] = {
    RefusalKind.UNKNOWN_ORIGIN: NotFound,
    RefusalKind.BAD_SIGNATURE: Forbidden,
    RefusalKind.BAD_REQUEST: BadRequest,
    RefusalKind.BAD_PROOF: Unprocessable,
}


def _refused(refusal: Refusal) -> Response:
    if refusal.latest_size is not None:
        # tlog-witness: 409 with the size this witness holds, so the client can retry from it.
        assert refusal.status == Conflict.status
        # Exactly this type, without the "; charset" Starlette adds to text/*: clients of
        # other implementations compare it as a whole.
        return Response(
            content=f"{refusal.latest_size}\n".encode("ascii"),
            status_code=409,
            headers={**NO_STORE, "Content-Type": SIZE_MEDIA_TYPE},
        )
    raise _ERRORS[refusal.kind](refusal.message)


@router.post("/add-checkpoint")
async def add_checkpoint(request: Request) -> Response:
    """C2SP tlog-witness add-checkpoint: cosign a checkpoint that extends the last one."""
    witness = _witness(request)
    address = request.client.host if request.client else "unknown"
    if not _limiter(request).allow(address):
        issue = Issue("too many witness requests from this address; retry later", code="throttled")
        return outcome_response(429, [issue], {"Retry-After": "60"})
    body = await _body(request)
    try:
        outcome = await run_in_threadpool(witness.add_checkpoint, body)
    except ValueError as exc:
        raise BadRequest(f"malformed add-checkpoint request: {exc}") from None
    if isinstance(outcome, Refusal):
        return _refused(outcome)
    assert isinstance(outcome, Cosigned)
    return Response(
        content=outcome.cosignature.encode("utf-8"), media_type=TEXT, headers=dict(NO_STORE)
    )


@router.get("/public-key")
async def public_key(request: Request) -> Response:
    """The witness's verifier key ("<name>+<hex key ID>+<base64(0x04 || key)>"). Public: logs
    should still pin the key they got out of band (`egide ledger witness-key`)."""
    vkey = _witness(request).signer.verifier_key()
    return Response(content=(vkey + "\n").encode("utf-8"), media_type=TEXT, headers=dict(NO_STORE))


def install(app: Any) -> None:
    """Attach the witness router to an application (after `app.state.egide` is set)."""
    ctx: ApiContext = app.state.egide
    app.state.witness_limiter = RateLimiter(ctx.settings.witness_rate_per_minute)
    app.include_router(router)


__all__ = ["install", "router"]
