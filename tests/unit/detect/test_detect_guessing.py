"""Password guessing judged by where the success came from, round by round; a new account's
first day judged against its peers (issue 6; found by the live-mode security review)."""

from __future__ import annotations

from egide.detect.credentials import logins_of, stuffing_findings, stuffing_windows
from egide.detect.engine import Detector, detect
from egide.detect.events import Alert
from egide.detect.settings import DetectSettings
from tests.unit.detect.detect_world import World, build


def _guessing(world: World, user: dict[str, object], day: int, hour: float) -> list[str]:
    bot = dict(user, _ip="192.0.2.50", _device=None)
    return [
        world.event(bot, day, hour + k / 200, "login_failed", outcome="denied") for k in range(9)
    ]


def _stuffing(world: World) -> list[Alert]:
    return [
        a for a in detect(world.sorted_events(), world.context()) if a.kind == "credential_stuffing"
    ]


def test_the_owner_signing_in_from_her_ward_after_a_strangers_guesses_is_not_a_takeover() -> None:
    world = build()
    nurse = world.user("surgery", "nurse", 2)
    _guessing(world, nurse, 9, 1.0)
    world.event(nurse, 9, 1.2, "login")  # her own workstation, her usual address
    [alert] = _stuffing(world)
    assert alert.severity == "high"
    assert any("usually works from" in r for r in alert.reasons)


def test_a_sign_in_from_the_guessing_address_is_a_takeover() -> None:
    world = build()
    nurse = world.user("surgery", "nurse", 2)
    _guessing(world, nurse, 9, 1.0)
    world.event(dict(nurse, _ip="192.0.2.50", _device=None), 9, 1.2, "login")
    [alert] = _stuffing(world)
    assert alert.severity == "critical"
    assert any("guessing source" in r for r in alert.reasons)


def test_each_round_of_guessing_is_judged() -> None:
    world = build()
    nurse = world.user("surgery", "nurse", 2)
    _guessing(world, nurse, 3, 1.0)
    _guessing(world, nurse, 20, 1.0)  # weeks later: a case of its own
    world.event(dict(nurse, _ip="192.0.2.50", _device=None), 20, 1.2, "login")
    severities = sorted(a.severity for a in _stuffing(world))
    assert severities == ["critical", "high"]


def test_a_new_accounts_first_day_export_is_judged_against_its_peers() -> None:
    world = build()
    # The same workstation and address as a colleague: nothing new but the account.
    newcomer = dict(world.user("surgery", "nurse", 0), id="u-new-token")
    world.users.append({k: v for k, v in newcomer.items() if not k.startswith("_")})
    for k in range(300):
        world.event(newcomer, 20, 2.0 + k / 600, "export", patient=world.patients[k]["id"])
    alerts = [a for a in detect(world.sorted_events(), world.context()) if a.user == "u-new-token"]
    assert [a.kind for a in alerts] == ["exfiltration"], "a first day must not pass unseen"
    assert any("no other day of activity" in r for a in alerts for r in a.reasons)


def test_only_sign_ins_that_can_follow_a_stuffing_window_are_kept() -> None:
    """`logins_of` leaves out the sign-ins `stuffing_findings` cannot count (another source,
    before the window, after its span): the findings are those of every sign-in, and the
    sign-ins at the span's very bounds are kept."""
    world = build()
    x = "198.51.100.7"
    for k, user in enumerate(world.users[:8]):
        world.event(dict(user, _ip=x, _device=None), 4, 3.0 + k / 600, "login_failed")
    window_end = 3.0 + 7 / 600
    width_hours = DetectSettings().failure_window_minutes / 60
    from_x = [dict(u, _ip=x, _device=None) for u in world.users[8:14]]
    for who, hour in zip(
        from_x,
        [2.9, 3.0, 3.05, window_end + width_hours, window_end + width_hours + 1 / 3600, 5.0],
        strict=True,
    ):
        world.event(who, 4, hour, "login")
    detector = Detector(world.context())
    detector.feed(world.sorted_events())
    state, settings = detector.state, detector.settings
    windows = stuffing_windows(state.failures, settings)
    every = [
        (a[0], a[2], ud.user, a[5] or a[6] or "-")
        for ud in state.days.values()
        for a in ud.auth
        if a[4] == "login"
    ]
    kept = logins_of(state, windows, settings)
    assert len(windows) == 1
    assert len(every) > len(kept) >= 3  # in the window, and at the end of its span
    assert {user for _, _, user, _ in kept} == {u["id"] for u in from_x[1:4]}
    assert stuffing_findings(windows, kept, settings) == stuffing_findings(windows, every, settings)
    assert logins_of(state, [], settings) == []
