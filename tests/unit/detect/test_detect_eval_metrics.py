"""Scoring alerts against labels: hand-made cases with known answers, edge cases, invariants,
bad input lines, and the simulator's own labels as perfect alerts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egide.detect.evaluate import (
    EvaluationInputError,
    Label,
    evaluate,
    evaluate_files,
    format_evaluation,
    load_labels,
)
from egide.detect.simulate import simulate, write_simulation


def _label(
    ident: str,
    kind: str,
    events: list[str],
    *,
    user: str | None = "u1",
    patient: str | None = "p1",
    start: str = "2026-03-02T10:00:00Z",
    end: str = "2026-03-02T10:05:00Z",
) -> dict[str, Any]:
    return {
        "id": ident,
        "kind": kind,
        "variant": "plain",
        "user": user,
        "patient": patient,
        "start": start,
        "end": end,
        "events": events,
        "description": "test",
    }


def _alert(
    kind: str,
    score: float,
    events: list[str],
    *,
    user: str | None = "u9",
    patient: str | None = None,
    start: str = "2026-03-02T10:00:00Z",
    end: str = "2026-03-02T10:05:00Z",
) -> dict[str, Any]:
    return {
        "id": f"x{score}",
        "kind": kind,
        "severity": "high",
        "score": score,
        "user": user,
        "patient": patient,
        "start": start,
        "end": end,
        "events": events,
        "reasons": ["test"],
    }


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def labels(tmp_path: Path) -> list[Label]:
    rows = [
        _label("a1", "snooping", ["e1", "e2"]),
        _label("a2", "vip", ["e3"], user="u2", patient="p2"),
        _label("a3", "credential_stuffing", ["e4", "e5", "e6"], user=None, patient=None),
    ]
    return load_labels(_write(tmp_path / "labels.jsonl", rows))


def test_known_answer(labels: list[Label]) -> None:
    alerts = [
        _alert("snooping", 0.9, ["e2"]),  # event overlap: detects a1
        _alert("vip", 0.8, [], user="u2", patient="p2"),  # same subject and time: a2
        _alert("snooping", 0.7, ["e4"]),  # real misuse (a3) under the wrong kind
        _alert("exfiltration", 0.95, ["e99"]),  # false alarm, ranked first
    ]
    ev = evaluate(labels, alerts, user_days=2000)
    recall = {k.kind: k.recall for k in ev.kinds}
    assert recall == {
        "snooping": 1.0,
        "vip": 1.0,
        "credential_stuffing": 0.0,
        "exfiltration": None,
    }
    assert ev.recall == pytest.approx(2 / 3)
    assert [m.id for m in ev.missed] == ["a3"]
    assert ev.precision == pytest.approx(3 / 4)
    assert ev.precision_same_kind == pytest.approx(2 / 4)
    assert ev.precision_at_100 == pytest.approx(3 / 4)
    # ranks: false (0), a1 at 2 (1/2), a2 at 3 (2/3), a3 at 4 (3/4); three attacks
    assert ev.average_precision == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)
    assert ev.alerts_per_1000_user_days == pytest.approx(2.0)
    text = format_evaluation(ev)
    for needle in ("snooping", "credential_stuffing", "0.75", "2.00", "missed: a3"):
        assert needle in text


def test_no_alerts(labels: list[Label]) -> None:
    ev = evaluate(labels, [], user_days=100)
    assert (ev.recall, ev.precision, ev.precision_at_100, ev.average_precision) == (0, 0, 0, 0)
    assert ev.alerts_per_1000_user_days == 0.0
    assert len(ev.missed) == 3
    assert "alert precision          0.00" in format_evaluation(ev)


def test_no_labels_and_no_user_days() -> None:
    ev = evaluate([], [_alert("snooping", 0.5, ["e1"])])
    assert ev.recall == 0.0
    assert ev.precision == 0.0
    assert ev.average_precision == 0.0
    assert ev.alerts_per_1000_user_days is None
    assert "alerts per 1000 user-days -" in format_evaluation(ev)


def test_duplicate_alerts_on_one_attack(labels: list[Label]) -> None:
    alerts = [_alert("snooping", 0.9, ["e1"]), _alert("snooping", 0.8, ["e2"])]
    ev = evaluate(labels, alerts)
    assert ev.precision == 1.0  # both point at real misuse
    assert ev.precision_at_100 == 1.0
    assert ev.detected == 1
    # only the first earns anything in average precision
    assert ev.average_precision == pytest.approx((1 / 1) / 3)


def test_one_alert_grouping_several_attacks_counts_each(tmp_path: Path) -> None:
    rows = [_label(f"a{i}", "snooping", [f"e{i}"], patient=f"p{i}") for i in range(4)]
    labels = load_labels(_write(tmp_path / "l.jsonl", rows))
    ev = evaluate(labels, [_alert("snooping", 0.6, ["e0", "e1", "e2", "e3"], user="u1")])
    assert ev.recall == 1.0
    assert ev.average_precision == 1.0


def test_precision_at_100_with_fewer_and_more_alerts(labels: list[Label]) -> None:
    few = [_alert("snooping", 0.9 - i / 100, ["e1"] if i < 7 else ["zz"]) for i in range(10)]
    assert evaluate(labels, few).precision_at_100 == pytest.approx(0.7)
    # 150 alerts: the 100 best hold 50 true ones; the 50 worst are all true
    many = [
        _alert("snooping", 1 - i / 1000, ["e1"] if (i % 2 == 0 and i < 100) or i >= 100 else [])
        for i in range(150)
    ]
    ev = evaluate(labels, many)
    assert ev.precision_at_100 == pytest.approx(0.5)
    assert ev.precision == pytest.approx(100 / 150)


def test_fallback_needs_same_user_patient_and_overlap(labels: list[Label]) -> None:
    later = _alert(
        "vip",
        0.5,
        [],
        user="u2",
        patient="p2",
        start="2026-03-02T11:00:00Z",
        end="2026-03-02T11:30:00Z",
    )
    other_patient = _alert("vip", 0.5, [], user="u2", patient="p3")
    nobody = _alert("credential_stuffing", 0.5, [], user=None, patient=None)
    for alert in (later, other_patient, nobody):
        assert evaluate(labels, [alert]).detected == 0, alert
    overlapping = _alert(
        "vip",
        0.5,
        [],
        user="u2",
        patient="p2",
        start="2026-03-02T09:00:00+01:00",  # 08:00Z to 10:03Z, overlapping 10:00Z..10:05Z
        end="2026-03-02T11:03:00+01:00",
    )
    assert evaluate(labels, [overlapping]).detected == 1


def test_ties_keep_file_order(labels: list[Label]) -> None:
    first_true = [_alert("snooping", 0.5, ["e1"]), _alert("snooping", 0.5, [])]
    first_false = list(reversed(first_true))
    assert evaluate(labels, first_true).average_precision == pytest.approx(1 / 3)
    assert evaluate(labels, first_false).average_precision == pytest.approx(0.5 / 3)


ids = st.sampled_from([f"e{i}" for i in range(12)])
kinds = st.sampled_from(["snooping", "vip", "family", "exfiltration"])
people = st.sampled_from([None, "u1", "u2"])


@settings(max_examples=150, deadline=None)
@given(
    label_rows=st.lists(
        st.tuples(kinds, st.lists(ids, min_size=1, max_size=4), people, people), max_size=6
    ),
    alert_rows=st.lists(
        st.tuples(kinds, st.floats(0, 1), st.lists(ids, max_size=5), people, people), max_size=25
    ),
)
def test_metrics_are_bounded_and_order_free(
    label_rows: list[tuple[str, list[str], str | None, str | None]],
    alert_rows: list[tuple[str, float, list[str], str | None, str | None]],
) -> None:
    labels = [
        Label(f"a{i}", kind, user, patient, None, None, frozenset(events))
        for i, (kind, events, user, patient) in enumerate(label_rows)
    ]
    alerts = [
        _alert(kind, score, events, user=user, patient=patient)
        for kind, score, events, user, patient in alert_rows
    ]
    ev = evaluate(labels, alerts, user_days=50)
    for value in (
        ev.recall,
        ev.precision,
        ev.precision_same_kind,
        ev.precision_at_100,
        ev.average_precision,
    ):
        assert 0.0 <= value <= 1.0
    assert ev.precision_same_kind <= ev.precision
    assert ev.average_precision <= 1.0
    assert all(k.recall is None or 0 <= k.recall <= 1 for k in ev.kinds)
    assert ev.detected + len(ev.missed) == ev.attacks
    assert sum(k.alerts for k in ev.kinds) == ev.alerts
    # Recall and precision do not depend on the order of the alerts file.
    again = evaluate(labels, list(reversed(alerts)), user_days=50)
    assert (again.recall, again.precision, again.detected) == (ev.recall, ev.precision, ev.detected)


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    labels = _write(tmp_path / "labels.jsonl", [_label("a1", "vip", ["e1"])])
    cases = {
        "{not json": "not valid JSON",
        json.dumps(["a list"]): "not a JSON object",
        json.dumps({"kind": "vip", "events": []}): "score must be a finite number",
        json.dumps({"kind": "vip", "score": True, "events": []}): "score must be",
        json.dumps({"kind": "", "score": 1, "events": []}): "kind must be",
        json.dumps({"kind": "vip", "score": 1, "events": "e1"}): "events must be a list",
        json.dumps({"kind": "vip", "score": 1, "events": [], "user": 3}): "user must be",
        json.dumps({"kind": "vip", "score": 1, "events": [], "start": "noon"}): "RFC 3339",
        json.dumps(
            {"kind": "vip", "score": 1, "events": [], "start": "2026-03-02T10:00:00"}
        ): "no UTC offset",
    }
    good = json.dumps(_alert("vip", 0.5, ["e1"]))
    for bad, message in cases.items():
        alerts = tmp_path / "alerts.jsonl"
        alerts.write_text(f"{good}\n\n{bad}\n")
        with pytest.raises(EvaluationInputError, match=message) as caught:
            evaluate_files(labels, alerts)
        assert str(caught.value).startswith(f"{alerts}:3: ")
        assert isinstance(caught.value, ValueError)
    alerts.write_text(good + "\n")
    for bad_label, message in (
        ({**_label("a1", "vip", ["e1"]), "id": None}, "id must be"),
        ({**_label("a1", "vip", ["e1"]), "events": [1]}, "events must be"),
    ):
        broken = _write(tmp_path / "broken.jsonl", [_label("a0", "vip", []), bad_label])
        with pytest.raises(EvaluationInputError, match=message):
            evaluate_files(broken, alerts)
    twice = _write(tmp_path / "twice.jsonl", [_label("a1", "vip", []), _label("a1", "vip", [])])
    with pytest.raises(EvaluationInputError, match=r"twice.jsonl:2: duplicate label id"):
        evaluate_files(twice, alerts)
    with pytest.raises(EvaluationInputError, match="alerts:1: kind must be"):
        evaluate([], [{"score": 1, "events": []}])


def test_user_days_from_argument_events_or_meta(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    write_simulation(simulate(users=30, patients=200, days=3, seed=2), sim, compress=True)
    meta = json.loads((sim / "meta.json").read_text())
    alerts = _write(tmp_path / "alerts.jsonl", [_alert("vip", 0.4, [])])
    labels = sim / "labels.jsonl"
    assert evaluate_files(labels, alerts).user_days == meta["user_days"]
    counted = evaluate_files(labels, alerts, events=sim / "events.jsonl.gz")
    assert counted.user_days == meta["user_days"]
    assert evaluate_files(labels, alerts, user_days=7).user_days == 7
    (sim / "meta.json").write_text(json.dumps({"users": 30, "days": 3}))
    assert evaluate_files(labels, alerts).user_days == 90
    (sim / "meta.json").unlink()
    assert evaluate_files(labels, alerts).user_days is None


def test_labels_as_alerts_score_perfectly(tmp_path: Path) -> None:
    write_simulation(simulate(users=30, patients=200, days=3, seed=6), tmp_path)
    labels = load_labels(tmp_path / "labels.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").open()]
    alerts = [{**row, "score": 1.0, "severity": "high", "reasons": []} for row in rows]
    ev = evaluate(labels, alerts)
    assert ev.recall == 1.0
    assert ev.precision == 1.0
    assert ev.precision_same_kind == 1.0
    assert ev.average_precision == 1.0
    assert all(k.recall == 1.0 for k in ev.kinds)
