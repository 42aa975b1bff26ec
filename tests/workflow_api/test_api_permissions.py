"""Role permissions on the API: researchers see nothing identified; each role does only what its table grants."""

import pytest

from workflow.models import Course, CourseStatus, Fraction, Patient

from .conftest import first_scheduled, future_monday

IDENTIFIED_LISTS = [
    "/api/patients/",
    "/api/diagnoses/",
    "/api/treatments/",
    "/api/courses/",
    "/api/simulations/",
    "/api/fractions/",
    "/api/followups/",
    "/api/machines/",
    "/api/closures/",
    "/api/downtimes/",
]


@pytest.mark.django_db
@pytest.mark.parametrize("url", IDENTIFIED_LISTS)
def test_researcher_is_refused_every_identified_resource(api, url):
    assert api("researcher").get(url).status_code == 403


@pytest.mark.django_db
def test_researcher_is_refused_patient_detail_and_calendar(api, patient):
    client = api("researcher")
    assert client.get(f"/api/patients/{patient.pk}/").status_code == 403
    assert client.get(f"/api/patients/{patient.pk}/calendar.ics").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["therapist", "scheduler", "oncologist", "physicist", "dosimetrist"])
def test_clinical_roles_can_read(api, role, patient):
    response = api(role).get("/api/patients/")
    assert response.status_code == 200
    assert [p["mrn"] for p in response.json()["results"]] == [patient.mrn]


@pytest.mark.django_db
def test_anonymous_gets_no_data(patient):
    from rest_framework.test import APIClient

    response = APIClient().get("/api/patients/")
    assert response.status_code in (401, 403)
    assert patient.mrn not in response.content.decode()


@pytest.mark.django_db
def test_therapist_delivers_but_cannot_stop_a_course(api, booked_course):
    client = api("therapist")
    fraction = first_scheduled(booked_course)
    response = client.post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "delivered"

    response = client.post(f"/api/courses/{booked_course.pk}/stop/", {"reason": "toxicity"}, format="json")
    assert response.status_code == 403
    booked_course.refresh_from_db()
    assert booked_course.status == CourseStatus.ON_TREATMENT
    assert not booked_course.termination_reason


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["therapist", "physicist", "dosimetrist", "researcher"])
def test_only_schedulers_and_oncologists_register_patients(api, role):
    body = {"mrn": "X1", "given_name": "A", "family_name": "B", "birth_date": "1960-01-01", "sex": "M"}
    assert api(role).post("/api/patients/", body, format="json").status_code == 403
    assert not Patient.objects.filter(mrn="X1").exists()
    assert api("scheduler").post("/api/patients/", body, format="json").status_code == 201
    assert api("oncologist").post("/api/patients/", dict(body, mrn="X2"), format="json").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("role,expected", [("scheduler", 403), ("therapist", 403), ("oncologist", 200)])
def test_clear_for_treatment_is_for_oncologists(api, course, role, expected):
    response = api(role).post(f"/api/courses/{course.pk}/clear/", format="json")
    assert response.status_code == expected
    course.refresh_from_db()
    assert course.plan_approved is (expected == 200)


@pytest.mark.django_db
@pytest.mark.parametrize("role,expected", [("scheduler", 201), ("therapist", 403), ("physicist", 403), ("oncologist", 403)])
def test_scheduling_roles(api, course, clinic, role, expected):
    response = api(role).post(
        f"/api/courses/{course.pk}/schedule/", {"start_date": future_monday().isoformat()}, format="json"
    )
    assert response.status_code == expected, response.content
    assert Fraction.objects.filter(course=course).count() == (25 if expected == 201 else 0)


@pytest.mark.django_db
@pytest.mark.parametrize("role,expected", [("scheduler", 201), ("physicist", 201), ("therapist", 403), ("oncologist", 403)])
def test_downtime_roles(api, clinic, role, expected):
    body = {
        "machine": clinic["linac2"].pk,
        "starts_at": f"{future_monday()}T12:00:00",
        "ends_at": f"{future_monday()}T14:00:00",
        "reason": "QA",
    }
    assert api(role).post("/api/downtimes/", body, format="json").status_code == expected


@pytest.mark.django_db
@pytest.mark.parametrize("role,expected", [("scheduler", 201), ("therapist", 403), ("physicist", 403)])
def test_closures_are_recorded_by_schedulers(api, role, expected):
    response = api(role).post("/api/closures/", {"date": str(future_monday(5)), "reason": "Staff training"}, format="json")
    assert response.status_code == expected


@pytest.mark.django_db
def test_oncologist_stops_a_course_and_its_fractions_are_cancelled(api, booked_course):
    response = api("oncologist").post(
        f"/api/courses/{booked_course.pk}/stop/", {"reason": "toxicity", "note": "G3 pneumonitis"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "stopped"
    course = Course.objects.get(pk=booked_course.pk)
    assert course.termination_reason == "toxicity" and course.termination_note == "G3 pneumonitis"
    assert not course.fractions.filter(status="scheduled").exists()
