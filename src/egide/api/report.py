"""`GET /api/patient/access-report`: a patient's access report, for that patient or an officer.

A patient token reads its own report (GDPR article 15: the right to know who processed their
data); the data-protection officer and the security officer may read any patient's. Anyone
else is refused; a patient asking for another patient's report gets the same 404 as for a
patient that does not exist. Every request is itself appended to the ledger (contract 2), as
an `export` of that patient's access history, and shows in the next report.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from egide.access.policy import decide_access_report
from egide.api.context import ApiContext
from egide.api.fhir import principal_of
from egide.api.responses import NO_STORE, fhir_response
from egide.core.errors import BadRequest, Forbidden, NotFound
from egide.core.principal import Principal
from egide.identity.directory import people_lookup
from egide.ledger.report import AccessReport, produce_report, report_document
from egide.ledger.report_render import render_html, render_pdf
from egide.ledger.service import Act, Action, Outcome, append
from egide.records.repository import defer_audit
from egide.records.unit_of_work import run_in_transaction

router = APIRouter(prefix="/api/patient")
FORMATS = ("html", "pdf", "json", "fhir")


@router.get("/access-report")
async def access_report(
    request: Request,
    fmt: str = "html",
    patient: str | None = None,
    principal: Principal = Depends(principal_of),
) -> Response:
    """The access report; `fmt` is html, pdf, json or fhir (a Bundle of AuditEvents)."""
    ctx: ApiContext = request.app.state.egide
    if fmt not in FORMATS:
        msg = f"fmt must be one of {', '.join(FORMATS)}"
        raise BadRequest(msg)
    patient_id = patient or principal.patient_id
    if not patient_id:
        msg = "name the patient (?patient=ID)"
        raise BadRequest(msg)
    clock = ctx.records.clock

    def work(session: Session) -> tuple[AccessReport, dict[str, Any] | None]:
        decision = decide_access_report(principal, patient_id)
        if not decision.allowed:
            act = Act(
                Action.EXPORT,
                Outcome.DENIED,
                patient=patient_id,
                count=0,
                purpose="patient access report",
                reasons=decision.reasons,
            )
            error = (
                NotFound("no such access report")
                if principal.role == "patient"
                else Forbidden("this token's role may not read access reports")
            )
            raise defer_audit(error, lambda s: append(s, principal=principal, act=act, clock=clock))
        return produce_report(
            session,
            principal=principal,
            patient_id=patient_id,
            fmt=fmt,
            clock=clock,
            people=people_lookup(session),
            reasons=decision.reasons,
        )

    report, bundle = await run_in_threadpool(run_in_transaction, ctx.session_factory, work)
    if fmt == "fhir":
        return fhir_response(bundle)
    if fmt == "json":
        return Response(
            content=json.dumps(report_document(report), ensure_ascii=False).encode(),
            media_type="application/json",
            headers=NO_STORE,
        )
    if fmt == "pdf":
        return Response(
            content=render_pdf(report),
            media_type="application/pdf",
            headers={**NO_STORE, "Content-Disposition": 'attachment; filename="access-report.pdf"'},
        )
    return Response(
        content=render_html(report),
        media_type="text/html; charset=utf-8",
        headers={
            **NO_STORE,
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        },
    )


def install(app: Any) -> None:
    app.include_router(router)
