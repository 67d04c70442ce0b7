"""Every kind of misuse, injected into an ordinary month, alerts with the right kind, evidence
and reason; the legitimate look-alikes of ordinary work do not alert."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from egide.detect.engine import Detector, detect
from egide.detect.events import Alert
from tests.unit.detect.detect_world import World, build, stamp


@cache
def _baseline_alerts() -> tuple[Alert, ...]:
    world = build()
    return tuple(detect(world.sorted_events(), world.context()))


def run(world: World) -> list[Alert]:
    return detect(world.sorted_events(), world.context())


def only(alerts: list[Alert], kind: str) -> Alert:
    found = [a for a in alerts if a.kind == kind]
    assert len(found) == 1, [(a.kind, a.user, a.reasons) for a in alerts]
    return found[0]


def test_ordinary_month_raises_no_alert() -> None:
    # Consults without care link, laboratory and pharmacy across departments, the billing
    # month-end batch and night emergencies with a reason and an admission are all in it.
    assert _baseline_alerts() == ()


def test_snooping_on_an_unrelated_patient() -> None:
    world = build()
    nurse = world.user("surgery", "nurse", 1)
    target = world.some_patient_not_in_care()
    ids = [world.event(nurse, 10, 14.0 + k / 30, "read", patient=target["id"]) for k in range(3)]
    alert = only(run(world), "snooping")
    assert alert.user == nurse["id"]
    assert alert.patient == target["id"]
    assert set(alert.events) == set(ids)
    assert any("no appointment, admission or care-team link" in r for r in alert.reasons)


def test_vip_record() -> None:
    world = build()
    vip = next(p for p in world.patients if p["vip"])
    user = world.user("internal_medicine", "nurse", 0)
    eid = world.event(user, 12, 10.0, "read", patient=vip["id"])
    alert = only(run(world), "vip")
    assert alert.events == (eid,)
    assert any("VIP" in r for r in alert.reasons)


def test_coworker_record() -> None:
    world = build()
    colleague = world.user("pharmacy", None, 2)
    target = world.some_patient_not_in_care()
    target["employee"] = colleague["id"]
    snoop = world.user("cardiology", "nurse", 0)
    eid = world.event(snoop, 9, 11.0, "read", patient=target["id"])
    alert = only(run(world), "coworker")
    assert alert.events == (eid,)
    assert alert.user == snoop["id"]
    assert any("employee" in r for r in alert.reasons)


def test_family_needs_name_and_postal_code() -> None:
    world = build()
    user = world.user("surgery", "nurse", 0)
    relative = world.some_patient_not_in_care()
    relative["family_name"] = user["family_name"]
    relative["postal_code"] = user["postal_code"]
    eid = world.event(user, 8, 15.0, "read", patient=relative["id"])
    alert = only(run(world), "family")
    assert alert.events == (eid,)
    assert "same family name and postal code as the user" in alert.reasons


def test_common_surname_alone_is_not_family() -> None:
    world = build()
    user = world.user("laboratory", None, 1)  # surname Martin/Bernard/... shared by many
    assert not user["family_name"].startswith("Staff")
    alerts = [a for a in run(world) if a.kind == "family"]
    assert alerts == []


def test_self_access() -> None:
    world = build()
    user = world.user("emergency", "nurse", 1)
    me = world.some_patient_not_in_care()
    me["employee"] = user["id"]
    eid = world.event(user, 6, 13.0, "read", patient=me["id"])
    alert = only(run(world), "self_access")
    assert alert.events == (eid,)
    assert alert.patient == me["id"]
    assert any("own patient record" in r for r in alert.reasons)


def test_exfiltration_burst_of_exports() -> None:
    world = build()
    user = world.user("internal_medicine", "physician", 0)
    ids = [
        world.event(user, 15, 2.0 + k / 240, "export", patient=p["id"], count=1)
        for k, p in enumerate(world.patients[:47])
    ]
    alerts = run(world)
    alert = only(alerts, "exfiltration")
    assert set(ids) <= set(alert.events)
    assert any(r.startswith("47 records exported between 02:00 and 02:1") for r in alert.reasons)
    assert "this user has never exported records on any other day" in alert.reasons


def test_slow_exfiltration_over_days() -> None:
    world = build()
    user = world.user("surgery", "physician", 1)
    cared = {c["patient"] for c in world.care}
    spare = [p["id"] for p in world.patients if p["id"] not in cared and not p["vip"]]
    ids = []
    for day in range(5, 15):
        for k, pid in enumerate(spare[(day - 5) * 8 : (day - 4) * 8]):
            ids.append(world.event(user, day, 16 + k / 20, "read", patient=pid))
    alert = only(run(world), "exfiltration")
    assert set(ids) <= set(alert.events)
    assert any("slow extra reading" in r for r in alert.reasons)
    assert not [a for a in run(world) if a.kind == "snooping"]


def test_stolen_credentials_new_device_at_night_while_owner_works() -> None:
    world = build()
    owner = world.user("cardiology", "nurse", 2)
    thief = dict(owner, _ip="203.0.113.9", _device="laptop-unknown")
    ids = [world.event(thief, 11, 8.3, "login")]
    cared = world.admitted[11]["surgery"] + world.admitted[11]["emergency"]
    ids += [world.event(thief, 11, 8.4 + k / 60, "read", patient=p) for k, p in enumerate(cared)]
    alert = only(run(world), "stolen_credentials")
    assert set(ids) == set(alert.events)
    assert any("never used by this user" in r for r in alert.reasons)
    assert any("at the same time the owner was working" in r for r in alert.reasons)


def test_new_workstation_alone_is_not_stolen_credentials() -> None:
    world = build()
    owner = world.user("surgery", "nurse", 0)
    owner["_device"] = "ws-new-17"
    day = 20
    world.event(owner, day, 8.0, "login")
    world.event(owner, day, 8.1, "read", patient=world.admitted[day]["surgery"][0])
    assert [a for a in run(world) if a.kind == "stolen_credentials"] == []


def test_credential_stuffing_from_one_address() -> None:
    world = build()
    ids = []
    for k, user in enumerate(world.users[:12]):
        bot = dict(user, _ip="198.51.100.7", _device=None)
        ids.append(world.event(bot, 4, 3.0 + k / 600, "login_failed", outcome="denied"))
    alert = only(run(world), "credential_stuffing")
    assert set(ids) == set(alert.events)
    assert any("12 different accounts" in r for r in alert.reasons)


def test_brute_force_on_one_account() -> None:
    world = build()
    user = world.user("billing", None, 0)
    bot = dict(user, _ip="192.0.2.50", _device=None)
    ids = [world.event(bot, 9, 1.0 + k / 200, "login_failed", outcome="denied") for k in range(15)]
    alert = only(run(world), "credential_stuffing")
    assert set(ids) <= set(alert.events)
    assert any("15 failed sign-ins" in r for r in alert.reasons)


def test_mass_modification() -> None:
    world = build()
    user = world.user("internal_medicine", "nurse", 3)
    ids = [
        world.event(
            user, 17, 23.0 + k / 600, "delete", patient=p["id"], resource_type="Observation"
        )
        for k, p in enumerate(world.patients[:120])
    ]
    alert = only(run(world), "mass_modification")
    assert set(ids) <= set(alert.events)
    assert alert.severity == "critical"
    assert any("120 of them deleted" in r for r in alert.reasons)


def test_break_glass_without_care_afterwards() -> None:
    world = build()
    user = world.user("surgery", "physician", 0)
    target = world.some_patient_not_in_care()
    bg = world.event(user, 13, 15.0, "break_glass", patient=target["id"], purpose="emergency")
    rd = world.event(user, 13, 15.1, "read", patient=target["id"])
    alert = only(run(world), "break_glass_abuse")
    assert set(alert.events) == {bg, rd}
    assert any("no admission, appointment or care-team link" in r for r in alert.reasons)


def test_night_emergency_break_glass_then_admission_is_fine() -> None:
    # The ordinary month has one every five days; make sure they are there and silent.
    world = build()
    assert sum(1 for e in world.events if e["action"] == "break_glass") >= 5
    assert [a for a in _baseline_alerts() if a.kind == "break_glass_abuse"] == []


def test_cardiology_consult_without_care_link_is_fine() -> None:
    world = build()
    consults = [
        e
        for e in world.events
        if e["user"].startswith("u-card") and e["resource_type"] == "Condition"
    ]
    assert len(consults) > 50  # the look-alike is really in the month
    assert [a for a in _baseline_alerts() if a.user and a.user.startswith("u-card")] == []


def test_one_snooper_one_case() -> None:
    world = build()
    nurse = world.user("emergency", "nurse", 0)
    cared = {c["patient"] for c in world.care}
    targets = [p["id"] for p in world.patients if p["id"] not in cared and not p["vip"]][:4]
    for day, pid in zip((3, 4, 6, 7), targets, strict=True):
        world.event(nurse, day, 12.0, "read", patient=pid)
    alert = only(run(world), "snooping")
    assert alert.patient is None
    assert len(alert.events) == 4
    assert alert.severity == "high"


def test_alert_ids_are_deterministic() -> None:
    def once() -> list[str]:
        world = build()
        nurse = world.user("surgery", "nurse", 1)
        world.event(nurse, 10, 14.0, "read", patient=world.some_patient_not_in_care()["id"])
        return [a.id for a in run(world)]

    assert once() == once()


@pytest.mark.parametrize("chunk", [1000, 7])
def test_micro_batches_give_the_batch_result(chunk: int) -> None:
    """Live updates (a few events at a time, most judged against a cached access model)
    end with the alerts a batch run over the same events gives."""
    world = build(days=10)
    nurse = world.user("surgery", "nurse", 1)
    world.event(nurse, 5, 14.0, "read", patient=world.some_patient_not_in_care()["id"])
    events = world.sorted_events()
    live = Detector(world.context())
    seen: dict[str, Any] = {}
    for i in range(0, len(events), chunk * 100):
        for alert in live.update(events[i : i + chunk * 100]):
            seen[alert.id] = alert  # the latest version of each case
    batch = detect(events, world.context())
    mine = [a for a in batch if a.user == nurse["id"]]
    assert [a.kind for a in mine] == ["snooping"]
    assert mine[0].start == stamp(5, 14.0)
    assert seen[mine[0].id] == mine[0]
    assert {a.id for a in batch} <= set(seen)


def test_an_update_returns_only_what_is_new_or_changed() -> None:
    world = build(days=6)
    nurse = world.user("surgery", "nurse", 1)
    for k in range(9):
        world.event(nurse, 5, 3.0 + k / 60, "login_failed", outcome="denied", ip="198.51.100.9")
    live = Detector(world.context())
    first = [a for a in live.update(world.sorted_events()) if a.user == nurse["id"]]
    assert [a.kind for a in first] == ["credential_stuffing"]
    assert live.update([]) == []  # nothing new: nothing returned again
    later = world.event(nurse, 5, 3.2, "login_failed", outcome="denied", ip="198.51.100.9")
    grown = live.update([world.events[-1]])
    assert [a.id for a in grown] == [first[0].id]  # the same case, grown
    assert later in grown[0].events


def test_live_judges_a_look_without_care_link_once_its_day_is_over() -> None:
    """The note written after the look explains it: live waits until the next day is over
    before calling a look without care link snooping; guessing passwords alerts at once."""
    world = build(days=10)
    nurse = world.user("surgery", "nurse", 1)
    other = world.user("cardiology", "nurse", 0)
    world.event(nurse, 8, 14.0, "read", patient=world.some_patient_not_in_care()["id"])
    live = Detector(world.context())
    assert [a for a in live.update(world.sorted_events()) if a.user == nurse["id"]] == []
    tomorrow = world.event(other, 9, 23.9, "read")
    assert tomorrow
    assert [a for a in live.update([world.events[-1]]) if a.user == nurse["id"]] == []
    world.event(other, 10, 0.1, "read")  # the day after next begins
    ripe = [a for a in live.update([world.events[-1]]) if a.user == nurse["id"]]
    assert [a.kind for a in ripe] == ["snooping"]
