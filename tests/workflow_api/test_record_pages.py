"""Clinic pages that register and edit patients, diagnoses, treatments and courses; the amendment page; the patient
picker's search; dates rendered as ISO into <input type=date> under the clinic's en-gb locale."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.urls import reverse

from workflow.pathway import delivery
from workflow.models import Course, Diagnosis, Patient, PrescriptionAmendment, Treatment

pytestmark = pytest.mark.django_db

NEW_PATIENT = {"mrn": "MRN9001", "given_name": "Iris", "family_name": "Newcombe", "birth_date": "1961-04-23", "sex": "F"}


def course_body(patient, **extra):
    body = {"patient": patient.pk, "intent": "adjuvant", "technique": "IMRT", "treated_site": "Right hemithorax",
            "total_dose_gy": "50.4", "fractions_planned": "28", "fraction_minutes": "15"}
    body.update(extra)
    return body


def test_scheduler_registers_a_patient_and_the_change_is_audited(web):
    response = web("scheduler").post(reverse("patient-new"), NEW_PATIENT)
    patient = Patient.objects.get(mrn="MRN9001")
    assert response.status_code == 302 and response["Location"] == reverse("patient-detail", args=[patient.pk])
    assert patient.birth_date == dt.date(1961, 4, 23)
    assert patient.history.first().history_user.username == "scheduler"


def test_registration_refuses_a_duplicate_mrn_naming_the_field(web, patient):
    response = web("oncologist").post(reverse("patient-new"), dict(NEW_PATIENT, mrn=patient.mrn))
    assert response.status_code == 200
    assert "mrn" in response.context["form"].errors
    assert Patient.objects.filter(mrn=patient.mrn).count() == 1


@pytest.mark.parametrize("role", ["therapist", "physicist", "dosimetrist", "researcher"])
def test_other_roles_cannot_register_patients(web, role):
    assert web(role).get(reverse("patient-new")).status_code == 403
    assert web(role).post(reverse("patient-new"), NEW_PATIENT).status_code == 403
    assert not Patient.objects.filter(mrn="MRN9001").exists()


@pytest.mark.parametrize("url", ["diagnosis-new", "treatment-new", "course-new"])
def test_diagnosis_treatment_and_course_are_for_oncologists(web, patient, url):
    assert web("scheduler").get(reverse(url) + f"?patient={patient.pk}").status_code == 403
    assert web("therapist").get(reverse(url) + f"?patient={patient.pk}").status_code == 403
    assert web("oncologist").get(reverse(url) + f"?patient={patient.pk}").status_code == 200


def test_links_are_shown_only_to_roles_that_may_use_them(web, patient, course):
    scheduler_list = web("scheduler").get(reverse("patient-list")).content.decode()
    assert reverse("patient-new") in scheduler_list
    assert reverse("patient-new") not in web("therapist").get(reverse("patient-list")).content.decode()
    oncologist_page = web("oncologist").get(reverse("patient-detail", args=[patient.pk])).content.decode()
    assert "Prescribe radiotherapy" in oncologist_page and "Add diagnosis" in oncologist_page and "Add surgery" in oncologist_page
    scheduler_page = web("scheduler").get(reverse("patient-detail", args=[patient.pk])).content.decode()
    assert "Prescribe radiotherapy" not in scheduler_page and "Edit details" in scheduler_page
    course_page = web("oncologist").get(reverse("course-detail", args=[course.pk])).content.decode()
    assert reverse("course-amend", args=[course.pk]) in course_page and reverse("course-edit", args=[course.pk]) in course_page
    assert reverse("course-amend", args=[course.pk]) not in web("scheduler").get(reverse("course-detail", args=[course.pk])).content.decode()


def test_diagnosis_is_recorded_for_the_chosen_patient(web, patient):
    body = {"patient": patient.pk, "site": "pleural_mesothelioma", "histology": "Sarcomatoid", "stage": "T3N1M0",
            "diagnosed_on": "2026-09-14"}
    response = web("oncologist").post(reverse("diagnosis-new"), body)
    assert response.status_code == 302
    diagnosis = Diagnosis.objects.get(histology="Sarcomatoid")
    assert diagnosis.patient == patient and diagnosis.diagnosed_on == dt.date(2026, 9, 14)


def test_surgery_needs_a_surgery_type_and_chemotherapy_none(web, patient, diagnosis):
    body = {"patient": patient.pk, "diagnosis": diagnosis.pk, "kind": "surgery", "start_date": "2026-07-01"}
    response = web("oncologist").post(reverse("treatment-new"), body)
    assert response.status_code == 200 and "surgery_type" in response.context["form"].errors
    response = web("oncologist").post(reverse("treatment-new"), dict(body, surgery_type="pd"))
    assert response.status_code == 302
    assert Treatment.objects.get(patient=patient).get_surgery_type_display().startswith("Pleurectomy")
    trial = {"patient": patient.pk, "kind": "trial", "agent": "MARS-2", "trial_arm": "B", "start_date": "2026-07-20"}
    assert web("oncologist").post(reverse("treatment-new"), trial).status_code == 302
    assert Treatment.objects.filter(kind="trial", trial_arm="B").count() == 1


def test_treatment_form_offers_only_the_patients_diagnoses(web, patient, diagnosis):
    other = Patient.objects.create(mrn="MRN0002", given_name="Ben", family_name="Other", birth_date=dt.date(1950, 1, 2))
    theirs = Diagnosis.objects.create(patient=other, site="lung", diagnosed_on=dt.date(2026, 1, 5))
    form = web("oncologist").get(reverse("treatment-new") + f"?patient={patient.pk}&kind=chemotherapy").context["form"]
    assert list(form.fields["diagnosis"].queryset) == [diagnosis]
    assert form.initial["kind"] == "chemotherapy"
    body = {"patient": patient.pk, "diagnosis": theirs.pk, "kind": "chemotherapy", "agent": "Cis/pem", "start_date": "2026-07-01"}
    response = web("oncologist").post(reverse("treatment-new"), body)
    assert response.status_code == 200 and "diagnosis" in response.context["form"].errors


def test_course_dose_per_fraction_is_derived(web, patient, diagnosis):
    response = web("oncologist").post(reverse("course-new"), course_body(patient, diagnosis=diagnosis.pk))
    course = Course.objects.get(treated_site="Right hemithorax")
    assert response.status_code == 302 and response["Location"] == reverse("course-detail", args=[course.pk])
    assert (course.total_dose_gy, course.fractions_planned, course.dose_per_fraction_gy) == (Decimal("50.40"), 28, Decimal("1.80"))


def test_course_total_not_divisible_to_a_hundredth_is_refused_on_the_total(web, patient):
    # 40 Gy / 6 = 6.67 Gy; 6 x 6.67 = 40.02 Gy misses the total by more than 0.01 Gy
    response = web("oncologist").post(reverse("course-new"), course_body(patient, total_dose_gy="40", fractions_planned="6"))
    assert response.status_code == 200 and "total_dose_gy" in response.context["form"].errors
    assert not Course.objects.exists()


def test_new_course_defaults_per_technique_and_intent(web, patient):
    form = web("oncologist").get(reverse("course-new") + f"?patient={patient.pk}").context["form"]
    assert (form.initial["total_dose_gy"], form.initial["fractions_planned"]) == (Decimal("50"), 25)
    page = web("oncologist").get(reverse("course-new") + f"?patient={patient.pk}").content.decode()
    assert '"SBRT|curative": {"total": "40", "fractions": 5, "dpf": "8.00", "minutes": 30}' in page
    assert '"IORT_E|adjuvant": {"total": "12", "fractions": 1, "dpf": "12.00", "minutes": 30}' in page


def test_edit_of_a_started_course_keeps_the_prescription_and_the_patient(web, booked_course, therapist):
    delivery.deliver_fraction(booked_course.fractions.get(number=1), user=therapist)
    other = Patient.objects.create(mrn="MRN0002", given_name="Ben", family_name="Other", birth_date=dt.date(1950, 1, 2))
    page = web("oncologist").get(reverse("course-edit", args=[booked_course.pk]))
    form = page.context["form"]
    assert form.fields["total_dose_gy"].disabled and form.fields["fractions_planned"].disabled and form.fields["patient"].disabled
    body = course_body(other, total_dose_gy="2", fractions_planned="1", treated_site="Left hemithorax", name="Phase 1")
    response = web("oncologist").post(reverse("course-edit", args=[booked_course.pk]), body)
    assert response.status_code == 302
    booked_course.refresh_from_db()
    assert booked_course.name == "Phase 1"
    assert (booked_course.patient.mrn, booked_course.total_dose_gy, booked_course.fractions_planned) == ("MRN0001", Decimal("50.00"), 25)


def test_diagnosis_edit_never_moves_it(web, diagnosis):
    other = Patient.objects.create(mrn="MRN0002", given_name="Ben", family_name="Other", birth_date=dt.date(1950, 1, 2))
    body = {"patient": other.pk, "site": "pleural_mesothelioma", "histology": "Biphasic", "diagnosed_on": "2026-06-01"}
    response = web("oncologist").post(reverse("diagnosis-edit", args=[diagnosis.pk]), body)
    assert response.status_code == 302
    diagnosis.refresh_from_db()
    assert diagnosis.patient.mrn == "MRN0001" and diagnosis.histology == "Biphasic"


def test_amend_page_changes_the_prescription_with_a_reason(web, booked_course, therapist):
    delivery.deliver_fraction(booked_course.fractions.get(number=1), user=therapist)
    delivery.deliver_fraction(booked_course.fractions.get(number=2), user=therapist)
    url = reverse("course-amend", args=[booked_course.pk])
    response = web("oncologist").post(url, {"fractions_planned": "30", "total_dose_gy": "60", "reason": ""})
    assert response.status_code == 200 and "reason" in response.context["form"].errors
    response = web("oncologist").post(url, {"fractions_planned": "1", "total_dose_gy": "2", "reason": "error"})
    assert response.status_code == 200 and "fractions_planned" in response.context["form"].errors
    response = web("oncologist").post(url, {"fractions_planned": "30", "total_dose_gy": "60", "reason": "Boost after MDT"})
    assert response.status_code == 302
    booked_course.refresh_from_db()
    assert (booked_course.total_dose_gy, booked_course.fractions_planned, booked_course.dose_per_fraction_gy) == (
        Decimal("60.00"), 30, Decimal("2.00"))
    assert booked_course.fractions.filter(status__in=["scheduled", "delivered"]).count() == 30
    record = PrescriptionAmendment.objects.get()
    assert (record.before_fractions, record.after_fractions, record.fractions_added) == (25, 30, 5)
    assert web("scheduler").post(url, {"fractions_planned": "25", "total_dose_gy": "50", "reason": "x"}).status_code == 403


def test_patient_search_for_the_picker(web, patient):
    for i in range(25):
        Patient.objects.create(mrn=f"S{i:03d}", given_name="Sam", family_name=f"Zed{i:02d}", birth_date=dt.date(1970, 1, 1))
    results = web("scheduler").get(reverse("patient-search"), {"q": "sam zed"}).json()["results"]
    assert len(results) == 20 and results[0]["label"] == "Zed00, Sam (S000)"
    assert [r["mrn"] for r in web("scheduler").get(reverse("patient-search"), {"q": "Pleura, Ada"}).json()["results"]] == ["MRN0001"]
    assert web("scheduler").get(reverse("patient-search"), {"q": "MRN0001"}).json()["results"][0]["id"] == patient.pk
    assert web("scheduler").get(reverse("patient-search"), {"q": "A"}).json()["results"] == []
    assert web("researcher").get(reverse("patient-search"), {"q": "Ada"}).status_code == 403


def test_picker_accepts_an_exact_mrn_typed_without_script(web, patient):
    body = {"patient_search": "mrn0001", "site": "lung", "diagnosed_on": "2026-09-01"}
    assert web("oncologist").post(reverse("diagnosis-new"), body).status_code == 302
    assert Diagnosis.objects.get(site="lung").patient == patient


# --- dates under en-gb -----------------------------------------------------------------------------------------


def input_value(html, name):
    match = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert match, name
    value = re.search(r'value="([^"]*)"', match.group(0))
    return value.group(1) if value else None


def test_dates_render_as_iso_into_date_inputs_under_en_gb(web, settings, patient, course, diagnosis):
    assert settings.LANGUAGE_CODE == "en-gb"
    schedule = web("scheduler").get(reverse("course-schedule", args=[course.pk])).content.decode()
    from django.utils import timezone

    assert input_value(schedule, "start_date") == timezone.localdate().isoformat()
    edit = web("oncologist").get(reverse("patient-edit", args=[patient.pk])).content.decode()
    assert input_value(edit, "birth_date") == "1955-03-14"
    dx = web("oncologist").get(reverse("diagnosis-edit", args=[diagnosis.pk])).content.decode()
    assert input_value(dx, "diagnosed_on") == "2026-06-01"
    # shown as text in the clinic's format elsewhere
    assert "14 Mar 1955" in web("oncologist").get(reverse("patient-detail", args=[patient.pk])).content.decode()


def test_every_date_and_time_widget_renders_iso(settings):
    from django import forms as django_forms

    from outcomes.forms import AnalysisForm, AssessmentForm
    from workflow.pathway.forms import DowntimeForm, ScheduleForm, SimulationForm
    from workflow.pathway.record_forms import CourseForm, DiagnosisForm, PatientForm, TreatmentForm
    from workflow.toxicity.views import HoldDecisionForm, RegradeForm, ResolveForm, ReviewForm, ToxicityForm

    day, time = dt.date(2026, 11, 3), dt.time(9, 5)
    checked = 0
    for form_class in (AnalysisForm, AssessmentForm, DowntimeForm, ScheduleForm, SimulationForm, CourseForm, DiagnosisForm,
                       PatientForm, TreatmentForm, HoldDecisionForm, RegradeForm, ResolveForm, ReviewForm, ToxicityForm):
        for name, field in form_class.base_fields.items():
            if isinstance(field, django_forms.DateTimeField):
                assert field.widget.format_value(dt.datetime(2026, 11, 3, 9, 5)) == "2026-11-03T09:05", (form_class, name)
            elif isinstance(field, django_forms.DateField):
                assert field.widget.input_type == "date" and field.widget.format_value(day) == "2026-11-03", (form_class, name)
            elif isinstance(field, django_forms.TimeField):
                assert field.widget.format_value(time) == "09:05", (form_class, name)
            else:
                continue
            checked += 1
    assert checked >= 12


def test_new_course_without_a_patient_asks_for_one_first(web):
    page = web("oncologist").get(reverse("course-new"))
    form = page.context["form"]
    assert list(form.fields["diagnosis"].queryset) == []
    html = page.content.decode()
    assert 'data-on-pick="reload"' in html and reverse("patient-search") in html


def test_timeline_has_edit_links_for_roles_that_may_edit(web, patient, diagnosis):
    Treatment.objects.create(patient=patient, kind="surgery", surgery_type="pd", start_date=dt.date(2026, 7, 1))
    treatment = Treatment.objects.get(patient=patient)
    page = web("oncologist").get(reverse("patient-detail", args=[patient.pk])).content.decode()
    assert reverse("diagnosis-edit", args=[diagnosis.pk]) in page and reverse("treatment-edit", args=[treatment.pk]) in page
    page = web("scheduler").get(reverse("patient-detail", args=[patient.pk])).content.decode()
    assert reverse("diagnosis-edit", args=[diagnosis.pk]) not in page
    assert "Pleurectomy/decortication (P/D) (1 Jul 2026)" == str(treatment)
