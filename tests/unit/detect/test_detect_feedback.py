"""The officer's feedback (`detect.feedback`): a dismissed alert quiets its look-alikes for the
same account (and patient, for the kinds about one patient), for a while, unless they are
stronger; it never adds alerts."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from egide.detect.engine import Detector
from egide.detect.events import SEVERITIES, Alert
from egide.detect.feedback import Dismissal, Feedback
from egide.detect.settings import DetectSettings
from tests.unit.detect.detect_world import build, stamp

SETTINGS = DetectSettings()


def _alert(**changes: object) -> Alert:
    base = Alert(
        id="al-1",
        kind="snooping",
        severity="medium",
        score=0.7,
        user="u1",
        patient="p1",
        start=stamp(3, 10.0),
        end=stamp(3, 10.5),
        events=("e1",),
        reasons=("no appointment, admission or care-team link",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


DISMISSED = Dismissal.of(_alert())


def test_a_look_alike_after_the_dismissed_alert_is_quiet() -> None:
    later = _alert(id="al-2", start=stamp(12, 9.0), end=stamp(12, 9.1), events=("e9",))
    assert Feedback([DISMISSED]).apply([later], SETTINGS) == []


def test_the_dismissed_alert_itself_is_kept() -> None:
    # Its evidence may grow; the store keeps the officer's status on it.
    grown = _alert(events=("e1", "e2"))
    assert Feedback([DISMISSED]).apply([grown], SETTINGS) == [grown]


def test_another_patient_another_account_or_another_kind_still_alert() -> None:
    feedback = Feedback([DISMISSED])
    others = [
        _alert(id="al-3", patient="p2"),
        _alert(id="al-4", user="u2"),
        _alert(id="al-5", kind="vip"),
    ]
    assert feedback.apply(others, SETTINGS) == others


def test_account_wide_kinds_are_quiet_for_any_patient() -> None:
    burst = _alert(kind="exfiltration", patient=None, severity="high", score=0.8)
    again = replace(burst, id="al-6", start=stamp(9, 8.0), end=stamp(9, 9.0))
    assert Feedback([Dismissal.of(burst)]).apply([again], SETTINGS) == []


def test_a_stronger_case_alerts_and_says_what_was_dismissed() -> None:
    stronger = _alert(id="al-7", start=stamp(8, 1.0), end=stamp(8, 2.0), score=0.9)
    [kept] = Feedback([DISMISSED]).apply([stronger], SETTINGS)
    assert kept.reasons[:-1] == stronger.reasons
    assert "al-1" in kept.reasons[-1]
    assert "false positive" in kept.reasons[-1]
    higher = _alert(id="al-8", severity="high", score=0.7)
    assert len(Feedback([DISMISSED]).apply([higher], SETTINGS)) == 1


def test_feedback_expires() -> None:
    late = SETTINGS.feedback_days + 1
    much_later = _alert(id="al-9", start=stamp(3 + int(late), 10.0), end=stamp(3 + int(late), 11))
    assert Feedback([DISMISSED]).apply([much_later], SETTINGS) == [much_later]


@given(
    severity=st.sampled_from(SEVERITIES),
    score=st.floats(0, 1),
    day=st.integers(0, 60),
    same_patient=st.booleans(),
)
def test_feedback_only_removes_or_annotates(
    severity: str, score: float, day: int, same_patient: bool
) -> None:
    alert = _alert(
        id="al-x",
        severity=severity,
        score=score,
        start=stamp(day, 1.0),
        end=stamp(day, 2.0),
        patient="p1" if same_patient else "p2",
    )
    out = Feedback([DISMISSED]).apply([alert], SETTINGS)
    assert len(out) <= 1
    if out:
        assert replace(out[0], reasons=alert.reasons) == alert
        assert out[0].reasons[: len(alert.reasons)] == alert.reasons


def test_the_detector_learns_from_a_dismissal() -> None:
    """End to end: a nurse's look at one patient, dismissed; the same look two weeks later is
    quiet, a look at another stranger is not."""
    world = build()
    nurse = world.user("surgery", "nurse", 1)
    target = world.some_patient_not_in_care()
    world.event(nurse, 3, 14.0, "read", patient=target["id"])
    events = world.sorted_events()
    first = [a for a in Detector(world.context()).warm(events) if a.user == nurse["id"]]
    assert [a.kind for a in first] == ["snooping"]
    world.event(nurse, 17, 14.0, "read", patient=target["id"])
    cared = {c["patient"] for c in world.care}
    other = next(
        p
        for p in world.patients
        if p["id"] not in cared and not p["vip"] and p["id"] != target["id"]
    )
    world.event(nurse, 26, 15.0, "read", patient=other["id"])  # a case of its own
    detector = Detector(world.context(), feedback=[Dismissal.of(first[0])])
    found = [a for a in detector.warm(world.sorted_events()) if a.user == nurse["id"]]
    # The dismissed alert is kept (same id: the store keeps its status); the look-alike two
    # weeks later is gone; the other stranger alerts.
    assert sorted((a.id == first[0].id, a.patient) for a in found) == [
        (False, other["id"]),
        (True, target["id"]),
    ]
