"""Issue 13: bad input is a 4xx naming the field, never a 500, and changes nothing.

Dates at the limits of ``datetime`` (9999-12-31, 0001-01-01), text where an id is expected, NUL bytes, JSON nested
100,000 deep, CR/LF in an MRN, and deleting a death record in the admin.
"""

import datetime as dt
import json

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from outcomes.models import Death
from workflow.models import Closure, Diagnosis, Downtime, Fraction, Patient, Treatment

from .conftest import first_scheduled


def errors(response):
    assert response.headers["Content-Type"].startswith("application/json"), response.content
    return response.json()


# --- dates at the limits ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01"])
def test_booking_from_a_date_at_the_limit_is_400_on_start_date(api, course, clinic, day):
    response = api("scheduler").post(f"/api/courses/{course.pk}/schedule/", {"start_date": day}, format="json")
    assert response.status_code == 400
    assert "start_date" in errors(response)
    assert not Fraction.objects.filter(course=course).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("when", ["9999-12-31T23:55:00Z", "0001-01-01T00:00:00Z"])
def test_moving_a_fraction_to_a_date_at_the_limit_is_400_on_starts_at(api, booked_course, when):
    fraction = first_scheduled(booked_course)
    response = api("scheduler").post(f"/api/fractions/{fraction.pk}/move/", {"starts_at": when}, format="json")
    assert response.status_code == 400
    assert "starts_at" in errors(response)
    fraction.refresh_from_db()
    assert fraction.starts_at == first_scheduled(booked_course).starts_at


@pytest.mark.django_db
def test_downtime_ending_at_the_limit_is_400_on_ends_at(api, clinic):
    body = {"machine": clinic["linac1"].pk, "starts_at": "2026-12-01T08:00:00Z", "ends_at": "9999-12-31T23:59:59Z", "reason": "Service"}
    response = api("physicist").post("/api/downtimes/", body, format="json")
    assert response.status_code == 400
    assert "ends_at" in errors(response)
    assert not Downtime.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/carepath-tasks/worklist/?date=9999-12-31", "/api/carepaths/board/?date=0001-01-01",
                                 "/api/weekly-reviews/worklist/?date=9999-12-31"])
def test_worklists_refuse_dates_outside_the_window(api, url):
    response = api("oncologist").get(url)
    assert response.status_code == 400
    assert list(errors(response)) == ["date"]


@pytest.mark.django_db
def test_treatment_list_page_at_the_limit_shows_today(web):
    response = web("therapist").get("/treatment/?date=9999-12-31")
    assert response.status_code == 200
    assert response.context["day"] == timezone.localdate()
    assert "That date was not understood" in response.content.decode()


@pytest.mark.django_db
def test_closure_in_year_9999_is_400_on_date(api):
    response = api("scheduler").post("/api/closures/", {"date": "9999-12-31", "reason": "?"}, format="json")
    assert response.status_code == 400
    assert "date" in errors(response)
    assert not Closure.objects.exists()


# --- the date window on clinical records ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("birth", ["9999-01-01", "1500-06-01", (dt.date.today() + dt.timedelta(days=1)).isoformat()])
def test_birth_date_in_the_future_or_before_1900_is_refused(api, birth):
    body = {"mrn": "MRN-W1", "given_name": "Ada", "family_name": "Window", "birth_date": birth, "sex": "F"}
    response = api("oncologist").post("/api/patients/", body, format="json")
    assert response.status_code == 400
    assert "birth_date" in errors(response)
    assert not Patient.objects.filter(mrn="MRN-W1").exists()


@pytest.mark.django_db
def test_birth_date_in_1900_is_accepted(api):
    body = {"mrn": "MRN-W2", "given_name": "Old", "family_name": "Enough", "birth_date": "1900-01-01", "sex": "F"}
    assert api("oncologist").post("/api/patients/", body, format="json").status_code == 201


@pytest.mark.django_db
def test_diagnosis_before_birth_is_refused(api, patient):
    body = {"patient": patient.pk, "site": "lung", "diagnosed_on": "1955-03-13"}  # born 1955-03-14
    response = api("oncologist").post("/api/diagnoses/", body, format="json")
    assert response.status_code == 400
    assert "before the patient's birth" in errors(response)["diagnosed_on"][0]
    body["diagnosed_on"] = "1955-03-14"
    assert api("oncologist").post("/api/diagnoses/", body, format="json").status_code == 201


@pytest.mark.django_db
def test_diagnosis_in_the_far_future_is_refused(api, patient):
    response = api("oncologist").post("/api/diagnoses/", {"patient": patient.pk, "site": "lung", "diagnosed_on": "2999-01-01"}, format="json")
    assert response.status_code == 400
    assert "diagnosed_on" in errors(response)
    assert not Diagnosis.objects.filter(diagnosed_on=dt.date(2999, 1, 1)).exists()


@pytest.mark.django_db
def test_treatment_before_birth_is_refused(api, patient):
    body = {"patient": patient.pk, "kind": "chemotherapy", "agent": "Cisplatin/pemetrexed", "start_date": "1950-01-01"}
    response = api("oncologist").post("/api/treatments/", body, format="json")
    assert response.status_code == 400
    assert "start_date" in errors(response)
    assert not Treatment.objects.exists()


# --- ids, NUL bytes, deep JSON ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url, field",
    [
        ("/api/weekly-reviews/?course=abc", "course"),
        ("/api/planning/plans/?course=abc", "course"),
        ("/api/outcomes/assessments/?course=x", "course"),
        ("/api/fractions/?patient=x", "patient"),
        ("/api/courses/?patient=abc", "patient"),
    ],
)
def test_text_where_an_id_is_expected_is_400_naming_it(api, url, field):
    response = api("oncologist").get(url)
    assert response.status_code == 400
    assert field in errors(response)


@pytest.mark.django_db
def test_nul_in_a_query_parameter_is_400_naming_it(api, web):
    response = api("oncologist").get("/api/patients/?q=Ada%00")
    assert response.status_code == 400
    assert errors(response) == {"q": ["NUL characters are not allowed."]}
    page = web("oncologist").get("/patients/?q=%00")
    assert page.status_code == 400


@pytest.mark.django_db
def test_nul_in_a_json_body_is_400_naming_the_field(api):
    body = {"mrn": "MRN-N1", "given_name": "A\x00da", "family_name": "Nul", "birth_date": "1960-01-01", "sex": "F"}
    response = api("oncologist").post("/api/patients/", body, format="json")
    assert response.status_code == 400
    assert "given_name" in errors(response)
    assert not Patient.objects.filter(mrn="MRN-N1").exists()


@pytest.mark.django_db
def test_json_nested_100000_deep_is_400(api):
    body = "[" * 100_000 + "]" * 100_000
    response = api("oncologist").post("/api/patients/", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested deeper than 32" in errors(response)["detail"]


@pytest.mark.django_db
def test_nan_in_json_is_400(api, patient):
    body = '{"patient": %d, "site": "lung", "diagnosed_on": "2026-01-01", "stage": NaN}' % patient.pk
    response = api("oncologist").post("/api/diagnoses/", body, content_type="application/json")
    assert response.status_code == 400


# --- identifiers, the .ics export and Content-Disposition ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("field, value", [("mrn", "MRN1\r\nX-Injected: yes"), ("family_name", "Smith\nBCC"), ("given_name", "A\tB")])
def test_control_characters_in_identifiers_are_refused(api, field, value):
    body = {"mrn": "MRN-C1", "given_name": "Ada", "family_name": "Ctrl", "birth_date": "1960-01-01", "sex": "F", field: value}
    response = api("oncologist").post("/api/patients/", body, format="json")
    assert response.status_code == 400
    assert field in errors(response)


@pytest.mark.django_db
def test_ics_of_a_legacy_mrn_with_crlf_neither_breaks_nor_injects_headers(api, web, booked_course):
    patient = booked_course.patient
    Patient.objects.filter(pk=patient.pk).update(mrn='MRN1\r\nX-Injected: 1";x.exe')  # imported before validation
    for response in (api("oncologist").get(f"/api/patients/{patient.pk}/calendar/"), web("oncologist").get(f"/patients/{patient.pk}/calendar.ics")):
        assert response.status_code == 200
        disposition = response.headers["Content-Disposition"]
        assert disposition == 'attachment; filename="radpath-MRN1_X-Injected_1_x.exe.ics"'
        assert "X-Injected" not in response.headers
        lines = response.content.decode().split("\r\n")
        assert all(line == "" or ":" in line or line.startswith(" ") for line in lines), lines[:8]
        assert "X-WR-CALNAME:Radiotherapy appointments MRN1  X-Injected: 1\";x.exe" in lines


# --- the admin voids, never deletes ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_cannot_delete_a_death_record_and_voids_it_instead(patient):
    boss = User.objects.create_superuser("boss13", "b@example.org", "pw-boss-13-x")
    client = Client()
    client.force_login(boss)
    death = Death.objects.create(patient=patient, date=dt.date(2026, 10, 1), cause="disease")
    assert client.get(f"/admin/outcomes/death/{death.pk}/delete/").status_code == 403
    response = client.post("/admin/outcomes/death/", {"action": "delete_selected", "_selected_action": [death.pk]})
    assert response.status_code in (200, 302)
    death.refresh_from_db()
    assert death.voided_at is None  # the bulk delete action is gone: nothing happened
    client.post("/admin/outcomes/death/", {"action": "void_and_recompute", "_selected_action": [death.pk]})
    death.refresh_from_db()
    assert death.voided_at is not None and death.voided_by == boss
    assert Death.objects.filter(pk=death.pk).exists()


@pytest.mark.django_db
def test_unmatched_api_url_is_a_json_404(api):
    response = api("oncologist").get("/api/outcomes/exports/nothing.xlsx")
    assert response.status_code == 404
    assert errors(response) == {"detail": "Not found."}


@pytest.mark.django_db
def test_calendar_of_a_missing_patient_is_a_json_404(api):
    response = api("oncologist").get("/api/patients/999999/calendar/")
    assert response.status_code == 404
    assert set(errors(response)) == {"detail"}  # errors() also asserts the JSON Content-Type
