"""Shared fixtures: a user per clinic role, a small clinic (linacs, a CT simulator) and a patient with a course."""

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User

from workflow import roles
from workflow.models import Course, Diagnosis, Machine, MachineKind, Patient

PASSWORD = "radpath-test-pw"


def make_user(username, role=None, **extra):
    user = User.objects.create_user(username=username, password=PASSWORD, **extra)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def users(db):
    return {role: make_user(role, role) for role in roles.ROLES}


@pytest.fixture
def therapist(users):
    return users[roles.THERAPIST]


@pytest.fixture
def oncologist(users):
    return users[roles.ONCOLOGIST]


@pytest.fixture
def clinic(db):
    """Two IMRT/VMAT linacs, one 3D-CRT-only linac and a CT simulator, open 07:00-19:00."""
    return {
        "linac1": Machine.objects.create(name="Linac 1", techniques=["IMRT", "VMAT", "3DCRT", "SBRT"]),
        "linac2": Machine.objects.create(name="Linac 2", techniques=["IMRT", "VMAT", "3DCRT"]),
        "linac3": Machine.objects.create(name="Linac 3", techniques=["3DCRT"]),
        "ct": Machine.objects.create(name="CT Sim", kind=MachineKind.CT_SIM, techniques=[]),
    }


@pytest.fixture
def patient(db):
    return Patient.objects.create(mrn="MRN0001", given_name="Ada", family_name="Pleura", birth_date=dt.date(1955, 3, 14), sex="F")


@pytest.fixture
def diagnosis(patient):
    return Diagnosis.objects.create(
        patient=patient, site="pleural_mesothelioma", histology="Epithelioid", stage="T2N0M0", diagnosed_on=dt.date(2026, 6, 1)
    )


def pass_blocking_checks(course):
    """Mark the course's pre-approval blocking care-path steps (physics plan check, prior-dose review) skipped, as
    checked outside the test: for tests of other rules (delivery order, dose, holds) that deliver fractions.
    The care-path tests keep them (``make_course(..., checks_done=False)``)."""
    from workflow.carepaths import services as carepaths
    from workflow.models import CarePath, PathEvent, TaskStatus

    path = CarePath.objects.filter(course=course).first()
    if path is None:
        return course
    for t in path.tasks.active().filter(blocks_treatment=True).exclude(event=PathEvent.COURSE_CLEARED).exclude(status__in=carepaths.FINISHED):
        carepaths._finish(t, TaskStatus.SKIPPED, on=path.started_on, user=None, reason="Checked outside this test")
    return course


def make_course(patient, diagnosis=None, fractions=25, dose=Decimal("2.00"), technique="IMRT", checks_done=True, **extra):
    fields = dict(
        patient=patient,
        diagnosis=diagnosis,
        intent="adjuvant",
        technique=technique,
        treated_site="Left hemithorax",
        total_dose_gy=Decimal(fractions) * dose,
        fractions_planned=fractions,
        dose_per_fraction_gy=dose,
    )
    fields.update(extra)
    course = Course(**fields)
    course.full_clean()
    course.save()
    return pass_blocking_checks(course) if checks_done else course


@pytest.fixture
def course(patient, diagnosis):
    return make_course(patient, diagnosis)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    """PBKDF2's deliberate slowness protects real passwords, not test users; MD5 keeps fixtures quick."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_cache():
    """API throttle counts live in the cache, which outlives a test: each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
