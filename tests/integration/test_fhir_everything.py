"""Patient `$everything` under the same policy as a read (issue 5, item 6: no side doors).

The operation returns a patient's compartment in one call, which makes it the shortest way to
leak a record: each test compares what a role gets with what a `service` token (which sees
everything) gets for the same patient, so an absence is proved to come from the policy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from egide.cli.runtime import Services
from egide.core.clock import FixedClock
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.fhir.search import parse_everything_query
from egide.ledger.models import LedgerEntry
from egide.records.repository import EVERYTHING, Repository
from tests.helpers import issue_token, treating_token
from tests.integration.fhir_support import create, headers, observation, outcome_text, patient

AMB = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}


@pytest.fixture
def world(client: TestClient, service_token: str) -> dict[str, str]:
    """Patients A and B and their records; B's Observation names A as its performer, so it is
    in A's compartment (R4 CompartmentDefinition patient: Observation.performer) while being
    B's data."""
    ids: dict[str, str] = {}
    ids["A"] = create(client, service_token, patient(family="Traitée"))["id"]
    ids["B"] = create(client, service_token, patient(family="Autre"))["id"]
    for name, pid in (("A", ids["A"]), ("B", ids["B"])):
        ref = {"reference": f"Patient/{pid}"}
        ids[f"enc{name}"] = create(
            client,
            service_token,
            {
                "resourceType": "Encounter",
                "status": "planned",
                "class": AMB,
                "subject": ref,
                "reasonCode": [{"text": "bilan psychiatrique"}],
            },
        )["id"]
        ids[f"obs{name}"] = create(client, service_token, observation(pid))["id"]
        ids[f"cond{name}"] = create(
            client,
            service_token,
            {"resourceType": "Condition", "subject": ref, "code": {"text": "diabète"}},
        )["id"]
    ids["obsBperfA"] = create(
        client,
        service_token,
        observation(ids["B"], value=60, performer=[{"reference": f"Patient/{ids['A']}"}]),
    )["id"]
    return ids


def _everything(
    client: TestClient, token: str, pid: str, query: str = "_count=100"
) -> dict[str, Any]:
    response = client.get(f"/fhir/Patient/{pid}/$everything?{query}", headers=headers(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "searchset"
    return body


def _keys(body: dict[str, Any]) -> list[str]:
    return [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in body.get("entry", [])]


def _a_record(world: dict[str, str]) -> set[str]:
    return {
        f"Patient/{world['A']}",
        f"Encounter/{world['encA']}",
        f"Observation/{world['obsA']}",
        f"Condition/{world['condA']}",
    }


def test_everything_of_a_treated_patient(
    client: TestClient, services: Services, service_token: str, world: dict[str, str]
) -> None:
    everyone = _everything(client, service_token, world["A"])
    # The compartment: A's own records, and B's Observation naming A as performer.
    assert set(_keys(everyone)) == _a_record(world) | {f"Observation/{world['obsBperfA']}"}
    assert _keys(everyone)[0] == f"Patient/{world['A']}"
    physician = treating_token(services, world["A"])
    body = _everything(client, physician, world["A"])
    keys = _keys(body)
    assert keys[0] == f"Patient/{world['A']}"
    # Plus the Encounter the admission wrote for this physician; never B's Observation.
    encounters = {k for k in keys if k.startswith("Encounter/")}
    assert set(keys) - encounters == _a_record(world) - {f"Encounter/{world['encA']}"}
    assert f"Encounter/{world['encA']}" in encounters
    assert body["total"] == len(keys)
    assert all(e["search"]["mode"] == "match" for e in body["entry"])
    # Clinical elements are shown in full to the treating physician.
    assert "bilan psychiatrique" in str(body)


def test_everything_for_a_secretary_is_what_a_secretary_may_read(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    secretary = issue_token(services, "secretary")
    body = _everything(client, secretary, world["A"])
    assert set(_keys(body)) == {f"Patient/{world['A']}", f"Encounter/{world['encA']}"}
    assert body["total"] == 2
    encounter = body["entry"][1]["resource"]
    assert "reasonCode" not in encounter
    assert "bilan psychiatrique" not in str(body)
    assert any(label["code"] == "REDACTED" for label in encounter["meta"]["security"])


def test_everything_of_a_hidden_patient_answers_404(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    own = issue_token(services, "patient", patient_id=world["A"])
    lab = issue_token(services, "lab")  # no order for anyone
    unknown = client.get("/fhir/Patient/nobody/$everything", headers=headers(own))
    assert unknown.status_code == 404
    for token, pid in ((own, world["B"]), (lab, world["A"]), (lab, world["B"])):
        response = client.get(f"/fhir/Patient/{pid}/$everything", headers=headers(token))
        assert response.status_code == 404, response.text
        # The same answer as for a patient that does not exist (no existence oracle).
        assert outcome_text(response).replace(pid, "nobody") == outcome_text(unknown)
    # The patient's own: their record, not B's Observation that merely names them.
    body = _everything(client, own, world["A"])
    assert set(_keys(body)) == _a_record(world)
    with transaction(services.session_factory) as session:
        denied = [
            e
            for e in session.scalars(select(LedgerEntry))
            if e.outcome == "denied" and e.patient == world["B"]
        ]
    # Both refusals about B (the patient's and the lab user's) are in the ledger.
    assert [(e.action, e.resource_type, e.resource_id) for e in denied] == [
        ("read", "Patient", world["B"])
    ] * 2


def test_everything_paging_counts_only_visible_rows(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    physician = treating_token(services, world["A"])
    whole = _keys(_everything(client, physician, world["A"]))
    pages: list[str] = []
    query = "_count=2"
    while True:
        body = _everything(client, physician, world["A"], query)
        assert body["total"] == len(whole)
        pages.extend(_keys(body))
        after = [link["url"] for link in body["link"] if link["relation"] == "next"]
        if not after:
            break
        assert f"/fhir/Patient/{world['A']}/$everything?" in after[0]
        query = after[0].split("?", 1)[1]
    assert pages == whole


def test_everything_type_and_since_filters(
    client: TestClient,
    services: Services,
    service_token: str,
    world: dict[str, str],
    clock: FixedClock,
) -> None:
    physician = treating_token(services, world["A"])
    body = _everything(client, physician, world["A"], "_type=Observation,Condition")
    assert set(_keys(body)) == {f"Observation/{world['obsA']}", f"Condition/{world['condA']}"}
    # Later updates only: move the clock on and touch one resource.
    clock.advance(dt.timedelta(hours=2))
    since = clock.now().isoformat()
    changed = client.get(f"/fhir/Condition/{world['condA']}", headers=headers(service_token))
    put = client.put(
        f"/fhir/Condition/{world['condA']}", json=changed.json(), headers=headers(service_token)
    )
    assert put.status_code == 200
    body = _everything(client, physician, world["A"], f"_since={since.replace('+', '%2B')}")
    assert _keys(body) == [f"Condition/{world['condA']}"]
    for query, fragment in (("start=2026-01-01", "care dates"), ("_type=Nope", "Nope")):
        response = client.get(
            f"/fhir/Patient/{world['A']}/$everything?{query}", headers=headers(physician)
        )
        assert response.status_code == 400
        assert fragment in outcome_text(response)


def test_everything_is_audited_once_per_patient(
    client: TestClient, services: Services, service_token: str, world: dict[str, str]
) -> None:
    with transaction(services.session_factory) as session:
        before = session.scalar(select(LedgerEntry.seq).order_by(LedgerEntry.seq.desc()).limit(1))
    body = _everything(client, service_token, world["A"])
    with transaction(services.session_factory) as session:
        added = list(
            session.scalars(
                select(LedgerEntry).where(LedgerEntry.seq > before).order_by(LedgerEntry.seq)
            )
        )
    summary = [(e.action, e.patient, e.resource_type, e.resource_id, e.count) for e in added]
    # One entry for A (its count: A's rows returned) and one for B, whose Observation names A.
    assert summary == [
        ("read", world["A"], "Patient", world["A"], len(body["entry"]) - 1),
        ("read", world["B"], None, None, 1),
    ]
    assert all(e.reasons[0] == EVERYTHING for e in added)


def test_everything_of_a_deleted_patient_is_gone(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = create(client, service_token, patient(family="Partie"))["id"]
    assert client.delete(f"/fhir/Patient/{pid}", headers=headers(service_token)).status_code == 200
    response = client.get(f"/fhir/Patient/{pid}/$everything", headers=headers(service_token))
    assert response.status_code == 410


def test_scopes_bound_everything(services: Services, world: dict[str, str]) -> None:
    """Scopes are not in the SQL filter: the types are cut to them first, so a type outside
    them is absent (and not counted) rather than failing the request."""
    query = parse_everything_query([("_count", "100")])

    def reached(scopes: frozenset[str]) -> tuple[set[str], int]:
        principal = Principal(id="app", role="service", scopes=scopes)
        with transaction(services.session_factory) as session:
            repo = Repository(session, principal, services.records)
            found, total = repo.everything(world["A"], query)
        return {f"{s.resource_type}/{s.id}" for s in found}, total

    assert reached(frozenset({"system/Patient.rs"})) == ({f"Patient/{world['A']}"}, 1)
    keys, total = reached(frozenset({"system/Patient.r", "system/Condition.r"}))
    assert keys == {f"Patient/{world['A']}", f"Condition/{world['condA']}"}
    assert total == 2
