"""Scoring of detector alerts against labelled attacks (`egide detect evaluate`).

Security role: this is how we know whether behavioural detection works, and how much of a
privacy officer's day it costs. It reads the simulator's `labels.jsonl` (format in
`egide.detect.simulate`) and alerts in the DESIGN.md format, and reports:

* **per-kind recall**: an attack is *detected* when some alert **of the same kind** matches it;
* **alert precision**: the share of alerts that match some attack, **whatever its kind** (an
  alert that points at real misuse under another name still deserves the officer's time); the
  stricter share where the kind agrees is shown beside it;
* **precision@100**: the same, over the 100 highest-scored alerts (over all of them when fewer);
* **average precision** over the alerts ranked by score: the area under the precision-recall
  curve, where an alert is relevant only if it matches an attack no higher-ranked alert matched
  (duplicates earn nothing) and recall counts attacks of any kind: AP = sum over ranks k of
  precision(k) x (attacks first matched at k) / (all attacks);
* **alerts per 1000 user-days**, user-days being the distinct (user, UTC day) pairs with at
  least one event.

*Match rule.* An alert matches an attack when they share at least one evidence event id; or,
failing that, when the alert names the same non-null user and the same patient (both null
counts as the same) and its `start`..`end` overlaps the attack's. Scores sort descending; ties
keep the order of the alerts file. With no alerts, precision figures are 0; a kind with no
attack has no recall. Bad lines raise `EvaluationInputError` naming the file and line.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from egide.core.errors import BadRequest

__all__ = [
    "Evaluation",
    "EvaluationInputError",
    "KindScore",
    "Label",
    "count_user_days",
    "evaluate",
    "evaluate_files",
    "format_evaluation",
    "load_alerts",
    "load_labels",
]


class EvaluationInputError(BadRequest, ValueError):
    """A labels, alerts or events line that cannot be used; the message names file and line."""

    def __init__(self, where: str, line: int, problem: str) -> None:
        super().__init__(f"{where}:{line}: {problem}")
        self.where = where
        self.line = line


@dataclass(frozen=True)
class Label:
    """One injected attack, as the simulator labels it."""

    id: str
    kind: str
    user: str | None
    patient: str | None
    start: dt.datetime | None
    end: dt.datetime | None
    events: frozenset[str]
    variant: str | None = None


@dataclass(frozen=True)
class _Alert:
    index: int
    kind: str
    score: float
    user: str | None
    patient: str | None
    start: dt.datetime | None
    end: dt.datetime | None
    events: frozenset[str]


@dataclass(frozen=True)
class KindScore:
    kind: str
    attacks: int
    detected: int
    alerts: int

    @property
    def recall(self) -> float | None:
        return self.detected / self.attacks if self.attacks else None


@dataclass(frozen=True)
class Evaluation:
    kinds: tuple[KindScore, ...]
    attacks: int
    detected: int
    alerts: int
    true_alerts: int  # alerts matching an attack of any kind
    true_alerts_same_kind: int
    precision_at_100: float
    average_precision: float
    user_days: int | None
    missed: tuple[Label, ...]

    @property
    def recall(self) -> float:
        return self.detected / self.attacks if self.attacks else 0.0

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else 0.0

    @property
    def precision_same_kind(self) -> float:
        return self.true_alerts_same_kind / self.alerts if self.alerts else 0.0

    @property
    def alerts_per_1000_user_days(self) -> float | None:
        return 1000 * self.alerts / self.user_days if self.user_days else None


# --- reading -------------------------------------------------------------------------------


def _time(value: object, field: str, where: str, line: int) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EvaluationInputError(where, line, f"{field} must be an RFC 3339 string")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise EvaluationInputError(where, line, f"{field} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise EvaluationInputError(where, line, f"{field} has no UTC offset")
    return parsed


def _optional_text(obj: Mapping[str, Any], field: str, where: str, line: int) -> str | None:
    value = obj.get(field)
    if value is not None and not isinstance(value, str):
        raise EvaluationInputError(where, line, f"{field} must be a string or null")
    return value


def _ids(obj: Mapping[str, Any], where: str, line: int) -> frozenset[str]:
    events = obj.get("events")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        raise EvaluationInputError(where, line, "events must be a list of event id strings")
    return frozenset(events)


def _kind(obj: Mapping[str, Any], where: str, line: int) -> str:
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise EvaluationInputError(where, line, "kind must be a non-empty string")
    return kind


def _label(obj: object, where: str, line: int) -> Label:
    if not isinstance(obj, dict):
        raise EvaluationInputError(where, line, "not a JSON object")
    ident = obj.get("id")
    if not isinstance(ident, str) or not ident:
        raise EvaluationInputError(where, line, "id must be a non-empty string")
    variant = obj.get("variant")
    return Label(
        id=ident,
        kind=_kind(obj, where, line),
        user=_optional_text(obj, "user", where, line),
        patient=_optional_text(obj, "patient", where, line),
        start=_time(obj.get("start"), "start", where, line),
        end=_time(obj.get("end"), "end", where, line),
        events=_ids(obj, where, line),
        variant=variant if isinstance(variant, str) else None,
    )


def _alert(obj: object, index: int, where: str, line: int) -> _Alert:
    if not isinstance(obj, dict):
        raise EvaluationInputError(where, line, "not a JSON object")
    score = obj.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise EvaluationInputError(where, line, "score must be a finite number")
    return _Alert(
        index=index,
        kind=_kind(obj, where, line),
        score=float(score),
        user=_optional_text(obj, "user", where, line),
        patient=_optional_text(obj, "patient", where, line),
        start=_time(obj.get("start"), "start", where, line),
        end=_time(obj.get("end"), "end", where, line),
        events=_ids(obj, where, line),
    )


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for every non-blank line."""
    with _open_text(path) as lines:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise EvaluationInputError(str(path), number, "not valid JSON") from None


def load_labels(path: Path) -> list[Label]:
    labels = [_label(obj, str(path), n) for n, obj in _json_lines(path)]
    seen: set[str] = set()
    for n, label in enumerate(labels, start=1):
        if label.id in seen:
            raise EvaluationInputError(str(path), n, f"duplicate label id {label.id!r}")
        seen.add(label.id)
    return labels


def load_alerts(path: Path) -> list[dict[str, Any]]:
    """The alerts as dicts (checked line by line, so errors name the line)."""
    out: list[dict[str, Any]] = []
    for n, obj in _json_lines(path):
        _alert(obj, len(out), str(path), n)
        assert isinstance(obj, dict)
        out.append(obj)
    return out


def count_user_days(events: Path) -> int:
    """Distinct (user, UTC day) pairs with at least one event in an events file."""
    pairs: set[tuple[str, str]] = set()
    for n, obj in _json_lines(events):
        if not isinstance(obj, dict):
            raise EvaluationInputError(str(events), n, "not a JSON object")
        user, when = obj.get("user"), obj.get("time")
        if not isinstance(user, str) or not isinstance(when, str):
            raise EvaluationInputError(str(events), n, "user and time must be strings")
        stamp = _time(when, "time", str(events), n)
        assert stamp is not None
        pairs.add((user, stamp.astimezone(dt.UTC).date().isoformat()))
    return len(pairs)


def _meta_user_days(labels: Path) -> int | None:
    """user_days from the simulator's meta.json beside the labels, else users x days."""
    meta = labels.parent / "meta.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EvaluationInputError(str(meta), 1, "not valid JSON") from None
    if not isinstance(data, dict):
        return None
    value = data.get("user_days")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    users, days = data.get("users"), data.get("days")
    if isinstance(users, int) and isinstance(days, int) and users > 0 and days > 0:
        return users * days
    return None


# --- scoring -------------------------------------------------------------------------------


class _Matcher:
    """Finds the labels an alert matches, through indexes rather than all pairs."""

    def __init__(self, labels: Sequence[Label]) -> None:
        self.labels = labels
        self.by_event: dict[str, list[int]] = {}
        self.by_subject: dict[tuple[str, str | None], list[int]] = {}
        for i, label in enumerate(labels):
            for event in label.events:
                self.by_event.setdefault(event, []).append(i)
            if label.user is not None:
                self.by_subject.setdefault((label.user, label.patient), []).append(i)

    def matches(self, alert: _Alert) -> set[int]:
        found = {i for event in alert.events for i in self.by_event.get(event, ())}
        if alert.user is None:
            return found
        for i in self.by_subject.get((alert.user, alert.patient), ()):
            if i not in found and _overlap(alert, self.labels[i]):
                found.add(i)
        return found


def _overlap(alert: _Alert, label: Label) -> bool:
    a0, a1, l0, l1 = alert.start, alert.end, label.start, label.end
    if a0 is None or a1 is None or l0 is None or l1 is None:
        return False
    return a0 <= l1 and l0 <= a1


def evaluate(
    labels: Sequence[Label],
    alerts: Sequence[Mapping[str, Any]],
    *,
    user_days: int | None = None,
) -> Evaluation:
    """Score `alerts` (DESIGN.md alert objects) against `labels`. See the module docstring."""
    parsed = [_alert(dict(a), i, "alerts", i + 1) for i, a in enumerate(alerts)]
    matcher = _Matcher(labels)
    matched = [matcher.matches(a) for a in parsed]
    detected_ids: set[int] = set()
    same_kind_alerts = 0
    for alert, found in zip(parsed, matched, strict=True):
        hits = {i for i in found if labels[i].kind == alert.kind}
        detected_ids |= hits
        same_kind_alerts += bool(hits)
    true_alerts = sum(1 for found in matched if found)
    ranked = sorted(range(len(parsed)), key=lambda i: (-parsed[i].score, i))
    top = ranked[:100]
    p_at_100 = sum(1 for i in top if matched[i]) / len(top) if top else 0.0
    ap = _average_precision([matched[i] for i in ranked], len(labels))
    kinds = sorted({label.kind for label in labels} | {a.kind for a in parsed})
    scores = tuple(
        KindScore(
            kind=kind,
            attacks=sum(1 for label in labels if label.kind == kind),
            detected=sum(1 for i in detected_ids if labels[i].kind == kind),
            alerts=sum(1 for a in parsed if a.kind == kind),
        )
        for kind in kinds
    )
    return Evaluation(
        kinds=scores,
        attacks=len(labels),
        detected=len(detected_ids),
        alerts=len(parsed),
        true_alerts=true_alerts,
        true_alerts_same_kind=same_kind_alerts,
        precision_at_100=p_at_100,
        average_precision=ap,
        user_days=user_days,
        missed=tuple(label for i, label in enumerate(labels) if i not in detected_ids),
    )


def _average_precision(ranked_matches: Iterable[set[int]], attacks: int) -> float:
    if attacks == 0:
        return 0.0
    seen: set[int] = set()
    relevant = 0
    total = 0.0
    for k, found in enumerate(ranked_matches, start=1):
        new = found - seen
        if not new:
            continue
        seen |= new
        relevant += 1
        total += (relevant / k) * len(new)
    return total / attacks


def evaluate_files(
    labels: Path,
    alerts: Path,
    *,
    events: Path | None = None,
    user_days: int | None = None,
) -> Evaluation:
    """Score an alerts file against a labels file.

    User-days come from `user_days` if given, else from `events` (counted), else from the
    simulator's `meta.json` next to the labels; without any, the volume figure is left out.
    """
    loaded = load_labels(labels)
    raised = load_alerts(alerts)
    if user_days is None:
        user_days = count_user_days(events) if events is not None else _meta_user_days(labels)
    return evaluate(loaded, raised, user_days=user_days)


# --- report --------------------------------------------------------------------------------


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_evaluation(ev: Evaluation) -> str:
    """A plain-text report: per-kind table, then the overall figures, then missed attacks."""
    width = max([len("kind"), len("all"), *(len(k.kind) for k in ev.kinds)])
    rows = [f"{'kind':<{width}}  attacks  detected  recall  alerts"]
    rows.extend(
        f"{k.kind:<{width}}  {k.attacks:>7}  {k.detected:>8}  {_figure(k.recall):>6}  {k.alerts:>6}"
        for k in ev.kinds
    )
    rows.append(
        f"{'all':<{width}}  {ev.attacks:>7}  {ev.detected:>8}  "
        f"{_figure(ev.recall if ev.attacks else None):>6}  {ev.alerts:>6}"
    )
    per_1000 = ev.alerts_per_1000_user_days
    rows += [
        "",
        f"alert precision          {ev.precision:.2f}  (same kind: {ev.precision_same_kind:.2f})",
        f"precision@100            {ev.precision_at_100:.2f}",
        f"average precision        {ev.average_precision:.2f}",
        f"user-days                {ev.user_days if ev.user_days else '-'}",
        f"alerts per 1000 user-days {'-' if per_1000 is None else f'{per_1000:.2f}'}",
    ]
    if ev.missed:
        rows.append("")
        rows.append("missed: " + ", ".join(f"{m.id} ({m.kind})" for m in ev.missed))
    return "\n".join(rows) + "\n"
