"""Bad input is a 400 naming the field, and nothing changes; clashes with bookings are 409; never a 500."""

import datetime as dt

import pytest

from workflow.models import Course, Downtime, Fraction, Patient, SimulationVisit, Treatment

from .conftest import first_scheduled, future_monday, past_monday

COURSE = {
    "intent": "adjuvant",
    "technique": "IMRT",
    "treated_site": "Left hemithorax",
    "total_dose_gy": "50.00",
    "fractions_planned": 25,
    "dose_per_fraction_gy": "2.00",
}


@pytest.mark.django_db
def test_prescription_rule_gives_400_on_total_dose_and_no_course(api, patient):
    before = Course.objects.count()
    body = dict(COURSE, patient=patient.pk, total_dose_gy="60.00")
    response = api("oncologist").post("/api/courses/", body, format="json")
    assert response.status_code == 400
    assert "total_dose_gy" in response.json()
    assert "25 x 2.00 Gy" in response.json()["total_dose_gy"][0]
    assert Course.objects.count() == before


@pytest.mark.django_db
def test_valid_course_is_created(api, patient, diagnosis):
    body = dict(COURSE, patient=patient.pk, diagnosis=diagnosis.pk)
    response = api("oncologist").post("/api/courses/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "planned"
    assert Course.objects.filter(patient=patient, total_dose_gy=50).exists()


@pytest.mark.django_db
def test_status_cannot_be_written_directly(api, course):
    response = api("oncologist").patch(f"/api/courses/{course.pk}/", {"status": "completed", "plan_approved": True}, format="json")
    assert response.status_code == 200
    course.refresh_from_db()
    assert course.status == "planned" and course.plan_approved is False


@pytest.mark.django_db
def test_update_revalidates_the_prescription(api, course):
    response = api("oncologist").patch(f"/api/courses/{course.pk}/", {"fractions_planned": 30}, format="json")
    assert response.status_code == 400
    assert "total_dose_gy" in response.json()
    course.refresh_from_db()
    assert course.fractions_planned == 25


@pytest.mark.django_db
def test_diagnosis_of_another_patient_is_refused(api, patient, diagnosis):
    other = Patient.objects.create(mrn="MRN0002", given_name="Bo", family_name="Other", birth_date=dt.date(1960, 1, 1))
    body = dict(COURSE, patient=other.pk, diagnosis=diagnosis.pk)
    response = api("oncologist").post("/api/courses/", body, format="json")
    assert response.status_code == 400 and "diagnosis" in response.json()
    assert not Course.objects.filter(patient=other).exists()


@pytest.mark.django_db
def test_surgery_needs_a_type(api, patient):
    body = {"patient": patient.pk, "kind": "surgery", "start_date": "2026-07-01"}
    response = api("oncologist").post("/api/treatments/", body, format="json")
    assert response.status_code == 400 and "surgery_type" in response.json()
    assert not Treatment.objects.exists()


@pytest.mark.django_db
def test_duplicate_mrn_is_400_on_mrn(api, patient):
    body = {"mrn": patient.mrn, "given_name": "A", "family_name": "B", "birth_date": "1960-01-01"}
    response = api("oncologist").post("/api/patients/", body, format="json")
    assert response.status_code == 400 and "mrn" in response.json()
    assert Patient.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "start_date"),
        ({"start_date": "not-a-date"}, "start_date"),
        ({"start_date": "2020-01-06"}, "start_date"),  # in the past: the scheduler's rule
        ({"start_date": "FUTURE", "machine": "LINAC3"}, "machine"),  # 3D-CRT-only linac for an IMRT course
        ({"start_date": "FUTURE", "machine": 999999}, "machine"),
        ({"start_date": "FUTURE", "preferred_time": "25:99"}, "preferred_time"),
    ],
)
def test_schedule_bad_input_is_400_naming_the_field_and_books_nothing(api, course, clinic, body, field):
    body = {k: (str(future_monday()) if v == "FUTURE" else clinic["linac3"].pk if v == "LINAC3" else v) for k, v in body.items()}
    response = api("scheduler").post(f"/api/courses/{course.pk}/schedule/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Fraction.objects.filter(course=course).exists()
    course.refresh_from_db()
    assert course.booked_end_date is None


@pytest.mark.django_db
def test_stop_needs_a_known_reason(api, booked_course):
    response = api("oncologist").post(f"/api/courses/{booked_course.pk}/stop/", {"reason": "bored"}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    booked_course.refresh_from_db()
    assert booked_course.status != "stopped"
    assert booked_course.fractions.filter(status="scheduled").count() == 25


@pytest.mark.django_db
def test_delivery_out_of_order_is_refused(api, booked_course):
    second = booked_course.fractions.get(number=2)
    response = api("therapist").post(f"/api/fractions/{second.pk}/deliver/", {}, format="json")
    assert response.status_code == 400 and "number" in response.json()
    second.refresh_from_db()
    assert second.status == "scheduled" and second.delivered_by is None


@pytest.mark.django_db
def test_delivery_of_an_uncleared_course_is_refused(api, course, clinic):
    from workflow.pathway import scheduling

    scheduling.book_course(course, past_monday(), allow_past=True)
    fraction = first_scheduled(course)
    response = api("therapist").post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json")
    assert response.status_code == 400
    assert "not cleared for treatment" in response.json()["detail"]
    fraction.refresh_from_db()
    assert fraction.status == "scheduled"


@pytest.mark.django_db
def test_delivered_dose_out_of_range_is_400_on_dose(api, booked_course):
    fraction = first_scheduled(booked_course)
    response = api("therapist").post(f"/api/fractions/{fraction.pk}/deliver/", {"dose_gy": "5.00"}, format="json")
    assert response.status_code == 400 and "dose_gy" in response.json()
    fraction.refresh_from_db()
    assert fraction.status == "scheduled"


@pytest.mark.django_db
def test_downtime_must_end_after_it_starts(api, clinic):
    day = future_monday()
    body = {"machine": clinic["linac1"].pk, "starts_at": f"{day}T14:00:00", "ends_at": f"{day}T12:00:00", "reason": "QA"}
    response = api("physicist").post("/api/downtimes/", body, format="json")
    assert response.status_code == 400 and "ends_at" in response.json()
    assert not Downtime.objects.exists()


@pytest.mark.django_db
def test_scheduling_twice_is_a_conflict(api, course, clinic):
    client = api("scheduler")
    url = f"/api/courses/{course.pk}/schedule/"
    assert client.post(url, {"start_date": str(future_monday())}, format="json").status_code == 201
    response = client.post(url, {"start_date": str(future_monday(3))}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "already_scheduled"
    assert course.fractions.count() == 25


@pytest.mark.django_db
def test_moving_onto_a_taken_slot_is_a_conflict(api, booked_course, patient, clinic):
    from tests.conftest import make_course
    from workflow.pathway import scheduling

    mine = booked_course.fractions.filter(status="scheduled").order_by("starts_at").last()
    day = scheduling.local_day(mine.starts_at)
    other = make_course(patient, treated_site="Spine")
    scheduling.book_course(other, day, preferred_time=dt.time(10, 0), machine=clinic["linac2"], allow_past=True)
    taken = other.fractions.order_by("starts_at").first()
    assert scheduling.local_day(taken.starts_at) == day
    before = (mine.starts_at, mine.machine_id)
    response = api("scheduler").post(
        f"/api/fractions/{mine.pk}/move/", {"starts_at": taken.starts_at.isoformat(), "machine": clinic["linac2"].pk}, format="json"
    )
    assert response.status_code == 409, response.content
    mine.refresh_from_db()
    assert (mine.starts_at, mine.machine_id) == before


@pytest.mark.django_db
def test_double_booked_simulation_is_a_conflict(api, course, clinic):
    starts = f"{future_monday()}T10:00:00"
    client = api("scheduler")
    body = {"course": course.pk, "starts_at": starts, "machine": clinic["ct"].pk}
    assert client.post("/api/simulations/", body, format="json").status_code == 201
    response = client.post("/api/simulations/", body, format="json")
    assert response.status_code == 409
    assert SimulationVisit.objects.count() == 1


@pytest.mark.django_db
def test_simulation_on_a_linac_is_400_on_machine(api, course, clinic):
    body = {"course": course.pk, "starts_at": f"{future_monday()}T10:00:00", "machine": clinic["linac1"].pk}
    response = api("scheduler").post("/api/simulations/", body, format="json")
    assert response.status_code == 400 and "machine" in response.json()
    assert not SimulationVisit.objects.exists()


@pytest.mark.django_db
def test_closing_a_day_with_booked_fractions_is_a_conflict(api, booked_course):
    from workflow.pathway import scheduling
    from workflow.models import Closure

    day = scheduling.local_day(booked_course.fractions.filter(status="scheduled").order_by("starts_at").last().starts_at)
    response = api("scheduler").post("/api/closures/", {"date": str(day), "reason": "Flood"}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "day_has_bookings"
    assert not Closure.objects.exists()
    assert api("scheduler").post("/api/closures/", {"date": "not a date", "reason": "x"}, format="json").status_code == 400
