"""Detection thresholds, in one place, each with why it has the value it has.

Security role: these numbers trade missed misuse against the privacy officer's workload
(≤ 5 alerts per 1000 user-days is the goal). They describe behaviours (how many records in how
long, how unusual for peers), not any one hospital or the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DetectSettings:
    # Care links: a link covers from this long before its start (the emergency access comes
    # before the admission is typed in) to this long after its end (results and letters).
    care_before_hours: float = 48.0
    care_after_days: float = 14.0
    # Access model: an uncovered access is ordinary when at least this share of the peer
    # group's pair-days go, in the same way (documenting or only reading), to patients in the
    # same situation (treated by the same department, or in no one's care). Consults, night
    # cross-cover, laboratory, pharmacy and billing work are pathways worth a percent or more
    # of a group's work; curiosity is a pathway the group almost never takes.
    affinity_ordinary: float = 0.005
    # Night (UTC hours, from and until) for the access model: cross-cover and on-call work are
    # judged against what peers do at night. Set to the hospital's local night in UTC.
    night_hours: tuple[int, int] = (20, 7)
    # Sensitive patients (VIP, coworker): a read-only look is ordinary only above this share.
    affinity_sensitive: float = 0.01
    # Peers: if this many others of the same group touched the patient, it is team work (when
    # the group takes such a pathway at all: above a fifth of `affinity_ordinary`).
    peers_ordinary: int = 1
    # The least pair-days of others in a peer group for its shares to mean something; smaller
    # groups are compared with the whole role.
    group_min_pair_days: int = 50
    # A user's own habit: patients of a department this user accesses without care link on at
    # least this many other days (the lone neurologist covering intensive care each night).
    habit_days: int = 3
    # Slow exfiltration: an account reading at least this many patients without care link
    # and without peer precedent, spread over at least `slow_days` days, is copying data,
    # not curious.
    slow_patients: int = 25
    slow_days: int = 3
    # Volume bursts: a window this long, and the least volume worth an alert.
    burst_window_minutes: float = 60.0
    export_min_records: int = 40
    read_burst_min_patients: int = 40
    # A burst must exceed the user's own usual by this many robust deviations and the peer
    # group's high quantile by this factor.
    burst_z: float = 6.0
    burst_peer_factor: float = 1.5
    peer_quantile: float = 0.99
    # Mass modification: updates or deletes in one window.
    write_min_records: int = 40
    # Credentials.
    brute_force_failures: int = 8
    stuffing_accounts: int = 5
    failure_window_minutes: float = 30.0
    concurrent_minutes: float = 0.0
    stolen_min_signals: int = 2
    # Break-the-glass: more than this many in a week by one account is a habit, not
    # emergencies.
    break_glass_weekly: int = 3
    # Cases: findings of one user and kind closer than this are one case.
    case_gap_days: float = 7.0
    # Live micro-batches: score closed days as they end (batch scores once at the end).
    live: bool = False
