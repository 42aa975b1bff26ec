"""Follow-up logging through the database: derived responses, recompute on correction, overrides, endpoints."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError

from outcomes import services
from outcomes.cohorts import CohortFilter
from outcomes.models import CourseOutcome, Death, FollowUpAssessment
from tests.conftest import make_course
from workflow.errors import RuleViolation
from workflow.models import Course, Diagnosis, Patient, Treatment

from .conftest import D, log, pleural


def test_response_derived_from_baseline_and_nadir(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [30, 20], kind="baseline")
    a1 = log(rt_course, oncologist, D(2026, 8, 20), [20, 10])  # 30 vs 50: -40 % -> PR
    a2 = log(rt_course, oncologist, D(2026, 9, 20), [20, 12])  # 32 vs nadir 30: +6.7 % -> PR (vs baseline -36 %)
    a3 = log(rt_course, oncologist, D(2026, 10, 20), [25, 12])  # 37 vs nadir 30: +23 %, +7 mm -> PD
    a1.refresh_from_db()
    assert (a1.derived_response, a1.response, a1.target_sum_mm) == ("PR", "PR", 30.0)
    assert a2.response == "PR" and a2.nadir_mm == 30.0
    assert a3.derived_response == "PD" and a3.disease_status == "progression"
    out = CourseOutcome.objects.get(course=rt_course)
    assert out.best_response == "PR"
    assert out.first_progression_date == D(2026, 10, 20)
    assert out.rt_start == D(2026, 6, 15) and out.last_assessment_date == D(2026, 10, 20)


def test_correcting_an_earlier_assessment_recomputes_later_ones(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [30, 20], kind="baseline")
    a1 = log(rt_course, oncologist, D(2026, 8, 20), [20, 10])
    a2 = log(rt_course, oncologist, D(2026, 9, 20), [25, 12])  # 37 vs nadir 30 -> PD
    assert a2.response == "PD"
    assert CourseOutcome.objects.get(course=rt_course).first_progression_date == D(2026, 9, 20)
    # The radiologist re-read the first follow-up: the lesions were larger (36). Nadir becomes 36 -> a2 is SD.
    services.save_assessment(
        course=rt_course, user=oncologist, assessment=a1, data={"date": D(2026, 8, 20)},
        measurements=[{"kind": "target", "lesion": "T1", "organ": "lung", "value_mm": 24},
                      {"kind": "target", "lesion": "T2", "organ": "lung", "value_mm": 12}],
    )
    a1.refresh_from_db()
    a2.refresh_from_db()
    assert a1.response == "SD" and a1.target_sum_mm == 36
    assert a2.response == "SD" and a2.nadir_mm == 36
    out = CourseOutcome.objects.get(course=rt_course)
    assert out.first_progression_date is None and out.best_response == "SD"
    # the old measurements are voided, not deleted, and the history keeps the change
    assert a1.measurements.count() == 4 and a1.measurements.active().count() == 2
    assert a1.history.count() >= 2


def test_override_keeps_both_values_and_drives_the_timeline(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [30, 20], kind="baseline")
    a1 = log(rt_course, oncologist, D(2026, 8, 20), [28, 20])  # SD
    with pytest.raises(RuleViolation) as exc:
        services.override_response(a1, user=oncologist, response="PD", reason=" ")
    assert exc.value.field == "override_reason"
    services.override_response(a1, user=oncologist, response="PD", reason="Biopsy-proven nodal progression")
    a1.refresh_from_db()
    assert (a1.derived_response, a1.override_response, a1.response) == ("SD", "PD", "PD")
    assert a1.override_by == oncologist and a1.override_reason.startswith("Biopsy")
    assert CourseOutcome.objects.get(course=rt_course).first_progression_date == D(2026, 8, 20)
    services.clear_override(a1, user=oncologist)
    assert CourseOutcome.objects.get(course=rt_course).first_progression_date is None


def test_mrecist_recurrence_after_complete_remission(rt_course, oncologist):
    def meso(date, values, kind="followup"):
        ms = [pleural(s, lvl, v) for (s, lvl), v in zip([("anterior", 1), ("posterior", 1), ("lateral", 2)], values)]
        return services.save_assessment(course=rt_course, user=oncologist,
                                        data={"kind": kind, "date": date, "criteria": "mrecist1.1"}, measurements=ms)

    meso(D(2026, 6, 10), [15, 12, 11], kind="baseline")
    meso(D(2026, 8, 20), [0, 0, 0])
    rec = meso(D(2026, 10, 20), [8, 0, 0])
    assert rec.response == "PD" and rec.disease_status == "recurrence"
    out = CourseOutcome.objects.get(course=rt_course)
    assert out.best_response == "CR" and out.first_complete_remission_date == D(2026, 8, 20)
    assert out.recurrence_date == D(2026, 10, 20) and out.current_status == "recurrence"


def test_measurement_and_date_rules(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [30, 20], kind="baseline")
    with pytest.raises(ValidationError) as exc:
        log(rt_course, oncologist, D(2026, 8, 20), [-1, 20])
    assert "measurements" in exc.value.message_dict
    with pytest.raises(RuleViolation):
        log(rt_course, oncologist, dt.date.today() + dt.timedelta(days=3), [30, 20])
    services.record_death(rt_course.patient, user=oncologist, date=D(2026, 9, 1), cause="disease")
    with pytest.raises(RuleViolation) as exc:
        log(rt_course, oncologist, D(2026, 9, 5), [30, 20])
    assert exc.value.field == "date"
    assert FollowUpAssessment.objects.filter(date=D(2026, 9, 5)).count() == 0


def test_invalid_baseline_is_reported_not_crashed(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [5], kind="baseline")  # 5 mm: not measurable
    a = log(rt_course, oncologist, D(2026, 8, 20), [4])
    assert a.derived_response == "NE"
    assert "not measurable" in CourseOutcome.objects.get(course=rt_course).derivation_issue


# --- endpoints through the DB --------------------------------------------------------------------------------


def _patient(mrn, **kw):
    p = Patient.objects.create(mrn=mrn, given_name="Given" + mrn, family_name="Family" + mrn, birth_date=D(1950, 1, 1), sex="M")
    d = Diagnosis.objects.create(patient=p, site=kw.get("site", "lung"), diagnosed_on=D(2025, 1, 10))
    c = make_course(p, d)
    services.set_recorded_rt_dates(c, D(2025, 2, 1), D(2025, 3, 1))
    return p, c


def test_endpoints_censoring_and_death_without_progression(oncologist):
    # A: alive, two assessments without progression, later contact -> OS censored at last contact, PFS at last scan
    pa, ca = _patient("A1")
    log(ca, oncologist, D(2025, 1, 20), [30], kind="baseline")
    log(ca, oncologist, D(2025, 5, 1), [28])
    log(ca, oncologist, D(2025, 8, 1), [27])
    services.save_assessment(course=ca, user=oncologist, data={"kind": "contact", "date": D(2025, 10, 1),
                                                                "last_known_alive": D(2025, 11, 1)})
    # B: died without progression -> PFS event (death) at the death date
    pb, cb = _patient("B1")
    log(cb, oncologist, D(2025, 1, 20), [30], kind="baseline")
    log(cb, oncologist, D(2025, 5, 1), [29])
    services.record_death(pb, user=oncologist, date=D(2025, 7, 1), cause="other")
    # C: progression then death
    pc, cc = _patient("C1")
    log(cc, oncologist, D(2025, 1, 20), [30], kind="baseline")
    log(cc, oncologist, D(2025, 6, 1), [45])
    services.record_death(pc, user=oncologist, date=D(2025, 9, 1), cause="disease")

    df = services.endpoint_frame(Course.objects.all()).set_index("mrn")
    t0 = D(2025, 2, 1)
    assert df.loc["A1", "os_event"] == 0 and df.loc["A1", "os_days"] == (D(2025, 11, 1) - t0).days
    assert df.loc["A1", "pfs_event"] == 0 and df.loc["A1", "pfs_days"] == (D(2025, 8, 1) - t0).days
    assert df.loc["B1", "pfs_event"] == 1 and df.loc["B1", "pfs_event_type"] == "death"
    assert df.loc["B1", "pfs_days"] == (D(2025, 7, 1) - t0).days == df.loc["B1", "os_days"]
    assert df.loc["C1", "pfs_event_type"] == "progression" and df.loc["C1", "pfs_days"] == (D(2025, 6, 1) - t0).days
    assert df.loc["C1", "os_days"] == (D(2025, 9, 1) - t0).days
    # time zero = diagnosis, recorded in the output
    dx = services.endpoint_frame(Course.objects.all(), time_zero="diagnosis").set_index("mrn")
    assert (dx["time_zero"] == "diagnosis").all()
    assert dx.loc["C1", "os_days"] == (D(2025, 9, 1) - D(2025, 1, 10)).days

    # Same numbers as the per-patient reference implementation on the full assessment list.
    from outcomes.endpoints import AssessmentPoint, derive_endpoints

    pts = [AssessmentPoint(a.date, a.response) for a in FollowUpAssessment.objects.filter(course=cb, kind="followup")]
    ref = derive_endpoints(t0, D(2025, 1, 10), D(2025, 3, 1), death_date=D(2025, 7, 1), assessments=pts)
    assert (ref.pfs_days, ref.pfs_event, ref.os_days) == (df.loc["B1", "pfs_days"], 1, df.loc["B1", "os_days"])


def test_cohort_filters(oncologist):
    _patient("L1", site="lung")
    _patient("M1", site="pleural_mesothelioma")
    qs = CohortFilter.from_params({"site": "pleural_mesothelioma"}).queryset()
    assert list(qs.values_list("patient__mrn", flat=True)) == ["M1"]
    assert CohortFilter.from_params({"rt_start_from": "2025-02-02"}).queryset().count() == 0
    assert CohortFilter.from_params({"multimodal": "yes"}).queryset().count() == 0
    assert CohortFilter.from_params({"multimodal": "no"}).queryset().count() == 2
    with pytest.raises(RuleViolation) as exc:
        CohortFilter.from_params({"site": "moon"})
    assert exc.value.field == "site"


def test_death_recorded_on_follow_up_form_path(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [30], kind="baseline")
    with pytest.raises(RuleViolation):
        services.save_assessment(course=rt_course, user=oncologist, data={"kind": "contact", "date": D(2026, 9, 1), "vital_status": "dead"})
    services.save_assessment(course=rt_course, user=oncologist, data={"kind": "contact", "date": D(2026, 9, 1), "vital_status": "dead"},
                             death={"date": D(2026, 9, 3), "cause": "disease"})
    assert Death.objects.get(patient=rt_course.patient).date == D(2026, 9, 3)


@pytest.mark.parametrize("by_id_max", [5000, 0])
def test_treatment_columns_are_the_same_by_patient_id_or_from_the_whole_registry(oncologist, monkeypatch, by_id_max):
    """Small cohorts ask for their patients' treatments by id, large ones read the registry's and filter in numpy."""
    monkeypatch.setattr(services, "TREATMENTS_BY_ID_MAX", by_id_max)
    both, _ = _patient("T1")
    surgery_only, _ = _patient("T2")
    _patient("T3")
    outsider, _ = _patient("T4")  # not in the cohort: its treatments must not leak in
    for p in (both, surgery_only, outsider):
        Treatment.objects.create(patient=p, kind="surgery", surgery_type="lobectomy", start_date=D(2024, 12, 1))
    Treatment.objects.create(patient=both, kind="chemotherapy", start_date=D(2024, 12, 20))
    Treatment.objects.create(patient=outsider, kind="chemotherapy", start_date=D(2024, 12, 20))
    Treatment.objects.create(patient=both, kind="trial", agent="MESO-X", trial_arm="B", start_date=D(2025, 1, 2))
    Treatment.objects.create(patient=both, kind="trial", agent="MESO-0", trial_arm="A", start_date=D(2024, 11, 2))
    voided = Treatment.objects.create(patient=surgery_only, kind="chemotherapy", start_date=D(2024, 12, 20))
    voided.void(user=oncologist, reason="entered on the wrong patient")
    cohort = Course.objects.exclude(patient=outsider)
    df = services.cohort_frame(cohort).set_index("mrn")
    assert list(df.loc[["T1", "T2", "T3"], "multimodal"]) == ["surgery+chemo+RT", "other", "other"]
    assert list(df.loc[["T1", "T2", "T3"], "surgery"]) == [True, True, False]
    assert list(df.loc[["T1", "T2", "T3"], "chemotherapy"]) == [True, False, False]
    assert list(df.loc[["T1", "T2", "T3"], "trial_arm"]) == ["A", "none", "none"]  # the first arm by start date
    assert "T4" not in df.index
