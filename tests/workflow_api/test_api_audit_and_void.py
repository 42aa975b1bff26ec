"""Audit: every API change leaves a history row naming the user. DELETE voids clinical records, never removes them."""

import base64

import pytest
from rest_framework.test import APIClient

from tests.conftest import PASSWORD
from workflow.models import Course, Diagnosis, Fraction, Patient, SimulationVisit

from .conftest import first_scheduled, future_monday


@pytest.mark.django_db
def test_create_and_update_are_audited_with_the_user(api, oncologist):
    client = api("oncologist")
    response = client.post(
        "/api/patients/", {"mrn": "A1", "given_name": "Iris", "family_name": "Meso", "birth_date": "1950-02-02"}, format="json"
    )
    assert response.status_code == 201
    patient = Patient.objects.get(pk=response.json()["id"])
    assert client.patch(f"/api/patients/{patient.pk}/", {"family_name": "Mesothel"}, format="json").status_code == 200

    history = list(patient.history.order_by("history_date"))
    assert [h.history_type for h in history] == ["+", "~"]
    assert all(h.history_user == oncologist for h in history)
    assert history[0].family_name == "Meso" and history[1].family_name == "Mesothel"


@pytest.mark.django_db
def test_basic_auth_requests_are_audited_too(users, patient):
    token = base64.b64encode(f"oncologist:{PASSWORD}".encode()).decode()
    client = APIClient(HTTP_AUTHORIZATION=f"Basic {token}")
    response = client.patch(f"/api/patients/{patient.pk}/", {"given_name": "Adah"}, format="json")
    assert response.status_code == 200, response.content
    assert patient.history.latest().history_user == users["oncologist"]


@pytest.mark.django_db
def test_delivery_and_clearance_are_audited(api, booked_course, therapist, oncologist):
    fraction = first_scheduled(booked_course)
    assert api("therapist").post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json").status_code == 200
    latest = fraction.history.latest()
    assert latest.status == "delivered" and latest.history_user == therapist
    cleared = booked_course.history.filter(plan_approved=True).earliest()
    assert cleared.history_user == oncologist


@pytest.mark.django_db
def test_delete_voids_a_patient_and_keeps_the_row(api, oncologist):
    patient = Patient.objects.create(mrn="V1", given_name="Wrong", family_name="Entry", birth_date="1970-01-01")
    client = api("oncologist")
    response = client.delete(f"/api/patients/{patient.pk}/?reason=duplicate record")
    assert response.status_code == 200
    assert response.json()["voided_at"] is not None

    patient.refresh_from_db()  # the row is still there
    assert patient.is_voided and patient.voided_by == oncologist and patient.void_reason == "duplicate record"
    assert patient.history.latest().history_user == oncologist
    assert "V1" not in [p["mrn"] for p in client.get("/api/patients/").json()["results"]]
    assert "V1" in [p["mrn"] for p in client.get("/api/patients/?include_voided=true").json()["results"]]


@pytest.mark.django_db
def test_delete_voids_a_diagnosis(api, diagnosis):
    assert api("oncologist").delete(f"/api/diagnoses/{diagnosis.pk}/").status_code == 200
    assert Diagnosis.objects.filter(pk=diagnosis.pk, voided_at__isnull=False).exists()


@pytest.mark.django_db
def test_delete_needs_the_change_permission(api, diagnosis):
    assert api("therapist").delete(f"/api/diagnoses/{diagnosis.pk}/").status_code == 403
    diagnosis.refresh_from_db()
    assert not diagnosis.is_voided


@pytest.mark.django_db
def test_a_course_with_booked_fractions_cannot_be_voided(api, booked_course):
    response = api("oncologist").delete(f"/api/courses/{booked_course.pk}/")
    assert response.status_code == 409
    booked_course.refresh_from_db()
    assert not booked_course.is_voided


@pytest.mark.django_db
def test_appointments_cannot_be_deleted(api, booked_course, clinic):
    fraction = first_scheduled(booked_course)
    assert api("scheduler").delete(f"/api/fractions/{fraction.pk}/").status_code == 405
    assert Fraction.objects.filter(pk=fraction.pk, status="scheduled", voided_at__isnull=True).exists()

    body = {"course": booked_course.pk, "starts_at": f"{future_monday()}T08:00:00", "machine": clinic["ct"].pk}
    visit_id = api("scheduler").post("/api/simulations/", body, format="json").json()["id"]
    assert api("scheduler").delete(f"/api/simulations/{visit_id}/").status_code == 405
    assert SimulationVisit.objects.filter(pk=visit_id).exists()


@pytest.mark.django_db
def test_machines_cannot_be_deleted(users, clinic):
    users["oncologist"].is_superuser = True
    users["oncologist"].save()
    client = APIClient()
    client.force_login(users["oncologist"])
    assert client.delete(f"/api/machines/{clinic['linac1'].pk}/").status_code == 405
    assert client.get(f"/api/machines/{clinic['linac1'].pk}/").status_code == 200


@pytest.mark.django_db
def test_voided_courses_are_hidden_and_unchanged_by_actions(api, course):
    assert api("oncologist").delete(f"/api/courses/{course.pk}/").status_code == 200
    assert api("oncologist").post(f"/api/courses/{course.pk}/clear/").status_code == 404
    assert Course.objects.get(pk=course.pk).plan_approved is False
