"""`_include` and `_revinclude` under the search's own policy (issue 5, item 6: no side doors).

An included resource is found through the same SQL filter as a search result, decided on again,
masked and audited like one: a resource the caller may not see is simply absent (no count, no
hint), types the role or the token's scopes may not search are never included. Each test also
runs the same request as a `service` token that sees everything, so that an empty answer is
proved to come from the policy and not from a broken include.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from egide.cli.runtime import Services
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.fhir.search import parse_search_query
from egide.ledger.models import LedgerEntry
from egide.records.repository import Repository
from tests.helpers import issue_token, treating_token
from tests.integration.fhir_support import create, headers, observation, outcome_text, patient

LAB_CATEGORY = {"coding": [{"system": "http://snomed.info/sct", "code": "108252007"}]}


@pytest.fixture
def world(client: TestClient, service_token: str) -> dict[str, str]:
    """Patient A (treated, with an active lab order) and patient B (not), and their records.

    A's Observation names as performers a Practitioner, patient B and B's CareTeam: the last
    two are what an include must not smuggle out to someone who may not see B's record."""
    ids: dict[str, str] = {}
    ids["A"] = create(client, service_token, patient(family="Traitée"))["id"]
    ids["B"] = create(client, service_token, patient(family="Autre"))["id"]
    ids["pract"] = create(
        client, service_token, {"resourceType": "Practitioner", "name": [{"family": "Labo"}]}
    )["id"]
    ids["ctB"] = create(
        client,
        service_token,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{ids['B']}"},
        },
    )["id"]
    ids["srA"] = create(
        client,
        service_token,
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "category": [LAB_CATEGORY],
            "code": {"text": "NFS"},
            "subject": {"reference": f"Patient/{ids['A']}"},
        },
    )["id"]
    ids["condA"] = create(
        client,
        service_token,
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{ids['A']}"},
            "code": {"text": "VIH"},
        },
    )["id"]
    ids["encA"] = create(
        client,
        service_token,
        {
            "resourceType": "Encounter",
            "status": "planned",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{ids['A']}"},
            "reasonCode": [{"text": "dépression"}],
        },
    )["id"]
    performers = [
        {"reference": f"Practitioner/{ids['pract']}"},
        {"reference": f"Patient/{ids['B']}"},
        {"reference": f"CareTeam/{ids['ctB']}"},
    ]
    ids["obsA"] = create(
        client,
        service_token,
        observation(
            ids["A"], performer=performers, basedOn=[{"reference": f"ServiceRequest/{ids['srA']}"}]
        ),
    )["id"]
    ids["obsB"] = create(client, service_token, observation(ids["B"], value=90))["id"]
    return ids


def _split(body: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(matches, includes) of a searchset as Type/id; fails on any other entry."""
    matches: set[str] = set()
    included: set[str] = set()
    for entry in body.get("entry", []):
        resource = entry["resource"]
        key = f"{resource['resourceType']}/{resource['id']}"
        mode = entry["search"]["mode"]
        assert mode in ("match", "include"), entry
        assert entry["fullUrl"].endswith("/" + key)
        (matches if mode == "match" else included).add(key)
    return matches, included


def _search(client: TestClient, token: str, url: str) -> dict[str, Any]:
    response = client.get(url, headers=headers(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_include_subject_returns_only_the_treated_patient(
    client: TestClient, services: Services, service_token: str, world: dict[str, str]
) -> None:
    url = "/fhir/Observation?_include=Observation:subject"
    everyone = _search(client, service_token, url)
    assert _split(everyone) == (
        {f"Observation/{world['obsA']}", f"Observation/{world['obsB']}"},
        {f"Patient/{world['A']}", f"Patient/{world['B']}"},
    )
    physician = treating_token(services, world["A"])
    body = _search(client, physician, url)
    assert _split(body) == ({f"Observation/{world['obsA']}"}, {f"Patient/{world['A']}"})
    # The total counts the caller's matches only: neither B's Observation nor the includes.
    assert body["total"] == 1


def test_an_include_never_reaches_a_hidden_resource(
    client: TestClient, services: Services, service_token: str, world: dict[str, str]
) -> None:
    url = "/fhir/Observation?_include=Observation:performer"
    care_team = f"CareTeam/{world['ctB']}"
    _matches, seen_by_service = _split(_search(client, service_token, url))
    assert care_team in seen_by_service  # the include works: the reference is indexed
    physician = treating_token(services, world["A"])
    assert client.get(f"/fhir/{care_team}", headers=headers(physician)).status_code == 404
    matches, included = _split(_search(client, physician, url))
    assert matches == {f"Observation/{world['obsA']}"}
    # Directory data and demographics a physician may look up; never B's CareTeam.
    assert included == {f"Practitioner/{world['pract']}", f"Patient/{world['B']}"}
    # Asking for the hidden type only: nothing at all, and no warning that something was left.
    body = _search(client, physician, url + ":CareTeam")
    assert _split(body) == ({f"Observation/{world['obsA']}"}, set())
    assert len(body["entry"]) == 1
    # A lab user with an order for A sees A's Observation, but neither B nor B's CareTeam.
    lab = issue_token(services, "lab")
    matches, included = _split(_search(client, lab, url))
    assert matches == {f"Observation/{world['obsA']}"}
    assert included == {f"Practitioner/{world['pract']}"}


def test_secretary_revinclude_never_adds_clinical_types(
    client: TestClient, services: Services, service_token: str, world: dict[str, str]
) -> None:
    url = (
        f"/fhir/Patient?_id={world['A']}&_revinclude=Observation:subject"
        "&_revinclude=Condition:subject&_revinclude=Encounter:subject"
    )
    _matches, seen_by_service = _split(_search(client, service_token, url))
    assert {f"Observation/{world['obsA']}", f"Condition/{world['condA']}"} <= seen_by_service
    secretary = issue_token(services, "secretary")
    body = _search(client, secretary, url)
    matches, included = _split(body)
    assert matches == {f"Patient/{world['A']}"}
    assert included == {f"Encounter/{world['encA']}"}
    encounter = next(e["resource"] for e in body["entry"] if e["search"]["mode"] == "include")
    # Masked exactly as a read would be: the reason for the visit is withheld and labelled.
    assert "reasonCode" not in encounter
    assert "dépression" not in str(body)
    assert any(label["code"] == "REDACTED" for label in encounter["meta"]["security"])
    read = client.get(f"/fhir/Encounter/{world['encA']}", headers=headers(secretary)).json()
    assert read == encounter


def test_lab_sees_included_orders_but_not_conditions(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    lab = issue_token(services, "lab")
    body = _search(
        client,
        lab,
        "/fhir/Patient?_revinclude=ServiceRequest:subject&_revinclude=Condition:subject"
        "&_revinclude=Observation:subject",
    )
    matches, included = _split(body)
    # Only the patient with an order, and only the order and its result.
    assert matches == {f"Patient/{world['A']}"}
    assert body["total"] == 1
    assert included == {f"ServiceRequest/{world['srA']}", f"Observation/{world['obsA']}"}
    assert client.get("/fhir/Condition", headers=headers(lab)).status_code == 403
    matches, included = _split(
        _search(client, lab, "/fhir/Observation?_include=Observation:based-on")
    )
    assert included == {f"ServiceRequest/{world['srA']}"}


def test_included_resources_are_audited_per_patient(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    physician = treating_token(services, world["A"])
    with transaction(services.session_factory) as session:
        before = session.scalar(select(LedgerEntry.seq).order_by(LedgerEntry.seq.desc()).limit(1))
    body = _search(client, physician, "/fhir/Patient?_revinclude=Observation:subject")
    assert _split(body)[1] == {f"Observation/{world['obsA']}"}
    with transaction(services.session_factory) as session:
        added = list(
            session.scalars(
                select(LedgerEntry).where(LedgerEntry.seq > before).order_by(LedgerEntry.seq)
            )
        )
    searches = sorted((e.resource_type, e.patient, e.count) for e in added if e.action == "search")
    assert searches == sorted(
        [
            ("Patient", world["A"], 1),
            ("Patient", world["B"], 1),
            ("Observation", world["A"], 1),
        ]
    )
    included = next(e for e in added if e.resource_type == "Observation")
    # The reasons say why the physician could see it: the care link.
    assert any("Encounter/" in reason or "encounter" in reason for reason in included.reasons)


def test_malformed_include_answers_400(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    physician = treating_token(services, world["A"])
    for url, fragment in (
        ("/fhir/Observation?_include=*", "wildcard"),
        ("/fhir/Observation?_include:iterate=Observation:subject", "iterate"),
        ("/fhir/Observation?_include=Observation:nope", "no reference search parameter"),
        ("/fhir/Patient?_include=Observation:subject", "source type must be"),
        ("/fhir/Patient?_revinclude=Observation:encounter", "cannot reference Patient"),
    ):
        response = client.get(url, headers=headers(physician))
        assert response.status_code == 400, (url, response.text)
        assert fragment in outcome_text(response), url


def test_include_in_a_batch_entry_follows_the_same_policy(
    client: TestClient, services: Services, world: dict[str, str]
) -> None:
    physician = treating_token(services, world["A"])
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Observation?_include=Observation:performer"}}
        ],
    }
    response = client.post("/fhir", json=batch, headers=headers(physician))
    assert response.status_code == 200, response.text
    inner = response.json()["entry"][0]["resource"]
    matches, included = _split(inner)
    assert matches == {f"Observation/{world['obsA']}"}
    assert included == {f"Practitioner/{world['pract']}", f"Patient/{world['B']}"}


def test_scopes_bound_what_is_included(services: Services, world: dict[str, str]) -> None:
    """A SMART token's scopes are not in the SQL filter: the included types are cut to them
    first, so a type outside the scopes is absent rather than failing the request."""
    query = parse_search_query(
        "Patient", [("_id", world["A"]), ("_revinclude", "Observation:subject")]
    )

    def included(scopes: frozenset[str]) -> set[str]:
        principal = Principal(id="app", role="service", scopes=scopes)
        with transaction(services.session_factory) as session:
            repo = Repository(session, principal, services.records)
            found, _total = repo.search(query)
            extra, truncated = repo.included(query, found)
        assert not truncated
        assert [s.id for s in found] == [world["A"]]
        return {f"{s.resource_type}/{s.id}" for s in extra}

    assert included(frozenset({"system/Patient.rs"})) == set()
    assert included(frozenset({"system/Patient.rs", "system/Observation.rs"})) == {
        f"Observation/{world['obsA']}"
    }
