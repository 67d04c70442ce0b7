"""The ledger's verification surface under `/api/ledger`: signed checkpoints, proofs, key.

Security role (DESIGN.md, contract 5: everything is verifiable from outside). A client holding
the ledger's verifier key checks what it receives here without trusting the server:

* `GET /api/ledger/checkpoint` and `/checkpoint/{size}`: the signed note (C2SP tlog-checkpoint
  in a C2SP signed-note envelope), text/plain, exactly the bytes that were signed;
* `GET /api/ledger/proof/inclusion?seq=N[&size=S]`: entry N's RFC 9162 section 2.1.3 audit
  path against the signed checkpoint of S leaves (the latest by default), with that note;
* `GET /api/ledger/proof/consistency?old=A[&new=B]`: the RFC 9162 section 2.1.4 proof that the
  checkpoint of B leaves (the latest by default) extends the one of A leaves, with both notes;
* `GET /api/ledger/public-key`: the signed-note verifier key. A client should pin the key it
  got out of band (`egide ledger public-key` on the server); this copy is a convenience.

Any valid bearer token may call these routes (`principal_of`), proofs at most
`proof_rate_per_minute` times a minute per account (429 beyond): proofs and checkpoints carry
hashes only — a leaf hash and subtree hashes, never an entry's content or a patient id — so
they reveal nothing about who accessed what. For the same reason, and because each would grow
the ledger it is proving, serving them is not itself a ledger entry (failed authentication
still is, through `principal_of`). Errors are OperationOutcomes, like every error of the API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from egide.api.context import ApiContext
from egide.api.fhir import principal_of
from egide.api.responses import NO_STORE
from egide.core.errors import NotFound, StorageFailure, TooManyRequests
from egide.core.principal import Principal
from egide.core.ratelimit import RateLimiter
from egide.db.engine import transaction
from egide.ledger.checkpoint import CheckpointVerifier
from egide.ledger.proofs import (
    MAX_INTEGER,
    checkpoint_note,
    consistency_proof_for,
    inclusion_for_seq,
)

T = TypeVar("T")
TEXT = "text/plain; charset=utf-8"

router = APIRouter(prefix="/api/ledger", tags=["ledger"])


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.egide
    return ctx


def _verifier(ctx: ApiContext) -> CheckpointVerifier | None:
    # With the key, proofs are self-checked against the *signed* roots before being served.
    if ctx.ledger_vkey is None:
        return None
    try:
        return CheckpointVerifier(ctx.ledger_vkey)
    except ValueError as exc:
        msg = f"the server's ledger verifier key is invalid ({exc})"
        raise StorageFailure(msg) from None


async def _read(request: Request, work: Callable[[Session], T]) -> T:
    factory = _ctx(request).session_factory

    def run() -> T:
        with transaction(factory) as session:
            return work(session)

    return await run_in_threadpool(run)


def _text(body: bytes | str) -> Response:
    content = body.encode("utf-8") if isinstance(body, str) else body
    return Response(content=content, media_type=TEXT, headers=dict(NO_STORE))


def _json(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=dict(NO_STORE))


@router.get("/checkpoint")
async def latest_checkpoint(
    request: Request, principal: Principal = Depends(principal_of)
) -> Response:
    """The latest signed checkpoint (C2SP signed note), as text."""
    del principal
    return _text(await _read(request, checkpoint_note))


@router.get("/checkpoint/{size}")
async def checkpoint_of_size(
    request: Request,
    size: int = Path(..., description="tree size of a signed checkpoint", ge=1, le=MAX_INTEGER),
    principal: Principal = Depends(principal_of),
) -> Response:
    """The signed checkpoint of `size` leaves, as text."""
    del principal
    return _text(await _read(request, lambda s: checkpoint_note(s, size)))


@router.get("/proof/inclusion")
async def inclusion(
    request: Request,
    seq: int = Query(..., description="the entry's sequence number", ge=1, le=MAX_INTEGER),
    size: int | None = Query(
        None, description="checkpoint size (default: latest)", ge=1, le=MAX_INTEGER
    ),
    principal: Principal = Depends(principal_of),
) -> JSONResponse:
    """RFC 9162 2.1.3 inclusion proof of entry `seq` against a signed checkpoint."""
    _throttle(request, principal)
    verifier = _verifier(_ctx(request))
    proof = await _read(
        request, lambda s: inclusion_for_seq(s, seq=seq, size=size, verifier=verifier)
    )
    return _json(proof.to_json())


@router.get("/proof/consistency")
async def consistency(
    request: Request,
    old: int = Query(..., description="size of the older signed checkpoint", ge=1, le=MAX_INTEGER),
    new: int | None = Query(
        None, description="size of the newer one (default: latest)", ge=1, le=MAX_INTEGER
    ),
    principal: Principal = Depends(principal_of),
) -> JSONResponse:
    """RFC 9162 2.1.4 consistency proof between two signed checkpoints."""
    _throttle(request, principal)
    verifier = _verifier(_ctx(request))
    proof = await _read(
        request,
        lambda s: consistency_proof_for(s, old_size=old, new_size=new, verifier=verifier),
    )
    return _json(proof.to_json())


@router.get("/public-key")
async def public_key(request: Request, principal: Principal = Depends(principal_of)) -> Response:
    """The ledger's signed-note verifier key ("<name>+<hex key ID>+<base64 key>")."""
    del principal
    vkey = _ctx(request).ledger_vkey
    if vkey is None:
        msg = "this server does not publish a ledger verifier key"
        raise NotFound(msg)
    return _text(vkey + "\n")


def _throttle(request: Request, principal: Principal) -> None:
    """Proofs cost a few database reads each (O(log n) rows, ledger.tiles): bounded per
    account so one token cannot keep the database busy (ASVS 5.0 V2.4.1)."""
    limiter: RateLimiter = request.app.state.proof_limiter
    if not limiter.allow(principal.id):
        msg = "too many proof requests; try again in a minute"
        raise TooManyRequests(msg)


def install(app: Any) -> None:
    """Attach the ledger router to an application."""
    ctx: ApiContext = app.state.egide
    app.state.proof_limiter = RateLimiter(ctx.settings.proof_rate_per_minute)
    app.include_router(router)


__all__ = ["install", "router"]
