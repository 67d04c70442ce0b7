"""Tests of the synthetic demonstration clinic: deterministic, valid FHIR R4, plausible, fake."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egide.cli.demo import Clinic, StaffMember, generate_clinic
from egide.cli.demo import names as demo_names
from egide.cli.demo.generator import (
    CARE_DEPARTMENTS,
    EMERGENCY,
    PEDIATRICS,
    ROLES,
    email_local_part,
)

TODAY = dt.date(2026, 3, 2)
MIDNIGHT = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def clinic() -> Clinic:
    return generate_clinic(today=TODAY)


def _references(node: Any) -> Iterator[str]:
    """Every `reference` string anywhere inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _check_order(clinic: Clinic) -> None:
    seen: set[str] = set()
    for resource in clinic.resources:
        for reference in _references(resource):
            assert reference in seen, f"{resource['resourceType']} refers forward: {reference}"
        seen.add(f"{resource['resourceType']}/{resource['id']}")


def _when(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    assert moment.tzinfo is not None, value
    return moment


def _by_ref(clinic: Clinic) -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in clinic.resources}


def _age(birth: str, at: dt.date) -> float:
    return (at - dt.date.fromisoformat(birth)).days / 365.25


# --- determinism ------------------------------------------------------------------------------
def test_same_seed_gives_identical_output(clinic: Clinic) -> None:
    again = generate_clinic(today=TODAY)
    assert again == clinic
    assert json.dumps(again.resources, sort_keys=True) == json.dumps(
        clinic.resources, sort_keys=True
    )


def test_different_seed_or_day_gives_different_output(clinic: Clinic) -> None:
    other = generate_clinic(seed=7, today=TODAY)
    assert other.patient_ids != clinic.patient_ids
    assert {s.email for s in other.staff} != {s.email for s in clinic.staff}
    later = generate_clinic(today=TODAY + dt.timedelta(days=1))
    assert later.resources != clinic.resources


def test_a_datetime_for_today_counts_as_its_day(clinic: Clinic) -> None:
    noon = dt.datetime(2026, 3, 2, 12, 30, tzinfo=dt.UTC)
    assert generate_clinic(patients=20, today=noon) == generate_clinic(patients=20, today=TODAY)


# --- shape and counts -------------------------------------------------------------------------
def test_counts_follow_the_request(clinic: Clinic) -> None:
    counts = Counter(r["resourceType"] for r in clinic.resources)
    assert counts["Patient"] == len(clinic.patient_ids) == 500
    assert counts["Practitioner"] == counts["PractitionerRole"] == len(clinic.staff) == 30
    assert counts["Organization"] == 1 + len(clinic.departments)
    assert 500 <= counts["Encounter"] <= 2000
    assert counts["Observation"] > 3 * counts["Encounter"]
    assert counts["Condition"] > 200
    assert counts["MedicationRequest"] > 200
    assert counts["Appointment"] > 200


def test_other_sizes() -> None:
    small = generate_clinic(seed=3, patients=12, staff=4, today=TODAY)
    assert len(small.patient_ids) == 12
    assert len(small.staff) == 4
    empty = generate_clinic(patients=0, staff=1, today=TODAY)
    assert empty.patient_ids == ()
    assert [s.role for s in empty.staff] == ["physician"]
    with pytest.raises(ValueError, match="staff"):
        generate_clinic(staff=0, today=TODAY)
    with pytest.raises(ValueError, match="patients"):
        generate_clinic(patients=-1, today=TODAY)


def test_ids_are_unique_uuid4(clinic: Clinic) -> None:
    ids = [r["id"] for r in clinic.resources]
    assert len(ids) == len(set(ids))
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert str(parsed) == value


def test_every_reference_points_to_an_earlier_resource(clinic: Clinic) -> None:
    _check_order(clinic)


def test_every_resource_is_valid_fhir_r4(clinic: Clinic) -> None:
    for resource in clinic.resources:
        model = get_fhir_model_class(resource["resourceType"])
        model.model_validate(resource)


def test_every_resource_is_labelled_as_test_data(clinic: Clinic) -> None:
    for resource in clinic.resources:
        labels = resource["meta"]["security"]
        assert {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": "HTEST",
            "display": "test health data",
        } in labels


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    patients=st.integers(min_value=0, max_value=25),
    staff=st.integers(min_value=1, max_value=45),
    days=st.integers(min_value=-20_000, max_value=20_000),
)
def test_any_small_clinic_is_ordered_unique_and_valid(
    seed: int, patients: int, staff: int, days: int
) -> None:
    today = TODAY + dt.timedelta(days=days)
    clinic = generate_clinic(seed=seed, patients=patients, staff=staff, today=today)
    _check_order(clinic)
    assert len({r["id"] for r in clinic.resources}) == len(clinic.resources)
    assert len({s.email for s in clinic.staff}) == staff
    for resource in clinic.resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


# --- organizations and staff ------------------------------------------------------------------
def test_departments_belong_to_the_clinic(clinic: Clinic) -> None:
    organizations = clinic.of_type("Organization")
    top = organizations[0]
    assert "partOf" not in top
    assert "Égide" in top["name"]
    departments = organizations[1:]
    assert [d["name"] for d in departments] == list(clinic.departments)
    for department in departments:
        assert department["partOf"]["reference"] == f"Organization/{top['id']}"
    for expected in ("Cardiologie", "Médecine interne", "Pédiatrie", "Urgences", "Oncologie"):
        assert expected in clinic.departments


def test_staff_members_match_their_resources(clinic: Clinic) -> None:
    by_ref = _by_ref(clinic)
    department_ids = {o["name"]: o["id"] for o in clinic.of_type("Organization")}
    roles = {r["practitioner"]["reference"]: r for r in clinic.of_type("PractitionerRole")}
    emails = set()
    for member in clinic.staff:
        assert isinstance(member, StaffMember)
        assert member.role in ROLES
        assert member.department in clinic.departments
        assert re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+\d*@demo\.egide\.invalid", member.email)
        emails.add(member.email)
        practitioner = by_ref[f"Practitioner/{member.practitioner_id}"]
        name = practitioner["name"][0]
        assert member.name == f"{name['given'][0]} {name['family']}"
        assert practitioner["telecom"] == [
            {"system": "email", "value": member.email, "use": "work"}
        ]
        assert practitioner["qualification"]
        role = roles[f"Practitioner/{member.practitioner_id}"]
        assert role["organization"]["reference"] == (
            f"Organization/{department_ids[member.department]}"
        )
        assert {"system": "urn:egide:demo:role", "code": member.role} in [
            {"system": c["system"], "code": c["code"]} for c in role["code"][0]["coding"]
        ]
    assert len(emails) == len(clinic.staff)
    assert {s.role for s in clinic.staff} == set(ROLES)
    # Every care department has a physician to see its patients.
    for department in CARE_DEPARTMENTS:
        assert any(s.role == "physician" and s.department == department for s in clinic.staff)


def test_email_local_part_is_plain_ascii() -> None:
    assert email_local_part("Hélène", "Lefèvre") == "helene.lefevre"
    assert email_local_part("Đức", "Nguyễn") == "duc.nguyen"
    assert email_local_part("Łukasz", "Woźniak") == "lukasz.wozniak"
    assert email_local_part("Aïcha", "N'Diaye") == "aicha.ndiaye"
    assert email_local_part("João", "Da Silva") == "joao.da-silva"
    assert email_local_part("Ayşe", "Yılmaz") == "ayse.yilmaz"


def test_rpps_numbers_are_well_formed_but_never_valid(clinic: Clinic) -> None:
    values = []
    for practitioner in clinic.of_type("Practitioner"):
        (identifier,) = practitioner["identifier"]
        assert identifier["system"] == "urn:egide:demo:rpps"
        value = identifier["value"]
        assert re.fullmatch(r"99\d{9}", value)
        digits = [int(c) for c in reversed(value)]
        total = sum(
            d if i % 2 == 0 else (2 * d - 9 if 2 * d > 9 else 2 * d) for i, d in enumerate(digits)
        )
        assert total % 10 != 0, "a demo RPPS number must fail the Luhn check"
        values.append(value)
    assert len(values) == len(set(values))


# --- patients ---------------------------------------------------------------------------------
def test_patients_have_plausible_fake_identities(clinic: Clinic) -> None:
    patients = clinic.of_type("Patient")
    assert [p["id"] for p in patients] == list(clinic.patient_ids)
    ins_values = set()
    for patient in patients:
        (identifier,) = patient["identifier"]
        assert identifier["system"] == "urn:egide:demo:ins"
        value = identifier["value"]
        assert re.fullmatch(r"[12]\d{14}", value)
        assert int(value[-2:]) != 97 - int(value[:13]) % 97, "the key must be wrong on purpose"
        birth = dt.date.fromisoformat(patient["birthDate"])
        assert value[0] == ("1" if patient["gender"] == "male" else "2")
        assert value[1:5] == f"{birth.year % 100:02d}{birth.month:02d}"
        ins_values.add(value)
        assert patient["gender"] in {"male", "female"}
        (telecom,) = patient["telecom"]
        assert re.fullmatch(r"\+33 6 39 98 \d\d \d\d", telecom["value"])
        (address,) = patient["address"]
        assert re.fullmatch(r"\d{5}", address["postalCode"])
        assert address["country"] == "FR"
        assert address["line"][0]
    assert len(ins_values) == len(patients)


def test_birth_dates_span_zero_to_95_years(clinic: Clinic) -> None:
    ages = [_age(p["birthDate"], TODAY) for p in clinic.of_type("Patient")]
    assert all(0 <= age < 96 for age in ages)
    assert min(ages) < 3
    assert max(ages) > 85
    assert 0.1 < sum(age < 18 for age in ages) / len(ages) < 0.35


def test_names_are_diverse_and_accented(clinic: Clinic) -> None:
    families = Counter(p["name"][0]["family"] for p in clinic.of_type("Patient"))
    givens = {g for p in clinic.of_type("Patient") for g in p["name"][0]["given"]}
    assert len(families) > 150
    assert any(not name.isascii() for name in families)
    assert any(not name.isascii() for name in givens)
    # Families share a name and an address: children live with their parents.
    households = Counter(
        (p["name"][0]["family"], p["address"][0]["line"][0], p["address"][0]["postalCode"])
        for p in clinic.of_type("Patient")
    )
    assert any(n > 1 for n in households.values())


def test_name_lists_are_large_and_unique() -> None:
    given_names = demo_names.MALE_GIVEN_NAMES + demo_names.FEMALE_GIVEN_NAMES
    assert len(given_names) >= 150
    assert len(set(demo_names.MALE_GIVEN_NAMES)) == len(demo_names.MALE_GIVEN_NAMES)
    assert len(set(demo_names.FEMALE_GIVEN_NAMES)) == len(demo_names.FEMALE_GIVEN_NAMES)
    assert len(demo_names.FAMILY_NAMES) >= 200
    assert len(set(demo_names.FAMILY_NAMES)) == len(demo_names.FAMILY_NAMES)
    for name in ("Nguyễn", "Gonçalves", "Woźniak", "Keïta", "Lefèvre"):
        assert name in demo_names.FAMILY_NAMES


def test_about_one_percent_of_patients_are_vip(clinic: Clinic) -> None:
    vip = [
        p
        for p in clinic.of_type("Patient")
        if {"system": "urn:egide:demo:flags", "code": "vip"}
        in [{"system": t["system"], "code": t["code"]} for t in p["meta"].get("tag", [])]
    ]
    assert len(vip) == 5


# --- clinical record --------------------------------------------------------------------------
def test_encounters_are_plausible(clinic: Clinic) -> None:
    by_ref = _by_ref(clinic)
    per_patient = Counter(e["subject"]["reference"] for e in clinic.of_type("Encounter"))
    assert set(per_patient) == {f"Patient/{i}" for i in clinic.patient_ids}
    assert all(1 <= n <= 4 for n in per_patient.values())
    statuses: Counter[str] = Counter()
    for encounter in clinic.of_type("Encounter"):
        statuses[encounter["status"]] += 1
        assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
        assert encounter["class"]["code"] in {"AMB", "IMP"}
        start = _when(encounter["period"]["start"])
        assert start < MIDNIGHT
        if encounter["status"] == "finished":
            assert start < _when(encounter["period"]["end"]) <= MIDNIGHT
        else:
            assert encounter["status"] == "in-progress"
            assert "end" not in encounter["period"]
            assert encounter["class"]["code"] == "IMP"
        department = by_ref[encounter["serviceProvider"]["reference"]]["name"]
        assert department in CARE_DEPARTMENTS
        patient = by_ref[encounter["subject"]["reference"]]
        if _age(patient["birthDate"], start.date()) < 18:
            assert department in {PEDIATRICS, EMERGENCY}
        attending = by_ref[encounter["participant"][0]["individual"]["reference"]]
        assert attending["resourceType"] == "Practitioner"
        birth = dt.date.fromisoformat(patient["birthDate"])
        assert start.date() > birth
        for reference in (a["reference"] for a in encounter.get("appointment", [])):
            appointment = by_ref[reference]
            assert appointment["status"] == "fulfilled"
            assert appointment["start"] == encounter["period"]["start"]
    assert statuses["in-progress"] >= 1
    assert statuses["finished"] > 0.9 * sum(statuses.values())


def test_observations_fall_within_their_encounter(clinic: Clinic) -> None:
    by_ref = _by_ref(clinic)
    codes: Counter[str] = Counter()
    noted = 0
    for observation in clinic.of_type("Observation"):
        encounter = by_ref[observation["encounter"]["reference"]]
        assert observation["subject"] == encounter["subject"]
        moment = _when(observation["effectiveDateTime"])
        assert _when(encounter["period"]["start"]) <= moment
        if "end" in encounter["period"]:
            assert moment <= _when(encounter["period"]["end"])
        (coding,) = observation["code"]["coding"]
        assert coding["system"] == "http://loinc.org"
        codes[coding["code"]] += 1
        (category,) = observation["category"][0]["coding"]
        assert category["system"] == ("http://terminology.hl7.org/CodeSystem/observation-category")
        expected = "laboratory" if coding["code"] == "2339-0" else "vital-signs"
        assert category["code"] == expected
        quantities = (
            [observation["valueQuantity"]]
            if "valueQuantity" in observation
            else [c["valueQuantity"] for c in observation["component"]]
        )
        for quantity in quantities:
            assert quantity["system"] == "http://unitsofmeasure.org"
        if "note" in observation:
            noted += 1
            assert observation["note"][0]["text"]
    for code in ("8867-4", "85354-9", "29463-7", "8302-2", "2339-0"):
        assert codes[code] > 0
    assert noted > 100


def test_measurements_suit_the_patient_age(clinic: Clinic) -> None:
    by_ref = _by_ref(clinic)
    for observation in clinic.of_type("Observation"):
        patient = by_ref[observation["subject"]["reference"]]
        age = _age(patient["birthDate"], _when(observation["effectiveDateTime"]).date())
        code = observation["code"]["coding"][0]["code"]
        if code == "85354-9":
            systolic, diastolic = (c["valueQuantity"]["value"] for c in observation["component"])
            assert [c["code"]["coding"][0]["code"] for c in observation["component"]] == [
                "8480-6",
                "8462-4",
            ]
            assert 40 <= diastolic < systolic <= 220
            continue
        value = observation["valueQuantity"]["value"]
        if code == "8302-2":  # height, cm
            assert (
                (40 <= value <= 90)
                if age < 1
                else (140 <= value <= 205)
                if age >= 18
                else (60 <= value <= 200)
            )
        elif code == "29463-7":  # weight, kg
            assert (
                (1.5 <= value <= 15)
                if age < 1
                else (35 <= value <= 180)
                if age >= 18
                else (6 <= value <= 130)
            )
        elif code == "8867-4":  # heart rate, /min
            assert 40 <= value <= 200
        elif code == "2339-0":  # glucose, g/L
            assert 0.5 <= value <= 3.5


def test_conditions_are_coded_and_dated(clinic: Clinic) -> None:
    by_ref = _by_ref(clinic)
    codes = set()
    for condition in clinic.of_type("Condition"):
        (coding,) = condition["code"]["coding"]
        assert coding["system"] == "http://snomed.info/sct"
        codes.add(coding["code"])
        patient = by_ref[condition["subject"]["reference"]]
        encounter = by_ref[condition["encounter"]["reference"]]
        assert encounter["subject"] == condition["subject"]
        onset = dt.date.fromisoformat(condition["onsetDateTime"])
        assert dt.date.fromisoformat(patient["birthDate"]) <= onset
        assert onset <= _when(encounter["period"]["start"]).date()
        status = condition["clinicalStatus"]["coding"][0]["code"]
        assert status in {"active", "resolved"}
        assert ("abatementDateTime" in condition) == (status == "resolved")
        if status == "resolved":
            assert onset <= dt.date.fromisoformat(condition["abatementDateTime"]) < TODAY
        assert condition["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert {"38341003", "44054006", "195967001", "13645005", "35489007", "49436004"} <= codes


def test_prescriptions_are_coded_and_linked(clinic: Clinic) -> None:
    by_ref = _by_ref(clinic)
    codes = set()
    statuses: Counter[str] = Counter()
    for order in clinic.of_type("MedicationRequest"):
        (coding,) = order["medicationCodeableConcept"]["coding"]
        assert coding["system"] == "http://www.whocc.no/atc"
        assert re.fullmatch(r"[A-Z]\d\d[A-Z][A-Z]\d\d", coding["code"])
        codes.add(coding["code"])
        statuses[order["status"]] += 1
        assert order["intent"] == "order"
        assert order["dosageInstruction"][0]["text"]
        encounter = by_ref[order["encounter"]["reference"]]
        assert encounter["subject"] == order["subject"]
        assert by_ref[order["requester"]["reference"]]["resourceType"] == "Practitioner"
        authored = _when(order["authoredOn"])
        assert _when(encounter["period"]["start"]) <= authored
        for reason in order.get("reasonReference", []):
            assert by_ref[reason["reference"]]["subject"] == order["subject"]
    assert {"C09AA05", "A10BA02", "R03AC02", "N06AB04", "B01AF01"} <= codes
    assert set(statuses) == {"active", "completed"}


def test_appointments_are_booked_ahead_or_fulfilled_behind(clinic: Clinic) -> None:
    booked = 0
    for appointment in clinic.of_type("Appointment"):
        start, end = _when(appointment["start"]), _when(appointment["end"])
        assert start < end
        if appointment["status"] == "booked":
            booked += 1
            assert start > MIDNIGHT
        else:
            assert appointment["status"] == "fulfilled"
            assert end <= MIDNIGHT
        actors = [p["actor"]["reference"].split("/")[0] for p in appointment["participant"]]
        assert actors == ["Patient", "Practitioner"]
        assert all(p["status"] == "accepted" for p in appointment["participant"])
    assert booked > 50
