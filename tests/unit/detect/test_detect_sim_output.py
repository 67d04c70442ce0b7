"""The hospital simulator: deterministic bytes, the DESIGN.md formats exactly, every attack kind
labelled with events that exist, and the legitimate look-alikes detectors must live with."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from egide.detect.simulate import ATTACK_KINDS, simulate, write_simulation

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
EVENT_FIELDS = (
    "id",
    "time",
    "user",
    "action",
    "outcome",
    "patient",
    "resource_type",
    "count",
    "ip",
    "device",
    "purpose",
)
ACTIONS = {
    "login",
    "login_failed",
    "mfa_failed",
    "logout",
    "read",
    "search",
    "create",
    "update",
    "delete",
    "export",
    "break_glass",
}
ROLES = {
    "physician",
    "resident",
    "nurse",
    "secretary",
    "pharmacist",
    "lab",
    "radiology",
    "billing",
    "security_officer",
}
SIZE: dict[str, Any] = {"users": 60, "patients": 1500, "days": 10, "seed": 3}


class Sim:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.events = [json.loads(line) for line in (out / "events.jsonl").open()]
        self.context = json.loads((out / "context.json").read_text())
        self.labels = [json.loads(line) for line in (out / "labels.jsonl").open()]
        self.meta = json.loads((out / "meta.json").read_text())
        self.by_id = {e["id"]: e for e in self.events}
        self.evidence = {i for label in self.labels for i in label["events"]}
        self.users = {u["id"]: u for u in self.context["users"]}
        self.patients = {p["id"]: p for p in self.context["patients"]}
        self.care: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for c in self.context["care"]:
            self.care[c["patient"]].append(c)

    def linked(self, user: str, patient: str, when: str) -> bool:
        dept = self.users[user]["department"]
        return any(
            (c.get("user") == user or c.get("department") == dept) and _active(c, when)
            for c in self.care[patient]
        )

    def under_care(self, patient: str, when: str) -> list[dict[str, Any]]:
        return [c for c in self.care[patient] if _active(c, when)]


def _active(care: dict[str, Any], when: str) -> bool:
    return care["start"] <= when and (care["end"] is None or when <= care["end"])


def _hour(event: dict[str, Any]) -> int:
    return int(event["time"][11:13])


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    out = tmp_path_factory.mktemp("sim")
    write_simulation(simulate(**SIZE), out)
    return Sim(out)


def test_same_seed_same_bytes_other_seed_other_events(tmp_path: Path, sim: Sim) -> None:
    again = tmp_path / "again"
    write_simulation(simulate(**SIZE), again)
    for name in ("events.jsonl", "context.json", "labels.jsonl", "meta.json"):
        assert (again / name).read_bytes() == (sim.out / name).read_bytes(), name
    other = tmp_path / "other"
    write_simulation(simulate(**{**SIZE, "seed": 4}), other)
    assert (other / "events.jsonl").read_bytes() != (sim.out / "events.jsonl").read_bytes()


def test_gzip_is_deterministic_and_holds_the_same_events(tmp_path: Path, sim: Sim) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        write_simulation(simulate(**SIZE), out, compress=True)
        assert not (out / "events.jsonl").exists()
    packed = (first / "events.jsonl.gz").read_bytes()
    assert packed == (second / "events.jsonl.gz").read_bytes()
    assert gzip.decompress(packed) == (sim.out / "events.jsonl").read_bytes()


def test_events_follow_the_access_event_format(sim: Sim) -> None:
    assert len(sim.events) > 20_000
    for e in sim.events:
        assert tuple(e) == EVENT_FIELDS
        assert isinstance(e["id"], str)
        assert TIME.match(e["time"]), e
        assert isinstance(e["user"], str)
        assert e["action"] in ACTIONS
        assert e["outcome"] in {"success", "denied", "error"}
        for field in ("patient", "resource_type", "ip", "device", "purpose"):
            assert e[field] is None or isinstance(e[field], str), (field, e)
        assert type(e["count"]) is int
        assert e["count"] >= 0
    assert len(sim.by_id) == len(sim.events), "event ids are unique"
    times = [e["time"] for e in sim.events]
    assert times == sorted(times), "events are in time order"
    assert times[0] >= "2026-03-02T00:00:00Z"
    assert times[-1] < "2026-03-12T00:00:00Z"
    seen_actions = Counter(e["action"] for e in sim.events)
    assert set(seen_actions) >= ACTIONS, ACTIONS - set(seen_actions)


def test_context_follows_the_detection_context_format(sim: Sim) -> None:
    ctx = sim.context
    assert set(ctx) == {"users", "patients", "care"}
    assert len(ctx["users"]) == SIZE["users"]
    assert len(ctx["patients"]) == SIZE["patients"]
    for u in ctx["users"]:
        assert set(u) == {"id", "role", "department", "family_name", "postal_code", "address"}
        assert u["role"] in ROLES
        assert all(isinstance(v, str) and v for v in u.values())
    assert {u["role"] for u in ctx["users"]} == ROLES
    assert 8 <= len({u["department"] for u in ctx["users"]}) <= 15
    for p in ctx["patients"]:
        assert set(p) == {
            "id",
            "family_name",
            "postal_code",
            "address",
            "vip",
            "employee",
            "deceased",
        }
        assert isinstance(p["vip"], bool)
        assert isinstance(p["deceased"], bool)
        assert p["employee"] is None or p["employee"] in sim.users
    assert len({u["id"] for u in ctx["users"]}) == SIZE["users"]
    assert len(sim.patients) == SIZE["patients"]
    departments = {u["department"] for u in ctx["users"]}
    for c in ctx["care"]:
        assert c["patient"] in sim.patients
        assert ("user" in c) != ("department" in c)
        assert c.get("user") is None or c["user"] in sim.users
        assert c.get("department") is None or c["department"] in departments
        assert TIME.match(c["start"])
        assert c["end"] is None or (TIME.match(c["end"]) and c["start"] <= c["end"])
    assert any(c["end"] is None for c in ctx["care"])


def test_the_population_is_realistically_confusing(sim: Sim) -> None:
    """Shared surnames, shared postal codes, staff who are patients, VIPs, the deceased."""
    patients = sim.context["patients"]
    names = Counter(p["family_name"] for p in patients)
    assert names.most_common(1)[0][1] >= 20, "common surnames are shared by strangers"
    codes = Counter(p["postal_code"] for p in patients)
    assert 20 <= len(codes) <= 60
    assert sum(p["vip"] for p in patients) >= 3
    assert sum(p["deceased"] for p in patients) >= 2
    employees = [p for p in patients if p["employee"]]
    assert employees
    for p in employees:
        u = sim.users[p["employee"]]
        assert (p["family_name"], p["postal_code"], p["address"]) == (
            u["family_name"],
            u["postal_code"],
            u["address"],
        )
    reading = {e["user"] for e in sim.events if e["action"] == "read"}
    devices: dict[str, set[str]] = defaultdict(set)
    for e in sim.events:
        if e["device"]:
            devices[e["device"]].add(e["user"])
    assert any(len(users) > 3 for users in devices.values()), "ward workstations are shared"
    assert len(reading) > SIZE["users"] * 0.8


def test_every_attack_kind_is_labelled_with_existing_events(sim: Sim) -> None:
    kinds = Counter(label["kind"] for label in sim.labels)
    assert set(kinds) == set(ATTACK_KINDS)
    assert len({label["id"] for label in sim.labels}) == len(sim.labels)
    variants = {(label["kind"], label["variant"]) for label in sim.labels}
    assert {("exfiltration", "burst"), ("exfiltration", "slow")} <= variants
    assert {("credential_stuffing", "stuffing"), ("credential_stuffing", "brute_force")} <= (
        variants
    )
    for label in sim.labels:
        assert set(label) == {
            "id",
            "kind",
            "variant",
            "user",
            "patient",
            "start",
            "end",
            "events",
            "description",
        }
        events = [sim.by_id[i] for i in label["events"]]
        assert events, label["id"]
        assert label["start"] == min(e["time"] for e in events)
        assert label["end"] == max(e["time"] for e in events)
        if label["user"] is not None and label["variant"] != "stuffing":
            assert {e["user"] for e in events} == {label["user"]}, label["id"]
        if label["patient"] is not None:
            assert {e["patient"] for e in events} <= {label["patient"], None}
    # Labels never share events: each event is the evidence of one attack at most.
    assert sum(len(label["events"]) for label in sim.labels) == len(sim.evidence)
    assert sim.meta["attacks"] == len(sim.labels)
    assert sim.meta["attacks_by_kind"] == dict(kinds)


def test_targeted_attacks_have_the_relationship_they_claim(sim: Sim) -> None:
    for label in sim.labels:
        kind, user_id, patient_id = label["kind"], label["user"], label["patient"]
        if kind not in {"snooping", "vip", "coworker", "family", "self_access"}:
            continue
        user, patient = sim.users[user_id], sim.patients[patient_id]
        for i in label["events"]:
            e = sim.by_id[i]
            if e["patient"]:
                assert not sim.linked(user_id, patient_id, e["time"]), label["id"]
        if kind == "vip":
            assert patient["vip"]
        elif kind == "coworker":
            assert patient["employee"] not in {None, user_id}
        elif kind == "self_access":
            assert patient["employee"] == user_id
        elif kind == "family":
            assert patient["family_name"] == user["family_name"]
            assert patient["postal_code"] == user["postal_code"]
        else:
            assert patient["family_name"] != user["family_name"]


def test_bulk_attacks_look_like_bulk(sim: Sim) -> None:
    for label in sim.labels:
        events = [sim.by_id[i] for i in label["events"]]
        actions = Counter(e["action"] for e in events)
        if label["kind"] == "credential_stuffing":
            assert actions["login_failed"] >= 15
            accounts = {e["user"] for e in events if e["action"] == "login_failed"}
            assert (len(accounts) == 1) == (label["variant"] == "brute_force")
        elif label["kind"] == "mass_modification":
            assert actions["update"] + actions["delete"] >= 30
        elif label["kind"] == "exfiltration" and label["variant"] == "burst":
            assert len({e["patient"] for e in events if e["patient"]}) >= 30
        elif label["kind"] == "stolen_credentials":
            owner_devices = {
                e["device"]
                for e in sim.events
                if e["user"] == label["user"] and e["id"] not in label["events"]
            }
            assert events[0]["device"] not in owner_devices
        elif label["kind"] == "break_glass_abuse":
            glass = [e for e in events if e["action"] == "break_glass"]
            assert len(glass) == 1
            assert not sim.under_care(glass[0]["patient"], glass[0]["time"])


def test_consults_without_a_care_link_happen(sim: Sim) -> None:
    """Physicians read patients admitted in another department, with no care link to them."""
    consults = set()
    for e in sim.events:
        if e["action"] != "read" or e["id"] in sim.evidence or not e["patient"]:
            continue
        if sim.users[e["user"]]["role"] != "physician":
            continue
        if sim.linked(e["user"], e["patient"], e["time"]):
            continue
        if sim.under_care(e["patient"], e["time"]):
            consults.add((e["user"], e["patient"]))
    assert len(consults) >= 10


def test_service_departments_read_across_departments_without_care(sim: Sim) -> None:
    """Laboratory, radiology and pharmacy have no care entries yet read many patients."""
    for role in ("lab", "radiology", "pharmacist"):
        staff = {u["id"] for u in sim.context["users"] if u["role"] == role}
        assert not any(c.get("user") in staff for c in sim.context["care"])
        read = {
            e["patient"]
            for e in sim.events
            if e["user"] in staff and e["action"] == "read" and e["id"] not in sim.evidence
        }
        assert len(read) >= 30, role


def test_billing_batches_read_hundreds_of_records_in_a_burst(sim: Sim) -> None:
    billing = {u["id"] for u in sim.context["users"] if u["role"] == "billing"}
    exports = [
        e
        for e in sim.events
        if e["user"] in billing and e["action"] == "export" and e["purpose"] == "claims submission"
    ]
    assert exports
    for export in exports:
        end = dt.datetime.fromisoformat(export["time"])
        start = (end - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        burst = {
            e["patient"]
            for e in sim.events
            if e["user"] == export["user"]
            and e["action"] == "read"
            and start <= e["time"] <= export["time"]
        }
        assert len(burst) >= 25
        assert export["id"] not in sim.evidence


def test_legitimate_night_break_glass_on_patients_in_care(sim: Sim) -> None:
    legit = [
        e
        for e in sim.events
        if e["action"] == "break_glass"
        and e["id"] not in sim.evidence
        and (_hour(e) >= 19 or _hour(e) < 7)
    ]
    assert legit
    for e in legit:
        assert e["purpose"]
        assert sim.under_care(e["patient"], e["time"]), e


def test_sign_in_noise_typos_and_remote_work(sim: Sim) -> None:
    ordinary = [e for e in sim.events if e["id"] not in sim.evidence]
    failed = [e for e in ordinary if e["action"] == "login_failed"]
    assert failed
    assert all(e["outcome"] == "denied" for e in failed)
    # A typo is followed by the same person's sign-in from the same workstation.
    logins = {(e["user"], e["device"]) for e in ordinary if e["action"] == "login"}
    assert all((e["user"], e["device"]) in logins for e in failed)
    assert any(e["ip"] and not e["ip"].startswith("10.") for e in ordinary), "remote access"
    exports = {sim.users[e["user"]]["role"] for e in ordinary if e["action"] == "export"}
    assert {"physician", "secretary", "billing"} <= exports


def test_meta_counts_user_days(sim: Sim) -> None:
    pairs = {(e["user"], e["time"][:10]) for e in sim.events}
    assert sim.meta["user_days"] == len(pairs)
    assert sim.meta["events"] == len(sim.events)
    assert {k: sim.meta[k] for k in SIZE} == SIZE


def test_lines_and_materialise_agree(sim: Sim) -> None:
    run = simulate(**SIZE)
    events, labels = run.materialise()
    assert events == sim.events
    assert labels == sim.labels


@pytest.mark.parametrize(
    ("users", "patients", "days"), [(0, 200, 1), (30, 10, 1), (30, 200, 0), (-5, 200, 3)]
)
def test_bad_sizes_are_refused(users: int, patients: int, days: int) -> None:
    with pytest.raises(ValueError, match="must be between"):
        simulate(users=users, patients=patients, days=days, seed=1)


def test_start_sets_the_calendar(tmp_path: Path) -> None:
    sim = simulate(
        users=30,
        patients=200,
        days=2,
        seed=9,
        start=dt.datetime(2025, 12, 31, 15, 0, tzinfo=dt.UTC),
    )
    events, _labels = sim.materialise()
    assert events[0]["time"].startswith("2025-12-31T")
    assert events[-1]["time"] < "2026-01-02T00:00:00Z"
    days: list[int] = []
    write_simulation(
        simulate(users=30, patients=200, days=3, seed=9, progress=days.append), tmp_path
    )
    assert days == [1, 2, 3]


def test_ordinary_work_never_opens_the_workers_own_record(sim: Sim) -> None:
    """Every self-access in the output is a labelled attack, so the ground truth stays clean."""
    own = {p["employee"]: p["id"] for p in sim.context["patients"] if p["employee"]}
    for e in sim.events:
        if e["patient"] and own.get(e["user"]) == e["patient"]:
            assert e["id"] in sim.evidence, e
