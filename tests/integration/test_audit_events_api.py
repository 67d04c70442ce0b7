"""`/fhir/AuditEvent` over real HTTP on SQLite and PostgreSQL: the ledger served read-only as
FHIR R4 AuditEvents to the security officer only, every look at it audited, no writes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from egide.cli.runtime import Services
from egide.core.clock import FixedClock
from egide.db.engine import transaction
from egide.fhir.validation import validate_resource
from egide.ledger.models import LedgerEntry
from egide.records.models import ResourceHead
from tests.helpers import issue_token, treating_token
from tests.integration.fhir_support import create, headers, observation, outcome_text, patient

T0 = dt.datetime(2026, 3, 2, 8, 15, tzinfo=dt.UTC)


def _ledger(services: Services) -> list[LedgerEntry]:
    with transaction(services.session_factory) as session:
        return list(session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq)))


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def _search(
    client: TestClient, token: str, params: dict[str, str] | list[tuple[str, str]]
) -> dict[str, Any]:
    response = client.get("/fhir/AuditEvent", params=params, headers=headers(token))
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    for event in _entries(bundle):
        validate_resource(event, expected_type="AuditEvent")
    return bundle


@pytest.fixture
def world(client: TestClient, services: Services, service_token: str) -> dict[str, Any]:
    """Activity through the API: two patients, clinical data, a physician's reads and a
    failed login in a first hour, more reads an hour later; then a security officer."""
    clock = services.records.clock
    assert isinstance(clock, FixedClock)
    alice = create(client, service_token, patient(family="Lefèvre"))["id"]
    bruno = create(client, service_token, patient(family="Martin", given="Bruno"))["id"]
    obs = create(client, service_token, observation(alice, value=187.3))["id"]
    physician = treating_token(services, alice, bruno)
    assert client.get(f"/fhir/Patient/{alice}", headers=headers(physician)).status_code == 200
    assert client.get("/fhir/Observation", headers=headers(physician)).status_code == 200
    assert client.get("/fhir/Patient", headers={"Authorization": "Bearer nope"}).status_code == 401
    clock.advance(dt.timedelta(hours=1))
    assert client.get(f"/fhir/Observation/{obs}", headers=headers(physician)).status_code == 200
    assert client.get(f"/fhir/Patient/{bruno}", headers=headers(physician)).status_code == 200
    clock.advance(dt.timedelta(minutes=5))
    officer = issue_token(services, "security_officer")
    rows = _ledger(services)
    physician_id = next(r.user for r in rows if r.role == "physician")
    return {
        "alice": alice,
        "bruno": bruno,
        "obs": obs,
        "physician": physician,
        "physician_id": physician_id,
        "officer": officer,
        "service": service_token,
        "secrets": [
            service_token,
            physician,
            officer,
            "Lefèvre",
            "Martin",
            "187.3",
            "1987-04-12",
            "287047512345678",
            "Élodie",
            "Bruno",
        ],
    }


def test_officer_searches_by_patient(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    alice = world["alice"]
    expected = [r.id for r in reversed(_ledger(services)) if r.patient == alice]
    assert len(expected) >= 3  # created, observation created, read twice
    bundle = _search(client, world["officer"], {"patient": alice, "_count": "100"})
    assert bundle["total"] == len(expected)
    assert [e["id"] for e in _entries(bundle)] == expected  # newest first
    for event in _entries(bundle):
        patients = [e for e in event["entity"] if e["type"]["code"] == "1"]
        assert patients == [
            {
                "what": {"reference": f"Patient/{alice}"},
                "type": patients[0]["type"],
                "role": patients[0]["role"],
            }
        ]
        assert patients[0]["role"]["code"] == "1"
    # The reference form finds the same events (plus the officer's own first search).
    again = _search(client, world["officer"], {"patient": f"Patient/{alice}", "_count": "100"})
    assert [e["id"] for e in _entries(again)][1:] == expected
    assert _entries(again)[0]["agent"][0]["role"][0]["text"] == "security_officer"
    # Nothing about the other patient is in there.
    assert world["bruno"] not in json.dumps(bundle)


def test_officer_searches_by_agent_action_and_subtype(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    officer, physician_id = world["officer"], world["physician_id"]
    by_agent = _search(client, officer, {"agent": physician_id})
    mine = [r for r in _ledger(services) if r.user == physician_id]
    assert by_agent["total"] == len(mine) == 4
    assert all(
        e["agent"][0]["who"]["identifier"]["value"] == physician_id for e in _entries(by_agent)
    )
    reads = _search(client, officer, {"agent": physician_id, "action": "R"})
    assert reads["total"] == 3
    assert {e["subtype"][0]["code"] for e in _entries(reads)} == {"read"}
    assert {e["action"] for e in _entries(reads)} == {"R"}
    searches = _search(client, officer, {"agent": physician_id, "subtype": "search-type"})
    assert searches["total"] == 1
    assert _entries(searches)[0]["action"] == "E"
    created = _search(client, officer, {"action": "C", "subtype": "create"})
    # Two patients and an observation by the service token; a practitioner and two
    # admissions (the physician's care links) by the admission job, also a service.
    assert created["total"] == 6
    assert {e["agent"][0]["role"][0]["text"] for e in _entries(created)} == {"service"}
    # Either of two actions; and action + subtype narrow each other.
    either = _search(client, officer, {"agent": physician_id, "action": "C,R"})
    assert either["total"] == 3
    nothing = _search(client, officer, {"agent": physician_id, "action": "R", "subtype": "create"})
    assert nothing["total"] == 0
    assert "entry" not in nothing
    failed = _search(client, officer, {"subtype": "urn:egide:ledger-action|login_failed"})
    assert failed["total"] == 1
    event = _entries(failed)[0]
    assert (event["type"]["code"], event["subtype"][0]["code"]) == ("110114", "110122")
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "invalid bearer token"
    assert _search(client, officer, {"subtype": "110122"})["total"] == 1


def test_officer_searches_by_date(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    officer, who = world["officer"], world["physician_id"]
    hour = (T0 + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")

    def ids(*dates: str) -> set[str]:
        params = [("agent", who), *(("date", d) for d in dates)]
        return {e["id"] for e in _entries(_search(client, officer, params))}

    rows = [r for r in _ledger(services) if r.user == who]
    first = {r.id for r in rows if r.time < T0 + dt.timedelta(hours=1)}
    second = {r.id for r in rows if r.time >= T0 + dt.timedelta(hours=1)}
    assert len(first) == len(second) == 2
    assert ids(f"ge{hour}") == second
    assert ids(f"lt{hour}") == first
    assert ids(f"le{hour}") == first | second  # "le" includes the whole second named
    assert ids(f"eq{hour}") == second  # the second reads happened in that very second
    assert ids(f"gt{hour}") == set()
    assert ids("2026-03-02") == first | second  # a day is a range
    assert ids("eq2026-03-01") == set()
    assert ids("ge2026-03-02T08:00:00Z", "lt2026-03-02T09:00:00Z") == first
    assert ids("2026-03-02T10:15:00+01:00", "ge2026-03-02T08:15:00Z") == second
    assert ids("ge2026-03-02T09:00:00Z", "lt2026-03-02T09:00:00Z") == set()


def test_paging_walks_every_event_once_newest_first(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    officer = world["officer"]
    # Filtered on the service token's events, which the officer's own searches do not add to.
    service_user = next(r.user for r in _ledger(services) if r.role == "service")
    expected = [r.id for r in reversed(_ledger(services)) if r.user == service_user]
    assert len(expected) == 3
    bundle = _search(client, officer, {"agent": service_user, "_count": "2"})
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        assert bundle["total"] == 3
        seen += [e["id"] for e in _entries(bundle)]
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert "first" in links
        assert "last" in links
        if "next" not in links:
            break
        url = urlsplit(links["next"])
        assert url.path == "/fhir/AuditEvent"
        response = client.get(f"{url.path}?{url.query}", headers=headers(officer))
        assert response.status_code == 200
        bundle = response.json()
    assert pages == 2
    assert seen == expected
    assert "previous" in {link["relation"] for link in bundle["link"]}
    empty = _search(client, officer, {"agent": service_user, "_count": "0"})
    assert empty["total"] == 3
    assert "entry" not in empty
    beyond = _search(client, officer, {"agent": service_user, "_offset": "10"})
    assert "entry" not in beyond


def test_officer_reads_one_event_by_id(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    row = next(r for r in _ledger(services) if r.action == "read" and r.patient == world["alice"])
    response = client.get(f"/fhir/AuditEvent/{row.id}", headers=headers(world["officer"]))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.headers["cache-control"] == "no-store"
    event = validate_resource(response.json(), expected_type="AuditEvent")
    assert event["id"] == row.id
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["agent"][0]["who"]["identifier"]["value"] == world["physician_id"]
    # The same event as the search serves it.
    found = _search(client, world["officer"], {"patient": world["alice"], "_count": "100"})
    assert event in _entries(found)
    missing = client.get(
        "/fhir/AuditEvent/00000000-0000-4000-8000-000000000000", headers=headers(world["officer"])
    )
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    bad = client.get("/fhir/AuditEvent/not%20an%20id", headers=headers(world["officer"]))
    assert bad.status_code == 400


def test_every_officer_query_is_itself_in_the_ledger(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    officer_search = _search(client, world["officer"], {"patient": world["bruno"]})
    last = _ledger(services)[-1]
    assert (last.action, last.outcome, last.resource_type) == ("search", "success", "AuditEvent")
    assert last.role == "security_officer"
    assert last.patient == world["bruno"]
    assert last.count == len(_entries(officer_search)) == officer_search["total"]
    target = next(r for r in _ledger(services) if r.patient == world["bruno"])
    assert client.get(f"/fhir/AuditEvent/{target.id}", headers=headers(world["officer"])).is_success
    last = _ledger(services)[-1]
    assert (last.action, last.resource_type, last.resource_id) == ("read", "AuditEvent", target.id)
    assert (last.patient, last.count, last.outcome) == (world["bruno"], 1, "success")
    # ...and therefore the officer's watching is visible to the next look at the ledger.
    officer_id = last.user
    watched = _search(client, world["officer"], {"agent": officer_id, "subtype": "read"})
    assert target.id in json.dumps(watched)
    assert watched["total"] == 1


def test_no_secrets_or_clinical_values_are_served(
    client: TestClient, world: dict[str, Any]
) -> None:
    text = json.dumps(_search(client, world["officer"], {"_count": "500"}), ensure_ascii=False)
    for secret in world["secrets"]:
        assert secret not in text


@pytest.mark.parametrize("role", ["service", "physician", "patient", "admin", "dpo", "nurse"])
def test_other_roles_get_403_on_search_and_404_on_read(
    client: TestClient, services: Services, world: dict[str, Any], role: str
) -> None:
    token = issue_token(services, role, patient_id=world["alice"] if role == "patient" else None)
    existing = next(r.id for r in _ledger(services) if r.patient == world["alice"])
    before = len(_ledger(services))
    search = client.get(f"/fhir/AuditEvent?patient={world['alice']}", headers=headers(token))
    assert search.status_code == 403
    assert search.json()["resourceType"] == "OperationOutcome"
    assert "entry" not in search.json()
    read = client.get(f"/fhir/AuditEvent/{existing}", headers=headers(token))
    absent = client.get(
        "/fhir/AuditEvent/00000000-0000-4000-8000-000000000000", headers=headers(token)
    )
    # An existing event and a made-up id answer alike: nothing is learnt about what exists.
    assert read.status_code == absent.status_code == 404
    assert outcome_text(read).replace(existing, "X") == outcome_text(absent).replace(
        "00000000-0000-4000-8000-000000000000", "X"
    )
    post_search = client.post(
        "/fhir/AuditEvent/_search",
        data={"patient": world["alice"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert post_search.status_code == 403
    # Each refusal is in the ledger, with the reason.
    refused = _ledger(services)[before:]
    assert [(r.action, r.outcome) for r in refused] == [
        ("search", "denied"),
        ("read", "denied"),
        ("read", "denied"),
        ("search", "denied"),
    ]
    assert all(r.resource_type == "AuditEvent" and r.role == role for r in refused)
    assert f"role {role} lacks permission ledger:audit:read" in refused[0].reasons


def test_without_a_token_nothing_is_served(client: TestClient, world: dict[str, Any]) -> None:
    assert client.get("/fhir/AuditEvent").status_code == 401
    assert client.get(f"/fhir/AuditEvent?patient={world['alice']}").status_code == 401
    assert client.post("/fhir/AuditEvent", json={"resourceType": "AuditEvent"}).status_code == 401


def _audit_event_heads(services: Services) -> int:
    with transaction(services.session_factory) as session:
        stmt = select(func.count()).select_from(ResourceHead)
        return session.scalar(stmt.where(ResourceHead.resource_type == "AuditEvent")) or 0


def test_audit_events_cannot_be_written_by_anyone(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    victim = next(r for r in _ledger(services) if r.patient == world["alice"])
    canonical = victim.canonical
    forged = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-03-02T08:15:00Z",
        "agent": [{"requestor": True, "who": {"display": "nobody"}}],
        "source": {"observer": {"display": "forger"}},
    }
    for token in (world["service"], world["officer"]):
        before = len(_ledger(services))
        attempts = [
            client.post("/fhir/AuditEvent", json=forged, headers=headers(token)),
            client.put(
                f"/fhir/AuditEvent/{victim.id}",
                json={**forged, "id": victim.id},
                headers=headers(token),
            ),
            client.delete(f"/fhir/AuditEvent/{victim.id}", headers=headers(token)),
        ]
        for response in attempts:
            assert response.status_code == 405, response.text
            assert "append-only" in outcome_text(response)
        refused = _ledger(services)[before:]
        assert [(r.action, r.outcome) for r in refused] == [
            ("create", "denied"),
            ("update", "denied"),
            ("delete", "denied"),
        ]
        assert refused[1].resource_id == victim.id
    for method, path in [
        ("PATCH", f"/fhir/AuditEvent/{victim.id}"),
        ("GET", "/fhir/AuditEvent/_history"),
        ("GET", f"/fhir/AuditEvent/{victim.id}/_history"),
        ("GET", f"/fhir/AuditEvent/{victim.id}/_history/1"),
        ("PUT", "/fhir/AuditEvent"),
        ("DELETE", "/fhir/AuditEvent"),
    ]:
        response = client.request(method, path, headers=headers(world["service"]))
        assert response.status_code == 405, (method, path)
    # Nothing reached the generic resource store, and the ledger entry is untouched.
    assert _audit_event_heads(services) == 0
    still = next(r for r in _ledger(services) if r.id == victim.id)
    assert still.canonical == canonical
    served = client.get(f"/fhir/AuditEvent/{victim.id}", headers=headers(world["officer"]))
    assert served.json()["agent"][0]["who"].get("display") != "nobody"


@pytest.mark.parametrize(
    "query",
    [
        "_sort=-date",
        "type=110110",
        "patient=a,b",
        "patient=Patient/../x",
        "patient=a&patient=b",
        "date=2026-13-40",
        "date=ne2026-03-02",
        "date=sa2026-03-02",
        "action=X",
        "action=",
        "subtype=bad%20code",
        "_count=-1",
        "_count=ten",
        "_offset=99999999999",
    ],
)
def test_bad_parameters_are_refused_not_ignored(
    client: TestClient, world: dict[str, Any], query: str
) -> None:
    response = client.get(f"/fhir/AuditEvent?{query}", headers=headers(world["officer"]))
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_post_search_takes_a_form_body(client: TestClient, world: dict[str, Any]) -> None:
    response = client.post(
        "/fhir/AuditEvent/_search",
        data={"agent": world["physician_id"], "action": "R"},
        headers={"Authorization": f"Bearer {world['officer']}"},
    )
    assert response.status_code == 200
    assert response.json()["total"] == 3
    wrong = client.post(
        "/fhir/AuditEvent/_search",
        json={"agent": world["physician_id"]},
        headers={"Authorization": f"Bearer {world['officer']}"},
    )
    assert wrong.status_code == 415


def test_an_unfiltered_officer_search_is_audited_for_every_patient_shown(
    client: TestClient, services: Services, world: dict[str, Any]
) -> None:
    before = len(_ledger(services))
    page = _search(client, world["officer"], {"_count": "500"})
    shown: dict[str, int] = {}
    for event in _entries(page):
        for entity in event.get("entity", []):
            reference = entity.get("what", {}).get("reference", "")
            if reference.startswith("Patient/"):
                patient_id = reference.removeprefix("Patient/")
                shown[patient_id] = shown.get(patient_id, 0) + 1
                break
    assert {world["alice"], world["bruno"]} <= set(shown)
    added = [e for e in _ledger(services)[before:] if e.resource_type == "AuditEvent"]
    assert {e.patient: e.count for e in added} == shown
