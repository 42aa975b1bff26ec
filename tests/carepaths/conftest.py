"""Care-path fixtures: the default templates are loaded after migrate, so every course created here gets a path."""

import datetime as dt
from decimal import Decimal

import pytest

from tests.conftest import make_course as _make_course
from workflow.carepaths.services import replay_path
from workflow.models import CarePathTemplate

MONDAY = dt.date(2027, 3, 1)  # a plain fortnight: no US federal holiday between 1 and 12 March 2027


def make_course(*args, **kwargs):
    """A course whose care path is as created: its blocking steps are left for the test (``checks_done=False``)."""
    kwargs.setdefault("checks_done", False)
    return _make_course(*args, **kwargs)


@pytest.fixture
def templates(db):
    assert CarePathTemplate.objects.filter(code="curative-imrt-vmat").exists(), "default templates are loaded on migrate"
    return {t.code: t for t in CarePathTemplate.objects.all()}


def restart(course, started_on, completions=None, users=None):
    """Date the course's path from ``started_on`` (the path itself started when the course was created)."""
    replay_path(course.carepath, started_on=started_on, completions=completions or {}, users=users or {}, today=dt.date(2099, 1, 1))
    course.refresh_from_db()
    return course.carepath


@pytest.fixture
def path_course(templates, patient, diagnosis, clinic):
    """A 5 x 4 Gy adjuvant IMRT course (curative template) whose path starts on MONDAY."""
    course = make_course(patient, diagnosis, fractions=5, dose=Decimal("4.00"))
    restart(course, MONDAY)
    return course


def task(course, code):
    return course.carepath.tasks.get(code=code)
