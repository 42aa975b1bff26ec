"""The demo clinic: a reproducible, realistic radiotherapy department seeded through the real services.

``manage.py seed_demo`` calls :func:`seed`. Every date is relative to *today* (``timezone.localdate()`` unless given),
so the treatment list of today (or of the next treatment day when today is a weekend or holiday) is always busy,
and a fixed seed (``random.Random(seed)``) makes the clinic the same for a given today.

What it holds (default ``patients=60``):

- Machines: linacs "TrueBeam 1" and "TrueBeam 2" (IMRT, VMAT, 3D-CRT, SBRT), "Halcyon" (IMRT, VMAT, 3D-CRT), a CT
  simulator "CT Sim" and an operating-room IORT unit "IORT Unit" (IORT_E); a manual clinic closure in the past and
  one ahead (the public holidays come from ``CLINIC_HOLIDAY_COUNTRY``, US federal by default); downtime on two past
  days (fractions moved to other machines or later days by ``add_downtime``) and planned QA downtime ahead.
- Patients with synthetic names (random first/last-name pairs, no real people), MRNs ``RPD-1xxxxx``, across disease
  sites (heavy on pleural mesothelioma; peritoneal and pericardial mesothelioma, spine, prostate, lung, liver, head
  and neck, CNS, sarcoma), with multimodal pathways (P/D or EPP, cytoreduction + HIPEC, pericardiectomy,
  cisplatin/pemetrexed, nivolumab/ipilimumab, synthetic trial enrolments with an arm).
- Courses in every phase: planned (simulation booked or not yet), simulated, plan approved awaiting start, on
  treatment today (some fractions already delivered earlier today, before 10:00), completed over the last ~5 years
  (with their protocol follow-up visits; visits already due are marked done), stopped early (toxicity, progression,
  patient choice); missed fractions with make-ups; one re-irradiation; one IORT boost in the operating room.
- Users ``therapist``, ``scheduler``, ``oncologist``, ``physicist``, ``dosimetrist``, ``researcher`` (each in its
  role group) and the superuser ``admin``; password :data:`DEMO_PASSWORD` (``radpath-demo``) for all. Demo only.

Everything is made through the pathway services (``book_course(..., allow_past=True)``, ``book_simulation``,
``complete_simulation``, ``clear_for_treatment``, ``mark_missed``, ``add_downtime``, ``deliver_fraction(...,
now=...)``, ``stop_course``, ``propose_followups``), so every rule holds and every change is in the audit history.
Each course's care path (``workflow.carepaths``, when installed) is dated through the :data:`DEMO_PATH_STEPS`
module's ``replay_path`` and ``complete_steps``, so the worklists and the board show a plausible state and no
blocking step stops delivery (named by a dotted path like the extensions: the pathway imports no care-path code).
The whole seed is one transaction: it lands completely or not at all.

Idempotent: a database that already holds the demo (a patient whose MRN starts with :data:`DEMO_MRN_PREFIX`) is
left alone; the users are ensured and the logins printed again (extensions are not re-run either: seed a fresh
database to add one). ``--patients N`` (at least :data:`MIN_PATIENTS`) makes a smaller clinic for tests, ``--today``
seeds relative to another date, ``--no-extensions`` skips the hooks below.

Extension contract (``DEMO_EXTENSIONS``)
----------------------------------------
After the core pathway is seeded, each dotted name ``"package.module.function"`` in :data:`DEMO_EXTENSIONS` is
called if its MODULE exists (a missing module is skipped; any other error, including an ImportError raised from
inside an existing module or a missing function, propagates and rolls the whole seed back). It is called with
keyword arguments only::

    seed(rng=random.Random, today=datetime.date, users=dict, courses=list)

- ``rng``: a ``random.Random`` of its own, seeded from the demo seed and the extension's name, so adding or
  reordering extensions never changes the data of the others. Use only it (never ``random`` or the clock) to
  keep the demo reproducible.
- ``today``: the date the clinic is seeded relative to; use it instead of ``timezone.localdate()``.
- ``users``: ``{role: User}`` for every role in ``workflow.roles.ROLES`` plus ``"admin"``. Set
  ``obj._history_user`` to the user who would make the change.
- ``courses``: one dict per seeded radiotherapy course, oldest first::

      {"course": Course, "patient": Patient, "diagnosis": Diagnosis,
       "phase": "planned" | "simulated" | "approved" | "on_treatment" | "completed" | "stopped",  # = course.status
       "site": DiseaseSite value, "scenario": str,                # e.g. "pleural_pd_adjuvant"
       "story": {
           "intent", "technique", "fractions", "dose_per_fraction_gy", "total_dose_gy",
           "start": date | None, "end": date | None,              # first / last live fraction day
           "surgery": {"type", "date"} | None,                     # SurgeryType value; may lie after "end"
           "chemotherapy": str | None, "immunotherapy": str | None, "trial": {"name", "arm"} | None,
           "multimodal": bool,                                      # surgery + chemotherapy + RT
           "missed": [date, ...], "moved_for_downtime": int,
           "termination": {"reason", "note", "date"} | None,
           "toxicity": {"term", "grade", "date"} | None,          # the event that stopped the course, if any
           "previous_course": Course | None,                        # set on a re-irradiation
       }}

  Extensions may add clinical data (toxicity events, response assessments, deaths, plans); they must not change
  the pathway rows seeded here except through the services (e.g. cancelling the follow-up visits after a death
  they record). The function's return value is ignored. An extension runs inside the seed's transaction.
"""

import datetime as dt
import importlib
import importlib.util
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone
from simple_history.utils import bulk_update_with_history

from .. import roles
from .calendar import ClinicCalendar
from .delivery import clear_for_treatment, deliver_fraction, stop_course
from .followup import propose_followups
from .models import (
    AppointmentStatus,
    Closure,
    Course,
    Diagnosis,
    DiseaseSite,
    FollowUpStatus,
    FollowUpVisit,
    Fraction,
    Machine,
    MachineKind,
    Patient,
    SurgeryType,
    Treatment,
    TreatmentKind,
)
from .scheduling import (
    add_downtime,
    book_course,
    book_simulation,
    complete_simulation,
    daily_list,
    local_datetime,
    local_day,
    mark_missed,
)

DEMO_PASSWORD = "radpath-demo"
DEMO_MRN_PREFIX = "RPD-"
DEFAULT_SEED = 20260611
DEFAULT_PATIENTS = 60
MIN_PATIENTS = 12
ADMIN_USERNAME = "admin"
DELIVERED_TODAY_BEFORE = dt.time(10, 0)
"""Today's fractions that start before this time are recorded as delivered (fixed, so the demo is reproducible)."""

DEMO_EXTENSIONS = ["workflow.toxicity.demo.seed", "outcomes.demo.seed", "planning.demo.seed", "workflow.carepaths.demo.seed",
                   "outcomes.ntcp_demo.seed"]

DEMO_PATH_STEPS = "workflow.carepaths.demo"
"""Module that dates each course's care path while the stories are seeded: ``replay_path(course, *, started_on,
completions, users, today)`` and ``complete_steps(course, completions, *, users, today)``; skipped when missing."""

MACHINES = [
    {"name": "TrueBeam 1", "kind": MachineKind.LINAC, "techniques": ["IMRT", "VMAT", "3DCRT", "SBRT"]},
    {"name": "TrueBeam 2", "kind": MachineKind.LINAC, "techniques": ["IMRT", "VMAT", "3DCRT", "SBRT"]},
    {"name": "Halcyon", "kind": MachineKind.LINAC, "techniques": ["IMRT", "VMAT", "3DCRT"]},
    {"name": "CT Sim", "kind": MachineKind.CT_SIM, "techniques": []},
    {"name": "IORT Unit", "kind": MachineKind.IORT, "techniques": ["IORT_E"], "opens_at": dt.time(8, 0), "closes_at": dt.time(17, 0)},
]
LINACS = ["TrueBeam 1", "TrueBeam 2", "Halcyon"]

GIVEN_NAMES = {
    "M": [
        "Aldo", "Bernard", "Calvin", "Desmond", "Elias", "Fergus", "Gideon", "Harlan", "Ignatius", "Jasper", "Leander",
        "Marek", "Nolan", "Osric", "Percival", "Quentin", "Rupert", "Silas", "Thaddeus", "Ulric", "Vernon", "Wendell",
        "Alistair", "Bram", "Cormac", "Dorian", "Emrys", "Florian", "Gustav", "Hollis", "Lucian", "Matthias",
    ],
    "F": [
        "Adela", "Beatrix", "Cordelia", "Delphine", "Elowen", "Fenella", "Greta", "Hermione", "Isolde", "Juniper",
        "Leonora", "Marisol", "Nerissa", "Ottilie", "Perpetua", "Rosamund", "Seraphina", "Tamsin", "Ursula", "Wilhelmina",
        "Annika", "Briony", "Clementine", "Dagny", "Esme", "Philippa", "Linnea", "Maren",
    ],
}
FAMILY_NAMES = [
    "Ashdown", "Blackwood", "Carrow", "Dunmore", "Ellery", "Fairweather", "Glenister", "Hartigan", "Ingleby", "Jessop",
    "Kilbride", "Lockridge", "Merriman", "Northcott", "Oakenfold", "Pendrell", "Quarrie", "Rushworth", "Saltonstall",
    "Thorncliffe", "Underhill", "Vanstone", "Wetherell", "Yardley", "Abernethy", "Brackenbury", "Cresswell", "Drummond",
    "Eskdale", "Fotheringham", "Gallimore", "Holloway", "Inchbald", "Kettleby", "Larkspur", "Moorcroft", "Nettleship",
    "Ormerod", "Pettigrew", "Ravensworth", "Stainforth", "Tregarthen", "Umfreville", "Waterhouse", "Whitlock",
    "Aldersey", "Birtwistle", "Calloway", "Delacourt", "Everdene", "Farrington", "Grisedale", "Hazlewood",
]

MESO_TRIAL = "RP-MESO-01 (synthetic)"
CHEMO_MESO = "Cisplatin + pemetrexed"
IMMUNO_MESO = "Nivolumab + ipilimumab"


def _rx(fractions, dpf, technique, minutes=15):
    dpf = Decimal(dpf)
    return {"fractions": fractions, "dpf": dpf, "technique": technique, "minutes": minutes}


def _scn_pleural_pd_adjuvant(rng):
    side = rng.choice(["Left", "Right"])
    rx = rng.choice([_rx(28, "1.80", "IMRT", 20), _rx(25, "2.00", "VMAT", 20)])
    return dict(
        site=DiseaseSite.PLEURAL_MESOTHELIOMA, histology=_meso_histology(rng), stage=rng.choice(["T1N0M0 (IA)", "T2N0M0 (IB)", "T3N0M0 (IB)", "T2N1M0 (II)"]),
        treated_site=f"{side} hemithorax (pleural surface after P/D)", intent="adjuvant", surgery=SurgeryType.PD, surgery_when="before",
        chemotherapy=CHEMO_MESO, chemo_when="before", trial=rng.random() < 0.4, **rx,
    )


def _scn_pleural_epp(rng):
    side = rng.choice(["Left", "Right"])
    return dict(
        site=DiseaseSite.PLEURAL_MESOTHELIOMA, histology=_meso_histology(rng), stage=rng.choice(["T2N0M0 (IB)", "T3N0M0 (IB)", "T3N1M0 (IIIA)"]),
        treated_site=f"{side} hemithorax after EPP", intent="adjuvant", surgery=SurgeryType.EPP, surgery_when="before",
        chemotherapy=CHEMO_MESO, chemo_when="before", trial=rng.random() < 0.3, **_rx(25, "1.80", "IMRT", 20),
    )


def _scn_pleural_neoadjuvant(rng):
    side = rng.choice(["Left", "Right"])
    return dict(
        site=DiseaseSite.PLEURAL_MESOTHELIOMA, histology="Epithelioid", stage=rng.choice(["T2N0M0 (IB)", "T3N0M0 (IB)"]),
        treated_site=f"{side} hemithorax (neoadjuvant, before EPP)", intent="neoadjuvant", surgery=SurgeryType.EPP, surgery_when="after",
        chemotherapy=CHEMO_MESO, chemo_when="after", trial=rng.random() < 0.5, **_rx(5, "5.00", "IMRT", 20),
    )


def _scn_pleural_definitive(rng):
    side = rng.choice(["Left", "Right"])
    return dict(
        site=DiseaseSite.PLEURAL_MESOTHELIOMA, histology=_meso_histology(rng), stage=rng.choice(["T3N1M0 (IIIA)", "T4N0M0 (IIIB)"]),
        treated_site=f"{side} hemithorax (intact lung)", intent="curative", surgery=None, chemotherapy=CHEMO_MESO, chemo_when="before",
        immunotherapy=IMMUNO_MESO if rng.random() < 0.4 else None, trial=rng.random() < 0.3, **_rx(28, "1.80", "VMAT", 20),
    )


def _scn_pleural_palliative(rng):
    side = rng.choice(["Left", "Right"])
    rx = rng.choice([_rx(5, "4.00", "3DCRT"), _rx(10, "3.00", "3DCRT"), _rx(10, "3.00", "VMAT")])
    return dict(
        site=DiseaseSite.PLEURAL_MESOTHELIOMA, histology=_meso_histology(rng, sarcomatoid=0.3), stage="T4N2M0 (IV)",
        treated_site=f"{side} chest wall mass (pain)", intent="palliative", surgery=None, immunotherapy=IMMUNO_MESO, **rx,
    )


def _scn_peritoneal(rng):
    if rng.random() < 0.5:
        rx, intent, where = _rx(20, "1.50", "IMRT", 20), "adjuvant", "Whole abdomen after cytoreduction"
    else:
        rx, intent, where = _rx(10, "3.00", "VMAT"), "palliative", "Abdominal nodal mass (obstruction)"
    return dict(
        site=DiseaseSite.PERITONEAL_MESOTHELIOMA, histology="Epithelioid", stage=rng.choice(["PCI 12", "PCI 18", "PCI 24"]), treated_site=where,
        intent=intent, surgery=SurgeryType.CRS_HIPEC, surgery_when="before", chemotherapy=CHEMO_MESO, chemo_when="after", **rx,
    )


def _scn_pericardial(rng):
    return dict(
        site=DiseaseSite.PERICARDIAL_MESOTHELIOMA, histology=rng.choice(["Epithelioid", "Biphasic"]), stage="Localised",
        treated_site="Pericardium and mediastinum", intent="adjuvant", surgery=SurgeryType.PERICARDIECTOMY, surgery_when="before",
        chemotherapy=CHEMO_MESO, chemo_when="after", **_rx(28, "1.80", "IMRT", 20),
    )


def _scn_spine(rng):
    level = rng.choice(["T6", "T8", "T11", "L1", "L3", "C7"])
    rx = rng.choice([_rx(5, "4.00", "3DCRT"), _rx(10, "3.00", "3DCRT"), _rx(3, "9.00", "SBRT", 30), _rx(5, "7.00", "SBRT", 30)])
    return dict(
        site=DiseaseSite.SPINE, histology=rng.choice(["Metastatic adenocarcinoma (lung primary)", "Metastatic renal cell carcinoma", "Metastatic breast carcinoma"]),
        stage="M1", treated_site=f"{level} vertebra", intent="palliative", surgery=None, **rx,
    )


def _scn_prostate(rng):
    rx = rng.choice([_rx(20, "3.00", "VMAT"), _rx(5, "7.25", "SBRT", 30)])
    return dict(
        site=DiseaseSite.PROSTATE, histology="Acinar adenocarcinoma, Gleason 3+4", stage=rng.choice(["T1cN0M0", "T2aN0M0", "T2bN0M0"]),
        treated_site="Prostate", intent="curative", surgery=None, sex="M", **rx,
    )


def _scn_lung(rng):
    if rng.random() < 0.5:
        rx, extra = rng.choice([_rx(3, "18.00", "SBRT", 30), _rx(5, "11.00", "SBRT", 30)]), {}
        stage, where = "T1bN0M0 (IA2)", rng.choice(["Right upper lobe nodule", "Left lower lobe nodule"])
    else:
        rx, extra = _rx(30, "2.00", "VMAT"), {"chemotherapy": "Carboplatin + paclitaxel (concurrent)", "chemo_when": "concurrent", "immunotherapy": "Durvalumab (consolidation)"}
        stage, where = "T3N2M0 (IIIB)", "Right lung and mediastinum"
    return dict(site=DiseaseSite.LUNG, histology=rng.choice(["Adenocarcinoma", "Squamous cell carcinoma"]), stage=stage, treated_site=where,
                intent="curative", surgery=None, **extra, **rx)


def _scn_liver(rng):
    rx = rng.choice([_rx(3, "15.00", "SBRT", 30), _rx(5, "8.00", "SBRT", 30)])
    return dict(site=DiseaseSite.LIVER, histology="Hepatocellular carcinoma", stage="BCLC A", treated_site=f"Liver segment {rng.choice(['IV', 'VI', 'VII', 'VIII'])}",
                intent="curative", surgery=None, **rx)


def _scn_head_and_neck(rng):
    if rng.random() < 0.6:
        rx, intent, surgery, where = _rx(35, "2.00", "VMAT"), "curative", None, "Oropharynx and bilateral neck"
    else:
        rx, intent, surgery, where = _rx(30, "2.00", "VMAT"), "adjuvant", SurgeryType.OTHER, "Oral cavity tumour bed and neck"
    return dict(site=DiseaseSite.HEAD_AND_NECK, histology="Squamous cell carcinoma", stage=rng.choice(["T2N1M0", "T3N2bM0"]), treated_site=where,
                intent=intent, surgery=surgery, surgery_when="before", chemotherapy="Cisplatin (concurrent)", chemo_when="concurrent", **rx)


def _scn_cns(rng):
    if rng.random() < 0.6:
        rx, histology, extra = _rx(30, "2.00", "VMAT"), "Glioblastoma, IDH-wildtype", {"chemotherapy": "Temozolomide (concurrent + adjuvant)", "chemo_when": "concurrent"}
    else:
        rx, histology, extra = _rx(27, "2.00", "IMRT"), "Meningioma, WHO grade 2", {}
    return dict(site=DiseaseSite.CNS, histology=histology, stage="", treated_site=rng.choice(["Left frontal lobe", "Right temporal lobe", "Parasagittal"]),
                intent="curative", surgery=SurgeryType.OTHER, surgery_when="before", **extra, **rx)


def _scn_sarcoma(rng):
    return dict(site=DiseaseSite.SARCOMA, histology=rng.choice(["Myxoid liposarcoma", "Undifferentiated pleomorphic sarcoma"]), stage="T2N0M0 (III)",
                treated_site=rng.choice(["Left thigh", "Right thigh"]), intent="neoadjuvant", surgery=SurgeryType.OTHER, surgery_when="after",
                **_rx(25, "2.00", "IMRT"))


def _meso_histology(rng, sarcomatoid=0.1):
    r = rng.random()
    return "Sarcomatoid" if r < sarcomatoid else ("Biphasic" if r < sarcomatoid + 0.2 else "Epithelioid")


SCENARIOS = [
    ("pleural_pd_adjuvant", 9, _scn_pleural_pd_adjuvant),
    ("pleural_epp_hemithoracic", 5, _scn_pleural_epp),
    ("pleural_neoadjuvant", 2, _scn_pleural_neoadjuvant),
    ("pleural_definitive", 3, _scn_pleural_definitive),
    ("pleural_palliative", 4, _scn_pleural_palliative),
    ("peritoneal_crs_hipec", 3, _scn_peritoneal),
    ("pericardial", 1, _scn_pericardial),
    ("spine_palliative", 5, _scn_spine),
    ("prostate", 4, _scn_prostate),
    ("lung", 4, _scn_lung),
    ("liver_sbrt", 2, _scn_liver),
    ("head_and_neck", 3, _scn_head_and_neck),
    ("cns", 3, _scn_cns),
    ("sarcoma_neoadjuvant", 2, _scn_sarcoma),
]
_SCENARIO_BUILDERS = {name: build for name, _, build in SCENARIOS}

PHASE_WEIGHTS = [("completed", 0.36), ("on_treatment", 0.45), ("approved", 0.07), ("simulated", 0.05), ("planned", 0.07)]

STOPS = {
    "stopped_toxicity": dict(
        scenario="pleural_epp_hemithoracic", reason="toxicity", after=14,
        note="CTCAE grade 3 pneumonitis (contralateral lung); treatment stopped", toxicity={"term": "Pneumonitis", "grade": 3},
    ),
    "stopped_progression": dict(scenario="lung_definitive", reason="progression", after=17, note="New brain metastases on restaging MRI"),
    "stopped_choice": dict(scenario="prostate", reason="patient_choice", after=8, note="Patient declined further treatment"),
}


@dataclass
class DemoResult:
    created: bool
    users: dict
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    courses: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# Users


def ensure_users(password=DEMO_PASSWORD):
    """One user per role (username = role) in its group, plus the ``admin`` superuser; password set on creation.

    The password is hashed once and the hash shared (a deliberately slow hash seven times over is seconds of seeding,
    and these are demo accounts with a published password)."""
    users = {}
    hashed = []

    def set_password(user):
        if not hashed:
            hashed.append(make_password(password))
        user.password = hashed[0]
        user.save()

    for role in roles.ROLES:
        user, created = User.objects.get_or_create(username=role, defaults={"first_name": role.capitalize(), "last_name": "Demo"})
        if created:
            set_password(user)
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        users[role] = user
    admin, created = User.objects.get_or_create(username=ADMIN_USERNAME, defaults={"is_staff": True, "is_superuser": True})
    if created:
        set_password(admin)
    users[ADMIN_USERNAME] = admin
    return users


def logins_table(users, password=DEMO_PASSWORD):
    rows = [("username", "role", "password")]
    for key, user in users.items():
        rows.append((user.username, "superuser" if key == ADMIN_USERNAME else key, password))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    return "\n".join(lines)


def demo_exists():
    return Patient.objects.filter(mrn__startswith=DEMO_MRN_PREFIX).exists()


# ----------------------------------------------------------------------------------------------------------------
# Extensions


def _module_missing(module_name):
    """True only when the module (or a parent package) does not exist; errors inside a module propagate."""
    if module_name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(module_name) is None
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return True
        raise


def run_extensions(names, *, seed, today, users, courses, log=None):
    """Call each ``module.function`` in ``names`` whose module exists; return the names that ran."""
    ran = []
    for dotted in names:
        module_name, _, func_name = dotted.rpartition(".")
        if _module_missing(module_name):
            if log:
                log(f"  extension {dotted}: module {module_name} not installed, skipped")
            continue
        func = getattr(importlib.import_module(module_name), func_name)
        started = time.perf_counter()
        func(rng=random.Random(f"{seed}:{dotted}"), today=today, users=users, courses=courses)
        ran.append(dotted)
        if log:
            log(f"  extension {dotted}: done in {time.perf_counter() - started:.1f} s")
    return ran


# ----------------------------------------------------------------------------------------------------------------
# Calendar helpers


def _open_days_back(calendar, day, k):
    """The k-th treatment day strictly before ``day``."""
    for _ in range(k):
        day -= dt.timedelta(days=1)
        while not calendar.is_open(day):
            day -= dt.timedelta(days=1)
    return day


def _open_days_ahead(calendar, day, k):
    for _ in range(k):
        day = calendar.next_open_day(day)
    return day


def _phase_plan(n):
    rest = n - len(STOPS)
    counts = {phase: max(1, round(w * rest)) for phase, w in PHASE_WEIGHTS}
    counts["on_treatment"] += rest - sum(counts.values())
    plan = list(STOPS)
    for phase, _ in PHASE_WEIGHTS:
        plan += [phase] * counts[phase]
    return plan


# ----------------------------------------------------------------------------------------------------------------
# The seeding


class _Seeder:
    def __init__(self, *, n_patients, seed, today, users, log):
        self.rng = random.Random(seed)
        self.seed = seed
        self.today = today
        self.users = users
        self.log = log or (lambda msg: None)
        self.n = n_patients
        self.stories = []  # one dict per course, in creation order
        self.sim_taken = set()
        self.path_steps = None if _module_missing(DEMO_PATH_STEPS) else importlib.import_module(DEMO_PATH_STEPS)
        self.mrn_numbers = set()

    # -- clinic ------------------------------------------------------------------------------------------------
    def clinic(self):
        self.machines = {}
        for spec in MACHINES:
            defaults = {k: v for k, v in spec.items() if k != "name"}
            machine, _ = Machine.objects.get_or_create(name=spec["name"], defaults=defaults)
            self.machines[spec["name"]] = machine
        # Manual closures: a staff-training day in the past and a software upgrade ahead (never today or the next
        # treatment day, so today's list stays busy).
        base = ClinicCalendar()
        past = _open_days_back(base, self.today, 14)
        ahead = _open_days_ahead(base, self.today, 12)
        for day, reason in ((past, "Staff training day (clinic closed)"), (ahead, "Record-and-verify system upgrade (clinic closed)")):
            Closure.objects.get_or_create(date=day, defaults={"reason": reason})
        self.calendar = ClinicCalendar()
        self.next_list_day = self.today if self.calendar.is_open(self.today) else self.calendar.next_open_day(self.today)

    # -- people ------------------------------------------------------------------------------------------------
    def _mrn(self):
        while True:
            number = self.rng.randint(100000, 199999)
            if number not in self.mrn_numbers:
                self.mrn_numbers.add(number)
                return f"{DEMO_MRN_PREFIX}{number}"

    def _patient(self, spec, first_day):
        rng = self.rng
        male_share = 0.75 if spec["site"] == DiseaseSite.PLEURAL_MESOTHELIOMA else 0.55
        sex = spec.get("sex") or ("M" if rng.random() < male_share else "F")
        age = rng.randint(62, 84) if "mesothelioma" in spec["site"] else rng.randint(41, 82)
        birth = first_day - dt.timedelta(days=int(age * 365.25) + rng.randint(0, 364))
        patient = Patient(
            mrn=self._mrn(), given_name=rng.choice(GIVEN_NAMES[sex]), family_name=rng.choice(FAMILY_NAMES), birth_date=birth, sex=sex
        )
        patient._history_user = self.users[roles.ONCOLOGIST]
        patient.save()
        return patient

    def _diagnosis(self, patient, spec, diagnosed_on):
        diagnosis = Diagnosis(
            patient=patient, site=spec["site"], histology=spec["histology"], stage=spec["stage"], diagnosed_on=diagnosed_on,
            notes="Synthetic demo record.",
        )
        diagnosis._history_user = self.users[roles.ONCOLOGIST]
        diagnosis.save()
        return diagnosis

    def _treatment(self, patient, diagnosis, kind, start, end=None, **fields):
        treatment = Treatment(patient=patient, diagnosis=diagnosis, kind=kind, start_date=start, end_date=end, **fields)
        treatment.full_clean()
        treatment._history_user = self.users[roles.ONCOLOGIST]
        treatment.save()
        return treatment

    def _course(self, patient, diagnosis, spec, name=""):
        dpf = spec["dpf"]
        course = Course(
            patient=patient, diagnosis=diagnosis, name=name, intent=spec["intent"], technique=spec["technique"],
            treated_site=spec["treated_site"], total_dose_gy=dpf * spec["fractions"], fractions_planned=spec["fractions"],
            dose_per_fraction_gy=dpf, fraction_minutes=spec["minutes"],
        )
        course.full_clean()
        course._history_user = self.users[roles.ONCOLOGIST]
        course.save()
        return course

    # -- pathway steps -----------------------------------------------------------------------------------------
    def _simulate(self, course, day, complete=True):
        machine = self.machines["CT Sim"]
        slots = [dt.time(h, m) for h in range(8, 17) for m in (0, 30)]
        self.rng.shuffle(slots)
        for t in slots:
            if (day, t) not in self.sim_taken:
                break
        else:  # pragma: no cover - 18 slots a day is far beyond the demo's needs
            raise RuntimeError(f"CT Sim full on {day}")
        self.sim_taken.add((day, t))
        site = course.treated_site.lower()
        immobilisation = "Thermoplastic mask" if any(w in site for w in ("oropharynx", "oral", "lobe", "parasagittal")) else (
            "Knee and foot rest" if "prostate" in site else "Wing board, vacuum bag")
        visit = book_simulation(course, local_datetime(day, t), machine, immobilisation=immobilisation, user=self.users[roles.SCHEDULER])
        if complete:
            complete_simulation(visit, user=self.users[roles.THERAPIST])
        return visit

    def _linac_for(self, spec):
        if spec["technique"] == "IORT_E":
            return self.machines["IORT Unit"]
        names = ["TrueBeam 1", "TrueBeam 2"] if spec["technique"] == "SBRT" else LINACS
        return self.machines[self.rng.choice(names)]

    def _preferred_time(self, spec, earliest=dt.time(7, 0)):
        if spec["technique"] == "IORT_E":
            return dt.time(10, 0)
        times = [dt.time(h, m) for h in range(7, 19) for m in (0, 15, 30, 45) if dt.time(h, m) >= earliest and (h, m) <= (18, 15)]
        return self.rng.choice(times)

    def _prepare(self, entry, start, *, approve=True, book=True, preferred=None, simulate=True):
        """Simulation about a week before ``start`` (and in the past), approval the treatment day before (or
        yesterday for a course starting later), the care path's steps up to approval, then book every fraction."""
        cal, rng, course, spec = self.calendar, self.rng, entry["course"], entry["_spec"]
        sim_day = min(_open_days_back(cal, start, rng.randint(5, 9)), _open_days_back(cal, self.today, rng.randint(2, 4)))
        approve_day = min(_open_days_back(cal, start, 1), _open_days_back(cal, self.today, 1))
        if simulate:
            self._simulate(course, sim_day)
        if approve:
            clear_for_treatment(course, user=self.users[roles.ONCOLOGIST], now=local_datetime(approve_day, dt.time(16, rng.randint(0, 59))))
        consult = _open_days_back(cal, sim_day, rng.randint(5, 12))
        steps = {"consult": consult, "simulation": sim_day, "or_booking": _open_days_ahead(cal, consult, 2)}
        if approve:
            clamp = lambda d: min(d, approve_day)  # noqa: E731
            steps.update(
                contouring=clamp(_open_days_ahead(cal, sim_day, 1)), prior_dose_review=clamp(_open_days_ahead(cal, sim_day, 1)),
                planning=clamp(_open_days_ahead(cal, sim_day, rng.randint(2, 3))), physics_check=approve_day, plan_approval=approve_day,
            )
        elif _open_days_ahead(cal, sim_day, 1) < self.today:
            steps["contouring"] = _open_days_ahead(cal, sim_day, 1)
        self._replay_path(course, consult, steps)
        if book:
            book_course(
                course, start, preferred_time=preferred or self._preferred_time(spec), machine=self._linac_for(spec),
                user=self.users[roles.SCHEDULER], allow_past=True,
            )

    # -- care paths (DEMO_PATH_STEPS, when installed) -----------------------------------------------------------
    def _replay_path(self, course, started_on, completions):
        """Date the course's care path: started at the consult, each step done on its day (events included)."""
        if self.path_steps is not None:
            self.path_steps.replay_path(course, started_on=started_on, completions=completions, users=self.users, today=self.today)

    def _complete_steps(self, course, completions):
        """Complete the open manual steps in ``completions`` ({code: date}) that are due by today, in order."""
        if self.path_steps is not None:
            self.path_steps.complete_steps(course, completions, users=self.users, today=self.today)

    # -- stories -----------------------------------------------------------------------------------------------
    def _new_story(self, phase_hint, scenario, spec, start, name="", patient=None, diagnosis=None, previous=None):
        rng = self.rng
        if patient is None:
            patient = self._patient(spec, start)
        if diagnosis is None:
            lead = 120 if spec.get("surgery") and spec.get("surgery_when") == "before" else 45
            diagnosis = self._diagnosis(patient, spec, start - dt.timedelta(days=lead + rng.randint(10, 60)))
        course = self._course(patient, diagnosis, spec, name=name)
        story = {
            "intent": spec["intent"], "technique": spec["technique"], "fractions": spec["fractions"],
            "dose_per_fraction_gy": spec["dpf"], "total_dose_gy": spec["dpf"] * spec["fractions"],
            "start": None, "end": None, "surgery": None, "chemotherapy": None, "immunotherapy": None, "trial": None,
            "multimodal": False, "missed": [], "moved_for_downtime": 0, "termination": None, "toxicity": None,
            "previous_course": previous,
        }
        entry = {"course": course, "patient": patient, "diagnosis": diagnosis, "phase": phase_hint, "site": spec["site"],
                 "scenario": scenario, "story": story, "_spec": spec, "_planned_start": start}
        self.stories.append(entry)
        return entry

    def _multimodal(self, entry, start, end_estimate):
        """Surgery, systemic therapy and trial records around the radiotherapy dates (past events only, bar surgery)."""
        rng, spec, story = self.rng, entry["_spec"], entry["story"]
        patient, diagnosis = entry["patient"], entry["diagnosis"]
        surgery = spec.get("surgery")
        if surgery:
            when = start - dt.timedelta(days=rng.randint(42, 70)) if spec.get("surgery_when") == "before" else end_estimate + dt.timedelta(days=rng.randint(21, 42) if spec["fractions"] > 5 else rng.randint(5, 10))
            story["surgery"] = {"type": surgery, "date": when}
            if when <= self.today:
                self._treatment(patient, diagnosis, TreatmentKind.SURGERY, when, when, surgery_type=surgery,
                                notes="Macroscopic complete resection" if surgery in (SurgeryType.PD, SurgeryType.EPP, SurgeryType.CRS_HIPEC) else "")
        chemo = spec.get("chemotherapy")
        if chemo:
            when = spec.get("chemo_when", "before")
            if when == "before":
                anchor = story["surgery"]["date"] if story["surgery"] and story["surgery"]["date"] < start else start
                c_start, c_end = anchor - dt.timedelta(days=rng.randint(100, 120)), anchor - dt.timedelta(days=rng.randint(21, 35))
            elif when == "concurrent":
                c_start, c_end = start, end_estimate
            else:
                anchor = max(end_estimate, story["surgery"]["date"] if story["surgery"] else end_estimate)
                c_start = anchor + dt.timedelta(days=rng.randint(28, 42))
                c_end = c_start + dt.timedelta(days=84)
            story["chemotherapy"] = chemo
            if c_start <= self.today:
                self._treatment(patient, diagnosis, TreatmentKind.CHEMOTHERAPY, c_start, c_end if c_end <= self.today else None,
                                agent=chemo, notes="4 cycles, 3-weekly" if "pemetrexed" in chemo else "")
        immuno = spec.get("immunotherapy")
        if immuno:
            i_start = end_estimate + dt.timedelta(days=rng.randint(14, 42)) if "Durvalumab" in immuno else start - dt.timedelta(days=rng.randint(30, 90))
            story["immunotherapy"] = immuno
            if i_start <= self.today:
                self._treatment(patient, diagnosis, TreatmentKind.IMMUNOTHERAPY, i_start, None, agent=immuno)
        if spec.get("trial"):
            arm = rng.choice(["A: surgery + hemithoracic IMRT + chemotherapy", "B: surgery + chemotherapy, IMRT at progression"])
            if spec["intent"] == "neoadjuvant":
                arm = "C: neoadjuvant hemithoracic IMRT then EPP"
            enrolled = start - dt.timedelta(days=rng.randint(120, 160))
            story["trial"] = {"name": MESO_TRIAL, "arm": arm}
            self._treatment(patient, diagnosis, TreatmentKind.TRIAL, enrolled, agent=MESO_TRIAL, trial_arm=arm[:60])
        story["multimodal"] = bool(story["surgery"] and story["chemotherapy"])

    def build(self):
        rng, cal, today = self.rng, self.calendar, self.today
        plan = _phase_plan(self.n)
        names, weights = [s[0] for s in SCENARIOS], [s[1] for s in SCENARIOS]

        # Completed courses spread over ~5 years, the oldest about 5 years ago; starts at least ~11 weeks ago.
        n_completed = plan.count("completed")
        offsets = sorted((rng.randint(80, 5 * 365 - 20) for _ in range(n_completed - 1)), reverse=True)
        completed_starts = [cal.add_working_days(today - dt.timedelta(days=5 * 365 - 10), 0)]
        completed_starts += [cal.add_working_days(today - dt.timedelta(days=o), 0) for o in offsets]

        special_done = set()
        for phase in plan:
            if phase in STOPS:
                self._stopped_story(phase)
            elif phase == "completed":
                start = completed_starts.pop(0)
                if "iort" not in special_done and start < today - dt.timedelta(days=400):
                    special_done.add("iort")
                    self._iort_story(start)
                    continue
                scenario = rng.choices(names, weights)[0]
                self._new_story("completed", scenario, _SCENARIO_BUILDERS[scenario](rng), start)
            elif phase == "on_treatment":
                if "spine_reirradiation" not in special_done:
                    special_done.add("spine_reirradiation")
                    self._reirradiation_story()
                    continue
                scenario = rng.choices(names, weights)[0]
                spec = _SCENARIO_BUILDERS[scenario](rng)
                k = rng.randint(1, max(1, spec["fractions"] - 2))
                start = _open_days_back(cal, self.next_list_day, k) if k else self.next_list_day
                self._new_story("on_treatment", scenario, spec, start)
            elif phase == "approved":
                scenario = rng.choices(names, weights)[0]
                spec = _SCENARIO_BUILDERS[scenario](rng)
                ahead = 0 if "approved_today" not in special_done else rng.randint(1, 8)
                special_done.add("approved_today")
                start = _open_days_ahead(cal, self.next_list_day, ahead)
                self._new_story("approved", scenario, spec, start)
            elif phase == "simulated":
                scenario = rng.choices(names, weights)[0]
                spec = _SCENARIO_BUILDERS[scenario](rng)
                self._new_story("simulated", scenario, spec, _open_days_ahead(cal, self.next_list_day, rng.randint(6, 12)))
            elif phase == "planned":
                scenario = rng.choices(names, weights)[0]
                spec = _SCENARIO_BUILDERS[scenario](rng)
                self._new_story("planned", scenario, spec, _open_days_ahead(cal, self.next_list_day, rng.randint(10, 20)))

        # Missed fractions: one completed course, two on-treatment ones (one twice).
        completed = [e for e in self.stories if e["phase"] == "completed" and e["_spec"]["fractions"] >= 10]
        ongoing = [
            e for e in self.stories
            if e["phase"] == "on_treatment" and e["_spec"]["fractions"] >= 15 and e["_planned_start"] <= _open_days_back(cal, today, 10)
        ]
        for entry, times in [(e, 1) for e in completed[:1]] + list(zip(ongoing[:2], (1, 2))):
            entry["_miss"] = times

    def _stopped_story(self, key):
        rng, cal = self.rng, self.calendar
        stop = STOPS[key]
        if stop["scenario"] == "lung_definitive":
            spec = _scn_lung(rng)
            while spec["fractions"] != 30:
                spec = _scn_lung(rng)
            scenario = "lung"
        else:
            scenario = stop["scenario"]
            spec = _SCENARIO_BUILDERS[scenario](rng)
            while spec["fractions"] < stop["after"] + 3:
                spec = _SCENARIO_BUILDERS[scenario](rng)
        start = _open_days_back(cal, self.today, stop["after"] + rng.randint(8, 60))
        entry = self._new_story("stopped", scenario, spec, start)
        entry["_stop"] = stop

    def _iort_story(self, start):
        """Retroperitoneal sarcoma: preoperative IMRT 50/25, then resection with a 12 Gy IORT boost in the OR."""
        rng = self.rng
        spec = dict(site=DiseaseSite.SARCOMA, histology="Dedifferentiated liposarcoma", stage="T3N0M0 (IIIB)", treated_site="Retroperitoneum (preoperative)",
                    intent="neoadjuvant", surgery=SurgeryType.OTHER, surgery_when="after", **_rx(25, "2.00", "IMRT"))
        first = self._new_story("completed", "sarcoma_iort", spec, start)
        end_estimate = self.calendar.add_working_days(start, 26)
        surgery_day = self.calendar.add_working_days(end_estimate + dt.timedelta(days=35), 0)
        iort_spec = dict(spec, treated_site="Retroperitoneal tumour bed (intraoperative)", intent="curative", surgery=SurgeryType.OTHER,
                         surgery_when="same_day", **_rx(1, "12.00", "IORT_E", 30))
        second = self._new_story("completed", "sarcoma_iort", iort_spec, surgery_day, name="IORT boost", patient=first["patient"], diagnosis=first["diagnosis"])
        first["story"]["multimodal"] = second["story"]["multimodal"] = True

    def _reirradiation_story(self):
        """Spine: 30 Gy / 10 three years ago, now SBRT re-irradiation of a local recurrence (on treatment)."""
        rng, cal = self.rng, self.calendar
        spec = _scn_spine(rng)
        spec.update(_rx(10, "3.00", "3DCRT"))
        old_start = cal.add_working_days(self.today - dt.timedelta(days=3 * 365 + rng.randint(0, 90)), 0)
        first = self._new_story("completed", "spine_palliative", spec, old_start)
        re_spec = dict(spec, intent="reirradiation", treated_site=spec["treated_site"] + " (re-irradiation)", **_rx(5, "6.00", "SBRT", 30))
        start = _open_days_back(cal, self.next_list_day, 2)
        self._new_story("on_treatment", "spine_reirradiation", re_spec, start, name="Re-irradiation", patient=first["patient"],
                        diagnosis=first["diagnosis"], previous=first["course"])

    # -- run ---------------------------------------------------------------------------------------------------
    def _stage(self, name):
        now = time.perf_counter()
        self.log(f"  {name}: {now - self._t:.1f} s")
        self._t = now

    def run(self):
        self._t = time.perf_counter()
        self.clinic()
        self.build()
        self._stage("clinic, patients, diagnoses, courses (and their care paths)")
        cal, today = self.calendar, self.today
        entries = sorted(self.stories, key=lambda e: e["_planned_start"])
        # Simulation, approval and booking, in chronological order of the planned start.
        for entry in entries:
            spec, course, start, phase = entry["_spec"], entry["course"], entry["_planned_start"], entry["phase"]
            end_estimate = cal.add_working_days(start, spec["fractions"])
            if entry["scenario"] != "sarcoma_iort":
                self._multimodal(entry, start, end_estimate)
            if phase in ("completed", "on_treatment", "stopped", "approved"):
                early = dt.time(13, 0) if phase == "approved" and start == self.next_list_day else dt.time(7, 0)
                self._prepare(entry, start, preferred=self._preferred_time(spec, earliest=early), simulate=spec["technique"] != "IORT_E")
            elif phase == "simulated":
                # CT done in the last few days, plan not yet approved; most are already booked.
                self._prepare(entry, start, approve=False, book=rng_bool(self.rng, 0.6))
            elif phase == "planned":
                consult = _open_days_back(cal, today, self.rng.randint(1, 6))
                self._replay_path(course, consult, {"consult": consult})
                if rng_bool(self.rng, 0.75):
                    self._simulate(course, _open_days_ahead(cal, self.next_list_day, self.rng.randint(1, 5)), complete=False)
        # The IORT story: resection with the IORT boost on the day of the single fraction, after preoperative IMRT.
        for entry in entries:
            if entry["_spec"]["technique"] == "IORT_E":
                day = entry["_planned_start"]
                self._treatment(entry["patient"], entry["diagnosis"], TreatmentKind.SURGERY, day, day, surgery_type=SurgeryType.OTHER,
                                notes="Resection of retroperitoneal sarcoma with IORT boost (12 Gy electrons)")
                for e in entries:
                    if e["scenario"] == "sarcoma_iort" and e["patient"].pk == entry["patient"].pk:
                        e["story"]["surgery"] = {"type": SurgeryType.OTHER, "date": day}

        self._stage("multimodal history, simulations, approvals, bookings")
        self._downtimes()
        self._deliveries(entries)
        self._followups()
        self._stage("downtime, deliveries, missed fractions, stops, follow-ups")
        for entry in self.stories:
            course = Course.objects.get(pk=entry["course"].pk)
            entry["course"] = course
            entry["phase"] = course.status
            live = list(course.fractions.filter(status__in=[AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED]).order_by("starts_at"))
            entry["story"]["start"] = local_day(live[0].starts_at) if live else None
            entry["story"]["end"] = local_day(live[-1].starts_at) if live else None
        return [{k: v for k, v in e.items() if not k.startswith("_")} for e in self.stories]

    def _downtimes(self):
        cal, users = self.calendar, self.users
        physicist = users[roles.PHYSICIST]
        d1 = _open_days_back(cal, self.today, 4)
        d2 = _open_days_back(cal, self.today, 11)
        d3 = _open_days_ahead(cal, self.next_list_day, 3)
        plans = [
            (self.machines["TrueBeam 1"], d1, dt.time(7, 0), dt.time(12, 0), "Magnetron replacement (unplanned service)"),
            (self.machines["Halcyon"], d2, dt.time(7, 0), dt.time(19, 0), "Annual QA and service"),
            (self.machines["TrueBeam 2"], d3, dt.time(16, 0), dt.time(19, 0), "Monthly QA"),
        ]
        moved = Counter()
        self.downtime_moves = 0
        for machine, day, t0, t1, reason in plans:
            result = add_downtime(machine, local_datetime(day, t0), local_datetime(day, t1), reason, user=physicist)
            for move in result.moves:
                moved[move.fraction.course_id] += 1
            self.downtime_moves += len(result.moves)
        for entry in self.stories:
            entry["story"]["moved_for_downtime"] = moved.get(entry["course"].pk, 0)

    def _deliveries(self, entries):
        therapist, oncologist = self.users[roles.THERAPIST], self.users[roles.ONCOLOGIST]
        cutoff = local_datetime(self.today, DELIVERED_TODAY_BEFORE)
        today_start = local_datetime(self.today, dt.time(0))
        reasons = ["Patient unwell (nausea)", "Transport unavailable", "Febrile neutropenia: held for a day", "Family emergency"]
        for entry in entries:
            if entry["phase"] not in ("completed", "on_treatment", "stopped"):
                continue
            course = entry["course"]
            stop = entry.get("_stop")
            to_miss = entry.get("_miss", 0)
            delivered = 0
            queue = []
            while True:
                if not queue:  # (re)load after a missed fraction renumbers the rest and appends its make-up
                    queue = list(course.fractions.filter(status=AppointmentStatus.SCHEDULED).order_by("-starts_at"))
                    if not queue:
                        break
                nxt = queue[-1]
                if stop and delivered >= stop["after"]:
                    break
                due = nxt.starts_at < today_start or nxt.starts_at < cutoff
                if not due:
                    break
                if to_miss and delivered >= 3 + 4 * (entry.get("_miss", 0) - to_miss):
                    to_miss -= 1
                    reason = self.rng.choice(reasons)
                    mark_missed(nxt, user=therapist, reason=reason)
                    entry["story"]["missed"].append(local_day(nxt.starts_at))
                    queue = []
                    continue
                # A few minutes after the appointment starts; the dose is the prescribed dose per fraction.
                now = nxt.starts_at + dt.timedelta(minutes=nxt.duration_minutes - 2)
                deliver_fraction(nxt, user=therapist, now=now)
                queue.pop()
                delivered += 1
            if stop:
                last = course.fractions.filter(status=AppointmentStatus.DELIVERED).order_by("-starts_at").first()
                stop_day = self.calendar.next_open_day(local_day(last.starts_at))
                stop_course(course, reason=stop["reason"], note=stop["note"], user=oncologist, on_date=stop_day)
                entry["story"]["termination"] = {"reason": stop["reason"], "note": stop["note"], "date": stop_day}
                if stop.get("toxicity"):
                    entry["story"]["toxicity"] = dict(stop["toxicity"], date=local_day(last.starts_at))
                propose_followups(Course.objects.get(pk=course.pk), user=oncologist)
            first = course.fractions.filter(status=AppointmentStatus.DELIVERED).order_by("starts_at").first()
            if first is not None and not stop:
                first_day = local_day(first.starts_at)
                steps = {"weekly_review": _open_days_ahead(self.calendar, first_day, 4)}
                done = Course.objects.filter(pk=course.pk).values_list("completed_on", flat=True).first()
                if done:
                    eot = _open_days_ahead(self.calendar, done, 1)
                    steps.update(eot_summary=eot, first_followup=_open_days_ahead(self.calendar, eot, 1))
                self._complete_steps(course, steps)

    def _followups(self):
        """Follow-up visits already due are done (imaging performed); later ones stay proposed."""
        due = list(FollowUpVisit.objects.filter(course__patient__mrn__startswith=DEMO_MRN_PREFIX, due_date__lt=self.today, status=FollowUpStatus.PROPOSED))
        for visit in due:
            visit.status = FollowUpStatus.DONE
        if due:
            bulk_update_with_history(due, FollowUpVisit, ["status"], default_user=self.users[roles.ONCOLOGIST])


def rng_bool(rng, p):
    return rng.random() < p


def figures(today):
    """Counts that describe the demo clinic (the command prints them; the tests check them)."""
    calendar = ClinicCalendar()
    list_day = today if calendar.is_open(today) else calendar.next_open_day(today)
    todays = list(daily_list(list_day))
    patients = Patient.objects.filter(mrn__startswith=DEMO_MRN_PREFIX)
    courses = Course.objects.filter(patient__in=patients)
    fractions = Fraction.objects.filter(course__in=courses)
    return {
        "patients": patients.count(),
        "courses": courses.count(),
        "courses_by_status": dict(sorted(Counter(courses.values_list("status", flat=True)).items())),
        "fractions_by_status": dict(sorted(Counter(fractions.values_list("status", flat=True)).items())),
        "fractions": fractions.count(),
        "makeups": fractions.filter(is_makeup=True).count(),
        "list_day": list_day.isoformat(),
        "list_size": len(todays),
        "list_delivered": sum(f.status == AppointmentStatus.DELIVERED for f in todays),
        "list_by_machine": dict(sorted(Counter(f.machine.name for f in todays).items())),
        "followup_visits": FollowUpVisit.objects.filter(course__in=courses).count(),
    }


def seed(*, patients=DEFAULT_PATIENTS, seed=DEFAULT_SEED, today=None, extensions=None, log=None):
    """Seed the demo clinic unless it exists; return a :class:`DemoResult` (users, figures, course stories)."""
    if patients < MIN_PATIENTS:
        raise ValueError(f"The demo clinic needs at least {MIN_PATIENTS} patients (every phase and story).")
    today = today or timezone.localdate()
    extensions = DEMO_EXTENSIONS if extensions is None else extensions
    started = time.perf_counter()
    with transaction.atomic():
        users = ensure_users()
        if demo_exists():
            return DemoResult(created=False, users=users, figures=figures(today))
        seeder = _Seeder(n_patients=patients, seed=seed, today=today, users=users, log=log)
        courses = seeder.run()
        if log:
            log(f"  core pathway seeded in {time.perf_counter() - started:.1f} s")
        run_extensions(extensions, seed=seed, today=today, users=users, courses=courses, log=log)
    result = DemoResult(created=True, users=users, seconds=time.perf_counter() - started, figures=figures(today), courses=courses)
    result.figures["downtime_moves"] = seeder.downtime_moves
    return result
