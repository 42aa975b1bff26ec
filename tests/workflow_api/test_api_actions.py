"""The pathway actions through the API: schedule, progress, deliver, miss, move, downtime, simulation, daily list."""

import datetime as dt
from decimal import Decimal

import pytest

from workflow.pathway import scheduling
from workflow.pathway.calendar import is_treatment_day

from .conftest import first_scheduled, future_monday


@pytest.mark.django_db
def test_schedule_books_every_fraction_on_treatment_days(api, course, clinic):
    response = api("scheduler").post(
        f"/api/courses/{course.pk}/schedule/",
        {"start_date": str(future_monday()), "preferred_time": "09:30", "machine": clinic["linac2"].pk},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["fraction_count"] == 25 and len(body["fractions"]) == 25
    assert [f["number"] for f in body["fractions"]] == list(range(1, 26))
    days = [scheduling.local_day(f.starts_at) for f in course.fractions.all()]
    assert len(set(days)) == 25 and all(is_treatment_day(d) for d in days)
    assert body["first_day"] == str(min(days)) and body["last_day"] == str(max(days))
    assert body["machines"] == ["Linac 2"]


@pytest.mark.django_db
def test_progress_reports_dose_and_treatment_time(api, booked_course):
    fraction = first_scheduled(booked_course)
    api("therapist").post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json")
    response = api("oncologist").get(f"/api/courses/{booked_course.pk}/progress/")
    assert response.status_code == 200
    body = response.json()
    assert body["progress"]["delivered_fractions"] == 1
    assert body["progress"]["delivered_dose_gy"] == "2.00"
    assert body["progress"]["remaining_fractions"] == 24
    assert body["treatment_time"]["booked_end_date"] == str(booked_course.booked_end_date)
    assert body["blockers"] == []


@pytest.mark.django_db
def test_miss_appends_a_makeup_and_moves_the_end(api, booked_course):
    old_end = booked_course.fractions.order_by("-starts_at").first().starts_at
    fraction = first_scheduled(booked_course)
    response = api("therapist").post(f"/api/fractions/{fraction.pk}/miss/", {"reason": "Patient unwell"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["fraction"]["status"] == "missed" and body["fraction"]["status_note"] == "Patient unwell"
    assert body["makeup"]["is_makeup"] is True and body["makeup"]["number"] == 25
    assert dt.date.fromisoformat(body["new_last_day"]) > scheduling.local_day(old_end)
    progress = api("therapist").get(f"/api/courses/{booked_course.pk}/progress/").json()
    assert progress["treatment_time"]["prolongation_days"] == 1
    assert len(progress["treatment_time"]["missed"]) == 1


@pytest.mark.django_db
def test_move_changes_time_and_machine(api, booked_course, clinic):
    fraction = booked_course.fractions.filter(status="scheduled").order_by("starts_at").last()
    target = scheduling.local_datetime(scheduling.local_day(fraction.starts_at), dt.time(15, 0))
    response = api("scheduler").post(
        f"/api/fractions/{fraction.pk}/move/", {"starts_at": target.isoformat(), "machine": clinic["linac2"].pk}, format="json"
    )
    assert response.status_code == 200, response.content
    fraction.refresh_from_db()
    assert fraction.starts_at == target and fraction.machine == clinic["linac2"]


@pytest.mark.django_db
def test_downtime_moves_booked_fractions_and_reports_them(api, course, clinic):
    scheduling.book_course(course, future_monday(), preferred_time=dt.time(9, 0), machine=clinic["linac1"])
    first = course.fractions.order_by("starts_at").first()
    day = scheduling.local_day(first.starts_at)
    response = api("physicist").post(
        "/api/downtimes/",
        {"machine": clinic["linac1"].pk, "starts_at": f"{day}T08:00:00", "ends_at": f"{day}T12:00:00", "reason": "Service"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["downtime"]["reason"] == "Service"
    assert [m["fraction"] for m in body["moved"]] == [first.pk]
    assert body["moved"][0]["to_machine"] == "Linac 2" and body["moved"][0]["same_day"] is True
    first.refresh_from_db()
    assert first.machine == clinic["linac2"]


@pytest.mark.django_db
def test_daily_list_filters_by_date_and_machine(api, booked_course, patient, clinic):
    from tests.conftest import make_course

    other = make_course(patient, treated_site="Spine")
    day = scheduling.local_day(first_scheduled(booked_course).starts_at)
    scheduling.book_course(other, day, preferred_time=dt.time(11, 0), machine=clinic["linac2"], allow_past=True)

    client = api("therapist")
    both = client.get(f"/api/fractions/?date={day}").json()["results"]
    assert sorted(f["course"] for f in both) == sorted([booked_course.pk, other.pk])
    assert all(f["starts_at"].startswith(str(day)) for f in both)

    linac2 = client.get(f"/api/fractions/?date={day}&machine={clinic['linac2'].pk}").json()["results"]
    assert [(f["course"], f["number"], f["fractions_planned"]) for f in linac2] == [(other.pk, 1, 25)]
    assert linac2[0]["patient_name"] == "Ada Pleura"


@pytest.mark.django_db
def test_list_is_paginated(api, booked_course):
    body = api("therapist").get("/api/fractions/?course=%d" % booked_course.pk).json()
    assert body["count"] == 25 and len(body["results"]) == 25 and "next" in body


@pytest.mark.django_db
def test_simulation_booked_and_completed(api, course, clinic):
    client = api("scheduler")
    response = client.post(
        "/api/simulations/",
        {"course": course.pk, "starts_at": f"{future_monday()}T10:00:00", "machine": clinic["ct"].pk, "immobilisation": "Wing board"},
        format="json",
    )
    assert response.status_code == 201, response.content
    visit_id = response.json()["id"]
    response = client.post(f"/api/simulations/{visit_id}/complete/")
    assert response.status_code == 200 and response.json()["status"] == "delivered"
    course.refresh_from_db()
    assert course.status == "simulated"


@pytest.mark.django_db
def test_single_fraction_course_completes_and_proposes_followups(api, patient, clinic, oncologist):
    from tests.conftest import make_course
    from workflow.pathway import delivery

    from .conftest import past_monday

    course = make_course(patient, fractions=1, dose=Decimal("8.00"), intent="palliative", technique="3DCRT")
    delivery.clear_for_treatment(course, user=oncologist)
    scheduling.book_course(course, past_monday(), allow_past=True)
    fraction = first_scheduled(course)
    assert api("therapist").post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json").status_code == 200
    course.refresh_from_db()
    assert course.status == "completed"
    followups = api("oncologist").get(f"/api/followups/?course={course.pk}").json()
    assert followups["count"] > 0 and followups["results"][0]["label"] == "6 weeks"
    # proposing again is idempotent
    response = api("oncologist").post(f"/api/courses/{course.pk}/followups/")
    assert response.status_code == 201 and response.json() == []
