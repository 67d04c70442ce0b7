"""Credential detectors: brute force (one account, many failed sign-ins), credential stuffing
(one address trying many accounts), stolen credentials (an account used from a device or
address its owner never uses, and behaving unlike its owner).

Security role: a stolen password turns every other control into the attacker's; these
detectors look for the traces of guessing and of a second person behind one account. Novelty
alone is not enough (people get new workstations and roam between ward computers): a stolen
credentials finding needs a new device or address *and* a behavioural sign (unusual hours,
far more patients than the owner reads, the owner active elsewhere at the same time, failed
sign-ins just before). The session features are scored against the owner's own sessions with
robust z-scores, so every point of the score has a sentence.
"""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable

from egide.detect.baseline import DAY, ContextIndex, Robust
from egide.detect.cases import Finding
from egide.detect.clock import Clock
from egide.detect.features import Failure, Session, StreamState, UserDay
from egide.detect.settings import DetectSettings

# A successful sign-in, for credential stuffing: (time, event id, account, source).
Login = tuple[float, str, str, str]


def failure_findings(state: StreamState, settings: DetectSettings) -> list[Finding]:
    """Credential stuffing (per address, many accounts) and brute force (per account)."""
    windows = stuffing_windows(state.failures, settings)
    found = stuffing_findings(windows, logins_of(state, windows, settings), settings)
    return found + brute_force_findings(state, windows, settings)


def stuffing_windows(
    failures: list[Failure], settings: DetectSettings
) -> list[tuple[str, list[Failure]]]:
    """(source, its failures) for each address (or device) that failed on enough accounts
    within the window: the cases of credential stuffing, found from the failures alone."""
    width = settings.failure_window_minutes * 60
    by_ip: dict[str, list[Failure]] = defaultdict(list)
    for f in failures:
        by_ip[f.ip or f.device or "-"].append(f)
    windows: list[tuple[str, list[Failure]]] = []
    for source, items in by_ip.items():
        items.sort(key=lambda f: f.ts)
        i = 0
        best: tuple[int, int, int] = (0, 0, -1)
        counts: dict[str, int] = defaultdict(int)
        for j, f in enumerate(items):
            counts[f.user] += 1
            while items[i].ts < f.ts - width:
                counts[items[i].user] -= 1
                if not counts[items[i].user]:
                    del counts[items[i].user]
                i += 1
            if len(counts) > best[0]:
                best = (len(counts), i, j)
        accounts, i, j = best
        if accounts < settings.stuffing_accounts:
            continue
        window = items[i : j + 1]
        # Extend to every failure from this source within the case's span plus one window.
        window = [f for f in items if window[0].ts - width <= f.ts <= window[-1].ts + width]
        windows.append((source, window))
    return windows


def logins_of(
    state: StreamState, windows: list[tuple[str, list[Failure]]], settings: DetectSettings
) -> list[Login]:
    """The successful sign-ins of the state's accounts that `stuffing_findings` can count for
    these windows: from a window's source, within its span (the others, nearly all, are
    left out early: a split run sends these to the other process)."""
    if not windows:
        return []
    spans = {source: _span(window, settings) for source, window in windows}
    found: list[Login] = []
    for ud in state.days.values():
        for a in ud.auth:
            if a[4] == "login":
                source = a[5] or a[6] or "-"
                span = spans.get(source)
                if span is not None and span[0] <= a[0] <= span[1]:
                    found.append((a[0], a[2], ud.user, source))
    return found


def _span(window: list[Failure], settings: DetectSettings) -> tuple[float, float]:
    """When a sign-in from a stuffing window's source counts as its success: from the first
    failure to one window after the last (`stuffing_findings`; `logins_of` keeps only these)."""
    return window[0].ts, window[-1].ts + settings.failure_window_minutes * 60


def stuffing_findings(
    windows: list[tuple[str, list[Failure]]], logins: list[Login], settings: DetectSettings
) -> list[Finding]:
    """A finding per stuffing window; critical when a sign-in from the same source followed
    (`logins`: every account's, or those `logins_of` keeps, in any order: they are taken in
    time order)."""
    by_source: dict[str, list[Login]] = defaultdict(list)
    for login in sorted(logins):
        by_source[login[3]].append(login)
    findings: list[Finding] = []
    for source, window in windows:
        users = sorted({f.user for f in window})
        start, end = _span(window, settings)
        succeeded = [(eid, user) for ts, eid, user, _ in by_source[source] if start <= ts <= end]
        reasons = [
            (
                f"{len(window)} failed sign-ins on {len(users)} different accounts from "
                f"{source} between {window[0].time[11:16]} and {window[-1].time[11:16]}"
            ),
            (
                "one address trying many accounts is the pattern of credential stuffing "
                "(passwords leaked elsewhere, tried here)"
            ),
        ]
        events = [f.id for f in window]
        if succeeded:
            reasons.append(
                f"then {len(succeeded)} successful sign-in(s) from the same address: "
                f"{', '.join(sorted({s[1] for s in succeeded}))[:120]}"
            )
            events += [s[0] for s in succeeded]
        findings.append(
            Finding(
                kind="credential_stuffing",
                severity="critical" if succeeded else "high",
                score=0.95 if succeeded else 0.85,
                user=users[0] if len(users) == 1 else None,
                patient=None,
                first=window[0].ts,
                last=window[-1].ts,
                start=window[0].time,
                end=window[-1].time,
                events=events,
                reasons=reasons,
            )
        )
    return findings


def brute_force_findings(
    state: StreamState,
    windows: list[tuple[str, list[Failure]]],
    settings: DetectSettings,
    users: Callable[[str], bool] | None = None,
) -> list[Finding]:
    """Brute force on each account (`users` accepts; all by default) whose failures are not
    part of a stuffing window; `state` holds every day of those accounts."""
    width = settings.failure_window_minutes * 60
    stuffed = {f.id for _, window in windows for f in window}
    by_user: dict[str, list[Failure]] = defaultdict(list)
    for f in state.failures:
        if f.id not in stuffed and (users is None or users(f.user)):
            by_user[f.user].append(f)
    findings: list[Finding] = []
    for user, items in by_user.items():
        items.sort(key=lambda f: f.ts)
        # Rounds of guessing (failures closer than the window to the one before), each judged
        # on its own: a second round that ends in a sign-in is not hidden by a first.
        rounds: list[list[Failure]] = []
        for f in items:
            if rounds and f.ts - rounds[-1][-1].ts <= width:
                rounds[-1].append(f)
            else:
                rounds.append([f])
        for burst in rounds:
            found = _brute_force(state, user, burst, settings, width)
            if found is not None:
                findings.append(found)
    return findings


def _brute_force(
    state: StreamState,
    user: str,
    items: list[Failure],
    settings: DetectSettings,
    width: float,
) -> Finding | None:
    """The densest window of one round of failures on one account, if dense enough."""
    i, best_n, best_i, best_j = 0, 0, 0, -1
    for j, f in enumerate(items):
        while items[i].ts < f.ts - width:
            i += 1
        if j - i + 1 > best_n:
            best_n, best_i, best_j = j - i + 1, i, j
    if best_n < settings.brute_force_failures:
        return None
    window = items[best_i : best_j + 1]
    sources = sorted({f.ip or f.device or "unknown" for f in window})
    success = _user_success_after(state, user, window[-1].ts, window[-1].ts + width)
    reasons = [
        (
            f"{len(window)} failed sign-ins on this account between {window[0].time[11:16]} "
            f"and {window[-1].time[11:16]} from {', '.join(sources)[:80]}"
        ),
        "repeated guessing of one account's password (brute force)",
    ]
    events = [f.id for f in window]
    taken = False
    if success is not None:
        success_id, ip, device = success
        events.append(success_id)
        # Anyone who knows an e-mail address can type wrong passwords under it; only a
        # sign-in from where the guessing came from, or from a place the account never used,
        # says the guess worked. The owner signing in from their usual workstation afterwards
        # is the owner (and must not lock themselves out by it).
        # Addresses first: a device string is often a browser's user agent, which the owner
        # and a stranger share; it decides only when no address was recorded.
        guess_ips = {f.ip for f in window if f.ip}
        guess_devices = {f.device for f in window if f.device and not f.ip}
        if (ip and ip in guess_ips) or (not ip and device and device in guess_devices):
            taken = True
            reasons.append(
                f"followed by a successful sign-in from the guessing source ({ip or device})"
            )
        elif not _known_place(state, user, window[0].ts, ip, device):
            taken = True
            reasons.append(
                "followed by a successful sign-in from a device and network this account "
                "never used before"
            )
        else:
            reasons.append(
                "then a sign-in from a place this account usually works from (the owner, most "
                "likely, not the guesser)"
            )
    return Finding(
        kind="credential_stuffing",
        severity="critical" if taken else "high",
        score=0.92 if taken else 0.8,
        user=user,
        patient=None,
        first=window[0].ts,
        last=window[-1].ts,
        start=window[0].time,
        end=window[-1].time,
        events=events,
        reasons=reasons,
    )


def _known_place(
    state: StreamState, user: str, before: float, ip: str | None, device: str | None
) -> bool:
    """Whether the account was used from this device or this network before `before`."""
    net = network(ip) if ip else None
    for (owner, _day), ud in state.days.items():
        if owner != user:
            continue
        for sess in ud.sessions.values():
            if sess.first >= before:
                continue
            if device and sess.device == device:
                return True
            if net and any(network(x) == net for x in (sess.ip, *sess.ips) if x):
                return True
    return False


def _user_success_after(
    state: StreamState, user: str, start: float, end: float
) -> tuple[str, str | None, str | None] | None:
    """The first successful sign-in of `user` in [start, end]: (event id, address, device)."""
    for day in range(int(start // DAY), int(end // DAY) + 1):
        ud = state.days.get((user, day))
        if ud is None:
            continue
        for a in ud.auth:
            if a[4] == "login" and start <= a[0] <= end:
                return a[2], a[5], a[6]
    return None


class History:
    """Where and when an account and its department usually work."""

    def __init__(self, state: StreamState, index: ContextIndex, clock: Clock) -> None:
        self.device_days: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.ip_days: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        # Devices and addresses anyone here uses: staff float between wards and share
        # workstations, so only a device or address new to the whole hospital is novel.
        self.devices: dict[str, set[str]] = defaultdict(set)
        self.ips: dict[str, set[str]] = defaultdict(set)
        # Local hours (the hospital's clock): per user over all days, and per user-day.
        self.clock = clock
        self.hours: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
        self.day_hours: dict[tuple[str, int], list[int]] = {}
        self.session_sizes: dict[str, list[float]] = defaultdict(list)
        self.failures: dict[str, list[float]] = defaultdict(list)
        del index
        self._networks: dict[str, str] = {}  # address -> its network, worked out once
        self._add(state)

    def export(self) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """The devices and networks in use, with their users, as plain values (one share of
        the hospital, for `absorb` elsewhere)."""
        return dict(self.devices), dict(self.ips)

    def absorb(self, other: tuple[dict[str, set[str]], dict[str, set[str]]]) -> None:
        """Other accounts' devices and networks (`export` of another share of the hospital):
        what is novel is then judged against both."""
        devices, ips = other
        for device, users in devices.items():
            self.devices[device] |= users
        for net, users in ips.items():
            self.ips[net] |= users

    def refresh(self, state: StreamState, view: StreamState) -> None:
        """Live: the accounts of `view` (all their days) learned again, and the failures
        again from `state`; everyone else stays as learned (the hospital-wide devices and
        networks only grow)."""
        users = {ud.user for ud in view.days.values()}
        for user in users:
            self.hours.pop(user, None)
            self.device_days.pop(user, None)
            self.ip_days.pop(user, None)
            self.session_sizes.pop(user, None)
        for key in [k for k in self.day_hours if k[0] in users]:
            del self.day_hours[key]
        self._add(view, failures=state)

    def _add(self, state: StreamState, failures: StreamState | None = None) -> None:
        self.failures.clear()
        for f in (failures or state).failures:
            self.failures[f.user].append(f.ts)
        clock, networks = self.clock, self._networks
        for key, ud in state.days.items():
            user, day = ud.user, ud.day
            local = self.day_hours[key] = clock.day_hours(day, ud.hours)
            self.hours[user] = list(map(operator.add, self.hours[user], local))
            device_days, ip_days = self.device_days[user], self.ip_days[user]
            for sess in ud.sessions.values():
                if sess.device:
                    device_days[sess.device].add(day)
                    self.devices[sess.device].add(user)
                for ip in (sess.ip, *sess.ips):
                    if ip:
                        net = networks.get(ip)
                        if net is None:
                            net = networks[ip] = network(ip)
                        ip_days[net].add(day)
                        self.ips[net].add(user)
                if sess.n:
                    self.session_sizes[user].append(len(sess.patients))


def stolen_findings(
    state: StreamState,
    index: ContextIndex,
    settings: DetectSettings,
    unlinked: set[tuple[str, int, str]] | None = None,
    *,
    history: History | None = None,
) -> list[Finding]:
    """`unlinked`: (user, day, patient) of accesses that neither a care link nor the peers'
    norms explain (relationship.relationship_findings). `history` (live): what
    `build_history` learned of the whole hospital, when `state` is only some accounts."""
    if history is None:
        history = build_history(state, index, settings)
    findings: list[Finding] = []
    strangers = unlinked or set()
    for ud in state.days.values():
        if not ud.sessions:
            continue
        for sess in ud.sessions.values():
            found = _judge(ud, sess, history, settings, strangers)
            if found is not None:
                findings.append(found)
    return findings


def build_history(state: StreamState, index: ContextIndex, settings: DetectSettings) -> History:
    """Where and when every account and the hospital usually work (for `stolen_findings`)."""
    return History(state, index, index.clock(settings.timezone))


def _judge(
    ud: UserDay,
    sess: Session,
    history: History,
    settings: DetectSettings,
    strangers: set[tuple[str, int, str]],
) -> Finding | None:
    user = ud.user
    novelty: list[str] = []
    if sess.device:
        days = history.device_days[user].get(sess.device, set())
        others = history.devices.get(sess.device, set()) - {user}
        if not (days <= {ud.day} and not others):
            # The user's own known device on a new address is the user travelling or a new
            # home connection, not someone else.
            return None
        novelty.append(
            f"device {sess.device} never used by this user on any other day, nor by "
            "anyone else here"
        )
    ips = [ip for ip in (sess.ip, *sess.ips) if ip]
    new_ips = [
        ip
        for ip in ips
        if history.ip_days[user].get(network(ip), set()) <= {ud.day}
        and not (history.ips.get(network(ip), set()) - {user})
    ]
    if new_ips:
        novelty.append(
            f"address {', '.join(sorted(new_ips))[:60]} in a network never used by this user "
            "on any other day, nor by anyone else here"
        )
    if not novelty:
        return None
    behaviour: list[str] = []
    score = 0.0
    # The user's hours on other days (this day's own activity, the intruder's included, left
    # out).
    clock = history.clock
    own = history.day_hours[(user, ud.day)]
    hours = [a - b for a, b in zip(history.hours[user], own, strict=True)]
    total = sum(hours) or 1
    spanned = clock.span_hours(sess.first, sess.last)
    odd = sorted(h for h in spanned if hours[h] / total < 0.02)
    if odd and len(odd) == len(spanned):
        behaviour.append(
            f"active at {', '.join(f'{h:02d}:00' for h in odd[:4])} {clock.label}, hours "
            "when this user almost never works"
        )
        score += 0.1
    sizes = Robust.of(history.session_sizes[user])
    z = sizes.z(len(sess.patients))
    if len(sess.patients) >= 10 and z >= 4:
        behaviour.append(
            f"{len(sess.patients)} patients opened in this session; this user usually opens "
            f"about {sizes.median:.0f}"
        )
        score += min(0.15, 0.02 * z)
    concurrent = _concurrent(ud, sess, settings.concurrent_minutes * 60)
    if concurrent is not None:
        behaviour.append(
            f"at the same time the owner was working from {concurrent}: two people on one account"
        )
        score += 0.15
    recent_failures = [
        t for t in history.failures.get(user, ()) if sess.first - 3600 <= t <= sess.first
    ]
    if recent_failures:
        behaviour.append(f"{len(recent_failures)} failed sign-in(s) in the hour before")
        score += 0.05
    unlinked = sum(1 for p in sess.patients if (user, ud.day, p) in strangers)
    foreign = unlinked >= 3 and unlinked * 2 >= len(sess.patients)
    if foreign:
        # The owner's work is their own patients (an on-call night from home included);
        # someone else behind the account reads strangers.
        behaviour.append(
            f"{unlinked} of the {len(sess.patients)} patients opened in this session have no "
            "care link with this user and are not patients colleagues of the same job open"
        )
        score += 0.1
    strong = concurrent is not None or (len(sess.patients) >= 10 and z >= 4) or foreign
    # Novelty alone is a new workstation: it takes a strong behavioural sign or two weaker.
    if len(novelty) + len(behaviour) < settings.stolen_min_signals or not (
        strong or len(behaviour) >= 2
    ):
        return None
    return Finding(
        kind="stolen_credentials",
        severity="critical" if len(behaviour) >= 2 else "high",
        score=min(0.97, 0.65 + 0.05 * len(novelty) + score),
        user=user,
        patient=None,
        first=sess.first,
        last=sess.last,
        start=sess.t0,
        end=sess.t1,
        events=list(sess.ids),
        reasons=[*novelty, *behaviour],
    )


def network(ip: str) -> str:
    """The /16 of an IPv4 address (VPN and DHCP pools hand out a new address in the same
    network each time), the address itself otherwise."""
    parts = ip.split(".")
    return ".".join(parts[:2]) if len(parts) == 4 else ip


def _concurrent(ud: UserDay, sess: Session, slack: float) -> str | None:
    for other in ud.sessions.values():
        if other is sess or other.ip == sess.ip or other.n < 3:
            continue
        if other.first - slack <= sess.last and sess.first <= other.last + slack:
            return f"{other.device or other.ip} ({other.ip or 'no address'})"
    return None
