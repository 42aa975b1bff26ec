"""Side-effect pages: quick entry, course page with regrade/resolve, hold decision, review worklist, alert tags."""

import datetime as dt

import pytest
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import timezone

from tests.toxicity.test_api import due_today
from tests.workflow_api.conftest import booked_course, web  # noqa: F401
from workflow.toxicity import services as tox
from workflow.models import CourseHold, ToxicityEvent

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.toxicity.urls")]


def test_quick_entry_form_lists_terms_and_grade_descriptions(web, booked_course):
    r = web("oncologist").get(f"/side-effects/new/?course={booked_course.pk}&term=Alopecia")
    html = r.content.decode()
    assert r.status_code == 200
    assert html.count("<option value=") >= 837 and 'list="ctcae-terms"' in html
    assert "50% or more hair loss" in html  # Alopecia grade 2 description on its radio label
    assert 'id="id_grade_3" disabled' in html  # Alopecia has no grade 3
    assert web("therapist").get(f"/side-effects/new/?course={booked_course.pk}").status_code == 403


def test_quick_entry_rejects_a_grade_the_term_does_not_allow(web, booked_course):
    start = tox.course_start(booked_course)
    r = web("oncologist").post(
        f"/side-effects/new/?course={booked_course.pk}",
        {"course": booked_course.pk, "term": "Fatigue", "grade": 3, "onset_date": start, "attribution": "possible", "action_taken": "none"},
    )
    assert r.status_code == 302 and ToxicityEvent.objects.get().grade == 3
    r = web("oncologist").post(
        f"/side-effects/new/?course={booked_course.pk}",
        {"course": booked_course.pk, "term": "Nausea", "grade": 4, "onset_date": start, "attribution": "possible", "action_taken": "none"},
    )
    assert r.status_code == 200 and "Grade 4 is not allowed for Nausea" in r.content.decode()


def test_logging_from_the_patient_page_and_hold_alert_and_decision(web, booked_course):
    patient = booked_course.patient
    start = tox.course_start(booked_course)
    onc = web("oncologist")
    r = onc.get(f"/side-effects/new/?patient={patient.pk}")
    assert r.status_code == 200
    r = onc.post(
        f"/side-effects/new/?patient={patient.pk}",
        {"course": booked_course.pk, "term": "pneumonitis", "grade": 3, "onset_date": start, "attribution": "probable",
         "action_taken": "none", "serious": "on", "next": "/treatment/"},
        follow=True,
    )
    assert "ON HOLD" in r.content.decode()
    hold = CourseHold.objects.get()
    page = onc.get(f"/side-effects/courses/{booked_course.pk}/").content.decode()
    assert "Treatment on hold" in page and f"/side-effects/holds/{hold.pk}/decide/" in page
    treatment = onc.get("/treatment/?date=" + str(start)).content.decode()
    assert "Toxicity hold: Pneumonitis grade 3" in treatment
    r = onc.post(f"/side-effects/holds/{hold.pk}/decide/", {"decision": "stop", "note": ""})
    assert r.status_code == 200 and "why the course is stopped" in r.content.decode()
    r = onc.post(f"/side-effects/holds/{hold.pk}/decide/", {"decision": "resume", "note": ""})
    assert r.status_code == 302
    hold.refresh_from_db()
    assert hold.decision == "resume" and hold.decided_by.username == "oncologist"
    assert web("therapist").get(f"/side-effects/holds/{hold.pk}/decide/").status_code == 403


def test_regrade_and_resolve_from_the_course_page(web, booked_course, oncologist):
    start = tox.course_start(booked_course)
    ev = tox.log_event(booked_course, term="Dermatitis radiation", grade=1, onset_date=start, user=oncologist)
    onc = web("oncologist")
    r = onc.post(f"/side-effects/{ev.pk}/regrade/", {"grade": 2, "on_date": start + dt.timedelta(days=3)})
    assert r.status_code == 302
    r = onc.post(f"/side-effects/{ev.pk}/resolve/", {"resolved_date": start + dt.timedelta(days=9)})
    ev.refresh_from_db()
    assert (ev.grade, ev.worst_grade, ev.resolved_date) == (2, 2, start + dt.timedelta(days=9))
    page = onc.get(f"/side-effects/courses/{booked_course.pk}/").content.decode()
    assert "G1" in page and "&rarr; G2" in page
    assert web("therapist").get(f"/side-effects/courses/{booked_course.pk}/").status_code == 200
    assert web("researcher").get(f"/side-effects/courses/{booked_course.pk}/").status_code == 403


def test_review_worklist_page_and_completion(web, booked_course, therapist):
    from workflow.pathway.delivery import deliver_fraction

    for f in booked_course.fractions.filter(status="scheduled").order_by("number")[:5]:
        deliver_fraction(f, user=therapist)
    onc = web("oncologist")
    page = onc.get("/side-effects/reviews/").content.decode()
    assert f"review-{booked_course.pk}-1" in page and "Overdue" in page
    r = onc.post("/side-effects/reviews/complete/", {"course": booked_course.pk, "number": 1, "findings": "G1 fatigue", "weight_kg": "70.2"})
    assert r.status_code == 302
    page = onc.get("/side-effects/reviews/").content.decode()
    later = due_today(booked_course)  # a review whose fraction is booked today is due today
    assert f"review-{booked_course.pk}-1" not in page
    assert ("No reviews due" in page) == (not later) and all(f"review-{booked_course.pk}-{k}" in page for k in later)
    assert booked_course.weekly_reviews.get().review_date == timezone.localdate()


def test_template_tags_render_alerts_badge_and_link(booked_course, oncologist, therapist):
    start = tox.course_start(booked_course)
    tox.log_event(booked_course, term="Pneumonitis", grade=3, onset_date=start, user=oncologist)
    request = RequestFactory().get("/treatment/")
    request.user = oncologist
    tpl = Template(
        "{% load toxicity %}{% hold_badge course %}|{% toxicity_alerts course %}|{% patient_toxicity_alerts course.patient %}|"
        "{% log_side_effect_link course %}|{% log_side_effect_link patient=course.patient %}|{% hold_decide_link course %}"
    )
    html = tpl.render(Context({"course": booked_course, "request": request}))
    assert 'title="Toxicity hold: Pneumonitis grade 3' in html and ">On hold</span>" in html and "Decide on hold" in html
    hold = tox.open_hold(booked_course)
    assert f'href="/side-effects/holds/{hold.pk}/decide/?next=/treatment/"' in html
    assert f"/side-effects/new/?course={booked_course.pk}&amp;next=/treatment/" in html
    assert f"/side-effects/new/?patient={booked_course.patient.pk}" in html
    request.user = therapist
    html = tpl.render(Context({"course": booked_course, "request": request}))
    assert "Decide on hold" not in html and "Log side effect" not in html and "Treatment on hold" in html


def test_treatment_list_and_patient_page_show_hold_and_quick_entry(web, booked_course, oncologist):
    start = tox.course_start(booked_course)
    onc = web("oncologist")
    page = onc.get(f"/treatment/?date={start}").content.decode()
    assert f"/side-effects/new/?course={booked_course.pk}" in page
    tox.log_event(booked_course, term="Pneumonitis", grade=3, onset_date=start, user=oncologist)
    hold = tox.open_hold(booked_course)
    page = onc.get(f"/treatment/?date={start}").content.decode()
    assert ">On hold</span>" in page and f"/side-effects/holds/{hold.pk}/decide/" in page
    patient_page = onc.get(f"/patients/{booked_course.patient.pk}/").content.decode()
    assert "Treatment on hold" in patient_page and f"/side-effects/new/?patient={booked_course.patient.pk}" in patient_page
    therapist_page = web("therapist").get(f"/treatment/?date={start}").content.decode()
    assert ">On hold</span>" in therapist_page and "/side-effects/new/" not in therapist_page
