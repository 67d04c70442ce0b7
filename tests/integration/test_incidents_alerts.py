"""The alert store (`incidents.alerts`) on SQLite and PostgreSQL: the DESIGN.md Alert format in
and out, filters and order, idempotent detector ids, triage by the security officer only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from egide.cli.runtime import Services
from egide.core.errors import BadRequest, Forbidden, NotFound
from egide.core.principal import Principal
from egide.db.engine import transaction
from egide.incidents import alerts
from tests.integration.identity_support import actions

OFFICER = Principal(id="officer-1", role="security_officer", name="Sam Officer")
START = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)


def _doc(**changes: Any) -> dict[str, Any]:
    """A detector's output line (DESIGN.md, "Alert")."""
    doc: dict[str, Any] = {
        "id": "al-0123456789abcdef0123",
        "kind": "snooping",
        "severity": "medium",
        "score": 0.55,
        "user": "u-17",
        "patient": "p-42",
        "start": "2026-03-02T08:00:00Z",
        "end": "2026-03-02T08:30:00+00:00",
        "events": ["e-1", "e-2"],
        "reasons": ["no appointment, admission or care-team link between Dr X and this patient"],
    }
    doc.update(changes)
    return doc


def test_a_detector_alert_round_trips_in_the_design_format(services: Services) -> None:
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        stored = alerts.store_document(session, _doc(), clock=clock)
        again = alerts.store_document(session, _doc(severity="low", score=0.1), clock=clock)
    assert again == stored  # the same evidence, the same id: stored once, unchanged
    out = stored.document()
    assert {k: out[k] for k in _doc()} == {**_doc(), "end": "2026-03-02T08:30:00Z"}
    assert (out["status"], out["updated_by"]) == ("open", None)
    assert out["created_at"] == "2026-03-02T08:15:00Z"


@pytest.mark.parametrize(
    "changes",
    [
        {"severity": "urgent"},
        {"score": 1.5},
        {"score": float("nan")},
        {"score": "0.5"},
        {"kind": "Snooping!"},
        {"start": "yesterday"},
        {"start": "2026-03-02T09:00:00"},  # no offset
        {"end": "2026-03-02T07:00:00Z"},  # before the start
        {"events": "e-1"},
        {"events": ["not an id!"]},
        {"reasons": [""]},
        {"user": "x" * 200},
        {"id": "bad id"},
    ],
)
def test_malformed_alerts_are_refused(services: Services, changes: dict[str, Any]) -> None:
    with (
        pytest.raises(BadRequest, match=r"^alert: "),
        transaction(services.session_factory) as session,
    ):
        alerts.store_document(session, _doc(**changes), clock=services.records.clock)
    with transaction(services.session_factory) as session:
        assert alerts.list_alerts(session) == []


def test_filters_and_order(services: Services) -> None:
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        for n, (kind, severity, score, user) in enumerate(
            [
                ("snooping", "medium", 0.5, "u-1"),
                ("vip", "high", 0.9, "u-2"),
                ("break_glass", "high", 0.7, "u-1"),
            ]
        ):
            alerts.raise_alert(
                session,
                alert_id=f"a-{n}",
                kind=kind,
                severity=severity,
                score=score,
                user=user,
                patient="p-1" if n else "p-2",
                start=START,
                end=START,
                events=[f"e-{n}"],
                reasons=["because"],
                clock=clock,
            )
        ids = [a.id for a in alerts.list_alerts(session)]
        assert ids == ["a-1", "a-2", "a-0"]  # most suspicious first
        assert [a.id for a in alerts.list_alerts(session, severity="high")] == ["a-1", "a-2"]
        assert [a.id for a in alerts.list_alerts(session, user="u-1")] == ["a-2", "a-0"]
        assert [a.id for a in alerts.list_alerts(session, patient="p-2")] == ["a-0"]
        assert [a.id for a in alerts.list_alerts(session, kind="vip")] == ["a-1"]
        alerts.set_status(session, OFFICER, alert_id="a-1", status="confirmed", clock=clock)
        assert [a.id for a in alerts.list_alerts(session, status="open")] == ["a-2", "a-0"]
        assert [a.id for a in alerts.list_alerts(session, status="confirmed")] == ["a-1"]
        with pytest.raises(BadRequest):
            alerts.list_alerts(session, status="closed")


def test_only_the_officer_triages_and_every_change_is_ledgered(services: Services) -> None:
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        alert = alerts.store_document(session, _doc(), clock=clock)
    for role in ("physician", "dpo", "admin", "service"):
        with (
            pytest.raises(Forbidden),
            transaction(services.session_factory) as session,
        ):
            alerts.set_status(
                session,
                Principal(id="x", role=role),
                alert_id=alert.id,
                status="false_positive",
                clock=clock,
            )
    with transaction(services.session_factory) as session:
        changed = alerts.set_status(
            session, OFFICER, alert_id=alert.id, status="acknowledged", clock=clock
        )
        same = alerts.set_status(
            session, OFFICER, alert_id=alert.id, status="acknowledged", clock=clock
        )
        with pytest.raises(NotFound):
            alerts.get_alert(session, alert_id="no-such-alert")
    assert (changed.status, changed.updated_by) == ("acknowledged", OFFICER.id)
    assert same == changed
    [entry] = actions(services, "alert_update")  # the no-op is not a change
    assert entry["user"] == OFFICER.id
    assert entry["resource_id"] == alert.id
    assert entry["patient"] is None  # triage is not an access to the patient's record
    assert entry["reasons"] == [f"alert {alert.id} (snooping): open -> acknowledged"]


@pytest.mark.parametrize("changes", [{"score": float("nan")}, {"score": True}, {"severity": "x"}])
def test_a_grown_alert_is_checked_like_a_new_one(
    services: Services, changes: dict[str, Any]
) -> None:
    """Live detection updates a stored case in place: the update passes the same checks as
    the first store (a boolean score once slipped through the update path)."""
    clock = services.records.clock
    with transaction(services.session_factory) as session:
        alerts.record_detected(session, _doc(), clock=clock)
    with transaction(services.session_factory) as session, pytest.raises(BadRequest):
        alerts.record_detected(session, _doc(**changes), clock=clock)
    with transaction(services.session_factory) as session:
        stored = alerts.get_alert(session, alert_id=_doc()["id"])
    assert stored.score == 0.55
