"""No side doors around care relationships and consent (issue 5, item 6), one test per door.

The classic holes of an access-controlled FHIR server are everything that is not a plain read:
search totals and paging, `_id` searches, history (type, system, instance, vread), Bundles
(batch and transaction), conditional create, and tokens whose scopes are narrower than their
user. Each test sets up a caller who may see some resources and not others, through the care
relationships and consents the data states, and checks that the door shows only the former
and says nothing of the latter: hidden is 404 (DESIGN.md, contract 1), counts count only what
is visible, and nothing is half-written. OWASP ASVS 5.0 V8.2.2 (data-specific access), V8.3.1
(enforced at the service layer), V8.4.1 (no indirect access through other interactions).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from egide.cli.runtime import Services
from egide.db.engine import transaction
from egide.identity import oauth
from egide.records.models import ResourceHead
from tests.helpers import issue_token
from tests.integration.access_support import (
    PSY,
    Staff,
    appointment,
    condition,
    consent,
    diagnostic_report,
    encounter,
    labelled,
    new_observation,
    new_patient,
    organization,
    put,
    related_person,
    search_ids,
    staff,
    status_of,
)
from tests.integration.fhir_support import create, headers, observation, patient
from tests.integration.identity_support import PATIENT_PASSWORD, accept, invite

IDENTIFIER = "urn:oid:1.2.250.1.999.1"


@pytest.fixture
def ward(client: TestClient, services: Services, service_token: str) -> dict[str, Any]:
    """Five patients with an Observation each; a physician treating the first two."""
    patients = [new_patient(client, service_token, f"Patient{i}") for i in range(5)]
    observations = [new_observation(client, service_token, p) for p in patients]
    doctor = staff(client, services, service_token)
    for pid in patients[:2]:
        create(client, service_token, encounter(pid, practitioners=(doctor.practitioner,)))
    return {
        "patients": patients,
        "observations": observations,
        "visible": set(observations[:2]),
        "hidden": observations[2:],
        "doctor": doctor,
    }


def _doctor(ward: dict[str, Any]) -> Staff:
    doctor: Staff = ward["doctor"]
    return doctor


def _heads(services: Services, resource_type: str) -> int:
    with transaction(services.session_factory) as session:
        found = session.scalar(
            select(func.count())
            .select_from(ResourceHead)
            .where(ResourceHead.resource_type == resource_type)
        )
    return int(found or 0)


def _pages(client: TestClient, token: str, first: str) -> tuple[list[int], list[str]]:
    """Follow `next` links from `first`: the totals each page announced and every id seen."""
    totals: list[int] = []
    ids: list[str] = []
    url: str | None = first
    while url is not None:
        response = client.get(url, headers=headers(token))
        assert response.status_code == 200, response.text
        body = response.json()
        totals.append(body["total"])
        ids.extend(e["resource"]["id"] for e in body.get("entry", []) if "resource" in e)
        links = {link["relation"]: link["url"] for link in body.get("link", [])}
        nxt = links.get("next")
        url = None if nxt is None else urlsplit(nxt)._replace(scheme="", netloc="").geturl()
        assert len(totals) < 100, "paging does not end"
    return totals, ids


def test_search_totals_and_paging_count_only_visible_resources(
    client: TestClient, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    totals, ids = _pages(client, token, "/fhir/Observation?_count=1")
    assert totals == [2, 2]  # two pages of one, no third: the hidden three are not counted
    assert sorted(ids) == sorted(ward["visible"])
    # The same through POST _search.
    response = client.post(
        "/fhir/Observation/_search",
        data={"_count": "1"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    assert response.json()["total"] == 2
    # A page past the visible ones is empty, not a window onto the hidden ones.
    beyond = client.get("/fhir/Observation?_count=1&_offset=3", headers=headers(token)).json()
    assert beyond["total"] == 2
    assert not beyond.get("entry")


def test_searching_a_hidden_patient_finds_nothing(client: TestClient, ward: dict[str, Any]) -> None:
    hidden_patient = ward["patients"][3]
    response = client.get(
        f"/fhir/Observation?patient={hidden_patient}", headers=headers(_doctor(ward).token)
    )
    assert response.status_code == 200
    assert response.json()["total"] == 0


def test_id_search_of_a_hidden_resource_returns_nothing(
    client: TestClient, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    hidden = ward["hidden"][0]
    response = client.get(f"/fhir/Observation?_id={hidden}", headers=headers(token))
    assert response.status_code == 200
    assert response.json()["total"] == 0
    assert not response.json().get("entry")
    mixed = ",".join([hidden, *ward["visible"]])
    assert search_ids(client, token, f"Observation?_id={mixed}") == (200, ward["visible"])


def test_type_and_system_history_contain_only_visible_resources(
    client: TestClient, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    typed = client.get("/fhir/Observation/_history", headers=headers(token)).json()
    assert typed["total"] == 2
    assert {e["resource"]["id"] for e in typed["entry"]} == ward["visible"]
    system = client.get("/fhir/_history", headers=headers(token)).json()
    patients = set(ward["patients"])
    seen_patients = {
        e["resource"]["id"] for e in system["entry"] if e["resource"]["resourceType"] == "Patient"
    }
    # Patients are demographics any physician may look up; their records are not.
    assert seen_patients == patients
    clinical = {
        e["resource"]["id"]
        for e in system["entry"]
        if e["resource"]["resourceType"] in ("Observation", "Encounter")
    }
    assert set(ward["hidden"]).isdisjoint(clinical)
    assert ward["visible"] <= clinical
    totals, _ids = _pages(client, token, "/fhir/Observation/_history?_count=1")
    assert set(totals) == {2}


def test_instance_history_of_a_hidden_resource_is_404(
    client: TestClient, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    hidden = ward["hidden"][0]
    assert status_of(client, token, f"Observation/{hidden}/_history") == 404
    assert status_of(client, token, f"Observation/{hidden}/_history/1") == 404
    assert status_of(client, token, "Observation/no-such-id/_history") == 404


def test_a_deleted_hidden_resource_answers_404_not_410(
    client: TestClient, service_token: str, ward: dict[str, Any]
) -> None:
    """410 Gone would tell the caller that the hidden resource once existed."""
    hidden = ward["hidden"][0]
    deleted = client.delete(f"/fhir/Observation/{hidden}", headers=headers(service_token))
    assert deleted.status_code in (200, 204)
    assert status_of(client, _doctor(ward).token, f"Observation/{hidden}") == 404
    visible = sorted(ward["visible"])[0]
    client.delete(f"/fhir/Observation/{visible}", headers=headers(service_token))
    assert status_of(client, _doctor(ward).token, f"Observation/{visible}") == 410


def test_vread_of_a_version_that_belonged_to_a_hidden_patient_is_404(
    client: TestClient, service_token: str, ward: dict[str, Any]
) -> None:
    """An Observation filed under the wrong patient and moved: the doctor of the patient it
    now belongs to reads the current version, not the one that was the other patient's."""
    token = _doctor(ward).token
    mine, theirs = ward["patients"][0], ward["patients"][3]
    misfiled = create(client, service_token, observation(theirs, value=140))
    moved = {**misfiled, "subject": {"reference": f"Patient/{mine}"}}
    response = client.put(
        f"/fhir/Observation/{misfiled['id']}", json=moved, headers=headers(service_token)
    )
    assert response.status_code == 200
    assert status_of(client, token, f"Observation/{misfiled['id']}") == 200
    assert status_of(client, token, f"Observation/{misfiled['id']}/_history/2") == 200
    assert status_of(client, token, f"Observation/{misfiled['id']}/_history/1") == 404
    history = client.get(f"/fhir/Observation/{misfiled['id']}/_history", headers=headers(token))
    assert history.status_code == 200
    assert [e["resource"]["meta"]["versionId"] for e in history.json()["entry"]] == ["2"]
    assert history.json()["total"] == 1


def _batch(*entries: dict[str, Any], kind: str = "batch") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_a_batch_answers_404_for_hidden_entries_and_writes_only_the_others(
    client: TestClient, services: Services, service_token: str, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    hidden = ward["hidden"][0]
    stored = client.get(f"/fhir/Observation/{hidden}", headers=headers(service_token)).json()
    visible_patient = ward["patients"][0]
    bundle = _batch(
        {"request": {"method": "GET", "url": f"Observation/{hidden}"}},
        {
            "resource": {**stored, "status": "cancelled"},
            "request": {"method": "PUT", "url": f"Observation/{hidden}"},
        },
        {"request": {"method": "DELETE", "url": f"Observation/{hidden}"}},
        {
            "resource": observation(visible_patient, value=99),
            "request": {"method": "POST", "url": "Observation"},
        },
        {"request": {"method": "GET", "url": f"Observation?_id={hidden}"}},
    )
    response = client.post("/fhir", json=bundle, headers=headers(token))
    assert response.status_code == 200
    entries = response.json()["entry"]
    statuses = [e["response"]["status"][:3] for e in entries]
    assert statuses == ["404", "404", "404", "201", "200"]
    assert entries[4]["resource"]["total"] == 0
    after = client.get(f"/fhir/Observation/{hidden}", headers=headers(service_token)).json()
    assert after["status"] == stored["status"]
    assert after["meta"]["versionId"] == stored["meta"]["versionId"]
    assert _heads(services, "Observation") == 6


def test_a_transaction_touching_a_hidden_resource_fails_whole(
    client: TestClient, services: Services, service_token: str, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    hidden = ward["hidden"][0]
    stored = client.get(f"/fhir/Observation/{hidden}", headers=headers(service_token)).json()
    visible_patient = ward["patients"][0]
    before = _heads(services, "Observation")
    for hidden_entry in (
        {
            "resource": {**stored, "status": "cancelled"},
            "request": {"method": "PUT", "url": f"Observation/{hidden}"},
        },
        {"request": {"method": "DELETE", "url": f"Observation/{hidden}"}},
        {"request": {"method": "GET", "url": f"Observation/{hidden}"}},
    ):
        bundle = _batch(
            {
                "resource": observation(visible_patient, value=99),
                "request": {"method": "POST", "url": "Observation"},
            },
            hidden_entry,
            kind="transaction",
        )
        response = client.post("/fhir", json=bundle, headers=headers(token))
        assert response.status_code == 404, (hidden_entry, response.text)
        assert _heads(services, "Observation") == before  # the first entry was rolled back
    after = client.get(f"/fhir/Observation/{hidden}", headers=headers(service_token)).json()
    assert after["meta"]["versionId"] == stored["meta"]["versionId"]


def test_conditional_create_does_not_reveal_hidden_matches(
    client: TestClient, service_token: str, ward: dict[str, Any]
) -> None:
    token = _doctor(ward).token
    mine, theirs = ward["patients"][0], ward["patients"][3]
    tagged: dict[str, Any] = {"identifier": [{"system": IDENTIFIER, "value": "LAB-42"}]}
    hidden = create(client, service_token, observation(theirs, **tagged))
    condition_header = {"If-None-Exist": f"identifier={IDENTIFIER}|LAB-42"}
    response = client.post(
        "/fhir/Observation",
        json=observation(mine, **tagged),
        headers=headers(token, **condition_header),
    )
    # As if the hidden match did not exist: a new resource, not "200 already there" (which
    # would name or confirm it) nor "412 several match" (which would count it).
    assert response.status_code == 201, response.text
    assert response.json()["id"] != hidden["id"]
    assert hidden["id"] not in response.text
    again = client.post(
        "/fhir/Observation",
        json=observation(mine, **tagged),
        headers=headers(token, **condition_header),
    )
    assert again.status_code == 200  # the visible match only: not 412 for two matches
    assert f"Observation/{response.json()['id']}/" in again.headers["location"]
    assert hidden["id"] not in again.headers["location"]


def test_consent_denial_closes_every_door(
    client: TestClient, services: Services, service_token: str, ward: dict[str, Any]
) -> None:
    """Once the patient denies the doctor, their record disappears from every listing."""
    token = _doctor(ward).token
    pid = ward["patients"][0]
    own = issue_token(services, "patient", patient_id=pid)
    response = client.post(
        "/fhir/Consent",
        json=consent(pid, deny=(f"Practitioner/{_doctor(ward).practitioner}",)),
        headers=headers(own),
    )
    assert response.status_code == 201
    denied = ward["observations"][0]
    still = ward["observations"][1]
    assert search_ids(client, token, "Observation") == (200, {still})
    assert search_ids(client, token, f"Observation?_id={denied}") == (200, set())
    typed = client.get("/fhir/Observation/_history", headers=headers(token)).json()
    assert {e["resource"]["id"] for e in typed["entry"]} == {still}
    assert status_of(client, token, f"Observation/{denied}/_history") == 404
    assert status_of(client, token, f"Observation/{denied}/_history/1") == 404
    system = client.get("/fhir/_history", headers=headers(token)).json()
    assert not [e for e in system["entry"] if e["resource"]["id"] in (denied, pid)]
    bundle = _batch({"request": {"method": "GET", "url": f"Observation/{denied}"}})
    answer = client.post("/fhir", json=bundle, headers=headers(token)).json()
    assert answer["entry"][0]["response"]["status"].startswith("404")


def _patient_app_token(services: Services, patient_id: str, scopes: str) -> str:
    """An OAuth access token of a SMART patient app for `patient_id`, with `scopes`."""
    account_id, invitation = invite(
        services, "app-user@mail.example", role="patient", name="Paul", patient_id=patient_id
    )
    accept(services, invitation, PATIENT_PASSWORD)
    clock = services.records.clock
    redirect = "https://app.example/callback"
    verifier = "v" * 64
    with transaction(services.session_factory) as session:
        client_id = oauth.register_client(
            session,
            name="Carnet",
            kind=oauth.PUBLIC,
            clock=clock,
            actor=None,
            redirect_uris=[redirect],
        ).client_id
    with transaction(services.session_factory) as session:
        request = oauth.AuthorizationRequest(
            client_id=client_id,
            client_name="-",
            redirect_uri=redirect,
            state="state-1",
            code_challenge=oauth.s256(verifier),
            scopes=tuple(scopes.split(" ")),
            ignored=(),
        )
        code = oauth.issue_code(session, request=request, account_id=account_id, clock=clock)
    pairs = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("code_verifier", verifier),
    ]
    with transaction(services.session_factory) as session:
        result = oauth.token_request(
            session, pairs=pairs, token_endpoint="https://testserver/oauth/token", clock=clock
        )
    assert isinstance(result, oauth.TokenResult), result
    return result.access_token


def test_smart_scopes_bound_the_patient_to_what_the_app_was_granted(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = new_patient(client, service_token)
    obs = new_observation(client, service_token, pid)
    cond = create(client, service_token, condition(pid))["id"]
    token = _patient_app_token(services, pid, "patient/Observation.rs")
    assert status_of(client, token, f"Observation/{obs}") == 200
    assert search_ids(client, token, "Observation") == (200, {obs})
    # The patient may read their own Condition, but this app was not granted it.
    assert status_of(client, token, f"Condition/{cond}") == 403
    assert search_ids(client, token, "Condition")[0] == 403
    assert search_ids(client, token, "Condition/_history")[0] == 403
    bundle = _batch({"request": {"method": "GET", "url": f"Condition/{cond}"}})
    answer = client.post("/fhir", json=bundle, headers=headers(token))
    # A Bundle is checked entry by entry against the scopes before anything runs.
    assert answer.status_code == 403
    # System history needs system-wide scopes this app does not have.
    assert client.get("/fhir/_history", headers=headers(token)).status_code == 403
    # And the scope is read-only: no write, even to the patient's own consent.
    written = client.post("/fhir/Consent", json=consent(pid), headers=headers(token))
    assert written.status_code == 403
    # The same patient without the app's bound reads the Condition.
    own = issue_token(services, "patient", patient_id=pid)
    assert status_of(client, own, f"Condition/{cond}") == 200


# -- _include, _revinclude and $everything (the same policy, with consent and labels) -------


@pytest.fixture
def restricted(client: TestClient, services: Services, service_token: str) -> dict[str, Any]:
    """A patient of a department who keeps PSY records to the treating team and refuses one
    physician of the department: a colleague reaches the record only at department level."""
    pid = new_patient(client, service_token)
    ward = str(create(client, service_token, organization("Psychiatrie"))["id"])
    colleague = staff(client, services, service_token, department=ward, family="Collègue")
    refused = staff(client, services, service_token, department=ward, family="Refusé")
    create(client, service_token, encounter(pid, department=ward))
    plain = new_observation(client, service_token, pid)
    psy = create(client, service_token, labelled(observation(pid, code="44249-1"), PSY))["id"]
    own = issue_token(services, "patient", patient_id=pid)
    for body in (
        consent(pid, labels=(PSY,)),
        consent(pid, deny=(f"Practitioner/{refused.practitioner}",)),
    ):
        assert client.post("/fhir/Consent", json=body, headers=headers(own)).status_code == 201
    return {"patient": pid, "colleague": colleague, "refused": refused, "plain": plain, "psy": psy}


def _bundle_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if "resource" in e}


def test_revinclude_leaves_out_what_consent_and_labels_hide(
    client: TestClient, service_token: str, restricted: dict[str, Any]
) -> None:
    pid = restricted["patient"]
    url = f"/fhir/Patient?_id={pid}&_revinclude=Observation:subject"
    everything = _bundle_ids(client.get(url, headers=headers(service_token)))
    assert {restricted["plain"], restricted["psy"]} <= everything  # the include works
    colleague = _bundle_ids(client.get(url, headers=headers(restricted["colleague"].token)))
    assert restricted["plain"] in colleague
    assert restricted["psy"] not in colleague
    refused = client.get(url, headers=headers(restricted["refused"].token))
    assert _bundle_ids(refused) == set()  # not even the Patient: the consent refuses them
    assert refused.json()["total"] == 0


def test_include_from_a_visible_resource_does_not_bring_a_hidden_one(
    client: TestClient, service_token: str, restricted: dict[str, Any]
) -> None:
    """A visible report whose result is a hidden Observation does not carry it along."""
    pid = restricted["patient"]
    report = {
        **diagnostic_report(pid),
        "result": [{"reference": f"Observation/{restricted['psy']}"}],
    }
    panel_id = create(client, service_token, report)["id"]
    url = f"/fhir/DiagnosticReport?_id={panel_id}&_include=DiagnosticReport:result"
    assert restricted["psy"] in _bundle_ids(client.get(url, headers=headers(service_token)))
    seen = _bundle_ids(client.get(url, headers=headers(restricted["colleague"].token)))
    assert seen == {panel_id}


def test_everything_follows_consent_and_labels(
    client: TestClient, service_token: str, restricted: dict[str, Any]
) -> None:
    pid = restricted["patient"]
    url = f"/fhir/Patient/{pid}/$everything"
    full = _bundle_ids(client.get(url, headers=headers(service_token)))
    assert {pid, restricted["plain"], restricted["psy"]} <= full
    response = client.get(url, headers=headers(restricted["colleague"].token))
    colleague = _bundle_ids(response)
    assert {pid, restricted["plain"]} <= colleague
    assert restricted["psy"] not in colleague
    assert response.json()["total"] == len(colleague)
    # Refused by the patient: the whole operation is a 404, like a read of the Patient.
    assert client.get(url, headers=headers(restricted["refused"].token)).status_code == 404


def test_everything_is_masked_for_the_secretary(
    client: TestClient, services: Services, service_token: str
) -> None:
    pid = new_patient(client, service_token)
    doctor = staff(client, services, service_token)
    start = services.records.clock.now() + dt.timedelta(days=1)
    booked = create(client, service_token, appointment(pid, doctor.practitioner, start=start))
    obs = new_observation(client, service_token, pid)
    secretary = issue_token(services, "secretary")
    response = client.get(f"/fhir/Patient/{pid}/$everything", headers=headers(secretary))
    assert response.status_code == 200
    entries = {e["resource"]["id"]: e["resource"] for e in response.json()["entry"]}
    assert obs not in entries
    assert booked["id"] in entries
    assert "reasonCode" not in entries[booked["id"]]
    assert "HIV" not in response.text


def test_a_secretary_cannot_make_someone_a_guardian(
    client: TestClient, services: Services, service_token: str
) -> None:
    """Secretaries may write demographics of every patient (RelatedPerson, Patient). Were a
    RelatedPerson with a guardian code and a `Patient.link` to it written by a secretary to
    count, any secretary could hand any patient account the full record of anyone: access
    must not be grantable by someone who does not hold it (ASVS V8.2.2)."""
    minor = create(client, service_token, patient(family="Enfant", birthDate="2016-05-01"))["id"]
    record = new_observation(client, service_token, minor)
    accomplice = create(client, service_token, patient(family="Complice"))
    secretary = issue_token(services, "secretary")
    guardian = create(client, secretary, related_person(minor, "GUARD"))
    accomplice["link"] = [{"other": {"reference": f"RelatedPerson/{guardian['id']}"}}]
    accomplice["link"][0]["type"] = "seealso"
    assert put(client, secretary, accomplice) == 200
    token = issue_token(services, "patient", patient_id=accomplice["id"])
    assert status_of(client, token, f"Observation/{record}") == 404
    # The same two writes by the registry interface (the service token) do make a guardian:
    # the refusal above comes from who wrote them, not from a malformed link.
    trusted = create(client, service_token, related_person(minor, "GUARD"))
    accomplice = client.get(
        f"/fhir/Patient/{accomplice['id']}", headers=headers(service_token)
    ).json()
    accomplice["link"] = [
        {"other": {"reference": f"RelatedPerson/{trusted['id']}"}, "type": "seealso"}
    ]
    assert put(client, service_token, accomplice) == 200
    assert status_of(client, token, f"Observation/{record}") == 200


def test_history_paging_neither_repeats_nor_skips_versions_written_at_once(
    client: TestClient, services: Services, ward: dict[str, Any]
) -> None:
    """A transaction Bundle writes its entries at one instant: paging through the history
    must still list each version once (found by the stateful test: ties on the timestamp and
    version number made the order between pages arbitrary)."""
    token = _doctor(ward).token
    pid = ward["patients"][0]
    entries = [
        {
            "resource": observation(pid, value=60 + i),
            "request": {"method": "POST", "url": "Observation"},
        }
        for i in range(6)
    ]
    response = client.post(
        "/fhir", json=_batch(*entries, kind="transaction"), headers=headers(token)
    )
    assert response.status_code == 200, response.text
    for path in ("Observation/_history", "_history"):
        totals, ids = _pages(client, token, f"/fhir/{path}?_count=1")
        assert len(set(ids)) == len(ids) == totals[0], (path, ids)
