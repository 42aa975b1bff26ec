"""The demo extension adds realistic, deterministic toxicity to the seeded courses."""

import datetime as dt
import random
from decimal import Decimal

import pytest

from tests.conftest import make_course
from workflow.toxicity import services as tox
from workflow.toxicity import demo as toxicity_demo
from workflow.pathway.delivery import clear_for_treatment, deliver_fraction, stop_course
from workflow.models import CourseHold, Patient, ToxicityEvent
from workflow.pathway.scheduling import book_course, local_datetime

pytestmark = pytest.mark.django_db
TODAY = dt.date(2027, 6, 2)  # a Wednesday


def _course(n, site, start, fractions, deliver, oncologist, therapist, technique="IMRT", treated_site="Left hemithorax"):
    patient = Patient.objects.create(mrn=f"RPD-T{n}", given_name="Demo", family_name=f"P{n}", birth_date=dt.date(1950, 1, 1))
    course = make_course(patient, fractions=fractions, dose=Decimal("2.00"), technique=technique, treated_site=treated_site)
    book_course(course, start, allow_past=True)
    clear_for_treatment(course, user=oncologist)
    for f in list(course.fractions.filter(status="scheduled").order_by("number"))[:deliver]:
        deliver_fraction(f, user=therapist, now=local_datetime(TODAY, dt.time(8)))
    course.refresh_from_db()
    return {"course": course, "patient": patient, "site": site, "phase": course.status, "story": {"toxicity": None, "termination": None}}


@pytest.fixture
def demo_courses(clinic, users):
    onc, ther = users["oncologist"], users["therapist"]
    entries = [
        _course(i, "pleural_mesothelioma", dt.date(2026, 9, 7) + dt.timedelta(days=7 * i), 25, 25, onc, ther) for i in range(6)
    ]
    entries.append(_course(10, "pleural_mesothelioma", dt.date(2027, 5, 3), 25, 22, onc, ther))  # on treatment today
    entries.append(_course(11, "lung", dt.date(2027, 5, 10), 30, 17, onc, ther, treated_site="Right lung"))
    entries.append(_course(12, "prostate", dt.date(2027, 5, 17), 20, 12, onc, ther, technique="VMAT", treated_site="Prostate"))
    stopped = _course(13, "pleural_mesothelioma", dt.date(2027, 3, 1), 25, 14, onc, ther)
    stop_course(stopped["course"], reason="toxicity", note="CTCAE grade 3 pneumonitis; treatment stopped", user=onc, on_date=dt.date(2027, 3, 19))
    stopped["course"].refresh_from_db()
    stopped["phase"] = "stopped"
    stopped["story"] = {"toxicity": {"term": "Pneumonitis", "grade": 3, "date": dt.date(2027, 3, 18)},
                        "termination": {"reason": "toxicity", "note": "CTCAE grade 3 pneumonitis; treatment stopped", "date": dt.date(2027, 3, 19)}}
    entries.append(stopped)
    return entries


def test_demo_toxicity(demo_courses, users):
    counts = toxicity_demo.seed(rng=random.Random(7), today=TODAY, users=users, courses=demo_courses)
    assert counts["events"] == ToxicityEvent.objects.count() > 10
    grades = list(ToxicityEvent.objects.filter(term__in=["Fatigue", "Nausea"]).values_list("worst_grade", flat=True))
    assert grades and max(grades) <= 2 and sum(g == 1 for g in grades) >= len(grades) / 2
    pneumonitis = ToxicityEvent.objects.filter(term="Pneumonitis", worst_grade=3)
    assert pneumonitis.count() >= 3
    late_or_subacute = [e for e in pneumonitis if e.course.status == "completed"]
    assert late_or_subacute and all(e.onset_date > tox.course_end(e.course) + dt.timedelta(days=30) for e in late_or_subacute)
    stopped = demo_courses[-1]["course"]
    hold = CourseHold.objects.get(course=stopped)
    assert hold.decision == "stop" and hold.event.action_taken == "stopped"
    assert CourseHold.objects.filter(decision="").count() == 1  # one open hold on a course on treatment
    assert CourseHold.objects.filter(decision="resume").count() == 1
    open_hold = CourseHold.objects.get(decision="")
    assert open_hold.course.status == "on_treatment" and tox.toxicity_gate(open_hold.course)
    assert stopped.weekly_reviews.count() == 2  # fractions 5 and 10 of the 14 delivered
    due = tox.reviews_due(today=TODAY)
    assert all(r.course.status == "on_treatment" for r in due)


def test_demo_toxicity_is_deterministic(demo_courses, users):
    from django.db import transaction

    snapshots = []
    for _ in range(2):
        sid = transaction.savepoint()
        toxicity_demo.seed(rng=random.Random(42), today=TODAY, users=users, courses=demo_courses)
        snapshots.append(sorted(ToxicityEvent.objects.values_list("course_id", "term", "grade", "worst_grade", "onset_date", "resolved_date")))
        transaction.savepoint_rollback(sid)
    assert snapshots[0] == snapshots[1] and snapshots[0]
