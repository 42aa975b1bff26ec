"""Patients without radiotherapy: follow-up recorded for the patient (no course), derived into ``PatientOutcome``,
and analysed from diagnosis with the RT courses of the same cohort.

RECIST 1.1 numbers used below: baseline sum 50 mm; 30 mm is -40 % (PR, <= -30 %); 40 mm after the 30 mm nadir
is +33 % and +10 mm (PD: >= +20 % and >= 5 mm absolute over the nadir).
"""

import datetime as dt

import pytest

from outcomes import services
from outcomes.cohorts import CohortFilter
from outcomes.models import FollowUpAssessment, PatientOutcome
from workflow.errors import RuleViolation
from workflow.models import Diagnosis, Patient

from .conftest import target

D = dt.date


@pytest.fixture
def no_rt_patient(db):
    p = Patient.objects.create(mrn="NORT01", given_name="Nora", family_name="Surgery", birth_date=D(1950, 5, 2), sex="F")
    Diagnosis.objects.create(patient=p, site="breast", diagnosed_on=D(2025, 1, 10))
    return p


def log_patient(patient, user, date, values, kind="followup", **data):
    ms = [target(f"T{i + 1}", v) for i, v in enumerate(values)]
    return services.save_assessment(patient=patient, user=user, data={"kind": kind, "date": date, **data},
                                    measurements=ms)


def test_patient_level_follow_up_is_derived_by_recist_into_the_patient_outcome(no_rt_patient, oncologist):
    log_patient(no_rt_patient, oncologist, D(2025, 1, 20), [30, 20], kind="baseline")
    a1 = log_patient(no_rt_patient, oncologist, D(2025, 4, 20), [18, 12])
    a2 = log_patient(no_rt_patient, oncologist, D(2025, 7, 20), [24, 16])
    a1.refresh_from_db()
    a2.refresh_from_db()
    assert a1.course_id is None
    assert (a1.target_sum_mm, a1.change_from_baseline_pct, a1.response) == (30, -40, "PR")
    assert (a2.target_sum_mm, round(a2.change_from_nadir_pct, 1), a2.response) == (40, 33.3, "PD")
    out = PatientOutcome.objects.get(patient=no_rt_patient)
    assert (out.best_response, out.first_response_date, out.first_progression_date) == ("PR", D(2025, 4, 20), D(2025, 7, 20))
    assert out.last_contact_date == D(2025, 7, 20)
    # audited like every clinical record
    assert a1.history.count() >= 1 and a1.history.first().history_user == oncologist
    # a death ends follow-up and is the patient's: the outcome row keeps its dates, OS reads the death
    services.record_death(no_rt_patient, user=oncologist, date=D(2025, 9, 1), cause="disease")
    assert PatientOutcome.objects.get(patient=no_rt_patient).first_progression_date == D(2025, 7, 20)


def test_a_patient_with_an_rt_course_is_followed_up_on_that_course(course, oncologist):
    with pytest.raises(RuleViolation) as exc:
        services.save_assessment(patient=course.patient, user=oncologist, data={"kind": "followup", "date": D(2026, 9, 1)})
    assert exc.value.field == "course"
    assert "log the follow-up on that course" in str(exc.value)
    with pytest.raises(RuleViolation) as exc:
        services.save_assessment(user=oncologist, data={"kind": "followup", "date": D(2026, 9, 1)})
    assert exc.value.field == "course"
    assert not FollowUpAssessment.objects.exists()


def test_api_logs_a_patient_level_follow_up_and_refuses_one_for_a_patient_with_a_course(client, oncologist, no_rt_patient,
                                                                                          course):
    client.force_login(oncologist)
    base = {"kind": "followup", "date": "2025-03-01", "imaging": "CT", "measurements_input": [target("T1", 20)]}
    resp = client.post("/api/outcomes/assessments/", {**base, "patient": no_rt_patient.pk}, content_type="application/json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["course"] is None and resp.json()["patient"] == no_rt_patient.pk
    body = client.get(f"/api/outcomes/patients/{no_rt_patient.pk}/outcome/").json()
    assert body["derivation_issue"] == "no baseline assessment" and len(body["timeline"]) == 1
    # the course's patient: refused, naming the field, nothing written
    before = FollowUpAssessment.objects.count()
    resp = client.post("/api/outcomes/assessments/", {**base, "patient": course.patient.pk}, content_type="application/json")
    assert resp.status_code == 400 and "course" in resp.json()
    resp = client.post("/api/outcomes/assessments/", base, content_type="application/json")
    assert resp.status_code == 400 and "course" in resp.json()
    assert FollowUpAssessment.objects.count() == before


def test_follow_up_page_of_a_patient_without_radiotherapy(client, oncologist, no_rt_patient):
    client.force_login(oncologist)
    page = client.get(f"/outcomes/patients/{no_rt_patient.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Follow-up without radiotherapy" in html and f"/outcomes/patients/{no_rt_patient.pk}/assessments/new/" in html
    resp = client.post(f"/outcomes/patients/{no_rt_patient.pk}/assessments/new/", {
        "kind": "followup", "date": "2025-03-01", "imaging": "CT", "criteria": "recist1.1", "non_target": "none",
        "vital_status": "alive", "m-TOTAL_FORMS": "1", "m-INITIAL_FORMS": "0", "m-0-kind": "target", "m-0-lesion": "T1",
        "m-0-organ": "breast", "m-0-value_mm": "21"})
    assert resp.status_code == 302 and resp["Location"] == f"/outcomes/patients/{no_rt_patient.pk}/"
    a = FollowUpAssessment.objects.get(patient=no_rt_patient)
    assert a.course_id is None and a.measurements.get().value_mm == 21


def test_cohort_filters_that_need_a_course_leave_patients_without_rt_out(no_rt_patient, oncologist, course):
    services.recompute_patient(no_rt_patient)
    assert list(CohortFilter.from_params({}).cohort().without_rt.values_list("patient_id", flat=True)) == [no_rt_patient.pk]
    for params in ({"intent": "curative"}, {"technique": "IMRT"}, {"rt_start_from": "2020-01"}, {"radiotherapy": "yes"},
                   {"multimodal": "yes"}, {"site": "pleural_mesothelioma"}, {"diagnosed_from": "2025-02"}):
        assert not CohortFilter.from_params(params).cohort().without_rt.exists(), params
    for params in ({"site": "breast"}, {"radiotherapy": "no"}, {"multimodal": "no"}, {"diagnosed_to": "2025-01"}):
        assert CohortFilter.from_params(params).cohort().without_rt.exists(), params
    assert not CohortFilter.from_params({"radiotherapy": "no"}).cohort().courses.exists()
    with pytest.raises(RuleViolation) as exc:
        CohortFilter.from_params({"radiotherapy": "no", "technique": "IMRT"})
    assert exc.value.field == "technique"


def test_a_baseline_logged_before_the_course_is_the_courses_baseline(no_rt_patient, oncologist, client):
    """A baseline CT logged while the patient had no course is the patient's; a course prescribed later, with no
    baseline of its own, derives its responses from it (RECIST: 50 mm -> 30 mm is -40 %, PR) when it is at most 90
    days before the start of RT. It stays the patient's record, and a correction of it reaches the course."""
    from outcomes.models import CourseOutcome
    from tests.conftest import make_course

    baseline = log_patient(no_rt_patient, oncologist, D(2025, 1, 20), [30, 20], kind="baseline")
    course = make_course(no_rt_patient, no_rt_patient.diagnoses.get())
    services.set_recorded_rt_dates(course, D(2025, 2, 3), D(2025, 3, 10))  # RT starts 14 days after the CT
    follow = services.save_assessment(course=course, user=oncologist, data={"kind": "followup", "date": D(2025, 4, 20)},
                                      measurements=[target("T1", 18), target("T2", 12)])
    assert (follow.change_from_baseline_pct, follow.response) == (-40, "PR")
    out = CourseOutcome.objects.get(course=course)
    assert (out.baseline_date, out.baseline_sum_mm, out.best_response, out.derivation_issue) == (
        D(2025, 1, 20), 50, "PR", "")
    baseline.refresh_from_db()
    assert baseline.course_id is None  # still the patient's record
    rows = services.timeline(course)
    assert [(a.date, a.carried) for a in rows] == [(D(2025, 1, 20), True), (D(2025, 4, 20), False)]
    client.force_login(oncologist)
    assert client.get(f"/api/outcomes/courses/{course.pk}/outcome/").json()["carried_baseline"] == baseline.pk
    assert "logged before this course" in client.get(f"/outcomes/courses/{course.pk}/").content.decode()
    # correcting the baseline (60 mm) is allowed although the patient now has a course, and reaches the course
    services.save_assessment(assessment=baseline, user=oncologist, data={"kind": "baseline", "date": D(2025, 1, 20)},
                             measurements=[target("T1", 40), target("T2", 20)])
    follow.refresh_from_db()
    assert (follow.change_from_baseline_pct, follow.response) == (-50, "PR")
    assert CourseOutcome.objects.get(course=course).baseline_sum_mm == 60


def test_a_baseline_more_than_90_days_before_rt_is_not_carried(no_rt_patient, oncologist):
    from outcomes.models import CourseOutcome
    from tests.conftest import make_course

    log_patient(no_rt_patient, oncologist, D(2025, 1, 20), [30, 20], kind="baseline")
    course = make_course(no_rt_patient, no_rt_patient.diagnoses.get())
    services.set_recorded_rt_dates(course, D(2025, 4, 21), D(2025, 5, 30))  # 91 days after the CT
    services.save_assessment(course=course, user=oncologist, data={"kind": "followup", "date": D(2025, 8, 1)},
                             measurements=[target("T1", 18), target("T2", 12)])
    assert CourseOutcome.objects.get(course=course).derivation_issue == "no baseline assessment"
    assert not any(a.carried for a in services.timeline(course))
    # the course's own baseline always comes first
    services.save_assessment(course=course, user=oncologist, data={"kind": "baseline", "date": D(2025, 4, 14)},
                             measurements=[target("T1", 36), target("T2", 24)])
    out = CourseOutcome.objects.get(course=course)
    assert (out.baseline_date, out.baseline_sum_mm, out.best_response) == (D(2025, 4, 14), 60, "PR")


def test_a_registry_course_for_a_patient_with_a_baseline_outside_rt_carries_it(no_rt_patient, oncologist):
    """A registry file giving a course to a patient RadPath follows up without RT: the new course takes the
    patient's baseline CT (14 days before RT) like a course prescribed in the clinic."""
    from outcomes.models import CourseOutcome
    from outcomes.registry_import import import_registry

    from .test_registry_import import csv_text

    log_patient(no_rt_patient, oncologist, D(2025, 1, 20), [30, 20], kind="baseline")
    rows = [{"record_type": "course", "mrn": "NORT01", "course_ref": "1", "intent": "adjuvant", "technique": "IMRT",
             "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25", "rt_start": "2025-02-03"}]
    assert import_registry(csv_text(rows), user=oncologist).courses == 1
    out = CourseOutcome.objects.get(course__patient=no_rt_patient)
    assert (out.rt_start, out.baseline_date, out.baseline_sum_mm) == (D(2025, 2, 3), D(2025, 1, 20), 50)
