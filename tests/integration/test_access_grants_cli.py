"""Explicit grants on SQLite and PostgreSQL: `egide access ...` and `POST /api/investigations`.

The commands run in-process through typer's CliRunner with the installation's settings in the
environment, on the real clock (the CLI's); what they leave is checked through the repository
with a FixedClock set to that time, so expiry is tested by moving that clock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from egide.cli.runtime import OPERATOR, Services
from egide.core.clock import FixedClock
from egide.core.errors import Forbidden, NotFound
from egide.core.principal import Principal
from egide.core.settings import Settings
from egide.db.engine import transaction
from egide.identity import accounts
from egide.records.models import AccessLink, AccessMembership, ConsentRule
from egide.records.repository import RecordServices, repository_for, system_repository
from egide.records.unit_of_work import run_in_transaction
from tests.helpers import issue_token
from tests.integration.identity_support import actions
from tests.integration.test_identity_cli import Run, run  # noqa: F401 - the fixture

REASON = "Incident 2026-17: unexplained reads of this record"


def _create(services: Services, resource: dict[str, Any]) -> str:
    with transaction(services.session_factory) as session:
        return system_repository(session, services.records, job="test-setup").create(resource).id


def _patient(services: Services) -> str:
    return _create(services, {"resourceType": "Patient", "name": [{"family": "Martin"}]})


def _observation(services: Services, patient: str) -> str:
    return _create(
        services,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "weight"},
            "subject": {"reference": f"Patient/{patient}"},
        },
    )


def _records_at(services: Services, when: dt.datetime) -> RecordServices:
    return dataclasses.replace(services.records, clock=FixedClock(when))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


Attempt = Callable[..., bool]


def _can(records: RecordServices, services: Services, principal: Principal, work: Any) -> bool:
    try:
        run_in_transaction(
            services.session_factory, lambda s: work(repository_for(s, principal, records))
        )
    except NotFound:
        return False
    return True


def _reads(records: RecordServices, services: Services, who: Principal, rtype: str, rid: str):
    return _can(records, services, who, lambda repo: repo.read(rtype, rid))


def _account(services: Services, email: str, role: str) -> str:
    with transaction(services.session_factory) as session:
        view, _token = accounts.create_account(
            session,
            email=email,
            name="Someone",
            role=role,
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )
    with transaction(services.session_factory) as session:
        from egide.identity.models import Account  # noqa: PLC0415 - only here

        row = session.get(Account, view.id)
        assert row is not None
        row.status = "active"  # as if the invitation had been accepted
    return view.id


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code != 0
    assert err.startswith("egide: error: "), err
    assert err.count("\n") == 1, err
    assert needle in err


# --- assignments ---------------------------------------------------------------------------------


def test_assign_a_practitioner_then_end_it(services: Services, run: Run) -> None:  # noqa: F811
    practitioner = _create(services, {"resourceType": "Practitioner", "name": [{"family": "P"}]})
    patient, other = _patient(services), _patient(services)
    obs = _observation(services, patient)
    me = Principal(id="tok", role="physician", fhir_user=f"Practitioner/{practitioner}")
    assert not _reads(_records_at(services, _now()), services, me, "Observation", obs)

    code, out, err = run(
        "access", "assign", "--practitioner", practitioner, "--patient", patient,
        "--days", "3", "--reason", "Covering for Dr Martin this week",
    )  # fmt: skip
    assert code == 0, err
    grant_id = out.strip()
    records = _records_at(services, _now() + dt.timedelta(minutes=1))
    assert _reads(records, services, me, "Observation", obs)
    later = _records_at(services, _now() + dt.timedelta(days=3, minutes=5))
    assert not _reads(later, services, me, "Observation", obs)
    entry = actions(services, "access_grant")[-1]
    assert (entry["patient"], entry["user"], entry["outcome"]) == (patient, OPERATOR.id, "success")

    code, out, err = run("access", "grants", "--patient", patient)
    assert code == 0, err
    assert grant_id in out
    assert "assignment" in out
    code, out, err = run("access", "grants", "--patient", other)
    assert grant_id not in out

    code, _out, err = run("access", "end", grant_id, "--reason", "Dr Martin is back")
    assert code == 0, err
    assert not _reads(_records_at(services, _now()), services, me, "Observation", obs)
    ended = actions(services, "access_grant_end")[-1]
    assert ended["purpose"] == "Dr Martin is back"
    code, out, _err = run("access", "grants")
    assert grant_id not in out
    code, out, _err = run("access", "grants", "--all")
    assert grant_id in out


def test_assign_a_clinicians_account_by_email(services: Services, run: Run) -> None:  # noqa: F811
    nurse = _account(services, "nina@clinic.example", "nurse")
    patient = _patient(services)
    obs = _observation(services, patient)
    code, _out, err = run(
        "access", "assign", "--user", "Nina@Clinic.example", "--patient", patient,
        "--days", "1", "--reason", "Night shift on ward 3",
    )  # fmt: skip
    assert code == 0, err
    records = _records_at(services, _now() + dt.timedelta(minutes=1))
    assert _reads(records, services, Principal(id=nurse, role="nurse"), "Observation", obs)
    assert not _reads(records, services, Principal(id="x", role="nurse"), "Observation", obs)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--patient", "p", "--days", "1", "--reason", "long enough reason"], "either"),
        (["--user", "nobody@x.example", "--patient", "p", "--days", "1", "--reason",
          "long enough reason"], "no active account"),
        (["--practitioner", "pr", "--patient", "no-such", "--days", "1", "--reason",
          "long enough reason"], "Patient/no-such is not known"),
        (["--practitioner", "pr", "--patient", "P", "--days", "0", "--reason",
          "long enough reason"], "days must be 1 to 366"),
        (["--practitioner", "pr", "--patient", "P", "--days", "1", "--reason", "short"],
         "10 to 500"),
        (["--practitioner", "a/b", "--patient", "P", "--days", "1", "--reason",
          "long enough reason"], "practitioner must be a FHIR id"),
    ],
)  # fmt: skip
def test_bad_assignments_fail_in_one_line(
    services: Services,
    run: Run,  # noqa: F811
    args: list[str],
    needle: str,
) -> None:
    code, _out, err = run("access", "assign", *args)
    _one_line_error(code, err, needle)
    with transaction(services.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(AccessLink)) == 0


def test_a_secretarys_account_cannot_be_assigned(services: Services, run: Run) -> None:  # noqa: F811
    _account(services, "desk@clinic.example", "secretary")
    patient = _patient(services)
    code, _out, err = run(
        "access", "assign", "--user", "desk@clinic.example", "--patient", patient,
        "--days", "1", "--reason", "Helping at the desk",
    )  # fmt: skip
    _one_line_error(code, err, "only a physician's, resident's or nurse's account")
    assert actions(services, "access_grant")[-1]["outcome"] == "denied"


# --- investigations -----------------------------------------------------------------------------


def _officer_token_id(services: Services) -> str:
    issue_token(services, "security_officer")
    with transaction(services.session_factory) as session:
        from egide.identity.models import ApiToken  # noqa: PLC0415 - only here

        return session.scalars(select(ApiToken.id).where(ApiToken.role == "security_officer")).one()


def test_an_investigation_lets_the_officer_read_not_write_one_patient_until_it_expires(
    services: Services,
    run: Run,  # noqa: F811
) -> None:
    officer_id = _officer_token_id(services)
    officer = Principal(id=officer_id, role="security_officer")
    patient, other = _patient(services), _patient(services)
    obs, other_obs = _observation(services, patient), _observation(services, other)
    now = _records_at(services, _now() + dt.timedelta(minutes=1))
    assert not _reads(now, services, officer, "Observation", obs)

    code, out, err = run(
        "access", "investigate", "--officer", officer_id, "--patient", patient,
        "--hours", "2", "--reason", REASON,
    )  # fmt: skip
    assert code == 0, err
    assert out.strip()
    assert _reads(now, services, officer, "Observation", obs)
    assert _reads(now, services, officer, "Patient", patient)
    assert not _reads(now, services, officer, "Observation", other_obs)
    read = actions(services, "read")[-2]
    assert "an investigation grant" in " ".join(read["reasons"])
    with pytest.raises(Forbidden):
        run_in_transaction(
            services.session_factory,
            lambda s: repository_for(s, officer, now).create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient/{patient}"},
                }
            ),
        )
    later = _records_at(services, _now() + dt.timedelta(hours=2, minutes=5))
    assert not _reads(later, services, officer, "Observation", obs)


def test_investigations_go_to_security_officers_only(
    services: Services,
    run: Run,  # noqa: F811
) -> None:
    physician = _account(services, "doc@clinic.example", "physician")
    patient = _patient(services)
    code, _out, err = run(
        "access", "investigate", "--officer", physician, "--patient", patient,
        "--hours", "2", "--reason", REASON,
    )  # fmt: skip
    _one_line_error(code, err, "security officer's account")
    code, _out, err = run(
        "access", "investigate", "--officer", "nobody", "--patient", patient,
        "--hours", "2", "--reason", REASON,
    )  # fmt: skip
    _one_line_error(code, err, "security officer's account")
    code, _out, err = run("access", "end", "no-such-grant")
    _one_line_error(code, err, "no such grant")


def test_the_dpo_grants_investigations_over_the_api(services: Services, client: TestClient) -> None:
    officer_id = _officer_token_id(services)
    patient = _patient(services)
    body = {"officer": officer_id, "patient": patient, "hours": 8, "reason": REASON}
    for role in ("security_officer", "physician", "admin"):
        headers = {"Authorization": f"Bearer {issue_token(services, role)}"}
        refused = client.post("/api/investigations", json=body, headers=headers)
        assert refused.status_code == 403, role
    dpo = {"Authorization": f"Bearer {issue_token(services, 'dpo')}"}
    bad = client.post("/api/investigations", json={**body, "reason": "why"}, headers=dpo)
    assert bad.status_code == 400
    made = client.post("/api/investigations", json=body, headers=dpo)
    assert made.status_code == 201, made.text
    grant = made.json()["grant"]
    assert (grant["kind"], grant["actor"], grant["patient"]) == (
        "investigation",
        f"user:{officer_id}",
        patient,
    )
    officer = Principal(id=officer_id, role="security_officer")
    assert _reads(services.records, services, officer, "Patient", patient)
    outcomes = [e["outcome"] for e in actions(services, "access_grant")]
    assert outcomes == ["denied", "denied", "denied", "denied", "success"]


# --- rebuild -----------------------------------------------------------------------------------


def test_rebuild_derives_the_links_again_and_keeps_grants(
    services: Services,
    run: Run,  # noqa: F811
    settings: Settings,
) -> None:
    del settings
    practitioner = _create(services, {"resourceType": "Practitioner", "name": [{"family": "R"}]})
    patient, assigned = _patient(services), _patient(services)
    obs, assigned_obs = _observation(services, patient), _observation(services, assigned)
    _create(
        services,
        {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"code": "IMP"},
            "subject": {"reference": f"Patient/{patient}"},
            "participant": [{"individual": {"reference": f"Practitioner/{practitioner}"}}],
        },
    )
    code, _out, err = run(
        "access", "assign", "--practitioner", practitioner, "--patient", assigned,
        "--days", "2", "--reason", "Second opinion requested",
    )  # fmt: skip
    assert code == 0, err
    me = Principal(id="tok", role="physician", fhir_user=f"Practitioner/{practitioner}")
    records = _records_at(services, _now() + dt.timedelta(minutes=1))
    with transaction(services.session_factory) as session:
        before = session.scalar(select(func.count()).select_from(AccessLink))
        session.execute(delete(AccessLink).where(AccessLink.source_type != "grant"))
        session.execute(delete(AccessMembership))
        session.execute(delete(ConsentRule))
    assert not _reads(records, services, me, "Observation", obs)
    assert _reads(records, services, me, "Observation", assigned_obs)

    code, _out, err = run("access", "rebuild")
    assert code == 0, err
    assert "rebuilt from" in err
    assert _reads(records, services, me, "Observation", obs)
    assert _reads(records, services, me, "Observation", assigned_obs)
    with transaction(services.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(AccessLink)) == before
    rebuilt = [e for e in actions(services, "read") if e["user"] == "system:access-rebuild"]
    # Guardianship (Patient.link, RelatedPerson) is kept as stated by its trusted writer, not
    # re-derived by a job that cannot tell who wrote it.
    kinds = {e["resource_type"] for e in rebuilt}
    assert "Encounter" in kinds
    assert not kinds & {"Patient", "RelatedPerson"}
