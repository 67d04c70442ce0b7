"""The patient's access report: complete, limited to that patient, readable, safe to open."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pypdf
from fastapi.testclient import TestClient
from sqlalchemy import select

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.identity.directory import people_lookup
from egide.identity.tokens import create_token
from egide.ledger.models import LedgerEntry
from egide.ledger.report import AccessReport, build_report, coarse_location
from egide.ledger.report_render import render_html, render_pdf
from tests.integration.fhir_support import create, headers, observation, patient


def _token(services: Services, role: str, name: str, patient_id: str | None = None) -> str:
    with transaction(services.session_factory) as session:
        return create_token(
            session, role=role, name=name, clock=services.records.clock, patient_id=patient_id
        ).token


def _report(services: Services, patient_id: str) -> AccessReport:
    with transaction(services.session_factory) as session:
        return build_report(
            session,
            patient_id=patient_id,
            now=services.records.clock.now(),
            people=people_lookup(session),
        )


def test_the_report_lists_every_access_to_that_patient_only(
    client: TestClient, services: Services
) -> None:
    engine = _token(services, "service", "Moteur d'interfaces Hôpital Nord")
    alice = create(client, engine, patient(family="Alice"))["id"]
    bob = create(client, engine, patient(family="Bob"))["id"]
    create(client, engine, observation(alice))
    create(client, engine, observation(bob))
    client.get(f"/fhir/Patient/{alice}", headers=headers(engine))
    client.get("/fhir/Observation", headers=headers(engine))
    snoop = _token(services, "patient", "Bob's phone", patient_id=bob)
    assert client.get(f"/fhir/Patient/{alice}", headers=headers(snoop)).status_code == 404

    report = _report(services, alice)
    described = [(line.who, line.action, line.what, line.outcome) for line in report.lines]
    assert described == [
        ("Moteur d'interfaces Hôpital Nord", "added", "Patient", "done"),
        ("Moteur d'interfaces Hôpital Nord", "added", "Observation", "done"),
        ("Moteur d'interfaces Hôpital Nord", "read", "Patient", "done"),
        ("Moteur d'interfaces Hôpital Nord", "found in a search", "Observation", "done"),
        ("Bob's phone", "read", "Patient", "refused"),
    ]
    assert report.lines[0].role == "connected system"
    assert "outside the patient's own compartment" in report.lines[-1].why
    assert all(bob not in line.why for line in report.lines)
    assert len(_report(services, bob).lines) == 3  # Bob's own, not Alice's


def test_coarse_locations_never_show_the_address() -> None:
    assert coarse_location("127.0.0.1") == "on the server itself"
    assert coarse_location("10.2.3.4") == "inside the clinic's network"
    assert coarse_location("192.168.1.20") == "inside the clinic's network"
    assert coarse_location("81.250.1.2") == "from outside the clinic's network"
    assert coarse_location(None) == "not recorded"
    assert coarse_location("testclient") == "not recorded"


def test_html_escapes_what_it_shows(client: TestClient, services: Services) -> None:
    evil = _token(services, "service", '<script>alert("x")</script>')
    pid = create(client, evil, patient())["id"]
    page = render_html(_report(services, pid))
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert" in page
    assert "Who accessed your medical record" in page


def test_pdf_is_readable_and_draws_the_months(client: TestClient, services: Services) -> None:
    engine = _token(services, "service", "Passerelle Élodie")
    pid = create(client, engine, patient())["id"]
    client.get(f"/fhir/Patient/{pid}", headers=headers(engine))
    pdf = render_pdf(_report(services, pid))
    assert pdf.startswith(b"%PDF-")
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    text = "".join(page.extract_text() for page in reader.pages)
    assert "Who accessed your medical record" in text
    assert "Passerelle" in text
    assert "Accesses per month" in text
    assert "2026-03" in text  # the month label under the bar (the test clock's month)


def test_the_cli_writes_the_report_and_audits_the_request(
    client: TestClient, services: Services, service_token: str, tmp_path: Path
) -> None:
    pid = create(client, service_token, patient())["id"]
    settings = services.settings
    assert settings.master_secret is not None
    env = {
        **os.environ,
        "EGIDE_DATA_DIR": str(settings.data_dir),
        "EGIDE_MASTER_SECRET": settings.master_secret.get_secret_value(),
        "EGIDE_KDF_MEMORY_KIB": "64",
        "EGIDE_KDF_ITERATIONS": "1",
    }
    if settings.database_url:
        env["EGIDE_DATABASE_URL"] = settings.database_url
    egide = str(Path(sys.executable).parent / "egide")
    out = tmp_path / "report.json"
    result = subprocess.run(
        [egide, "ledger", "report", "--patient", pid, "--format", "json", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(out.read_text())
    assert body["patient"] == pid
    assert [a["action"] for a in body["accesses"]] == ["added"]
    with transaction(services.session_factory) as session:
        last = session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq.desc())).first()
    assert last is not None
    assert (last.action, last.patient, last.purpose) == ("export", pid, "patient access report")
    bad = subprocess.run(
        [egide, "ledger", "report", "--patient", pid, "--format", "pdf"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0
    assert "--out" in bad.stderr


def test_the_patient_reads_their_own_report_over_http(
    client: TestClient, services: Services, service_token: str
) -> None:
    from egide.fhir.validation import validate_resource  # noqa: PLC0415
    from tests.helpers import issue_token  # noqa: PLC0415

    mine = create(client, service_token, patient(family="Moi"))["id"]
    theirs = create(client, service_token, patient(family="Autre"))["id"]
    client.get(f"/fhir/Patient/{mine}", headers=headers(service_token))
    token = issue_token(services, "patient", patient_id=mine)
    auth = {"Authorization": f"Bearer {token}"}

    page = client.get("/api/patient/access-report", headers=auth)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "Who accessed your medical record" in page.text
    as_json = client.get("/api/patient/access-report?fmt=json", headers=auth).json()
    assert as_json["patient"] == mine
    assert [a["action"] for a in as_json["accesses"]][:2] == ["added", "read"]
    pdf = client.get("/api/patient/access-report?fmt=pdf", headers=auth)
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    bundle = client.get("/api/patient/access-report?fmt=fhir", headers=auth).json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    for entry in bundle["entry"]:
        validate_resource(entry["resource"], expected_type="AuditEvent")
    # The patient's own earlier report requests are in the report (the ledger records them).
    assert any(e["resource"]["id"] for e in bundle["entry"])
    later = client.get("/api/patient/access-report?fmt=json", headers=auth).json()
    assert sum(a["action"] == "exported" for a in later["accesses"]) >= 4

    # Another patient's report answers like one that does not exist; staff roles are refused.
    assert (
        client.get(f"/api/patient/access-report?patient={theirs}", headers=auth).status_code == 404
    )
    physician = issue_token(services, "physician")
    assert (
        client.get(
            f"/api/patient/access-report?patient={mine}",
            headers={"Authorization": f"Bearer {physician}"},
        ).status_code
        == 403
    )
    dpo = issue_token(services, "dpo")
    response = client.get(
        f"/api/patient/access-report?patient={theirs}&fmt=json",
        headers={"Authorization": f"Bearer {dpo}"},
    )
    assert response.status_code == 200
    assert response.json()["patient"] == theirs
    assert client.get("/api/patient/access-report").status_code == 401
    with transaction(services.session_factory) as session:
        exports = session.scalars(select(LedgerEntry).where(LedgerEntry.action == "export"))
        refused = [r for r in exports if r.outcome == "denied"]
    assert {r.patient for r in refused} == {theirs, mine}


def test_no_format_of_the_report_shows_staff_addresses_or_devices(
    client: TestClient, services: Services
) -> None:
    from tests.helpers import issue_token  # noqa: PLC0415

    staff = _token(services, "service", "Poste cardiologie")
    pid = create(client, staff, patient())["id"]
    client.get(
        f"/fhir/Patient/{pid}",
        headers={
            **headers(staff),
            "User-Agent": "WS-CARDIO-07 Firefox/140",
            "X-Request-Id": "req-secret-42",
        },
    )
    with transaction(services.session_factory) as session:
        staff_id = session.scalars(
            select(LedgerEntry.user).where(LedgerEntry.patient == pid, LedgerEntry.action == "read")
        ).one()
    token = issue_token(services, "patient", patient_id=pid)
    auth = {"Authorization": f"Bearer {token}"}
    for fmt in ("html", "json", "fhir", "pdf"):
        response = client.get(f"/api/patient/access-report?fmt={fmt}", headers=auth)
        assert response.status_code == 200
        body = response.content
        for secret in (b"WS-CARDIO-07", b"req-secret-42", staff_id.encode()):
            assert secret not in body, (fmt, secret)
    bundle = client.get("/api/patient/access-report?fmt=fhir", headers=auth).json()
    agents = [a for e in bundle["entry"] for a in e["resource"]["agent"]]
    assert any(a.get("who", {}).get("display") == "Poste cardiologie" for a in agents)
