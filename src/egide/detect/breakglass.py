"""Break-the-glass abuse: emergency access used without an emergency.

Security role: break-the-glass opens any record when no care link exists yet, because in an
emergency care comes first. It is legitimate when a reason is given and the patient is then
admitted or seen (a care link follows); it is abuse when no care follows, when it becomes a
habit, or when the record is a relative's, a coworker's or a VIP's. The reads that follow a
break-the-glass belong to it (they are judged here, not as snooping).
"""

from __future__ import annotations

from collections import defaultdict

from egide.detect.baseline import DAY, ContextIndex, family_match
from egide.detect.cases import Finding
from egide.detect.features import Rare, StreamState
from egide.detect.settings import DetectSettings

FOLLOW_DAYS = 3


def break_glass_findings(  # noqa: PLR0915 - the signals and the reasons, side by side
    state: StreamState, index: ContextIndex, settings: DetectSettings
) -> tuple[list[Finding], set[tuple[str, str]]]:
    """Findings, and the (user, patient) pairs whose accesses break-the-glass explains or
    owns (for the relationship detectors to leave alone)."""
    by_user: dict[str, list[Rare]] = defaultdict(list)
    for ud in state.days.values():
        by_user[ud.user].extend(ud.break_glass)
    owned: set[tuple[str, str]] = set()
    findings: list[Finding] = []
    before = settings.care_before_hours * 3600
    clock = index.clock(settings.timezone)
    for user, uses in by_user.items():
        uses.sort()
        profile = index.user(user)
        for k, use in enumerate(uses):
            ts, time, eid, _count, _action, patient, purpose = use
            if patient is None:
                continue
            owned.add((user, patient))
            week = [u for u in uses if ts - 7 * DAY <= u[0] <= ts]
            signals: list[str] = []
            # Care at the time or afterwards: the patient admitted, in the emergency room or
            # seen anywhere (an emergency is treated where the patient is), within the grace
            # period. A discharge days before does not count: letters and results need no
            # emergency access.
            cared = index.treating(patient, ts, ts + before)
            if not cared:
                signals.append(
                    "no admission, appointment or care-team link for this patient followed "
                    "the emergency access"
                )
            reason = (purpose or "").strip()
            perfunctory = len(reason.split()) < 3 or sum(c.isalpha() for c in reason) < 12
            if not reason:
                signals.append("no reason was given for the emergency access")
            elif perfunctory:
                signals.append(f"the reason given ({reason[:40]!r}) does not describe an emergency")
            if len(week) > settings.break_glass_weekly:
                signals.append(
                    f"{len(week)} emergency accesses by this user in 7 days (a habit, not "
                    "emergencies)"
                )
            info = index.patients.get(patient)
            sensitive = None
            if info is not None:
                if info.vip:
                    sensitive = "the patient is flagged VIP"
                elif info.employee is not None and info.employee != user:
                    sensitive = "the patient is an employee of the hospital"
                else:
                    sensitive = family_match(profile, info)
            if sensitive:
                signals.append(sensitive)
            abusive = not cared or (
                (len(week) > settings.break_glass_weekly or sensitive) and perfunctory
            )
            if not abusive:
                continue
            events, last, end = [eid], ts, time
            for day in range(int(ts // DAY), int(ts // DAY) + FOLLOW_DAYS + 1):
                later = state.days.get((user, day))
                pair = later.pairs.get(patient) if later is not None else None
                if pair is None:
                    continue
                for e in pair.ids:
                    if e not in events:
                        events.append(e)
                if pair.last > last:
                    last, end = pair.last, pair.t1
            del k
            hour = clock.hour(ts)
            reasons = [
                f"break-the-glass on this patient at {clock.hhmm(ts, time)} {clock.label}"
                + (f" with the reason {purpose[:80]!r}" if purpose else ""),
                *signals,
            ]
            if hour < 6 or hour >= 22:
                reasons.append("at night")
            findings.append(
                Finding(
                    kind="break_glass_abuse",
                    severity="high" if len(signals) >= 2 else "medium",
                    score=min(0.95, 0.6 + 0.1 * len(signals)),
                    user=user,
                    patient=patient,
                    first=ts,
                    last=last,
                    start=time,
                    end=end,
                    events=events,
                    reasons=reasons,
                )
            )
    return findings, owned
