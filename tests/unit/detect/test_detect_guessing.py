"""Password guessing judged by where the success came from, round by round; a new account's
first day judged against its peers (issue 6; found by the live-mode security review)."""

from __future__ import annotations

from egide.detect.engine import detect
from egide.detect.events import Alert
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
