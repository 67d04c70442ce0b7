"""Hours are the hospital's: the time zone (settings, the context's optional "timezone", or
`egide detect run --timezone`) decides what is night for the access model, which hours a user
never works, and the times reasons show; daylight saving time moves the night with it.

The same month of work written in UTC, or shifted to Paris wall-clock time and judged in
Europe/Paris, gives the same alerts. (Aggregates stay keyed by UTC day: the world here keeps
its activity and care links away from UTC midnight, so only hours can differ.)"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from egide.cli.main import app
from egide.detect.clock import Clock, UnknownZoneError
from egide.detect.engine import Detector
from egide.detect.events import Alert, Context, DetectFormatError, context_from_json, read_alerts
from egide.detect.relationship import build_model
from egide.detect.settings import DetectSettings
from tests.unit.detect.detect_world import World, build

PARIS = ZoneInfo("Europe/Paris")


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def test_clock_follows_daylight_saving_time() -> None:
    paris = Clock("Europe/Paris")
    # Winter (CET, +1) the evening before the change, summer (CEST, +2) the day after.
    assert paris.hour(_ts("2026-03-28T19:30:00+00:00")) == 20
    assert paris.hour(_ts("2026-03-29T19:30:00+00:00")) == 21
    # The change itself: 01:59:59 CET is followed by 03:00:00 CEST.
    assert paris.hour(_ts("2026-03-29T00:59:59+00:00")) == 1
    assert paris.hour(_ts("2026-03-29T01:00:00+00:00")) == 3
    # Autumn: 02:30 happens twice.
    assert paris.hour(_ts("2026-10-25T00:30:00+00:00")) == 2
    assert paris.hour(_ts("2026-10-25T01:30:00+00:00")) == 2
    # A UTC day's hour counts, placed by the local hours (the sum kept).
    day = int(_ts("2026-03-29T00:00:00+00:00") // 86_400)
    utc_hours = [0] * 24
    utc_hours[0], utc_hours[1], utc_hours[12] = 2, 3, 5
    local = paris.day_hours(day, utc_hours)
    assert (local[1], local[3], local[14]) == (2, 3, 5)
    assert sum(local) == 10
    assert paris.span_hours(_ts("2026-07-01T20:10:00+00:00"), _ts("2026-07-01T22:05:00+00:00")) == {
        22,
        23,
        0,
    }
    assert paris.hhmm(_ts("2026-07-01T20:10:00+00:00"), "2026-07-01T20:10:00Z") == "22:10"
    utc = Clock()
    assert utc.hhmm(0.0, "2026-07-01T20:10:00Z") == "20:10"
    assert (utc.label, paris.label) == ("UTC", "local time (Europe/Paris)")


def test_zone_names_are_checked() -> None:
    assert context_from_json({"timezone": "Europe/Paris"}).timezone == "Europe/Paris"
    assert context_from_json({}).timezone is None
    doc = Context(timezone="America/Montreal").to_json()
    assert context_from_json(doc).timezone == "America/Montreal"
    for bad in ("Mars/Olympus_Mons", "../../etc/passwd", ""):
        with pytest.raises(DetectFormatError, match="unknown time zone"):
            context_from_json({"timezone": bad})
    with pytest.raises(DetectFormatError, match="IANA time zone name"):
        context_from_json({"timezone": 2})
    with pytest.raises(UnknownZoneError):
        DetectSettings(timezone="Mars/Olympus_Mons")


def _night_flags(
    times: list[str], *, settings: DetectSettings | None = None, zone: str | None = None
) -> list[bool]:
    """The night flag the access model gives each of a user's reads (patients in no care)."""
    context = context_from_json(
        {
            "users": [{"id": "u", "role": "nurse", "department": "icu"}],
            "patients": [{"id": f"p{i}"} for i in range(len(times))],
            **({"timezone": zone} if zone else {}),
        }
    )
    detector = Detector(context, settings)
    detector.feed(
        [
            {"id": f"e{i}", "time": t, "user": "u", "action": "read", "patient": f"p{i}"}
            for i, t in enumerate(times)
        ]
    )
    _, uncovered, _ = build_model(detector.state, detector.index, detector.settings)
    by_patient = {item.patient: item.night for item in uncovered}
    return [by_patient[f"p{i}"] for i in range(len(times))]


def test_a_paris_night_that_is_evening_in_utc() -> None:
    # 19:30 UTC in July is 21:30 in Paris: night there (from 20:00), evening in UTC.
    times = ["2026-07-01T19:30:00Z", "2026-07-01T10:00:00Z"]
    assert _night_flags(times) == [False, False]
    assert _night_flags(times, settings=DetectSettings(timezone="Europe/Paris")) == [True, False]
    # The context's zone, and the settings' over it.
    assert _night_flags(times, zone="Europe/Paris") == [True, False]
    assert _night_flags(times, zone="Europe/Paris", settings=DetectSettings(timezone="UTC")) == [
        False,
        False,
    ]


def test_the_night_moves_with_daylight_saving_time() -> None:
    # 18:30 UTC: 19:30 in Paris before the change (day), 20:30 after it (night).
    times = ["2026-03-27T18:30:00Z", "2026-03-28T18:30:00Z", "2026-03-30T18:30:00Z"]
    paris = DetectSettings(timezone="Europe/Paris")
    assert _night_flags(times, settings=paris) == [False, False, True]
    assert _night_flags(times) == [False, False, False]
    # And the early end of the night: 05:30 UTC is 06:30 (night) then 07:30 (day).
    times = ["2026-03-28T05:30:00Z", "2026-03-30T05:30:00Z"]
    assert _night_flags(times, settings=paris) == [True, False]


def _night_attacks(world: World) -> None:
    """Misuse at Paris night hours, written as UTC wall-clock times (shifted after)."""
    user = world.user("internal_medicine", "physician", 0)
    for k, patient in enumerate(world.patients[:47]):
        world.event(user, 12, 22.5 + k / 240, "export", patient=patient["id"], count=1)
    nurse = world.user("surgery", "nurse", 1)
    world.event(nurse, 9, 23.0, "read", patient=world.some_patient_not_in_care()["id"])
    owner = world.user("cardiology", "nurse", 2)
    thief = dict(owner, _ip="203.0.113.9", _device="laptop-unknown")
    world.event(thief, 14, 3.0, "login")
    cared = world.admitted[14]["surgery"] + world.admitted[14]["emergency"]
    for k, patient_id in enumerate(cared):
        world.event(thief, 14, 3.1 + k / 60, "read", patient=patient_id)
    doctor = world.user("cardiology", "physician", 1)
    world.event(doctor, 16, 23.5, "break_glass", patient=world.patients[-300]["id"], purpose="x")


def _to_paris(stamp: str) -> str:
    """A UTC wall-clock time read as Paris wall-clock time, written back in UTC."""
    wall = dt.datetime.fromisoformat(stamp.replace("Z", "")).replace(tzinfo=PARIS)
    return wall.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shifted(world: World) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events = [dict(e, time=_to_paris(e["time"])) for e in world.sorted_events()]
    context = world.context_json()
    context["care"] = [
        {**c, **{k: _to_paris(c[k]) for k in ("start", "end") if c.get(k)}} for c in context["care"]
    ]
    return events, context


def _same_judgement(alert: Alert) -> tuple[object, ...]:
    return (alert.id, alert.kind, alert.severity, alert.score, alert.user, alert.patient)


def test_shifted_to_paris_and_judged_there_gives_the_same_alerts() -> None:
    world = build(days=20)  # March 2 to 21: winter time all along
    _night_attacks(world)
    in_utc = Detector(world.context())
    in_utc.feed(world.sorted_events())
    expected = in_utc.finish()
    assert {a.kind for a in expected} >= {
        "exfiltration",
        "snooping",
        "stolen_credentials",
        "break_glass_abuse",
    }
    events, context = _shifted(world)
    in_paris = Detector(context_from_json({**context, "timezone": "Europe/Paris"}))
    in_paris.feed(events)
    alerts = in_paris.finish()
    assert [_same_judgement(a) for a in alerts] == [_same_judgement(a) for a in expected]
    for got, want in zip(alerts, expected, strict=True):
        assert got.events == want.events
        assert got.start == _to_paris(want.start)
        assert [r.replace("local time (Europe/Paris)", "UTC") for r in got.reasons] == list(
            want.reasons
        )
    # Judged in UTC, the same shifted events lose their night: the export burst at 22:30 in
    # Paris is 21:30 UTC.
    as_utc = Detector(context_from_json(context))
    as_utc.feed(events)
    burst = next(a for a in as_utc.finish() if a.kind == "exfiltration" and a.patient is None)
    assert "at night" not in burst.reasons
    paris_burst = next(a for a in alerts if a.id == burst.id)
    assert "at night" in paris_burst.reasons
    assert any("between 22:30 and" in r for r in paris_burst.reasons)


def test_cli_timezone_option(tmp_path: Path) -> None:
    world = build(days=8)
    user = world.user("internal_medicine", "physician", 0)
    for k, patient in enumerate(world.patients[:47]):
        world.event(user, 5, 21.5 + k / 240, "export", patient=patient["id"], count=1)
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps(e) for e in world.sorted_events()) + "\n")
    context = tmp_path / "context.json"
    context.write_text(json.dumps(world.context_json()))
    out = tmp_path / "alerts.jsonl"
    paths = ["--events", str(events), "--context", str(context), "--out", str(out)]
    runner = CliRunner()
    refused = runner.invoke(app, ["detect", "run", *paths, "--timezone", "Mars/Olympus_Mons"])
    assert refused.exit_code == 1
    assert "unknown time zone" in refused.output
    assert "Traceback" not in refused.output
    for zone, night in (("UTC", False), ("Europe/Paris", True)):
        done = runner.invoke(app, ["detect", "run", *paths, "--timezone", zone])
        assert done.exit_code == 0, done.output
        burst = next(a for a in read_alerts(out) if a.kind == "exfiltration")
        assert ("at night" in burst.reasons) is night
