"""Detection thresholds, in one place, each with why it has the value it has.

Security role: these numbers trade missed misuse against the privacy officer's workload
(≤ 5 alerts per 1000 user-days is the goal). They describe behaviours (how many records in how
long, how unusual for peers), not any one hospital or the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from egide.detect.clock import zone


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
    # Night (local hours, from and until) for the access model: cross-cover and on-call work
    # are judged against what peers do at night.
    night_hours: tuple[int, int] = (20, 7)
    # The hospital's time zone (IANA name, e.g. "Europe/Paris"): the clock of every judgement
    # by hour (night, hours a user never works) and of the times in reasons. None: the
    # context's "timezone", else UTC. Daylight saving time follows the zone's rules.
    timezone: str | None = None
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
    # Live: the hospital-wide access model (what peers do) is rebuilt at most this often, in
    # stream time; between rebuilds, each micro-batch judges only the accounts it touched
    # against the last model (a model of weeks barely moves in minutes).
    live_model_minutes: float = 10.0
    # Live: accesses without care link are judged once this many days after theirs have
    # ended (a note or result documented after midnight still explains the look).
    live_settle_days: int = 1
    # Officer feedback: after a false positive, a new case of the same kind for the same
    # account (and patient, for the relationship kinds) is quiet for this long unless it is
    # stronger (a higher severity, or a score above the dismissed one by this margin).
    feedback_days: float = 30.0
    feedback_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.timezone is not None:
            zone(self.timezone)  # UnknownZoneError (a ValueError) now, not at scoring
