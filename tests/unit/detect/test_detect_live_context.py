"""Live, a fresher context (an admission recorded, a care link ended) is judged with at once
but does not make the detector judge every account again: the hospital-wide model is kept
until its usual refresh (`Detector.set_context(keep_model=True)`), so a busy hospital's
constant admissions do not turn each micro-batch into a full scoring of weeks."""

from __future__ import annotations

from typing import Any

from egide.detect.engine import Detector
from egide.detect.events import Context, context_from_json
from egide.detect.settings import DetectSettings
from tests.unit.detect.detect_world import World, build, stamp

# Findings of the day itself are returned at once (the settling wait is another test's).
NOW = DetectSettings(live_settle_days=-1)


def _world() -> tuple[World, dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """A week of a hospital, then a nurse's read of a patient in no one's care."""
    world = build(days=8)
    nurse = world.user("surgery", "nurse", 1)
    stranger = world.some_patient_not_in_care()
    history = [e for e in world.sorted_events() if e["time"] < stamp(7, 10.0)]
    world.event(nurse, 7, 10.0, "read", patient=stranger["id"], id="the-read")
    return world, nurse, stranger, history


def _linked(world: World, nurse: dict[str, Any], stranger: dict[str, Any]) -> Context:
    """The context with the admission that explains the read (recorded just after it)."""
    doc = world.context_json()
    link = {"patient": stranger["id"], "user": nurse["id"], "department": None}
    link |= {"start": stamp(7, 9.5), "end": None}
    return context_from_json({**doc, "care": [*doc["care"], link]})


def _read(world: World) -> list[dict[str, Any]]:
    return [e for e in world.events if e["id"] == "the-read"]


def test_the_read_is_snooping_without_the_admission() -> None:
    world, _, stranger, history = _world()
    detector = Detector(world.context(), NOW)
    detector.warm(history)
    detector.set_context(world.context(), keep_model=True)
    found = detector.update(_read(world))
    assert [(a.kind, a.patient) for a in found] == [("snooping", stranger["id"])]


def test_the_admission_explains_it_without_judging_everyone_again() -> None:
    world, nurse, stranger, history = _world()
    detector = Detector(world.context(), NOW)
    detector.warm(history)
    model = detector._model
    detector.set_context(_linked(world, nurse, stranger), keep_model=True)
    assert detector.update(_read(world)) == []
    assert detector._model is model
    # Without keep_model (a context replaced whole), the next update rebuilds it.
    detector.set_context(_linked(world, nurse, stranger))
    detector.update([])
    detector.update([{**_read(world)[0], "id": "again", "time": stamp(7, 10.01)}])
    assert detector._model is not model
