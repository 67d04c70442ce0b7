"""Deterministic generator of a synthetic demonstration clinic as FHIR R4 resources.

`generate_clinic(seed=..., patients=..., staff=..., today=...)` returns a `Clinic`: FHIR R4 JSON
resources (Organization, Practitioner, PractitionerRole, Patient, Appointment, Encounter,
Condition, Observation, MedicationRequest) ordered so that every referenced resource comes before
the resources that refer to it, so they can be loaded one by one or posted as one transaction.

Everything is invented and marked as such:

* every resource carries the HL7 security label `HTEST` (test health data);
* patient identifiers use the system `urn:egide:demo:ins` and look like a French INS/NIR
  (sex, year and month of birth, place of birth, order number, two-digit key) but their key is
  deliberately wrong, so none is a valid NIR and none can be a real person's;
* practitioner identifiers use `urn:egide:demo:rpps`: eleven digits starting with 99 whose Luhn
  check digit is deliberately wrong, so none is a valid RPPS number;
* phone numbers are drawn from the block the French numbering plan reserves for fiction
  (06 39 98 xx xx), e-mail addresses end in the reserved `.invalid` top-level domain;
* names are random combinations of hand-written lists (`names.py`), street names are invented.

Same arguments, same output, byte for byte: one `random.Random(seed)` drives every choice,
including the resource ids. Pure: standard library and `egide.core` only, no I/O.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from egide.cli.demo import names
from egide.core.ids import new_id

Resource = dict[str, Any]

# --- code systems ---------------------------------------------------------------------------
LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
ATC: Final = "http://www.whocc.no/atc"
UCUM: Final = "http://unitsofmeasure.org"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
ORGANIZATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/organization-type"
PRACTITIONER_ROLE: Final = "http://terminology.hl7.org/CodeSystem/practitioner-role"

# Égide's own demonstration systems: the urn:egide:demo: prefix says the values are made up.
RPPS_SYSTEM: Final = "urn:egide:demo:rpps"
INS_SYSTEM: Final = "urn:egide:demo:ins"
FLAGS_SYSTEM: Final = "urn:egide:demo:flags"
ROLE_SYSTEM: Final = "urn:egide:demo:role"
QUALIFICATION_SYSTEM: Final = "urn:egide:demo:qualification"
FINESS_SYSTEM: Final = "urn:egide:demo:finess"
EMAIL_DOMAIN: Final = "demo.egide.invalid"

CLINIC_NAME: Final = "Clinique Égide Démo du Val-Fleuri"

# --- departments and staff -------------------------------------------------------------------
CARDIOLOGY: Final = "Cardiologie"
INTERNAL_MEDICINE: Final = "Médecine interne"
PEDIATRICS: Final = "Pédiatrie"
EMERGENCY: Final = "Urgences"
ONCOLOGY: Final = "Oncologie"
RADIOLOGY: Final = "Radiologie"
PHARMACY: Final = "Pharmacie"
LABORATORY: Final = "Biologie médicale"

DEPARTMENTS: Final = (
    CARDIOLOGY,
    INTERNAL_MEDICINE,
    PEDIATRICS,
    EMERGENCY,
    ONCOLOGY,
    RADIOLOGY,
    PHARMACY,
    LABORATORY,
)
# Departments where patients are seen (Encounter.serviceProvider); the others support them.
CARE_DEPARTMENTS: Final = (CARDIOLOGY, INTERNAL_MEDICINE, PEDIATRICS, EMERGENCY, ONCOLOGY)

ROLES: Final = ("physician", "resident", "nurse", "secretary", "pharmacist", "lab", "radiology")
CLINICIAN_ROLES: Final = frozenset({"physician", "resident"})


@dataclass(frozen=True)
class _RoleInfo:
    label: str  # French job title, PractitionerRole.code text
    hl7_code: str | None  # http://terminology.hl7.org/CodeSystem/practitioner-role, when one fits
    qualification_code: str
    qualification: str  # French diploma name
    title: str | None  # name prefix


ROLE_INFO: Final[dict[str, _RoleInfo]] = {
    "physician": _RoleInfo(
        "Médecin", "doctor", "dem", "Diplôme d'État de docteur en médecine", "Dr"
    ),
    "resident": _RoleInfo(
        "Interne en médecine",
        "doctor",
        "dfasm",
        "Diplôme de formation approfondie en sciences médicales",
        None,
    ),
    "nurse": _RoleInfo(
        "Infirmier diplômé d'État", "nurse", "ide", "Diplôme d'État d'infirmier", None
    ),
    "secretary": _RoleInfo(
        "Secrétaire médicale",
        None,
        "sm",
        "Titre professionnel de secrétaire assistant médical",
        None,
    ),
    "pharmacist": _RoleInfo(
        "Pharmacien", "pharmacist", "dep", "Diplôme d'État de docteur en pharmacie", "Dr"
    ),
    "lab": _RoleInfo(
        "Technicien de laboratoire médical",
        None,
        "tlm",
        "Diplôme d'État de technicien de laboratoire médical",
        None,
    ),
    "radiology": _RoleInfo(
        "Manipulateur en électroradiologie médicale",
        None,
        "merm",
        "Diplôme d'État de manipulateur d'électroradiologie médicale",
        None,
    ),
}

# Who is hired first: the first five give every care department a physician, so even a tiny
# clinic can staff its encounters. Beyond the plan's length, it starts over.
STAFF_PLAN: Final = (
    ("physician", CARDIOLOGY),
    ("physician", INTERNAL_MEDICINE),
    ("physician", PEDIATRICS),
    ("physician", EMERGENCY),
    ("physician", ONCOLOGY),
    ("nurse", EMERGENCY),
    ("nurse", INTERNAL_MEDICINE),
    ("secretary", CARDIOLOGY),
    ("radiology", RADIOLOGY),
    ("pharmacist", PHARMACY),
    ("lab", LABORATORY),
    ("physician", EMERGENCY),
    ("nurse", PEDIATRICS),
    ("nurse", CARDIOLOGY),
    ("resident", INTERNAL_MEDICINE),
    ("physician", CARDIOLOGY),
    ("nurse", ONCOLOGY),
    ("secretary", INTERNAL_MEDICINE),
    ("resident", EMERGENCY),
    ("physician", INTERNAL_MEDICINE),
    ("nurse", EMERGENCY),
    ("secretary", PEDIATRICS),
    ("radiology", RADIOLOGY),
    ("lab", LABORATORY),
    ("resident", PEDIATRICS),
    ("physician", ONCOLOGY),
    ("nurse", INTERNAL_MEDICINE),
    ("secretary", EMERGENCY),
    ("pharmacist", PHARMACY),
    ("resident", CARDIOLOGY),
)


# --- clinical content ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Medication:
    atc: str
    display: str  # international non-proprietary name
    text: str  # French product text
    dosage: str  # French dosage instruction for adults
    child_dosage: str | None = None  # for patients under 12, when the drug is given to them


MEDICATIONS: Final[dict[str, _Medication]] = {
    "ramipril": _Medication(
        "C09AA05", "ramipril", "Ramipril 5 mg, comprimé", "1 comprimé le matin."
    ),
    "metformin": _Medication(
        "A10BA02",
        "metformin",
        "Metformine 1000 mg, comprimé pelliculé",
        "1 comprimé matin et soir, au milieu des repas.",
    ),
    "salbutamol": _Medication(
        "R03AC02",
        "salbutamol",
        "Salbutamol 100 µg/dose, suspension pour inhalation",
        "2 bouffées en cas de gêne respiratoire, sans dépasser 8 bouffées par jour.",
        "2 bouffées avec la chambre d'inhalation en cas de sifflements ou de toux.",
    ),
    "citalopram": _Medication(
        "N06AB04", "citalopram", "Citalopram 20 mg, comprimé", "1 comprimé le matin."
    ),
    "rivaroxaban": _Medication(
        "B01AF01",
        "rivaroxaban",
        "Rivaroxaban 20 mg, comprimé",
        "1 comprimé le soir au cours du repas, ne pas interrompre sans avis médical.",
    ),
    "atorvastatin": _Medication(
        "C10AA05", "atorvastatin", "Atorvastatine 20 mg, comprimé", "1 comprimé le soir."
    ),
    "furosemide": _Medication(
        "C03CA01",
        "furosemide",
        "Furosémide 40 mg, comprimé",
        "1 comprimé le matin ; se peser chaque jour et signaler une prise de 2 kg en 3 jours.",
    ),
    "tiotropium": _Medication(
        "R03BB04",
        "tiotropium bromide",
        "Tiotropium 18 µg, gélule pour inhalation",
        "1 inhalation par jour, à heure fixe.",
    ),
    "tamoxifen": _Medication(
        "L02BA01", "tamoxifen", "Tamoxifène 20 mg, comprimé", "1 comprimé par jour."
    ),
    "ondansetron": _Medication(
        "A04AA01",
        "ondansetron",
        "Ondansétron 8 mg, comprimé",
        "1 comprimé matin et soir pendant les 3 jours qui suivent chaque cure.",
    ),
    "amoxicillin": _Medication(
        "J01CA04",
        "amoxicillin",
        "Amoxicilline 1 g, comprimé dispersible",
        "1 comprimé matin, midi et soir pendant 7 jours.",
        "Suspension buvable : 50 mg/kg/jour en 2 prises pendant 6 jours.",
    ),
    "nitrofurantoin": _Medication(
        "J01XE01",
        "nitrofurantoin",
        "Nitrofurantoïne 50 mg, gélule",
        "2 gélules matin, midi et soir au cours des repas pendant 5 jours.",
    ),
    "paracetamol": _Medication(
        "N02BE01",
        "paracetamol",
        "Paracétamol 1 g, comprimé",
        "1 comprimé toutes les 6 heures si douleur ou fièvre, sans dépasser 4 g par jour.",
        "Suspension buvable : 15 mg/kg toutes les 6 heures si fièvre.",
    ),
}


@dataclass(frozen=True)
class _ConditionKind:
    snomed: str
    display: str  # SNOMED CT preferred term
    text: str  # French
    chronic: bool
    department: str  # the care department that follows it
    medication: str | None  # key into MEDICATIONS


CONDITIONS: Final[dict[str, _ConditionKind]] = {
    # chronic
    "hypertension": _ConditionKind(
        "38341003",
        "Hypertensive disorder",
        "Hypertension artérielle",
        True,
        CARDIOLOGY,
        "ramipril",
    ),
    "diabetes": _ConditionKind(
        "44054006",
        "Diabetes mellitus type 2",
        "Diabète de type 2",
        True,
        INTERNAL_MEDICINE,
        "metformin",
    ),
    "hyperlipidemia": _ConditionKind(
        "55822004", "Hyperlipidemia", "Hypercholestérolémie", True, CARDIOLOGY, "atorvastatin"
    ),
    "asthma": _ConditionKind(
        "195967001", "Asthma", "Asthme", True, INTERNAL_MEDICINE, "salbutamol"
    ),
    "copd": _ConditionKind(
        "13645005",
        "Chronic obstructive lung disease",
        "Bronchopneumopathie chronique obstructive",
        True,
        INTERNAL_MEDICINE,
        "tiotropium",
    ),
    "depression": _ConditionKind(
        "35489007",
        "Depressive disorder",
        "Épisode dépressif caractérisé",
        True,
        INTERNAL_MEDICINE,
        "citalopram",
    ),
    "atrial_fibrillation": _ConditionKind(
        "49436004",
        "Atrial fibrillation",
        "Fibrillation atriale",
        True,
        CARDIOLOGY,
        "rivaroxaban",
    ),
    "heart_failure": _ConditionKind(
        "84114007", "Heart failure", "Insuffisance cardiaque", True, CARDIOLOGY, "furosemide"
    ),
    "breast_cancer": _ConditionKind(
        "254837009",
        "Malignant neoplasm of breast",
        "Cancer du sein",
        True,
        ONCOLOGY,
        "tamoxifen",
    ),
    "lung_cancer": _ConditionKind(
        "254637007",
        "Non-small cell lung cancer",
        "Cancer bronchique non à petites cellules",
        True,
        ONCOLOGY,
        "ondansetron",
    ),
    "colon_cancer": _ConditionKind(
        "363406005",
        "Malignant neoplasm of colon",
        "Cancer du côlon",
        True,
        ONCOLOGY,
        "ondansetron",
    ),
    # acute
    "pneumonia": _ConditionKind(
        "233604007", "Pneumonia", "Pneumopathie infectieuse", False, EMERGENCY, "amoxicillin"
    ),
    "urinary_infection": _ConditionKind(
        "68566005",
        "Urinary tract infectious disease",
        "Infection urinaire",
        False,
        EMERGENCY,
        "nitrofurantoin",
    ),
    "bronchitis": _ConditionKind(
        "10509002", "Acute bronchitis", "Bronchite aiguë", False, EMERGENCY, "paracetamol"
    ),
    "sinusitis": _ConditionKind(
        "444814009", "Viral sinusitis", "Sinusite virale", False, EMERGENCY, "paracetamol"
    ),
    "otitis": _ConditionKind(
        "65363002", "Otitis media", "Otite moyenne aiguë", False, PEDIATRICS, "amoxicillin"
    ),
    "strep_throat": _ConditionKind(
        "43878008",
        "Streptococcal sore throat",
        "Angine à streptocoque",
        False,
        PEDIATRICS,
        "amoxicillin",
    ),
}

ADULT_ACUTE: Final = (
    ("pneumonia", 3),
    ("urinary_infection", 4),
    ("bronchitis", 3),
    ("sinusitis", 2),
)
CHILD_ACUTE: Final = (("otitis", 4), ("strep_throat", 3), ("bronchitis", 2), ("sinusitis", 1))


@dataclass(frozen=True)
class _VitalKind:
    loinc: str
    display: str
    text: str  # French
    category: str  # vital-signs or laboratory
    unit: str
    ucum: str


VITALS: Final[dict[str, _VitalKind]] = {
    "heart_rate": _VitalKind(
        "8867-4", "Heart rate", "Fréquence cardiaque", "vital-signs", "battements/min", "/min"
    ),
    "blood_pressure": _VitalKind(
        "85354-9",
        "Blood pressure panel with all children optional",
        "Pression artérielle",
        "vital-signs",
        "mmHg",
        "mm[Hg]",
    ),
    "systolic": _VitalKind(
        "8480-6",
        "Systolic blood pressure",
        "Pression artérielle systolique",
        "vital-signs",
        "mmHg",
        "mm[Hg]",
    ),
    "diastolic": _VitalKind(
        "8462-4",
        "Diastolic blood pressure",
        "Pression artérielle diastolique",
        "vital-signs",
        "mmHg",
        "mm[Hg]",
    ),
    "weight": _VitalKind("29463-7", "Body weight", "Poids", "vital-signs", "kg", "kg"),
    "height": _VitalKind("8302-2", "Body height", "Taille", "vital-signs", "cm", "cm"),
    "glucose": _VitalKind(
        "2339-0", "Glucose [Mass/volume] in Blood", "Glycémie", "laboratory", "g/L", "g/L"
    ),
}

# French free-text notes a nurse or physician might add to a measurement.
NOTES: Final[dict[str, tuple[str, ...]]] = {
    "heart_rate": (
        "Pouls régulier, mesure après dix minutes de repos.",
        "Légère tachycardie à l'arrivée, contrôlée à la normale après repos.",
        "Anxiété lors de la mesure, à recontrôler en fin de consultation.",
    ),
    "heart_rate_af": (
        "Pouls irrégulier, cohérent avec la fibrillation atriale connue.",
        "Rythme irrégulier, ECG de contrôle demandé.",
    ),
    "blood_pressure": (
        "Mesure en position assise, au bras gauche, brassard adapté.",
        "Contrôle à cinq minutes concordant.",
        "Effet blouse blanche probable : automesure à domicile conseillée.",
    ),
    "weight": (
        "Pesée sans chaussures.",
        "Poids stable depuis la dernière consultation.",
        "Perte de poids à surveiller, conseils diététiques donnés.",
    ),
    "height": (
        "Mesure debout, sans chaussures.",
        "Courbe de croissance reportée dans le carnet de santé.",
    ),
    "height_infant": ("Mesure couchée sur toise pédiatrique.",),
    "glucose": (
        "Prélèvement réalisé à jeun.",
        "Glycémie post-prandiale, à interpréter avec prudence.",
        "Résultat communiqué au médecin traitant.",
    ),
}

# Median height (cm) by age (years), read off usual growth charts and rounded.
_HEIGHT_MALE: Final = (
    (0, 50),
    (0.5, 67),
    (1, 76),
    (2, 88),
    (4, 103),
    (6, 116),
    (8, 128),
    (10, 139),
    (12, 150),
    (14, 164),
    (16, 173),
    (18, 176),
)
_HEIGHT_FEMALE: Final = (
    (0, 49),
    (0.5, 65),
    (1, 74),
    (2, 86),
    (4, 102),
    (6, 115),
    (8, 127),
    (10, 139),
    (12, 151),
    (14, 160),
    (16, 163),
    (18, 163),
)
# Median body-mass index (kg/m²) by age for children.
_CHILD_BMI: Final = (
    (0, 13.5),
    (0.5, 17.0),
    (1, 17.5),
    (2, 16.5),
    (5, 15.4),
    (8, 15.8),
    (12, 18.0),
    (15, 19.5),
    (18, 21.5),
)

# Age bands (years, inclusive lower, exclusive upper) and their weights: a clinic sees children
# and the elderly more than a flat age pyramid would suggest.
_AGE_BANDS: Final = (
    (0, 3, 5),
    (3, 12, 7),
    (12, 18, 5),
    (18, 40, 20),
    (40, 65, 28),
    (65, 80, 23),
    (80, 96, 12),
)

# Places of birth used in the fake INS (department codes); 99 means born abroad.
_BIRTH_DEPARTMENTS: Final = (
    "69",
    "69",
    "69",
    "75",
    "13",
    "38",
    "42",
    "01",
    "59",
    "33",
    "99",
    "99",
    "31",
    "67",
    "44",
)


@dataclass(frozen=True)
class StaffMember:
    """One member of staff: a Practitioner with one PractitionerRole in one department."""

    practitioner_id: str
    name: str  # "Given Family", as displayed
    role: str  # one of ROLES
    department: str  # one of Clinic.departments
    email: str  # firstname.lastname@demo.egide.invalid


@dataclass(frozen=True)
class Clinic:
    """A generated clinic. `resources` lists every referenced resource before its referrers."""

    resources: tuple[dict[str, Any], ...]
    staff: tuple[StaffMember, ...]
    departments: tuple[str, ...]
    patient_ids: tuple[str, ...]

    def of_type(self, resource_type: str) -> tuple[dict[str, Any], ...]:
        """The resources of one type, in generation order."""
        return tuple(r for r in self.resources if r["resourceType"] == resource_type)


def generate_clinic(
    *, seed: int = 2026, patients: int = 500, staff: int = 30, today: dt.date
) -> Clinic:
    """Generate a synthetic clinic with `patients` patients and `staff` staff members.

    Dates are relative to `today`: past encounters end before it, booked appointments lie after
    it. Deterministic: the same arguments give an identical `Clinic`.
    """
    if patients < 0:
        msg = "patients must be zero or more"
        raise ValueError(msg)
    if staff < 1:
        msg = "a clinic needs at least one member of staff"
        raise ValueError(msg)
    # A datetime is a date too; keep only its calendar day so output depends on the day alone.
    day = dt.date(today.year, today.month, today.day)
    return _Builder(seed, day).build(patients=patients, staff=staff)


# --- helpers ---------------------------------------------------------------------------------
class _SeededBytes:
    """Adapts random.Random to egide.core's RandomSource so ids come from the seed."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def token_bytes(self, n: int) -> bytes:
        return self._rng.getrandbits(8 * n).to_bytes(n, "big")


_ASCII_FOLD: Final = str.maketrans(
    {
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "ı": "i",
        "œ": "oe",
        "Œ": "OE",
        "æ": "ae",
        "ß": "ss",
        "ø": "o",
    }
)


def email_local_part(given: str, family: str) -> str:
    """`firstname.lastname` in lowercase ASCII: accents dropped, spaces and apostrophes removed."""

    def fold(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD))
        kept = "".join(c for c in decomposed if c.isascii() and (c.isalnum() or c in " -"))
        return "-".join(kept.lower().split())

    return f"{fold(given)}.{fold(family)}"


def _interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, display: str, text: str | None = None) -> Resource:
    concept: Resource = {"coding": [_coding(system, code, display)]}
    if text is not None:
        concept["text"] = text
    return concept


def _ref(resource: Resource) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _luhn_check_digit(digits: str) -> int:
    total = 0
    # From the right, every second digit of the payload (starting with the last) is doubled.
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


@dataclass
class _Person:
    """What the builder keeps about a staff member while generating."""

    member: StaffMember
    resource: Resource


@dataclass
class _Visit:
    resource: Resource
    start: dt.datetime
    end: dt.datetime | None  # None while in progress
    department: str
    attending: _Person
    nurse: _Person | None
    age: float  # patient's age in years at the start


@dataclass
class _Household:
    family: str
    address: Resource
    phone: str


class _Builder:
    """Holds the seeded random source and the resources generated so far."""

    def __init__(self, seed: int, today: dt.date) -> None:
        # Not for secrets: a seeded, reproducible generator is the point here.
        self.rng = random.Random(seed)  # noqa: S311
        self.ids = _SeededBytes(self.rng)
        self.today = today
        self.midnight = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)
        self.resources: list[Resource] = []
        self.departments: dict[str, Resource] = {}
        self.staff: list[_Person] = []
        self.households: list[_Household] = []
        self.used_ins: set[str] = set()
        self.used_rpps: set[str] = set()
        self.used_phones: set[str] = set()

    # -- plumbing -----------------------------------------------------------------------------
    def new(self, resource_type: str, **fields: Any) -> Resource:
        resource: Resource = {
            "resourceType": resource_type,
            "id": new_id(self.ids),
            "meta": {"security": [_coding(ACT_REASON, "HTEST", "test health data")]},
        }
        resource.update(fields)
        self.resources.append(resource)
        return resource

    def build(self, *, patients: int, staff: int) -> Clinic:
        self.make_organizations()
        self.make_staff(staff)
        vip = set(self.rng.sample(range(patients), round(patients / 100))) if patients else set()
        patient_ids = [self.make_patient(i in vip).get("id", "") for i in range(patients)]
        return Clinic(
            resources=tuple(self.resources),
            staff=tuple(p.member for p in self.staff),
            departments=DEPARTMENTS,
            patient_ids=tuple(patient_ids),
        )

    # -- organizations and staff --------------------------------------------------------------
    def make_organizations(self) -> None:
        clinic = self.new(
            "Organization",
            identifier=[{"system": FINESS_SYSTEM, "value": "999000001"}],
            active=True,
            type=[_concept(ORGANIZATION_TYPE, "prov", "Healthcare Provider")],
            name=CLINIC_NAME,
            # 04 65 71 xx xx is the fiction block of the south-east geographic numbers.
            telecom=[{"system": "phone", "value": "+33 4 65 71 20 26", "use": "work"}],
            address=[
                {
                    "use": "work",
                    "line": ["1 place du Val-Fleuri"],
                    "city": "Lyon",
                    "postalCode": "69008",
                    "country": "FR",
                }
            ],
        )
        for name in DEPARTMENTS:
            self.departments[name] = self.new(
                "Organization",
                active=True,
                type=[_concept(ORGANIZATION_TYPE, "dept", "Hospital Department")],
                name=name,
                partOf={**_ref(clinic), "display": CLINIC_NAME},
            )

    def make_staff(self, count: int) -> None:
        used_emails: set[str] = set()
        used_families: set[str] = set()
        for i in range(count):
            role, department = STAFF_PLAN[i % len(STAFF_PLAN)]
            info = ROLE_INFO[role]
            gender = self.rng.choice(("female", "male"))
            given = self.rng.choice(
                names.FEMALE_GIVEN_NAMES if gender == "female" else names.MALE_GIVEN_NAMES
            )
            # Distinct family names keep e-mail addresses unique and colleagues distinguishable.
            family = self.rng.choice(names.FAMILY_NAMES)
            for _ in range(20):
                if family not in used_families:
                    break
                family = self.rng.choice(names.FAMILY_NAMES)
            used_families.add(family)
            local = email_local_part(given, family)
            email, n = f"{local}@{EMAIL_DOMAIN}", 1
            while email in used_emails:
                n += 1
                email = f"{local}{n}@{EMAIL_DOMAIN}"
            used_emails.add(email)
            human_name: Resource = {"use": "official", "family": family, "given": [given]}
            if info.title:
                human_name["prefix"] = [info.title]
            practitioner = self.new(
                "Practitioner",
                identifier=[{"system": RPPS_SYSTEM, "value": self.fake_rpps()}],
                active=True,
                name=[human_name],
                telecom=[{"system": "email", "value": email, "use": "work"}],
                gender=gender,
                qualification=[
                    {
                        "code": _concept(
                            QUALIFICATION_SYSTEM,
                            info.qualification_code,
                            info.qualification,
                            info.qualification,
                        )
                    }
                ],
            )
            codings = [_coding(ROLE_SYSTEM, role, info.label)]
            if info.hl7_code:
                codings.append(_coding(PRACTITIONER_ROLE, info.hl7_code))
            self.new(
                "PractitionerRole",
                active=True,
                practitioner=_ref(practitioner),
                organization={**_ref(self.departments[department]), "display": department},
                code=[{"coding": codings, "text": info.label}],
                specialty=[{"text": department}],
            )
            member = StaffMember(
                practitioner_id=practitioner["id"],
                name=f"{given} {family}",
                role=role,
                department=department,
                email=email,
            )
            self.staff.append(_Person(member, practitioner))

    def fake_rpps(self) -> str:
        """Eleven digits starting with 99 whose Luhn check digit is wrong on purpose."""
        while True:
            payload = "99" + "".join(str(self.rng.randrange(10)) for _ in range(8))
            right = _luhn_check_digit(payload)
            value = payload + str((right + 1 + self.rng.randrange(9)) % 10)
            if value not in self.used_rpps:
                self.used_rpps.add(value)
                return value

    def clinicians(self, department: str, roles: frozenset[str] = CLINICIAN_ROLES) -> list[_Person]:
        found = [
            p for p in self.staff if p.member.department == department and p.member.role in roles
        ]
        if found:
            return found
        # A small clinic may lack someone in this department: borrow from the others.
        anywhere = [p for p in self.staff if p.member.role in roles]
        return anywhere or self.staff

    def nurses(self, department: str) -> list[_Person]:
        return [
            p for p in self.staff if p.member.department == department and p.member.role == "nurse"
        ]

    # -- patients -----------------------------------------------------------------------------
    def fake_ins(self, gender: str, birth: dt.date, postal_code: str) -> str:
        """A 15-digit number shaped like a French NIR, with a control key that is never right.

        Layout: sex (1/2), year (2), month (2), department of birth (2), commune (3), order (3),
        key (2). The real key is 97 minus the first 13 digits modulo 97; this one differs, so the
        value can never be mistaken for a real person's INS.
        """
        while True:
            place = (
                postal_code[:2] if self.rng.random() < 0.6 else self.rng.choice(_BIRTH_DEPARTMENTS)
            )
            body = (
                f"{1 if gender == 'male' else 2}{birth.year % 100:02d}{birth.month:02d}{place}"
                f"{self.rng.randint(1, 990):03d}{self.rng.randint(1, 999):03d}"
            )
            right = 97 - int(body) % 97
            key = self.rng.randint(1, 96)
            if key >= right:
                key += 1  # skip the valid key: keys run 1..97 without it
            value = f"{body}{key:02d}"
            if value not in self.used_ins:
                self.used_ins.add(value)
                return value

    def fake_phone(self) -> str:
        # 06 39 98 00 00 - 06 39 98 99 99 is reserved for fiction: it can never ring anyone.
        phone = ""
        for _ in range(20):
            n = self.rng.randrange(10_000)
            phone = f"+33 6 39 98 {n // 100:02d} {n % 100:02d}"
            if phone not in self.used_phones:
                break
        self.used_phones.add(phone)
        return phone

    def new_address(self) -> Resource:
        city, postal_code = self.rng.choice(
            names.LOCAL_CITIES if self.rng.random() < 0.8 else names.OTHER_CITIES
        )
        number = str(self.rng.randint(1, 160))
        if self.rng.random() < 0.05:
            number += " bis"
        kind, street = self.rng.choice(names.STREET_KINDS), self.rng.choice(names.STREET_NAMES)
        line = f"{number} {kind} {street}"
        return {
            "use": "home",
            "type": "physical",
            "line": [line],
            "city": city,
            "postalCode": postal_code,
            "country": "FR",
        }

    def birth_date(self) -> dt.date:
        low, high, _ = self.rng.choices(_AGE_BANDS, weights=[b[2] for b in _AGE_BANDS])[0]
        # At least a week old so that the patient has a past encounter; at most 95 years.
        earliest_days = max(7, int(low * 365.25))
        latest_days = int(high * 365.25) - 1
        latest_days = min(latest_days, 95 * 365 + 364)
        return self.today - dt.timedelta(days=self.rng.randint(earliest_days, latest_days))

    def make_patient(self, vip: bool) -> Resource:
        rng = self.rng
        gender = rng.choice(("female", "male"))
        birth = self.birth_date()
        age_now = (self.today - birth).days / 365.25
        pool = names.FEMALE_GIVEN_NAMES if gender == "female" else names.MALE_GIVEN_NAMES
        given = [rng.choice(pool)]
        if rng.random() < 0.15:
            second = rng.choice(pool)
            if second != given[0]:
                given.append(second)
        # Families: children mostly join an existing household; some adults do (couples).
        joins = rng.random() < (0.7 if age_now < 18 else 0.12)
        if joins and self.households:
            household = rng.choice(self.households)
            family, address = household.family, dict(household.address)
            phone = household.phone if age_now < 18 else self.fake_phone()
        else:
            family, address = rng.choice(names.FAMILY_NAMES), self.new_address()
            phone = self.fake_phone()
            if age_now >= 18:
                self.households.append(_Household(family, address, phone))
        fields: Resource = {
            "identifier": [
                {
                    "use": "official",
                    "system": INS_SYSTEM,
                    "value": self.fake_ins(gender, birth, address["postalCode"]),
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": family, "given": given}],
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [address],
        }
        patient = self.new("Patient", **fields)
        if vip:
            # Access to a VIP's record is watched more closely (DESIGN.md, detection).
            patient["meta"]["tag"] = [_coding(FLAGS_SYSTEM, "vip", "Personnalité")]
        self.make_record(patient, gender, birth)
        return patient

    # -- clinical record ----------------------------------------------------------------------
    def visit_days(self, birth: dt.date) -> list[dt.date]:
        rng = self.rng
        first = max(birth + dt.timedelta(days=1), self.today - dt.timedelta(days=3 * 365))
        last = self.today - dt.timedelta(days=1)
        span = max(0, (last - first).days)
        count = rng.choices((1, 2, 3, 4), weights=(35, 30, 20, 15))[0]
        return sorted(first + dt.timedelta(days=rng.randint(0, span)) for _ in range(count))

    def chronic_conditions(self, gender: str, age: float) -> list[str]:
        rng = self.rng
        odds = {
            "hypertension": min(0.6, 0.011 * (age - 25)) if age >= 25 else 0.0,
            "diabetes": min(0.2, 0.004 * (age - 30)) if age >= 30 else 0.0,
            "hyperlipidemia": min(0.3, 0.006 * (age - 35)) if age >= 35 else 0.0,
            "asthma": 0.08 if age >= 3 else 0.0,
            "copd": min(0.12, 0.003 * (age - 45)) if age >= 45 else 0.0,
            "depression": 0.08 if age >= 15 else 0.0,
            "atrial_fibrillation": min(0.15, 0.005 * (age - 55)) if age >= 55 else 0.0,
            "heart_failure": min(0.12, 0.004 * (age - 60)) if age >= 60 else 0.0,
        }
        found = [key for key, p in odds.items() if rng.random() < p]
        if age >= 40 and rng.random() < 0.05:
            cancers = ["lung_cancer", "colon_cancer"] + (
                ["breast_cancer"] * 2 if gender == "female" else []
            )
            found.append(rng.choice(cancers))
        return found

    def department_weights(self, age: float, chronic: list[str]) -> dict[str, float]:
        if age < 18:
            return {PEDIATRICS: 4.0, EMERGENCY: 1.0}
        weights = {CARDIOLOGY: 1.0, INTERNAL_MEDICINE: 3.0, EMERGENCY: 2.0, ONCOLOGY: 0.0}
        for key in chronic:
            department = CONDITIONS[key].department
            weights[department] += 6.0 if department == ONCOLOGY else 2.0
        return weights

    def pick(self, weights: dict[str, float]) -> str:
        keys = list(weights)
        return self.rng.choices(keys, weights=[weights[k] for k in keys])[0]

    def make_record(self, patient: Resource, gender: str, birth: dt.date) -> None:
        rng = self.rng
        days = self.visit_days(birth)
        age_first = (days[0] - birth).days / 365.25
        chronic = self.chronic_conditions(gender, age_first)
        weights = self.department_weights(age_first, chronic)
        # Body build is the patient's own: measurements stay consistent from visit to visit.
        build = {
            "height_z": max(-2.5, min(2.5, rng.gauss(0.0, 1.0))),
            "bmi": max(17.5, min(45.0, rng.gauss(25.5, 4.5))),
            "child_bmi": max(0.8, min(1.35, rng.gauss(1.0, 0.1))),
        }
        # A few patients are in hospital right now: their last stay started in the last days.
        current_stay = rng.random() < 0.03
        if current_stay:
            days[-1] = max(days[-1], self.today - dt.timedelta(days=rng.randint(1, 4)))
        visits: list[_Visit] = []
        prescriptions: dict[str, list[Resource]] = {}
        previous_end: dt.datetime | None = None
        for index, day in enumerate(days):
            forced = current_stay and index == len(days) - 1
            visit = self.make_visit(patient, birth, day, weights, previous_end, forced_stay=forced)
            if visit is None:
                break
            visits.append(visit)
            conditions = self.make_conditions(patient, visit, chronic if index == 0 else [], birth)
            self.make_observations(patient, visit, gender, chronic, build, first=index == 0)
            for key, condition in conditions:
                kind = CONDITIONS[key]
                renew = index == 0 or not kind.chronic
                if kind.medication and renew:
                    prescriptions.setdefault(kind.medication, []).append(
                        self.make_prescription(patient, visit, kind.medication, condition)
                    )
            if index > 0:
                # Follow-up visits renew the treatments their department looks after.
                for key in chronic:
                    kind = CONDITIONS[key]
                    if kind.department == visit.department and kind.medication:
                        prescriptions.setdefault(kind.medication, []).append(
                            self.make_prescription(patient, visit, kind.medication, None)
                        )
            if visit.end is None:
                break
            previous_end = visit.end
        self.settle_prescriptions(prescriptions, chronic)
        self.make_future_appointments(patient, weights, chronic, birth)

    def make_visit(
        self,
        patient: Resource,
        birth: dt.date,
        day: dt.date,
        weights: dict[str, float],
        previous_end: dt.datetime | None,
        *,
        forced_stay: bool,
    ) -> _Visit | None:
        rng = self.rng
        department = self.pick(weights)
        inpatient_odds = {
            EMERGENCY: 0.2,
            PEDIATRICS: 0.1,
            CARDIOLOGY: 0.25,
            INTERNAL_MEDICINE: 0.35,
            ONCOLOGY: 0.3,
        }[department]
        inpatient = forced_stay or rng.random() < inpatient_odds
        hour = rng.randint(0, 23) if department == EMERGENCY else rng.randint(8, 17)
        start = dt.datetime(
            day.year, day.month, day.day, hour, 5 * rng.randrange(12), tzinfo=dt.UTC
        )
        if previous_end is not None and start <= previous_end:
            start = previous_end + dt.timedelta(days=rng.randint(1, 14), hours=1)
            start = start.replace(minute=5 * rng.randrange(12))
            if start >= self.midnight - dt.timedelta(hours=4):
                return None
        if inpatient:
            duration = dt.timedelta(days=rng.randint(1, 10), hours=rng.randint(0, 8))
        elif department == EMERGENCY:
            duration = dt.timedelta(minutes=rng.randint(90, 420))
        else:
            duration = dt.timedelta(minutes=rng.choice((15, 20, 30, 30, 45)))
        end: dt.datetime | None = start + duration
        if forced_stay:
            end = None  # admitted a few days ago and not yet discharged
        elif end is not None and end > self.midnight:
            if inpatient:
                end = None  # still in hospital today
            else:
                start -= end - self.midnight + dt.timedelta(hours=1)
                end = start + duration
        age = (start.date() - birth).days / 365.25
        attending = rng.choice(self.clinicians(department))
        nurses = self.nurses(department)
        nurse = rng.choice(nurses) if nurses and (inpatient or rng.random() < 0.5) else None
        participants = [
            {
                "type": [_concept(PARTICIPATION, "ATND", "attender")],
                "individual": _ref(attending.resource),
            }
        ]
        if nurse is not None:
            participants.append(
                {
                    "type": [_concept(PARTICIPATION, "PART", "Participation")],
                    "individual": _ref(nurse.resource),
                }
            )
        if inpatient:
            label = "Hospitalisation complète"
        elif department == EMERGENCY:
            label = "Passage aux urgences"
        else:
            label = "Consultation"
        fields: Resource = {
            "status": "finished" if end is not None else "in-progress",
            "class": _coding(
                ACT_CODE,
                "IMP" if inpatient else "AMB",
                "inpatient encounter" if inpatient else "ambulatory",
            ),
            "type": [{"text": f"{label} — {department}"}],
            "subject": _ref(patient),
            "participant": participants,
            "period": {"start": _iso(start)} | ({"end": _iso(end)} if end is not None else {}),
            "serviceProvider": {**_ref(self.departments[department]), "display": department},
        }
        if not inpatient and department != EMERGENCY and end is not None:
            # A scheduled consultation: its appointment is fulfilled and comes first.
            appointment = self.new(
                "Appointment",
                status="fulfilled",
                serviceType=[{"text": department}],
                description=f"Consultation — {department}",
                start=_iso(start),
                end=_iso(end),
                created=_iso(start - dt.timedelta(days=rng.randint(3, 60), hours=3)),
                participant=[
                    {"actor": _ref(patient), "required": "required", "status": "accepted"},
                    {
                        "actor": _ref(attending.resource),
                        "required": "required",
                        "status": "accepted",
                    },
                ],
            )
            fields["appointment"] = [_ref(appointment)]
        encounter = self.new("Encounter", **fields)
        return _Visit(encounter, start, end, department, attending, nurse, age)

    def moment_in(self, visit: _Visit, latest: dt.timedelta = dt.timedelta(hours=3)) -> dt.datetime:
        """A time inside the visit, within its first hours (measurements come early)."""
        span = latest if visit.end is None else min(latest, visit.end - visit.start)
        return visit.start + dt.timedelta(seconds=self.rng.randint(0, int(span.total_seconds())))

    def make_conditions(
        self, patient: Resource, visit: _Visit, chronic: list[str], birth: dt.date
    ) -> list[tuple[str, Resource]]:
        rng = self.rng
        made: list[tuple[str, Resource]] = []
        day = visit.start.date()
        for key in chronic:
            # Known before this first visit: onset between childhood and a month ago.
            latest = day - dt.timedelta(days=30)
            earliest = max(
                birth + dt.timedelta(days=2 * 365 if key == "asthma" else 15 * 365),
                day - dt.timedelta(days=15 * 365),
            )
            earliest = max(birth, min(earliest, latest))
            latest = max(latest, earliest)
            onset = earliest + dt.timedelta(days=rng.randint(0, (latest - earliest).days))
            made.append((key, self.make_condition(patient, visit, key, onset, None)))
        acute_odds = {EMERGENCY: 0.85, PEDIATRICS: 0.5}.get(visit.department, 0.0)
        if rng.random() < acute_odds:
            pool = CHILD_ACUTE if visit.age < 15 else ADULT_ACUTE
            key = rng.choices([k for k, _ in pool], weights=[w for _, w in pool])[0]
            onset = max(birth, day - dt.timedelta(days=rng.randint(0, 4)))
            resolved: dt.date | None = None
            if visit.end is not None:
                candidate = visit.end.date() + dt.timedelta(days=rng.randint(2, 8))
                resolved = candidate if candidate < self.today else None
            made.append((key, self.make_condition(patient, visit, key, onset, resolved)))
        return made

    def make_condition(
        self,
        patient: Resource,
        visit: _Visit,
        key: str,
        onset: dt.date,
        abated: dt.date | None,
    ) -> Resource:
        kind = CONDITIONS[key]
        fields: Resource = {
            "clinicalStatus": _concept(
                CONDITION_CLINICAL,
                "resolved" if abated else "active",
                "Resolved" if abated else "Active",
            ),
            "verificationStatus": _concept(CONDITION_VERIFICATION, "confirmed", "Confirmed"),
            "category": [
                _concept(CONDITION_CATEGORY, "problem-list-item", "Problem List Item")
                if kind.chronic
                else _concept(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")
            ],
            "code": _concept(SNOMED, kind.snomed, kind.display, kind.text),
            "subject": _ref(patient),
            "encounter": _ref(visit.resource),
            "onsetDateTime": onset.isoformat(),
            "recordedDate": _iso(self.moment_in(visit)),
            "recorder": _ref(visit.attending.resource),
        }
        if abated is not None:
            fields["abatementDateTime"] = abated.isoformat()
        return self.new("Condition", **fields)

    def make_observations(
        self,
        patient: Resource,
        visit: _Visit,
        gender: str,
        chronic: list[str],
        build: dict[str, float],
        *,
        first: bool,
    ) -> None:
        rng, age = self.rng, visit.age
        af = "atrial_fibrillation" in chronic
        performer = visit.nurse or visit.attending
        # Heart rate: fast in infants, slowing to adult values; irregular and faster in AF.
        if age < 1:
            rate = rng.gauss(130, 12)
        elif age < 6:
            rate = rng.gauss(110 - 4 * age, 10)
        elif age < 18:
            rate = rng.gauss(90 - (age - 6), 9)
        else:
            rate = rng.gauss(72, 9)
        if af:
            rate += rng.gauss(15, 12)
        if visit.department == EMERGENCY:
            rate += 6
        self.make_observation(
            patient,
            visit,
            performer,
            "heart_rate",
            round(max(45.0, min(190.0, rate))),
            note_pool="heart_rate_af" if af else "heart_rate",
        )
        if age >= 3:
            if age < 18:
                systolic = rng.gauss(95 + 1.1 * age, 8)
            else:
                systolic = rng.gauss(116 + 0.45 * max(0.0, age - 25), 10)
                if "hypertension" in chronic:
                    systolic += rng.gauss(14, 8)
            systolic = max(80.0, min(210.0, systolic))
            diastolic = max(40.0, min(systolic - 25, rng.gauss(0.63 * systolic, 5)))
            self.make_observation(
                patient,
                visit,
                performer,
                "blood_pressure",
                None,
                components=(("systolic", round(systolic)), ("diastolic", round(diastolic))),
            )
        # Height follows the growth curve of the patient's sex at their own centile.
        curve = _HEIGHT_MALE if gender == "male" else _HEIGHT_FEMALE
        height = _interpolate(curve, age) * (1 + 0.035 * build["height_z"])
        if age > 70:
            height -= 0.15 * (age - 70)  # people lose a little height as they age
        bmi = _interpolate(_CHILD_BMI, age) * build["child_bmi"] if age < 18 else build["bmi"]
        weight = bmi * (height / 100) ** 2 * rng.uniform(0.98, 1.02)
        self.make_observation(
            patient, visit, performer, "weight", round(weight, 2 if age < 2 else 1)
        )
        if age < 18 or first:  # adults are measured once, at their first visit
            self.make_observation(
                patient,
                visit,
                performer,
                "height",
                round(height, 1),
                note_pool="height_infant" if age < 2 else "height",
            )
        inpatient = visit.resource["class"]["code"] == "IMP"
        if "diabetes" in chronic or inpatient or rng.random() < 0.15:
            if "diabetes" in chronic:
                glucose = max(0.9, min(3.2, rng.gauss(1.55, 0.35)))
            else:
                glucose = max(0.65, min(1.2, rng.gauss(0.92, 0.09)))
            self.make_observation(patient, visit, visit.attending, "glucose", round(glucose, 2))

    def make_observation(
        self,
        patient: Resource,
        visit: _Visit,
        performer: _Person,
        kind_key: str,
        value: float | None,
        *,
        components: tuple[tuple[str, float], ...] = (),
        note_pool: str | None = None,
    ) -> Resource:
        kind = VITALS[kind_key]
        effective = self.moment_in(visit)
        fields: Resource = {
            "status": "final",
            "category": [
                _concept(
                    OBSERVATION_CATEGORY,
                    kind.category,
                    "Vital Signs" if kind.category == "vital-signs" else "Laboratory",
                )
            ],
            "code": _concept(LOINC, kind.loinc, kind.display, kind.text),
            "subject": _ref(patient),
            "encounter": _ref(visit.resource),
            "effectiveDateTime": _iso(effective),
            "performer": [_ref(performer.resource)],
        }
        if value is not None:
            fields["valueQuantity"] = {
                "value": value,
                "unit": kind.unit,
                "system": UCUM,
                "code": kind.ucum,
            }
        if components:
            fields["component"] = [
                {
                    "code": _concept(
                        LOINC, VITALS[key].loinc, VITALS[key].display, VITALS[key].text
                    ),
                    "valueQuantity": {
                        "value": v,
                        "unit": VITALS[key].unit,
                        "system": UCUM,
                        "code": VITALS[key].ucum,
                    },
                }
                for key, v in components
            ]
        if self.rng.random() < 0.12:
            fields["note"] = [
                {
                    "authorReference": _ref(performer.resource),
                    "time": _iso(effective),
                    "text": self.rng.choice(NOTES[note_pool or kind_key]),
                }
            ]
        return self.new("Observation", **fields)

    def make_prescription(
        self, patient: Resource, visit: _Visit, medication_key: str, reason: Resource | None
    ) -> Resource:
        medication = MEDICATIONS[medication_key]
        dosage = (
            medication.child_dosage
            if visit.age < 12 and medication.child_dosage
            else medication.dosage
        )
        fields: Resource = {
            "status": "active",  # settled once the patient's whole record is known
            "intent": "order",
            "medicationCodeableConcept": _concept(
                ATC, medication.atc, medication.display, medication.text
            ),
            "subject": _ref(patient),
            "encounter": _ref(visit.resource),
            "authoredOn": _iso(self.moment_in(visit, dt.timedelta(hours=6))),
            "requester": _ref(visit.attending.resource),
            "dosageInstruction": [{"text": dosage}],
        }
        if reason is not None:
            fields["reasonReference"] = [_ref(reason)]
        return self.new("MedicationRequest", **fields)

    def settle_prescriptions(
        self, prescriptions: dict[str, list[Resource]], chronic: list[str]
    ) -> None:
        """Long-term treatments: the latest order is active. Short ones end after ten days."""
        long_term = {CONDITIONS[k].medication for k in chronic}
        for key, orders in prescriptions.items():
            for order in orders:
                authored = dt.datetime.fromisoformat(order["authoredOn"])
                if key in long_term:
                    order["status"] = "active" if order is orders[-1] else "completed"
                else:
                    recent = authored + dt.timedelta(days=10) >= self.midnight
                    order["status"] = "active" if recent else "completed"

    def make_future_appointments(
        self, patient: Resource, weights: dict[str, float], chronic: list[str], birth: dt.date
    ) -> None:
        rng = self.rng
        if rng.random() >= (0.5 if chronic else 0.15):
            return
        choices = {k: w for k, w in weights.items() if k != EMERGENCY and w > 0}
        department = (
            self.pick(choices)
            if choices
            else (PEDIATRICS if (self.today - birth).days < 18 * 365 else INTERNAL_MEDICINE)
        )
        physicians = self.clinicians(department, frozenset({"physician"}))
        practitioner = rng.choice(physicians)
        day = self.midnight + dt.timedelta(days=rng.randint(1, 120))
        start = day + dt.timedelta(hours=8, minutes=15 * rng.randint(0, 37))
        end = start + dt.timedelta(minutes=rng.choice((20, 30)))
        self.new(
            "Appointment",
            status="booked",
            serviceType=[{"text": department}],
            description=f"Consultation de suivi — {department}",
            start=_iso(start),
            end=_iso(end),
            created=_iso(
                self.midnight
                - dt.timedelta(days=rng.randint(1, 45), minutes=5 * rng.randint(0, 120))
            ),
            participant=[
                {"actor": _ref(patient), "required": "required", "status": "accepted"},
                {
                    "actor": _ref(practitioner.resource),
                    "required": "required",
                    "status": "accepted",
                },
            ],
        )
