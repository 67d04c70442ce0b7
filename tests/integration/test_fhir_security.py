"""Adversarial tests of the API: authentication, compartments, bad input, fail-closed audit."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.identity.tokens import revoke_token
from egide.ledger.models import LedgerEntry
from egide.records.models import ResourceHead, ResourceVersion
from tests.helpers import Database, issue_token
from tests.integration.fhir_support import FHIR, create, headers, observation, outcome_text, patient


def _count(services: Services, model: Any) -> int:
    with transaction(services.session_factory) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _ledger(services: Services) -> list[LedgerEntry]:
    with transaction(services.session_factory) as session:
        return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer egide_" + "A" * 43,
        "Basic dXNlcjpwYXNz",
        "Bearer " + "x" * 5000,
    ],
)
def test_requests_without_a_valid_token_are_401_and_audited(
    client: TestClient, services: Services, authorization: str | None
) -> None:
    sent = {"Authorization": authorization} if authorization else {}
    response = client.get("/fhir/Patient", headers=sent)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["resourceType"] == "OperationOutcome"
    last = _ledger(services)[-1]
    assert (last.action, last.outcome) == ("login_failed", "denied")


def test_revoked_token_stops_working(client: TestClient, services: Services) -> None:
    token = issue_token(services, "service")
    assert client.get("/fhir/Patient", headers=headers(token)).status_code == 200
    with transaction(services.session_factory) as session:
        from egide.identity.models import ApiToken  # noqa: PLC0415

        row = session.scalars(select(ApiToken)).one()
        assert revoke_token(session, token_id=row.id, clock=services.records.clock)
    assert client.get("/fhir/Patient", headers=headers(token)).status_code == 401


def test_tokens_are_stored_only_as_hashes(services: Services, database: Database) -> None:
    token = issue_token(services, "service")
    with transaction(services.session_factory) as session:
        dumped = session.execute(text("SELECT * FROM identity_api_token")).all()
    assert token not in repr(dumped)
    assert token[len("egide_") :] not in repr(dumped)


# -- compartments and roles -----------------------------------------------------------------


def test_patient_token_sees_only_their_own_compartment(
    client: TestClient, services: Services, service_token: str
) -> None:
    mine = create(client, service_token, patient(family="Durand"))["id"]
    other = create(client, service_token, patient(family="Petit"))["id"]
    my_obs = create(client, service_token, observation(mine))["id"]
    their_obs = create(client, service_token, observation(other))["id"]
    token = issue_token(services, "patient", patient_id=mine)

    assert client.get(f"/fhir/Patient/{mine}", headers=headers(token)).status_code == 200
    assert client.get(f"/fhir/Observation/{my_obs}", headers=headers(token)).status_code == 200
    # Another patient's records answer exactly like records that do not exist.
    hidden = client.get(f"/fhir/Patient/{other}", headers=headers(token))
    absent = client.get("/fhir/Patient/never-existed", headers=headers(token))
    assert hidden.status_code == absent.status_code == 404
    assert client.get(f"/fhir/Observation/{their_obs}", headers=headers(token)).status_code == 404
    assert (
        client.get(f"/fhir/Observation/{their_obs}/_history", headers=headers(token)).status_code
        == 404
    )
    assert (
        client.get(f"/fhir/Observation/{their_obs}/_history/1", headers=headers(token)).status_code
        == 404
    )
    # Searches, counts and history only ever contain the patient's own compartment.
    found = client.get("/fhir/Observation", headers=headers(token)).json()
    assert found["total"] == 1
    assert [e["resource"]["id"] for e in found["entry"]] == [my_obs]
    by_other = client.get(f"/fhir/Observation?patient={other}", headers=headers(token)).json()
    assert by_other["total"] == 0
    history = client.get("/fhir/Observation/_history", headers=headers(token)).json()
    assert history["total"] == 1
    # And a patient token cannot write, not even to their own record.
    response = client.post("/fhir/Observation", json=observation(mine), headers=headers(token))
    assert response.status_code == 403
    # The denied read is in the ledger, with the reason.
    denied = [e for e in _ledger(services) if e.outcome == "denied" and e.patient == other]
    assert denied
    assert "outside the patient's own compartment" in denied[0].reasons


def test_admin_token_reaches_no_clinical_data(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    admin = issue_token(services, "admin")
    assert client.get(f"/fhir/Patient/{pid}", headers=headers(admin)).status_code == 404
    assert client.get("/fhir/Patient", headers=headers(admin)).status_code == 403
    org = {"resourceType": "Organization", "name": "Clinique"}
    assert client.post("/fhir/Organization", json=org, headers=headers(admin)).status_code == 201


def test_bundle_is_not_a_side_door(
    client: TestClient, services: Services, service_token: str
) -> None:
    other = create(client, service_token, patient(family="Petit"))["id"]
    mine = create(client, service_token, patient(family="Durand"))["id"]
    token = issue_token(services, "patient", patient_id=mine)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{other}"}},
            {"request": {"method": "GET", "url": f"Patient/{mine}"}},
            {"request": {"method": "GET", "url": "Patient?family=petit"}},
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers(token))
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"].startswith("404")
    assert "resource" not in entries[0]
    assert entries[1]["response"]["status"].startswith("200")
    assert entries[2]["resource"]["total"] == 0


# -- bad input ------------------------------------------------------------------------------


def _nothing_stored(services: Services) -> None:
    assert _count(services, ResourceHead) == 0
    assert _count(services, ResourceVersion) == 0


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "JSON"),
        (b"[]", 400, ""),
        (b'{"resourceType": "Patient", "resourceType": "Patient"}', 400, "duplicate"),
        (
            b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}',
            400,
            "resourceType",
        ),
        (b'{"name": [{"family": "x"}]}', 400, "resourceType"),
        (b'{"resourceType": "Patient", "favouriteColour": "blue"}', 422, "favouriteColour"),
        (b'{"resourceType": "Patient", "birthDate": "1987-13-45"}', 422, "birthDate"),
        (b'{"resourceType": "Patient", "gender": "sometimes"}', 422, "gender"),
        (b'{"resourceType": "Patient", "name": "should be a list"}', 422, "name"),
        (b'{"resourceType": "Patient", "active": NaN}', 400, ""),
        (b"\xff\xfe\x00garbage", 400, ""),
    ],
)
def test_bad_bodies_get_an_outcome_and_store_nothing(
    client: TestClient,
    services: Services,
    service_token: str,
    body: bytes,
    status: int,
    needle: str,
) -> None:
    response = client.post("/fhir/Patient", content=body, headers=headers(service_token))
    assert response.status_code == status, response.text
    assert needle in outcome_text(response)
    assert "Traceback" not in response.text
    _nothing_stored(services)


def test_deep_nesting_is_refused_without_a_crash(
    client: TestClient, services: Services, service_token: str
) -> None:
    deep = '{"resourceType": "Patient", "extension": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = client.post("/fhir/Patient", content=deep.encode(), headers=headers(service_token))
    assert response.status_code == 400
    _nothing_stored(services)


def test_ten_megabyte_body_is_413(
    client: TestClient, services: Services, service_token: str
) -> None:
    big = json.dumps(
        {
            "resourceType": "Patient",
            "text": {"status": "generated", "div": "<div>" + "a" * 10_000_000 + "</div>"},
        }
    ).encode()
    response = client.post("/fhir/Patient", content=big, headers=headers(service_token))
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    _nothing_stored(services)


def test_wrong_content_type_is_415(
    client: TestClient, services: Services, service_token: str
) -> None:
    response = client.post(
        "/fhir/Patient",
        content=b"<Patient/>",
        headers={
            "Authorization": f"Bearer {service_token}",
            "Content-Type": "application/fhir+xml",
        },
    )
    assert response.status_code == 415
    _nothing_stored(services)


def test_invalid_ids_are_refused(client: TestClient, service_token: str) -> None:
    response = client.get("/fhir/Patient/" + "a" * 65, headers=headers(service_token))
    assert response.status_code == 400
    response = client.get("/fhir/Patient/bad$id", headers=headers(service_token))
    assert response.status_code == 400


def test_unsupported_method_is_405_outcome(client: TestClient, service_token: str) -> None:
    response = client.patch("/fhir/Patient/x", content=b"[]", headers=headers(service_token))
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


def test_unknown_route_is_404_outcome(client: TestClient) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


# -- audit with the act, fail closed --------------------------------------------------------


def test_every_act_is_in_the_ledger(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient())["id"]
    client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    client.get("/fhir/Patient?family=lef", headers=headers(service_token))
    client.put(f"/fhir/Patient/{pid}", json=patient(id=pid), headers=headers(service_token))
    client.delete(f"/fhir/Patient/{pid}", headers=headers(service_token))
    acts = [(e.action, e.patient) for e in _ledger(services) if e.patient == pid]
    assert acts == [
        ("create", pid),
        ("read", pid),
        ("search", pid),
        ("update", pid),
        ("delete", pid),
    ]


def test_ledger_failure_fails_the_read_and_returns_no_data(
    client: TestClient, services: Services, service_token: str, database: Database
) -> None:
    pid = create(client, service_token, patient(family="Zyxwvutsrq"))["id"]
    with services.engine.begin() as conn:
        if database.backend == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER break_ledger BEFORE INSERT ON ledger_entry "
                    "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION break_ledger() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER break_ledger BEFORE INSERT ON ledger_entry "
                    "FOR EACH ROW EXECUTE FUNCTION break_ledger()"
                )
            )
    response = client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Zyxwvutsrq" not in response.text
    assert "disk full" not in response.text
    created = client.post(
        "/fhir/Patient", json=patient(family="Ghost"), headers=headers(service_token)
    )
    assert created.status_code == 500
    assert _count(services, ResourceHead) == 1


def test_the_ledger_refuses_updates_and_deletes(
    services: Services, client: TestClient, service_token: str
) -> None:
    create(client, service_token, patient())
    with pytest.raises(Exception, match="append-only"), services.engine.begin() as conn:
        conn.execute(text("UPDATE ledger_entry SET action = 'read'"))
    with pytest.raises(Exception, match="append-only"), services.engine.begin() as conn:
        conn.execute(text("DELETE FROM ledger_entry"))


def test_content_type_header_of_answers(client: TestClient, service_token: str) -> None:
    pid = create(client, service_token, patient())["id"]
    response = client.get(f"/fhir/Patient/{pid}", headers=headers(service_token))
    assert response.headers["content-type"].startswith(FHIR)
