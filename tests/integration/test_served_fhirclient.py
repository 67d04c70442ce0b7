"""A third-party FHIR client against a real server, on SQLite and PostgreSQL.

The SMART on FHIR `fhirclient` package (PyPI) talks HTTP over a real loopback socket to uvicorn
serving `egide.app.api_for(services)`: create, read, search, update a Patient, then create and
search an Observation, all through fhirclient's own models and its requests session, with the
bearer token added to that session the way an integration would.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from fhirclient import client as fhir_client
from fhirclient.models.humanname import HumanName
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException, FHIRUnauthorizedException

from egide.app import api_for
from egide.cli.runtime import Services
from tests.serving import serve_app

pytestmark = pytest.mark.served

FAMILY = "Kerguélen-Ozanne"


@pytest.fixture
def base_url(services: Services) -> Iterator[str]:
    """uvicorn in a background thread on a socket bound before it starts (no port race)."""
    with serve_app(api_for(services)) as url:
        yield f"{url}/fhir"


def _smart(base_url: str, token: str | None) -> fhir_client.FHIRClient:
    smart = fhir_client.FHIRClient(settings={"app_id": "egide-test", "api_base": base_url})
    if token is not None:
        smart.server.session.headers["Authorization"] = f"Bearer {token}"
    return smart


def test_fhirclient_without_a_token_is_refused(base_url: str) -> None:
    smart = _smart(base_url, None)
    capability = smart.server.capabilityStatement  # /metadata is public, as FHIR requires
    assert capability.fhirVersion.startswith("4.0")
    with pytest.raises(FHIRUnauthorizedException):
        Patient.where(struct={"family": FAMILY}).perform_resources_iter(smart.server).__next__()


def test_fhirclient_round_trips_patient_and_observation(base_url: str, service_token: str) -> None:
    smart = _smart(base_url, service_token)
    server = smart.server

    new = Patient(
        {
            "name": [{"family": FAMILY, "given": ["Anaïs", "Brieuc"]}],
            "gender": "female",
            "birthDate": "1913-07-19",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "213077512345678"}],
        }
    )
    created = new.create(server)
    assert created is not None
    pid = created["id"]
    assert created["meta"]["versionId"] == "1"

    read = Patient.read(pid, server)
    assert read.id == pid
    assert read.name[0].family == FAMILY
    assert read.name[0].given == ["Anaïs", "Brieuc"]
    assert read.birthDate.isostring == "1913-07-19"
    assert read.identifier[0].value == "213077512345678"
    assert read.meta.versionId == "1"

    found = list(Patient.where(struct={"family": "kerguelen"}).perform_resources_iter(server))
    assert [p.id for p in found] == [pid]
    assert isinstance(found[0], Patient)
    assert not list(Patient.where(struct={"family": "zzzabsent"}).perform_resources_iter(server))

    read.name.append(HumanName({"family": "Ozanne-Kerguélen", "use": "maiden"}))
    read.gender = "other"
    updated = read.update(server)
    assert updated is not None
    assert updated["meta"]["versionId"] == "2"
    again = Patient.read(pid, server)
    assert again.gender == "other"
    assert [n.family for n in again.name] == [FAMILY, "Ozanne-Kerguélen"]
    assert again.meta.versionId == "2"
    by_new_name = Patient.where(struct={"family": "ozanne"}).perform_resources_iter(server)
    assert [p.id for p in by_new_name] == [pid]

    obs = Observation(
        {
            "status": "final",
            "code": {
                "coding": [
                    {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}
                ]
            },
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2026-02-01T10:00:00Z",
            "valueQuantity": {
                "value": 72.5,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        }
    )
    obs_id = obs.create(server)["id"]
    for struct in (
        {"patient": pid},
        {"subject": f"Patient/{pid}"},
        {"code": "http://loinc.org|8867-4", "patient": pid},
    ):
        results = list(Observation.where(struct=struct).perform_resources_iter(server))
        assert [o.id for o in results] == [obs_id], struct
    fetched = results[0]
    assert isinstance(fetched, Observation)
    assert fetched.subject.reference == f"Patient/{pid}"
    assert fetched.code.coding[0].code == "8867-4"
    assert fetched.valueQuantity.value == 72.5
    assert fetched.valueQuantity.unit == "/min"
    assert fetched.effectiveDateTime.isostring.startswith("2026-02-01T10:00:00")
    assert not list(
        Observation.where(struct={"code": "http://loinc.org|9999-9"}).perform_resources_iter(server)
    )

    with pytest.raises(FHIRNotFoundException):
        Patient.read("no-such-patient", server)
    # The server is really on the socket: a plain HTTP client sees the same resource.
    plain = requests.get(
        f"{base_url}/Patient/{pid}",
        timeout=30,
        headers={"Authorization": f"Bearer {service_token}"},
    )
    assert plain.status_code == 200
    assert plain.json()["meta"]["versionId"] == "2"
