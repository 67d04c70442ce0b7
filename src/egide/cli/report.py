"""`egide ledger report --patient ID`: the patient's access report as HTML, PDF or JSON.

Writing the report is itself an audited act (an `export` of that patient's access history).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from egide.cli.console import cli_errors, err
from egide.cli.ledger import ledger_app
from egide.cli.runtime import OPERATOR, open_services
from egide.core.errors import BadRequest
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.identity.directory import people_lookup
from egide.ledger.report import produce_report, report_document
from egide.ledger.report_render import render_html, render_pdf


@ledger_app.command("report")
@cli_errors
def report(
    patient: str = typer.Option(..., help="the patient's id"),
    fmt: str = typer.Option("html", "--format", help="html, pdf or json"),
    out_file: Path | None = typer.Option(None, "--out", help="file (default: stdout)"),
) -> None:
    """Every access to one patient's record: who, when, what, why, from where."""
    if fmt not in ("html", "pdf", "json"):
        msg = "--format must be html, pdf or json"
        raise BadRequest(msg)
    if fmt == "pdf" and out_file is None:
        msg = "a PDF report needs --out FILE"
        raise BadRequest(msg)
    services = open_services(load_settings())
    try:
        clock = services.records.clock
        with transaction(services.session_factory) as session:
            built, _bundle = produce_report(
                session,
                principal=OPERATOR,
                patient_id=patient,
                fmt=fmt,
                clock=clock,
                people=people_lookup(session),
            )
    finally:
        services.close()
    if fmt == "pdf":
        assert out_file is not None
        out_file.write_bytes(render_pdf(built))
    else:
        text = (
            render_html(built)
            if fmt == "html"
            else json.dumps(report_document(built), ensure_ascii=False, indent=2)
        )
        if out_file:
            out_file.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text + "\n")
    err.print(f"egide: access report for {patient}: {len(built.lines)} accesses")
