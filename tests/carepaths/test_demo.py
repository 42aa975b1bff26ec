"""The demo extension puts seeded patients at every step of their care paths, some overdue, dated from the course."""

import datetime as dt
import random

import pytest

from workflow.carepaths import demo as carepath_demo, services as carepaths
from workflow.pathway import demo
from workflow.models import CarePath, CareTask

pytestmark = pytest.mark.django_db
TODAY = dt.date(2026, 11, 25)  # a Wednesday


def test_demo_paths_cover_every_step_with_some_overdue(templates):
    result = demo.seed(patients=demo.MIN_PATIENTS + 8, today=TODAY, extensions=[])
    counts = carepath_demo.seed(rng=random.Random(3), today=TODAY, users=result.users, courses=result.courses)
    assert counts["paths"] == len(result.courses)
    assert counts["overdue"] >= 2
    board = carepaths.board(today=TODAY)
    positions = {c["code"] for c in board["columns"] if c["cards"]}
    # 20 patients: someone before treatment (consult or simulation, and a step after simulation), starting, on
    # treatment, and after the last fraction; the default 60-patient demo covers every step of the curative path.
    assert {"first_fraction", "weekly_review", "eot_summary", "first_followup"} <= positions, positions
    assert positions & {"consult", "simulation"} and positions & {"contouring", "planning", "physics_check", "plan_approval"}, positions
    # Replayed dates follow the course: simulation and first fraction done on the days they happened.
    for entry in result.courses:
        course = entry["course"]
        path = CarePath.objects.get(course=course)
        sim = path.tasks.filter(code="simulation", status="done").first()
        visit = course.simulations.filter(status="delivered").order_by("starts_at").first()
        if sim and visit:
            assert sim.completed_on == carepaths._local_day(visit.starts_at)
        for task in path.tasks.filter(status="done"):
            assert task.opened_on <= task.completed_on <= TODAY
        if course.status == "stopped":
            assert path.status == "stopped"
        if course.status in ("approved", "on_treatment"):
            assert carepaths.carepath_gate(course) is None  # approved courses had their physics check
    frame = carepaths.carepath_timing_frame()
    assert frame["sim_to_first_fraction"].notna().sum() >= 5
    assert CareTask.objects.filter(status="done").exclude(completed_on__lte=TODAY).count() == 0


def test_demo_registry_cohort_gets_no_care_paths(templates):
    """The full demo (with the outcomes extension's historical registry cohort): only the clinic's own courses have
    paths; not one task sits on a course entered completed, and the oncologist's consult queue is the handful of
    new patients, not hundreds of historical ones."""
    from workflow.models import Course

    demo.seed(patients=demo.MIN_PATIENTS + 8, today=TODAY)
    registry = Course.objects.filter(name__startswith="Registry")
    assert registry.count() > 100
    assert not CarePath.objects.filter(course__in=registry).exists()
    consults = CareTask.objects.filter(code="consult", status__in=carepaths.LIVE)
    assert 0 < consults.count() <= 5
    assert not consults.filter(path__course__status__in=["completed", "stopped"]).exists()
