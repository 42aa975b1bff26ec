"""Outcome services: log and correct follow-up assessments, recompute derived responses, run survival analyses.

Rules
-----
* A clinician enters measurements; the response at each assessment (CR/PR/SD/PD/NE), the best overall response,
  the disease-status timeline and the dates of first progression and recurrence are *derived* by
  ``outcomes.response.evaluate_course`` (RECIST 1.1, or mRECIST 1.1 for pleural mesothelioma) from the course's
  full, date-sorted list of active assessments. ``recompute_course`` runs after every save, correction, override
  or void of any assessment of that course, so correcting an earlier assessment changes every later result.
* An override replaces the derived response for all downstream use; both values are kept (``derived_response``
  and ``override_response`` + reason + who + when).
* Assessments without measurable baseline (or registry rows that only carry a recorded response) cannot be derived:
  their derived response is NE and the effective response is the override (registry responses are stored as
  overrides with the reason "recorded in historical registry"); ``CourseOutcome.derivation_issue`` says why.
* Last contact (the patient was alive on that date) = the latest assessment date or ``last_known_alive`` of any of
  the patient's assessments; a recorded death ends follow-up.

Analysis (``analyze``): one row per patient (the patient's earliest course in the cohort), endpoints from
``outcomes.endpoints.endpoints_frame`` on the stored derived dates, Kaplan-Meier (``outcomes.survival``; "log" CI =
R ``survfit`` default unless ``conf_type="log-log"``), median with CI, survival at 1, 2 and 5 years (365.25-day
years), numbers at risk, log-rank across groups and a Cox model with a proportional-hazards check.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, FilteredRelation, Max, Min, OuterRef, Q
from django.utils import timezone

from workflow.errors import RuleViolation
from workflow.models import AppointmentStatus, Course, Fraction, Patient, Treatment, TreatmentKind
from workflow.pathway.scheduling import local_day

from . import bulk, covariates, disclosure
from . import endpoints as ep
from . import response as rs
from . import survival as sv
from .columnar import fetch_columns

logger = logging.getLogger(__name__)
from .models import (
    AssessmentKind,
    CourseOutcome,
    Death,
    FailureSite,
    FollowUpAssessment,
    LesionMeasurement,
    MeasurementKind,
    PatientOutcome,
    VitalStatus,
)

REGISTRY_REASON = "Recorded in historical registry (no measurements to derive from)"
YEAR_DAYS = 365.25
LANDMARK_YEARS = (1, 2, 5)
ENDPOINTS = {
    "os": "Overall survival",
    "pfs": "Progression-free survival",
    "lc": "Local control",
    "ttr": "Time to recurrence",
}
GROUPINGS = {
    "": "None",
    "site": "Diagnosis site",
    "intent": "Intent",
    "technique": "Technique",
    "multimodal": "Surgery + chemotherapy + RT vs not",
    "radiotherapy": "Radiotherapy vs none",
    "trial_arm": "Trial arm",
    "sex": "Sex",
    "grade3_toxicity": "Grade >= 3 toxicity",
}
def group_label(group_by, value):
    """A group's name as the clinic says it (``Pleural mesothelioma``, not ``pleural_mesothelioma``)."""
    from workflow.models import DiseaseSite, Intent, Sex, Technique

    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "Unknown"
    text = str(value)
    if group_by in ("intent", "technique") and text == NO_RT:
        return "No radiotherapy"
    if group_by == "radiotherapy":
        return {"yes": "Radiotherapy", "no": "No radiotherapy"}.get(text, text)
    choices = {"site": DiseaseSite, "intent": Intent, "technique": Technique, "sex": Sex}.get(group_by)
    if choices is not None:
        return dict(choices.choices).get(text, text.replace("_", " ").capitalize())
    if group_by == "multimodal":
        return {"surgery+chemo+RT": "Surgery + chemotherapy + RT", "other": "Not multimodal"}.get(text, text)
    if group_by == "grade3_toxicity":
        return {"True": "Grade >= 3 toxicity", "False": "No grade >= 3 toxicity", "yes": "Grade >= 3 toxicity",
                "no": "No grade >= 3 toxicity"}.get(text, text)
    return text


def covariate_label(covariate, labels=None):
    """``site=pleural_mesothelioma`` -> ``Diagnosis site: Pleural mesothelioma (vs reference)``; age and sex named.
    ``labels``: an analysis' own names for its covariate terms (``_design``'s), which take precedence."""
    if labels and covariate in labels:
        return labels[covariate]
    if covariate == "age_years":
        return "Age (per year)"
    if covariate == "sex=M":
        return "Male (vs female)"
    name, _, value = covariate.partition("=")
    if not value:
        return covariate
    return f"{GROUPINGS.get(name, name)}: {group_label(name, value)}"


COX_FAILED = ("The Cox model could not be fitted to this cohort: the fit did not converge. This happens when a group "
              "has too few events, when a covariate separates the events almost perfectly, or when two covariates carry "
              "the same information (say every patient of one site is male). Use a coarser grouping or a larger cohort; "
              "the Kaplan-Meier curves, medians and log-rank test do not depend on it.")

CI_METHODS = {
    "log": "log transform, S*exp(+-1.96*sigma), Greenwood sigma on the cumulative-hazard scale (R survfit default)",
    "log-log": "log-log transform (lifelines default; R conf.type='log-log')",
}


def toxicity_model():
    """``workflow.ToxicityEvent`` when the toxicity app part is installed, else None (the column is left out)."""
    try:
        return apps.get_model("workflow", "ToxicityEvent")
    except LookupError:
        return None


# ------------------------------------------------------------------------------------------------------------
# Logging follow-ups
# ------------------------------------------------------------------------------------------------------------

ASSESSMENT_FIELDS = (
    "kind", "date", "imaging", "criteria", "non_target", "new_lesions", "failure_site", "vital_status",
    "last_known_alive", "notes",
)
MEASUREMENT_FIELDS = ("kind", "lesion", "organ", "is_node", "ct_level", "value_mm")


def _check_dates(patient, course, date):
    death = Death.objects.active().filter(patient=patient).first()
    if death and date > death.date:
        raise RuleViolation(f"The patient died on {death.date}; an assessment cannot be after that.", field="date")
    if date > timezone.localdate():
        raise RuleViolation("An assessment cannot be in the future.", field="date")


@transaction.atomic
def save_assessment(*, course=None, user, data, measurements=(), assessment=None, death=None, patient=None):
    """Create (``assessment=None``) or correct an assessment with its measurements, then recompute the course.

    ``data``: assessment fields (``ASSESSMENT_FIELDS``); ``measurements``: dicts of ``MEASUREMENT_FIELDS``. A
    correction voids the previous measurement rows (kept in the database and history) and writes the new set.
    ``death``: optional ``{"date", "cause", "cause_detail"}`` when the follow-up records the patient's death.

    Without a ``course``, the assessment is the ``patient``'s follow-up outside radiotherapy: accepted only while
    the patient has no live RT course (a patient with one is followed up on that course, so every assessment
    belongs to exactly one analysis unit), and derived into the patient's ``PatientOutcome``.
    """
    if assessment is not None:
        course = course if course is not None else assessment.course
        patient = assessment.patient
    if course is not None:
        course = Course.objects.select_related("patient").get(pk=course.pk)
        if patient is not None and patient.pk != course.patient_id:
            raise RuleViolation("The course belongs to another patient.", field="course")
        patient = course.patient
        if assessment is not None and assessment.course_id != course.pk:
            raise RuleViolation("The assessment belongs to another course.", field="course")
    else:
        if patient is None:
            raise RuleViolation("Name the course followed up (or, for a patient without radiotherapy, the patient).",
                                field="course")
        live = Course.objects.active().filter(patient=patient).order_by("pk").first() if assessment is None else None
        if live is not None:  # a correction of one logged before the course keeps it where it is
            raise RuleViolation(f"The patient has an RT course ({live}); log the follow-up on that course.",
                                field="course")
    if assessment is None:
        assessment = FollowUpAssessment(patient=patient, course=course)
    for name in ASSESSMENT_FIELDS:
        if name in data:
            setattr(assessment, name, data[name])
    if assessment.kind == AssessmentKind.CONTACT:
        assessment.imaging = "none"
    if assessment.vital_status == VitalStatus.DEAD and death is None and not Death.objects.active().filter(patient=patient).exists():
        raise RuleViolation("Vital status is dead: record the date and cause of death.", field="vital_status")
    assessment.full_clean()
    if death is None:
        _check_dates(patient, course, assessment.date)
    assessment._history_user = user
    assessment.save()
    rows = list(measurements)
    if assessment.kind == AssessmentKind.CONTACT and any(r.get("value_mm") is not None for r in rows):
        raise RuleViolation("A contact without imaging has no measurements.", field="measurements")
    for old in assessment.measurements.active():
        old.void(user=user, reason="corrected")
    seen = set()
    for i, row in enumerate(rows):
        m = LesionMeasurement(assessment=assessment, **{k: row.get(k) for k in MEASUREMENT_FIELDS if k in row})
        if m.kind == MeasurementKind.PLEURAL and not m.organ:
            m.organ = "pleura"
        key = (m.kind, m.ct_level, m.lesion)
        if key in seen:
            raise ValidationError({"measurements": f"Measurement {i + 1}: {m.lesion} is listed twice."})
        seen.add(key)
        try:
            m.full_clean(exclude=["assessment"])
        except ValidationError as exc:
            raise ValidationError({"measurements": [f"Measurement {i + 1}: {msg}" for msg in exc.messages]}) from exc
        m._history_user = user
        m.save()
    if death is not None:
        record_death(patient, user=user, recompute=False, **death)
    recompute_patient(patient)
    assessment.refresh_from_db()
    return assessment


@transaction.atomic
def override_response(assessment, *, user, response, reason):
    """Replace the derived response of one assessment (reason required); both values are kept."""
    if response not in rs.RESPONSES:
        raise RuleViolation(f"Response must be one of {', '.join(rs.RESPONSES)}.", field="override_response")
    if not (reason or "").strip():
        raise RuleViolation("An override needs a reason.", field="override_reason")
    if assessment.kind != AssessmentKind.FOLLOWUP:
        raise RuleViolation("Only follow-up imaging has a response to override.", field="override_response")
    assessment.override_response = response
    assessment.override_reason = reason.strip()[:300]
    assessment.override_by = user
    assessment.override_at = timezone.now()
    assessment._history_user = user
    assessment.save()
    recompute_assessment_unit(assessment)
    assessment.refresh_from_db()
    return assessment


@transaction.atomic
def clear_override(assessment, *, user):
    assessment.override_response = ""
    assessment.override_reason = ""
    assessment.override_by = None
    assessment.override_at = None
    assessment._history_user = user
    assessment.save()
    recompute_assessment_unit(assessment)
    assessment.refresh_from_db()
    return assessment


@transaction.atomic
def void_assessment(assessment, *, user, reason):
    assessment.void(user=user, reason=reason)
    recompute_patient(assessment.patient)


@transaction.atomic
def record_death(patient, *, user, date, cause="unknown", cause_detail="", recompute=True):
    """Record (or correct) the patient's death; follow-up dated after it is refused."""
    if isinstance(date, str):
        date = dt.date.fromisoformat(date)
    if date > timezone.localdate():
        raise RuleViolation("The date of death cannot be in the future.", field="death_date")
    if patient.birth_date and date < patient.birth_date:
        raise RuleViolation("The date of death is before the date of birth.", field="death_date")
    later = FollowUpAssessment.objects.active().filter(patient=patient, date__gt=date).order_by("date").first()
    if later is not None:
        raise RuleViolation(f"There is an assessment on {later.date}, after this date of death.", field="death_date")
    death = Death.objects.active().filter(patient=patient).first() or Death(patient=patient)
    death.date, death.cause, death.cause_detail = date, cause, cause_detail or ""
    death.full_clean(exclude=["patient"])
    death._history_user = user
    death.save()
    if recompute:
        recompute_patient(patient)
    return death


# ------------------------------------------------------------------------------------------------------------
# Recompute
# ------------------------------------------------------------------------------------------------------------


def _to_stats_assessment(a, ms):
    targets = tuple(
        rs.TargetLesion(m.lesion, m.organ or "unspecified", m.is_node, m.value_mm) for m in ms if m.kind == MeasurementKind.TARGET
    )
    pleural = tuple(rs.PleuralMeasurement(m.lesion, int(m.ct_level or 0), m.value_mm) for m in ms if m.kind == MeasurementKind.PLEURAL)
    override = None
    if a.override_response:
        override = rs.Override(a.override_response, a.override_reason or "override", getattr(a.override_by, "username", None))
    return rs.Assessment(
        date=a.date, targets=targets, pleural=pleural, non_target=a.non_target, new_lesions=a.new_lesions,
        override=override, assessment_id=str(a.pk),
    )


def _fallback(follow):
    """No derivable baseline: derived NE, effective = override; timeline from the effective responses."""
    results = []
    in_cr = False
    for a in follow:
        eff = a.override_response or rs.NE
        if eff == rs.PD:
            status = rs.STATUS_RECURRENCE if in_cr else rs.STATUS_PD
        else:
            status = {rs.CR: rs.STATUS_CR, rs.PR: rs.STATUS_PR, rs.SD: rs.STATUS_SD}.get(eff, rs.STATUS_NE)
        results.append((a, eff, status))
        if eff != rs.NE:
            in_cr = eff == rs.CR
    return results


def _fallback_derived(baseline, follow):
    """Set each follow-up's derived NE / effective response / status (``_fallback``) and return the course's
    derived outcome fields from them."""
    results = _fallback(follow)
    for a, eff, status in results:
        a.derived_response, a.response, a.disease_status = rs.NE, eff, status
    ranked = []
    for a, eff, _status in results:
        ranked.append((a, eff))
        if eff == rs.PD:
            break
    cands = [(rs._BOR_RANK[e], a.date, e) for a, e in ranked if e != rs.NE]
    best = min(cands) if cands else None
    first = lambda pred: next((a.date for a, e, s in results if pred(e, s)), None)  # noqa: E731
    return dict(
        criteria=baseline.criteria if baseline else "",
        baseline_date=baseline.date if baseline else None,
        baseline_sum_mm=None,
        best_response=best[2] if best else (rs.NE if results else ""),
        best_response_date=best[1] if best else None,
        first_response_date=first(lambda e, s: e in (rs.CR, rs.PR)),
        first_complete_remission_date=first(lambda e, s: e == rs.CR),
        first_progression_date=first(lambda e, s: e == rs.PD),
        recurrence_date=first(lambda e, s: s == rs.STATUS_RECURRENCE),
        current_status=results[-1][2] if results else "",
    )


def registry_followup_fields(override_response):
    """The derived fields of a new registry follow-up (imaging, no measurements), as ``recompute_course`` writes
    them, except a recurrence (PD after a CR), which needs the course's sequence (``derive_registry_outcomes``)."""
    eff = override_response or rs.NE
    status = {rs.CR: rs.STATUS_CR, rs.PR: rs.STATUS_PR, rs.SD: rs.STATUS_SD, rs.PD: rs.STATUS_PD}.get(eff, rs.STATUS_NE)
    return {"derived_response": rs.NE, "response": eff, "disease_status": status}


def _registry_follow_ups(qs, key):
    """A registry unit's imaging follow-ups in date order, ``{unit id: [follow-up]}``, from one columnar query;
    ``key``: the unit's column (``course_id`` or ``patient_id``)."""
    from types import SimpleNamespace

    rows = fetch_columns(qs.filter(voided_at__isnull=True, kind=AssessmentKind.FOLLOWUP),
                         {"pk": ("pk", "int"), key: (key, "int"), "date": ("date", "date"),
                          "override_response": ("override_response", "text"), "failure_site": ("failure_site", "text")})
    order = np.lexsort((rows["pk"], rows["date"], rows[key]))
    # whole columns to Python values at once (datetime64[D] -> datetime.date), in the units' order
    pks, units = rows["pk"][order].tolist(), rows[key][order].tolist()
    dates = rows["date"][order].astype(object).tolist()
    responses, sites = rows["override_response"][order].tolist(), rows["failure_site"][order].tolist()
    out = {}
    for pk, unit, date, resp, site in zip(pks, units, dates, responses, sites):
        out.setdefault(unit, []).append(SimpleNamespace(pk=pk, date=date, override_response=resp, failure_site=site))
    return out


def _last_contacts(patient_ids):
    """``{patient id: last date known alive}``: the latest assessment or last-known-alive date of any unit."""
    contact = {}
    for pid, d, alive in FollowUpAssessment.objects.filter(patient_id__in=patient_ids, voided_at__isnull=True) \
            .order_by().values("patient_id").annotate(d=Max("date"), a=Max("last_known_alive")) \
            .values_list("patient_id", "d", "a"):
        dates = [x for x in (d, alive) if x is not None]
        contact[pid] = max(dates) if dates else None
    return contact


REGISTRY_DERIVED = ("criteria", "baseline_date", "baseline_sum_mm", "best_response", "best_response_date",
                    "first_response_date", "first_complete_remission_date", "first_progression_date", "recurrence_date",
                    "current_status", "first_local_failure_date", "last_assessment_date", "last_contact_date",
                    "derivation_issue", "computed_at")


def _follow_up_dates(follow):
    """A unit's first local failure (the first PD whose failure site is local) and last assessment, from its
    follow-ups in date order with their effective responses."""
    return {"first_local_failure_date": next((a.date for a in follow if a.response == rs.PD
                                              and a.failure_site == FailureSite.LOCAL), None),
            "last_assessment_date": follow[-1].date if follow else None}


def _registry_derived(follow, last_contact, now, recurrences):
    """The ``REGISTRY_DERIVED`` values of one registry unit (no baseline, no measurement: ``_fallback_derived``
    on its follow-ups); the ids of its follow-ups that are a recurrence are added to ``recurrences``."""
    derived = _fallback_derived(None, follow)
    recurrences += [a.pk for a in follow if a.disease_status == rs.STATUS_RECURRENCE]
    derived.update(_follow_up_dates(follow), last_contact_date=last_contact,
                   derivation_issue="no baseline assessment" if follow else "", computed_at=now)
    return tuple(derived[k] for k in REGISTRY_DERIVED)


def _mark_recurrences(ids):
    for i in range(0, len(ids), 500):
        FollowUpAssessment.objects.filter(pk__in=ids[i:i + 500]).update(disease_status=rs.STATUS_RECURRENCE)


def derive_registry_outcomes(new_courses, *, chunk=2000):
    """Create the ``CourseOutcome`` rows of courses a registry import just created, with what ``recompute_course``
    would derive, in a few queries per ``chunk`` instead of a dozen per course.

    ``new_courses``: ``{course_id: (patient_id, rt_start, rt_end)}``. Such a course has no baseline assessment,
    no lesion measurement and no delivered fraction, so its derivation is ``_fallback_derived`` on its follow-ups
    (effective = the recorded response), RT dates are the recorded ones and last contact is the patient's latest
    assessment or last-known-alive date. Its follow-ups were inserted with ``registry_followup_fields``; the
    few that turn out to be a recurrence (PD after a CR) are updated in one query. The rows are written as tuples
    (``bulk.insert_rows``), not as model instances."""
    ids = sorted(new_courses)
    now = timezone.now()
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        by_course = _registry_follow_ups(FollowUpAssessment.objects.filter(course_id__in=part), "course_id")
        contact = _last_contacts({new_courses[c][0] for c in part})
        outcomes, recurrences = [], []
        for cid in part:
            patient_id, rt_start, rt_end = new_courses[cid]
            outcomes.append((cid, patient_id, rt_start, rt_end, rt_start, rt_end,
                             *_registry_derived(by_course.get(cid, []), contact.get(patient_id), now, recurrences)))
        bulk.insert_rows(CourseOutcome, ["course_id", "patient_id", "rt_start_recorded", "rt_end_recorded", "rt_start",
                                         "rt_end", *REGISTRY_DERIVED], outcomes)
        _mark_recurrences(recurrences)


def derive_registry_patient_outcomes(patient_ids, *, chunk=2000):
    """Create the ``PatientOutcome`` rows of patients without radiotherapy a registry import just created, with what
    :func:`recompute_patient_outcome` would derive, in a few queries per ``chunk``: as for a registry course
    (:func:`derive_registry_outcomes`), on the patient's follow-ups outside any course."""
    ids = sorted(patient_ids)
    now = timezone.now()
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        by_patient = _registry_follow_ups(FollowUpAssessment.objects.filter(patient_id__in=part, course__isnull=True),
                                          "patient_id")
        contact = _last_contacts(part)
        recurrences = []
        outcomes = [(pid, *_registry_derived(by_patient.get(pid, []), contact.get(pid), now, recurrences)) for pid in part]
        bulk.insert_rows(PatientOutcome, ["patient_id", *REGISTRY_DERIVED], outcomes)
        _mark_recurrences(recurrences)


def _rt_dates(course):
    agg = Fraction.objects.active().filter(course=course, status=AppointmentStatus.DELIVERED).aggregate(
        first=Min("starts_at"), last=Max("starts_at")
    )
    if agg["first"] is None:
        return None, None
    return local_day(agg["first"]), local_day(agg["last"])


def _last_contact(patient_id):
    return _last_contacts([patient_id]).get(patient_id)


def _derive(assessments, borrowed=()):
    """Derive every value of one unit's active assessments (a course's, or a patient's without a course): write the
    per-assessment derived fields (one bulk update) and return ``(outcome fields, follow-ups in date order)``.
    ``borrowed``: ids of assessments the unit reads but does not own (a course's carried baseline), left unwritten."""
    items = list(assessments.exclude(kind=AssessmentKind.CONTACT).select_related("override_by").order_by("date", "pk"))
    ms_by = {}
    for m in LesionMeasurement.objects.active().filter(assessment__in=[a.pk for a in items]):
        ms_by.setdefault(m.assessment_id, []).append(m)
    baselines = [a for a in items if a.kind == AssessmentKind.BASELINE]
    baseline = baselines[-1] if baselines else None
    follow = [a for a in items if a.kind == AssessmentKind.FOLLOWUP]
    issue = ""
    summary = None
    if baseline is None:
        issue = "no baseline assessment" if follow else ""
    else:
        before = [a for a in follow if a.date <= baseline.date]
        if before:
            issue = f"follow-up on {before[0].date} is not after the baseline of {baseline.date}"
        else:
            try:
                summary = rs.evaluate_course(
                    _to_stats_assessment(baseline, ms_by.get(baseline.pk, [])),
                    [_to_stats_assessment(a, ms_by.get(a.pk, [])) for a in follow],
                    criteria=baseline.criteria,
                )
            except rs.ResponseValidationError as exc:
                issue = "baseline: " + "; ".join(exc.problems)
    for a in items:
        for f in ("target_sum_mm", "nadir_mm", "change_from_baseline_pct", "change_from_nadir_pct"):
            setattr(a, f, None)
        a.target_response = a.derived_response = a.response = a.disease_status = ""
    if summary is not None:
        by_id = {r.assessment_id: r for r in summary.assessments}
        baseline.target_sum_mm = summary.baseline_sum_mm
        for a in follow:
            r = by_id[str(a.pk)]
            a.target_sum_mm, a.nadir_mm = r.target_sum_mm, r.nadir_mm
            a.change_from_baseline_pct, a.change_from_nadir_pct = r.change_from_baseline_pct, r.change_from_nadir_pct
            a.target_response, a.derived_response, a.response, a.disease_status = (
                r.target_response, r.derived_response, r.response, r.status,
            )
        derived = dict(
            criteria=summary.criteria,
            baseline_date=summary.baseline_date,
            baseline_sum_mm=summary.baseline_sum_mm,
            best_response=summary.best_overall_response,
            best_response_date=summary.best_overall_response_date,
            first_response_date=summary.first_response_date,
            first_complete_remission_date=summary.first_complete_remission_date,
            first_progression_date=summary.first_progression_date,
            recurrence_date=summary.recurrence_date,
            current_status=summary.current_status or "",
        )
    else:
        derived = _fallback_derived(baseline, follow)
    owned = [a for a in items if a.pk not in borrowed]
    if owned:
        FollowUpAssessment.objects.bulk_update(
            owned,
            ["target_sum_mm", "nadir_mm", "change_from_baseline_pct", "change_from_nadir_pct", "target_response",
             "derived_response", "response", "disease_status"],
        )
    derived.update(_follow_up_dates(follow), derivation_issue=issue[:300])
    return derived, follow


CARRIED_BASELINE_DAYS = 90


def carried_baseline(course, rt_start=None):
    """The baseline imaging a course takes from its patient's follow-up outside radiotherapy, or None.

    A baseline scan is often taken before the course is prescribed; logged then, it is the patient's (no course
    existed), and the course had no baseline, so none of its responses could be derived. Rule: a course without a
    baseline of its own uses the patient's latest course-less baseline dated on or before its reference day (the
    start of RT; before RT has started, the day before its first follow-up; else today) and at most
    ``CARRIED_BASELINE_DAYS`` (90) before it. The assessment stays the patient's; the course reads it (and its
    measurements) as its baseline."""
    own = FollowUpAssessment.objects.active().filter(course=course)
    if own.filter(kind=AssessmentKind.BASELINE).exists():
        return None
    first = own.filter(kind=AssessmentKind.FOLLOWUP).order_by("date").values_list("date", flat=True).first()
    if rt_start is not None:
        reference, before = rt_start, Q(date__lte=rt_start)
    elif first is not None:
        reference, before = first, Q(date__lt=first)  # a baseline precedes every follow-up
    else:
        reference = timezone.localdate()
        before = Q(date__lte=reference)
    return (FollowUpAssessment.objects.active()
            .filter(before, patient_id=course.patient_id, course__isnull=True, kind=AssessmentKind.BASELINE,
                    date__gte=reference - dt.timedelta(days=CARRIED_BASELINE_DAYS))
            .order_by("-date", "-pk").first())


def course_assessments(course, rt_start=None):
    """``(queryset, carried)``: the active assessments a course is derived from (its own, and the baseline it
    carries from the patient's follow-up outside radiotherapy, ``carried_baseline``) and that baseline or None."""
    carried = carried_baseline(course, rt_start)
    unit = Q(course=course) | Q(pk=carried.pk) if carried is not None else Q(course=course)
    return FollowUpAssessment.objects.active().filter(unit), carried


def recompute_course(course):
    """Rewrite every derived value of the course's assessments and its ``CourseOutcome`` row."""
    course = Course.objects.select_related("patient").get(pk=course.pk)
    outcome, _ = CourseOutcome.objects.get_or_create(course=course, defaults={"patient": course.patient})
    rt_start, rt_end = _rt_dates(course)
    outcome.rt_start = rt_start or outcome.rt_start_recorded
    assessments, carried = course_assessments(course, outcome.rt_start)
    derived, _follow = _derive(assessments, borrowed={carried.pk} if carried is not None else ())
    for k, v in derived.items():
        setattr(outcome, k, v)
    outcome.rt_end = rt_end or outcome.rt_end_recorded or course.completed_on or course.stopped_on
    outcome.last_contact_date = _last_contact(course.patient_id)
    outcome.computed_at = timezone.now()
    outcome.save()
    return outcome


def recompute_patient_outcome(patient):
    """Rewrite the derived values of the patient's follow-up outside any course and the ``PatientOutcome`` row.

    The row exists for every patient whose outcome was ever recomputed; it is the analysis unit only while the
    patient has no live RT course (``outcomes.cohorts``)."""
    derived, _follow = _derive(FollowUpAssessment.objects.active().filter(patient=patient, course__isnull=True))
    outcome = PatientOutcome.objects.filter(patient_id=patient.pk).first() or PatientOutcome(patient_id=patient.pk)
    for k, v in derived.items():
        setattr(outcome, k, v)
    outcome.last_contact_date = _last_contact(patient.pk)
    outcome.computed_at = timezone.now()
    outcome.save()
    return outcome


def recompute_assessment_unit(assessment):
    """Recompute what one assessment feeds: its course, or the patient's course-less outcome (and the patient's
    courses, one of which may carry it as its baseline)."""
    if assessment.course_id:
        recompute_course(assessment.course)
    else:
        recompute_patient(assessment.patient)


def set_recorded_rt_dates(course, rt_start, rt_end=None):
    """RT dates for a course without fraction records (registry data, external treatment); then recompute."""
    outcome, _ = CourseOutcome.objects.get_or_create(course=course, defaults={"patient_id": course.patient_id})
    outcome.rt_start_recorded, outcome.rt_end_recorded = rt_start, rt_end
    outcome.save(update_fields=["rt_start_recorded", "rt_end_recorded"])
    return recompute_course(course)


def recompute_patient(patient):
    """Recompute every course of the patient and the patient's course-less outcome (last contact and death are
    patient-level)."""
    out = [recompute_course(c) for c in Course.objects.active().filter(patient=patient)]
    recompute_patient_outcome(patient)
    return out


def patient_timeline(patient):
    """The timeline of a patient's follow-up outside any RT course (as ``timeline`` for a course)."""
    return list(FollowUpAssessment.objects.active().filter(patient=patient, course__isnull=True)
                .select_related("override_by").order_by("date", "pk"))


def timeline(course):
    """Disease-status timeline for display: baseline and each follow-up with derived and effective response; a
    baseline carried from the patient's follow-up outside radiotherapy is marked ``carried``."""
    outcome = CourseOutcome.objects.filter(course=course).only("rt_start").first()
    assessments, carried = course_assessments(course, outcome.rt_start if outcome else None)
    rows = list(assessments.select_related("override_by").order_by("date", "pk"))
    for a in rows:
        a.carried = carried is not None and a.pk == carried.pk
    return rows


# ------------------------------------------------------------------------------------------------------------
# Analysis: DB -> frames -> stats
# ------------------------------------------------------------------------------------------------------------


# name -> (ORM path, kind for outcomes.columnar: int / date / float / text)
COURSE_COLUMNS = {
    "course_id": ("id", "int"),
    "patient_id": ("patient_id", "int"),
    "diagnosis_date": ("diagnosis__diagnosed_on", "date"),
    "rt_start": ("outcome__rt_start", "date"),
    "rt_end": ("outcome__rt_end", "date"),
    "first_progression_date": ("outcome__first_progression_date", "date"),
    "first_local_failure_date": ("outcome__first_local_failure_date", "date"),
    "recurrence_date": ("outcome__recurrence_date", "date"),
    "last_assessment_date": ("outcome__last_assessment_date", "date"),
    "last_contact_date": ("outcome__last_contact_date", "date"),
    "mrn": ("patient__mrn", "text"),
    "birth_date": ("patient__birth_date", "date"),
    "sex": ("patient__sex", "text"),
    "site": ("diagnosis__site", "text"),
    "intent": ("intent", "text"),
    "technique": ("technique", "text"),
    "total_dose_gy": ("total_dose_gy", "float"),
    "fractions": ("fractions_planned", "float"),
    "best_response": ("outcome__best_response", "text"),
    "current_status": ("outcome__current_status", "text"),
}
ENDPOINT_INPUTS = ["course_id", "patient_id", "diagnosis_date", "rt_start", "rt_end", "first_progression_date",
                   "first_local_failure_date", "recurrence_date", "last_assessment_date", "last_contact_date"]
TREATMENT_COLUMNS = ("surgery", "chemotherapy", "multimodal", "trial_arm")


def _frame(arrays: dict, kinds: dict) -> pd.DataFrame:
    """Columnar arrays -> frame; dates as datetime64, empty text (NULL through an outer join) as None."""
    cols = {}
    for name, values in arrays.items():
        if kinds[name] == "text":
            values = np.where(values == "", None, values)
        elif kinds[name] == "date":
            values = values.astype("datetime64[s]")
        cols[name] = values
    return pd.DataFrame(cols)


def _endpoint_inputs(time_zero, endpoints):
    """The course columns that the requested endpoints read (see ``endpoints.ENDPOINT_INPUTS``)."""
    if endpoints is None:
        return list(ENDPOINT_INPUTS)
    renamed = {"last_alive_date": "last_contact_date"}
    need = {"course_id", "patient_id", "rt_start", "diagnosis_date" if time_zero == "diagnosis" else "rt_start"}
    need |= {renamed.get(c, c) for e in endpoints for c in ep.ENDPOINT_INPUTS[e]}
    return [c for c in ENDPOINT_INPUTS if c in need]


# Up to this many patients, a cohort's treatments are asked for by patient id; a larger cohort reads the registry's
# surgery / chemotherapy / trial rows and keeps its own in numpy (cheaper than a 100,000-id IN set or a lookup per
# course).
TREATMENTS_BY_ID_MAX = 5000


def _add_treatments(df, wanted):
    """surgery, chemotherapy, multimodal (both + RT) and trial_arm columns, per the patient's live treatments."""
    pid = df["patient_id"].to_numpy()
    tx = Treatment.objects.filter(voided_at__isnull=True,
                                  kind__in=[TreatmentKind.SURGERY, TreatmentKind.CHEMOTHERAPY, TreatmentKind.TRIAL])
    if pid.size <= TREATMENTS_BY_ID_MAX:  # courses bound the patients; no need to count unique ids
        tx = tx.filter(patient_id__in=np.unique(pid).tolist())
    spec = {"patient_id": ("patient_id", "int"), "kind": ("kind", "text")}
    if "trial_arm" in wanted:
        spec.update(trial_arm=("trial_arm", "text"), start_date=("start_date", "date"), pk=("pk", "int"))
    rows = fetch_columns(tx, spec)
    surgery = np.isin(pid, rows["patient_id"][rows["kind"] == TreatmentKind.SURGERY])
    chemo = np.isin(pid, rows["patient_id"][rows["kind"] == TreatmentKind.CHEMOTHERAPY])
    if wanted & {"surgery", "chemotherapy"}:
        df["surgery"], df["chemotherapy"] = surgery, chemo
    with_rt = (df["radiotherapy"] == "yes").to_numpy() if "radiotherapy" in df.columns else True
    df["multimodal"] = np.where(surgery & chemo & with_rt, "surgery+chemo+RT", "other")
    if "trial_arm" in wanted:
        on_arm = (rows["kind"] == TreatmentKind.TRIAL) & (rows["trial_arm"] != "")
        arms = pd.DataFrame({k: rows[k][on_arm] for k in ("patient_id", "trial_arm", "start_date", "pk")})
        arms = arms.sort_values(["patient_id", "start_date", "pk"]).drop_duplicates("patient_id")  # the first arm
        first = arms.set_index("patient_id")["trial_arm"]
        df["trial_arm"] = df["patient_id"].map(first).fillna("none")


# The same columns for a patient without radiotherapy (a ``PatientOutcome`` row of ``CohortFilter.without_rt_queryset``,
# which annotates the earliest diagnosis): no course, no RT dates, no prescription (NULL / NaN).
WITHOUT_RT_COLUMNS = {
    "patient_id": ("patient_id", "int"),
    "diagnosis_date": ("dx_date", "date"),
    "first_progression_date": ("first_progression_date", "date"),
    "first_local_failure_date": ("first_local_failure_date", "date"),
    "recurrence_date": ("recurrence_date", "date"),
    "last_assessment_date": ("last_assessment_date", "date"),
    "last_contact_date": ("last_contact_date", "date"),
    "mrn": ("patient__mrn", "text"),
    "birth_date": ("patient__birth_date", "date"),
    "sex": ("patient__sex", "text"),
    "site": ("dx_site", "text"),
    "best_response": ("best_response", "text"),
    "current_status": ("current_status", "text"),
}
NO_RT = "none"  # intent / technique of a patient without radiotherapy, as groups show it ("No radiotherapy")


def cohort_frame(cohort, time_zero="rt_start", columns=None, inputs=None):
    """One row per course of the cohort, then one per patient without radiotherapy: dates, derived outcomes and
    covariates. ``cohort``: a ``cohorts.Cohort`` or a ``Course`` queryset.

    One SQL query per part, fetched column-wise (:mod:`outcomes.columnar`): the courses with their patient, diagnosis,
    derived outcome and live death (joins) and any grade >= 3 toxicity (a correlated subquery); a second one for
    the patients' surgery / chemotherapy / trial treatments (:func:`_add_treatments`). ``columns``: the extra columns wanted beyond the endpoint inputs (default:
    all, as the exports need); subqueries that only feed columns not asked for are left out. ``inputs``: the
    endpoint input dates wanted (default: all of ``ENDPOINT_INPUTS``). A patient without radiotherapy has no
    ``course_id`` (``<NA>``), no RT dates, intent and technique ``"none"``, and is never multimodal
    (surgery + chemotherapy + RT); ``radiotherapy`` is ``"yes"`` / ``"no"``.
    """
    from .cohorts import as_cohort

    cohort = as_cohort(cohort)
    wanted = set(COURSE_COLUMNS) | set(TREATMENT_COLUMNS) | {"grade3_toxicity", "death_cause"} if columns is None else set(columns)
    inputs = list(ENDPOINT_INPUTS) if inputs is None else list(inputs)
    names = inputs + [n for n in COURSE_COLUMNS if n in wanted and n not in inputs]
    spec = {n: COURSE_COLUMNS[n] for n in names}
    courses = _with_live_death(cohort.courses, spec, "death_cause" in wanted)
    tox = toxicity_model()
    if tox is not None and "grade3_toxicity" in wanted:
        g3 = tox.objects.filter(course=OuterRef("pk"), voided_at__isnull=True, baseline=False, worst_grade__gte=3)
        spec["grade3_toxicity"] = (Exists(g3), "bool")
    df = _frame(fetch_columns(courses, spec), {n: k for n, (_, k) in spec.items()})
    other = _without_rt_frame(cohort.without_rt, spec)
    if other is not None:
        df["radiotherapy"] = "yes"
        df = pd.concat([df.astype({"course_id": "Int64"}), other], ignore_index=True)
        for col in ("intent", "technique"):
            if col in df.columns:
                df[col] = df[col].astype(object).where(df["radiotherapy"] == "yes", NO_RT)
    elif "radiotherapy" in wanted:
        df["radiotherapy"] = "yes"
    if "fractions" in df.columns:
        df["fractions"] = df["fractions"].astype("Int64")
    if wanted & set(TREATMENT_COLUMNS):
        _add_treatments(df, wanted)
    if "grade3_toxicity" in df.columns:
        df["grade3_toxicity"] = np.where(df["grade3_toxicity"].astype(bool), "yes", "no")
    return df


def _with_live_death(qs, spec, cause):
    """``qs`` (courses or patient outcomes, both with a ``patient``) with the patient's live death (at most one, a
    constraint) as a LEFT JOIN, which PostgreSQL hash-joins; its date (and ``cause``) added to the columnar ``spec``."""
    spec["death_date"] = ("live_death__date", "date")
    if cause:
        spec["death_cause"] = ("live_death__cause", "text")
    return qs.annotate(live_death=FilteredRelation("patient__deaths", condition=Q(patient__deaths__voided_at__isnull=True)))


def unit_assessments(frame):
    """A ``Q`` of the assessments of a cohort frame's rows: each course's, and for a patient without radiotherapy
    (no ``course_id``) the patient's outside any course."""
    with_rt = frame["course_id"].notna()
    units = Q(course_id__in=[int(c) for c in frame["course_id"][with_rt]])
    if (~with_rt).any():
        units |= Q(patient_id__in=[int(p) for p in frame["patient_id"][~with_rt]], course__isnull=True)
    return units


def _without_rt_frame(patients, course_spec):
    """The patients-without-radiotherapy part of :func:`cohort_frame` with the course part's columns (None when
    there are none): what a course has and they lack is NULL (dates NaT, numbers NaN, text None, no toxicity)."""
    if patients.query.is_empty():  # none(): no annotations to read either
        return None
    spec = {"patient_id": WITHOUT_RT_COLUMNS["patient_id"]}
    for name, (_expr, kind) in course_spec.items():
        if name in WITHOUT_RT_COLUMNS:
            spec[name] = WITHOUT_RT_COLUMNS[name]
    patients = _with_live_death(patients, spec, "death_cause" in course_spec)
    arrays = fetch_columns(patients, spec)
    n = len(arrays["patient_id"])
    if n == 0:
        return None
    df = _frame(arrays, {k: kind for k, (_e, kind) in spec.items()})
    nulls = {"date": np.full(n, np.datetime64("NaT"), "datetime64[s]"), "float": np.full(n, np.nan),
             "text": np.full(n, None, object), "bool": np.zeros(n, bool)}
    for name, (_expr, kind) in course_spec.items():
        if name not in df.columns:
            df[name] = pd.array([pd.NA] * n, dtype="Int64") if kind == "int" else nulls[kind]
    df = df[list(course_spec)]
    df["radiotherapy"] = "no"
    return df


def endpoint_frame(cohort, time_zero="rt_start", per_patient=True, columns=None, endpoints=None):
    """Cohort frame + endpoints (days). ``per_patient``: keep each patient's earliest course in the cohort.
    ``endpoints``: compute (and fetch the dates for) only these of os / pfs / lc / ttr (default all).

    Endpoints come from the stored derived dates (``CourseOutcome`` / ``PatientOutcome``, kept current by
    :func:`recompute_course` / :func:`recompute_patient_outcome`) through
    :func:`outcomes.endpoints.endpoints_from_dates`. Patients without radiotherapy have no RT start: from
    ``rt_start`` they are left out, and ``frame.attrs["without_rt_left_out"]`` says how many.
    """
    from .cohorts import as_cohort

    if time_zero not in ep.TIME_ZERO_CHOICES:
        raise RuleViolation(f"time_zero must be one of {', '.join(ep.TIME_ZERO_CHOICES)}.", field="time_zero")
    endpoints = tuple(endpoints) if endpoints is not None else ep.ENDPOINT_NAMES
    cohort = as_cohort(cohort)
    left_out = 0
    if time_zero == "rt_start":
        left_out = cohort.without_rt.count()
        cohort = as_cohort(cohort.courses)
    df = cohort_frame(cohort, time_zero, columns, inputs=_endpoint_inputs(time_zero, endpoints))
    if per_patient and not df.empty and df["patient_id"].duplicated().any():
        df = df.sort_values(["patient_id", "rt_start", "course_id"], na_position="last", kind="mergesort")
        df = df.drop_duplicates("patient_id", keep="first").reset_index(drop=True)
    if df.empty:
        out = df.assign(**{f"{k}_{c}": pd.Series(dtype=float) for k in endpoints for c in ("days", "event")})
        out.attrs["without_rt_left_out"] = left_out
        return out
    names = {"last_contact_date": "last_alive_date"}
    inputs = df[[c for c in ENDPOINT_INPUTS if c in df.columns and c not in ("patient_id", "course_id")]
                + ["death_date"]].rename(columns=names)
    inputs.insert(0, "patient_id", np.arange(len(df)))  # the row, as the endpoint function's key
    ends = ep.endpoints_from_dates(inputs, time_zero=time_zero, endpoints=endpoints)
    # one output row per input row, in order: columns side by side, no join needed
    out = pd.concat([df.reset_index(drop=True), ends.drop(columns="patient_id")], axis=1)
    if "birth_date" in out.columns:
        t0, born = out["time_zero_date"], out["birth_date"]
        out["age_years"] = (t0.dt.year - born.dt.year) - (
            (t0.dt.month < born.dt.month) | ((t0.dt.month == born.dt.month) & (t0.dt.day < born.dt.day))
        ).astype(int)
    out.attrs["without_rt_left_out"] = left_out
    return out


@dataclass
class AnalysisResult:
    endpoint: str
    time_zero: str
    conf_type: str
    group_by: str
    n_patients: int
    n_excluded: int
    curves: dict
    frame: pd.DataFrame
    logrank: sv.LogRankResult | None = None
    cox: sv.CoxResult | None = None
    cox_error: str | None = None
    notes: list = field(default_factory=list)
    suppressed_groups: list = field(default_factory=list)
    methods: dict = field(default_factory=dict)  # rmst / landmark / competing / iptw (``add_methods``)
    extra_sets: list = field(default_factory=list)  # patient sets of further outputs (the landmark's at-risk set)
    extra_labels: list = field(default_factory=list)  # what each of ``extra_sets`` is, for the ledger's refusal
    covariates: list = field(default_factory=list)  # the data-dictionary entries of the covariates used
    term_labels: dict = field(default_factory=dict)
    variables: dict = field(default_factory=dict)  # key -> RegistryVariable of every covariate the analysis uses
    group_order: list | None = None  # a covariate grouping's levels in dictionary order (reference first)
    cox_strata: list = field(default_factory=list)  # the strata the researcher chose

    def released_sets(self):
        """Patient ids each shown result covers: every group shown, or the whole analysed cohort."""
        pid = self.frame["patient_id"].to_numpy()
        if not self.group_by:
            return [pid, *self.extra_sets]
        labels = self.frame[self.group_by].astype(str).to_numpy()
        return [pid[labels == str(g)] for g in self.curves] + list(self.extra_sets)

    def released_labels(self):
        """What each of :meth:`released_sets` is, in the page's words."""
        if not self.group_by:
            return ["the whole cohort", *self.extra_labels]
        return [f"group {group_label(self.group_by, g)}" for g in self.curves] + list(self.extra_labels)

    def landmark_days(self):
        return [y * YEAR_DAYS for y in LANDMARK_YEARS]

    def risk_times_days(self):
        tmax = max((float(k.time[-1]) for k in self.curves.values()), default=0.0)
        step = YEAR_DAYS / 2 if tmax <= 3 * YEAR_DAYS else YEAR_DAYS
        return [i * step for i in range(int(tmax // step) + 1)]

    def _cox_dict(self):
        if not self.cox:
            return None
        cox = self.cox.to_dict()
        cox["strata"] = list(self.cox_strata)  # the model as fitted: without them a stratified fit reads as plain
        for term in cox.get("terms", []):
            term["label"] = covariate_label(term["covariate"], self.term_labels)
        return cox

    def to_dict(self, include_points=True):
        times = self.landmark_days()
        risk_times = self.risk_times_days()
        groups = []
        for label, km in self.curves.items():
            summ = sv.summarize(km, times)
            g = summ.to_dict()
            g["display"] = group_label(self.group_by, label) if self.group_by else "All patients"
            g["median_months"] = {k: (None if g["median"].get(k) is None else g["median"][k] / ep.DAYS_PER_MONTH)
                                  for k in ("median", "lower", "upper")}
            for row, years in zip(g["at_times"], LANDMARK_YEARS):
                row["years"] = years
            g["at_risk"] = sv.number_at_risk(km, risk_times)
            if include_points:
                g["curve"] = {k: v for k, v in km.to_dict().items() if k in ("time", "n_risk", "n_event", "n_censor", "survival", "lower", "upper")}
            groups.append(g)
        return {
            "endpoint": self.endpoint,
            "endpoint_label": ENDPOINTS[self.endpoint],
            "time_zero": self.time_zero,
            "time_unit": "days",
            "conf_type": self.conf_type,
            "conf_level": 0.95,
            "ci_method": CI_METHODS[self.conf_type],
            "median_method": "R print.survfit: first time S(t) <= 0.5 (midpoint of an exact flat at 0.5); CI where the bands cross 0.5",
            "group_by": self.group_by or None,
            "n_patients": self.n_patients,
            "n_excluded": self.n_excluded,
            "landmarks_days": times,
            "at_risk_times_days": risk_times,
            "at_risk_times_months": [t / ep.DAYS_PER_MONTH for t in risk_times],
            "days_per_month": ep.DAYS_PER_MONTH,
            "groups": groups,
            "logrank": self.logrank.to_dict() if self.logrank else None,
            "cox": self._cox_dict(),
            "cox_error": self.cox_error,
            "notes": self.notes,
            "suppressed_groups": self.suppressed_groups,
            "covariates": self.covariates,
            "min_cohort": disclosure.min_cohort(),
            "methods": self.methods,
        }


# Cox model terms a researcher may choose: "group" (the analysis grouping), "age" (years at time zero), or any
# grouping variable (categorical, dummy-coded against its first level). Strata: any grouping variable.
COX_TERMS = ("group", "age", *[g for g in GROUPINGS if g and g != "grade3_toxicity"])
COX_DEFAULT_TERMS = ("group", "age", "sex")


def parse_cox_choice(terms, strata, group_by):
    """The researcher's Cox terms and strata (lists or comma-separated text) checked against ``COX_TERMS``.

    ``terms`` None keeps the default model (grouping + age + sex). Raises ``RuleViolation`` naming the field."""
    def split(value):
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else list(value)
        return list(dict.fromkeys(i.strip() for i in items if i and i.strip()))

    chosen, strata = split(terms), split(strata) or []
    for field_name, values, allowed in (("cox_terms", chosen or [], COX_TERMS),
                                        ("cox_strata", strata, COX_TERMS[2:])):
        unknown = [v for v in values if v not in allowed and not covariates.is_key(v)]
        if unknown:
            raise RuleViolation(f"unknown {field_name} {', '.join(unknown)}: choose from {', '.join(allowed)} or a "
                                "covariate <registry>.<variable>.", field=field_name)
        for key in (v for v in values if v not in allowed):
            var = covariates.resolve(key, field_name)
            if field_name == "cox_strata" and var.kind != "categorical":
                raise RuleViolation(f"cox_strata: {key} is numeric; strata take categorical variables (use it as a "
                                    "term, or group it with group_by and group_cuts).", field="cox_strata")
    if chosen is not None and not chosen:
        raise RuleViolation("choose at least one Cox term.", field="cox_terms")
    if chosen and "group" in chosen and not group_by:
        raise RuleViolation("the term 'group' needs a grouping (group_by).", field="cox_terms")
    both = set(chosen or COX_DEFAULT_TERMS) & set(strata) | ({"group"} & set(chosen or ()) if group_by in strata else set())
    if both:
        raise RuleViolation(f"{', '.join(sorted(both))} cannot be both a term and a stratum.", field="cox_strata")
    return chosen, strata


def analyze(courses, *, endpoint="os", time_zero="rt_start", group_by="", conf_type="log", cox=True, min_group=None,
            user=None, cox_terms=None, cox_strata=None, group_cuts=None, rmst_tau=None, landmark_days=None,
            competing=False, iptw_covariates=None, landmark_by=None):
    """Survival analysis of a cohort (a ``Course`` queryset): KM per group, medians, landmarks, log-rank, Cox.

    Disclosure control (``outcomes.disclosure``): fewer than ``RADPATH_MIN_COHORT`` usable patients is refused;
    groups smaller than that (``min_group`` overrides) are suppressed, listed in ``suppressed_groups``. With a
    researcher ``user`` the release is checked against and recorded in that user's ledger.
    """
    if endpoint not in ENDPOINTS:
        raise RuleViolation(f"endpoint must be one of {', '.join(ENDPOINTS)}.", field="endpoint")
    group_by = group_by or ""
    group_var = cuts = None
    if group_by not in GROUPINGS:
        if not covariates.is_key(group_by):
            raise RuleViolation(f"group_by must be one of {', '.join(g for g in GROUPINGS if g)} or a covariate "
                                "<registry>.<variable>.", field="group_by")
        group_var = covariates.resolve(group_by, "group_by")
        cuts = covariates.parse_cuts(group_cuts, group_var)
    elif group_cuts not in (None, "", []):
        raise RuleViolation("group_cuts: cut-points are for grouping by a numeric covariate.", field="group_cuts")
    if conf_type not in CI_METHODS:
        raise RuleViolation(f"conf_type must be one of {', '.join(CI_METHODS)}.", field="conf_type")
    cox_terms, cox_strata = parse_cox_choice(cox_terms, cox_strata, group_by)
    methods = parse_methods(rmst_tau, landmark_days, competing, iptw_covariates, landmark_by)
    if group_by and group_by in methods["iptw_covariates"]:
        raise RuleViolation(f"iptw_covariates: {group_by} is the grouping the weights balance; it cannot also be a "
                            "propensity term.", field="iptw_covariates")
    with_terms = cox or methods["competing"]  # the Fine-Gray model takes the Cox terms
    cox_vars = ({t for t in (cox_terms or COX_DEFAULT_TERMS) if t not in ("group", "age")} | set(cox_strata)
                if with_terms else set())
    variables = {k: covariates.resolve(k, "cox_terms") for k in sorted(cox_vars) if covariates.is_key(k)}
    if group_var is not None:
        variables[group_by] = group_var
    for key, var in methods["iptw_variables"].items():
        variables.setdefault(key, var)
    method_vars = {t for t in methods["iptw_covariates"] if t != "age"}
    columns = ({group_by} - {""} | ({"sex", "birth_date"} | cox_vars if with_terms else set())) - set(variables)
    columns |= (method_vars - set(variables)) | ({"birth_date"} if "age" in methods["iptw_covariates"] else set())
    if methods["competing"] and endpoint == "os":
        columns.add("death_cause")
    wanted = (endpoint, "os") if methods["competing"] and endpoint in ("lc", "ttr") else (endpoint,)
    df = endpoint_frame(courses, time_zero, columns=columns, endpoints=wanted)
    left_out = df.attrs.get("without_rt_left_out", 0)
    if group_by == "grade3_toxicity" and "grade3_toxicity" not in df.columns:
        raise RuleViolation("Toxicity data are not available.", field="group_by")
    covariates.add_columns(df, variables.values())
    dcol, ecol = f"{endpoint}_days", f"{endpoint}_event"
    keep = ["course_id", "patient_id", dcol, ecol,
            *[c for c in (group_by, "sex", "age_years", *sorted(cox_vars | method_vars), "death_cause",
                          "pfs_event_type", "os_days", "os_event", "time_zero_date") if c and c in df.columns]]
    df = df[list(dict.fromkeys(keep))]  # what the statistics read; not the whole cohort frame, copied twice
    usable = df.dropna(subset=[dcol, ecol]) if not df.empty else df
    notes = []
    if left_out:
        notes.append(f"{left_out} patient(s) of the cohort had no radiotherapy course, so no start of RT: they are "
                     "not in this analysis from the start of RT (analyse from diagnosis to include them).")
    excluded = len(df) - len(usable)
    if excluded:
        notes.append(f"{excluded} patient(s) without a {time_zero} date (or with death before it) excluded.")
    if usable.empty:
        raise RuleViolation("The cohort has no patient with the dates this endpoint needs.", field="cohort")
    usable = usable.assign(**{ecol: usable[ecol].astype(int), dcol: usable[dcol].astype(float)})
    group_order = None
    if group_var is not None:
        labels, group_order, how = covariates.group_values(usable[group_by], group_var, cuts)
        extra = {group_by: labels}
        if group_var.kind == "numeric":
            extra[f"{group_by}__num"] = usable[group_by]  # the value itself, for a numeric Cox term
        usable = usable.assign(**extra)
        if how:
            notes.append(how)
        missing = int(labels.isna().sum())
        if missing:
            notes.append(f"{missing} patient(s) without a value for {group_by} are left out (no group).")
            usable = usable[labels.notna().to_numpy()]
    if endpoint != "os":
        notes.extend(censoring_notes(usable[dcol].to_numpy(), usable[ecol].to_numpy(), endpoint))
    k = disclosure.min_cohort() if min_group is None else min_group
    disclosure.check_cohort_size(len(usable), "The cohort (patients with the dates this endpoint needs)")
    suppressed = []
    if group_by:
        sizes = usable[group_by].astype(object).where(usable[group_by].notna(), None).value_counts(dropna=False)
        suppressed = sorted(str(label) for label, n in sizes.items() if n < k)
        if suppressed:
            usable = usable[~usable[group_by].astype(str).isin(suppressed)]
            notes.append(f"Group(s) {', '.join(suppressed)} have fewer than {k} patients and are not shown "
                         "(their patients are left out of the curves, log-rank and Cox model).")
            if usable.empty:
                raise disclosure.CohortTooSmall(f"Every group has fewer than {k} patients; choose another grouping.")
    t, e = usable[dcol].to_numpy(), usable[ecol].to_numpy()
    if group_by:
        g = usable[group_by].to_numpy(dtype=object)
        curves = sv.kaplan_meier_by_labels(t, e, g, conf_type=conf_type)
        if group_order:
            curves = {lbl: curves[lbl] for lbl in group_order if lbl in curves}
    else:
        curves = {"all": sv.kaplan_meier(t, e, conf_type, label="all")}
    result = AnalysisResult(endpoint, time_zero, conf_type, group_by, len(usable), excluded, curves, usable, notes=notes,
                            suppressed_groups=suppressed,
                            covariates=[covariates.describe_variable(v) for v in variables.values()],
                            variables=variables, group_order=group_order, cox_strata=list(cox_strata))
    if group_by and len(curves) >= 2:
        has = ~pd.isna(g)
        result.logrank = sv.logrank_test(t[has], e[has], g[has])
        if result.logrank.note:
            result.notes.append(f"Log-rank: {result.logrank.note}.")
    if cox:
        result.cox, result.cox_error = _cox(usable, dcol, ecol, group_by, cox_terms, cox_strata, variables=variables,
                                            group_order=group_order, labels=result.term_labels, notes=result.notes)
    add_methods(result, rmst_tau=methods["rmst_tau"], landmark_days=methods["landmark_days"],
                competing=methods["competing"], iptw_covariates=methods["iptw_covariates"], cox_terms=cox_terms,
                min_group=min_group, landmark_by=methods["landmark_by"])
    disclosure.record_release(user, result.released_sets(), kind=f"analysis:{endpoint}", labels=result.released_labels())
    return result


def censoring_notes(days, events, endpoint) -> list[str]:
    """What the censoring rule did, in words: PFS, LC and TTR censor at the last disease assessment, so a patient
    with no assessment after time zero is censored at day 0 — right by the rule, but a cohort whose registry holds
    last contact only (no assessments) then has every censored time at 0 and a biased curve, which must be said."""
    censored = events == 0
    n_censored = int(censored.sum())
    if not n_censored:
        return []
    at_zero = int((censored & (days == 0)).sum())
    label = ENDPOINTS[endpoint]
    notes = [f"{label}: {n_censored - at_zero} censored patient(s) are censored at their last disease assessment"
             + (f"; {at_zero} had no assessment after time zero and are censored at day 0." if at_zero else ".")]
    if at_zero == n_censored:
        notes.append(f"Warning: no censored patient has a disease assessment to censor at, so every censored {label} "
                     "time is day 0 and the curve and median are biased low. Record the follow-up assessments (a "
                     "last-contact date alone does not show freedom from progression), or analyse OS.")
    elif at_zero * 2 > n_censored:
        notes.append(f"Warning: most censored patients ({at_zero} of {n_censored}) have no assessment to censor at; "
                     f"the {label} estimate leans on few assessed patients.")
    return notes


def _design(df, group_by, terms, variables=None, group_order=None, labels=None, notes=None):
    """Numeric model columns for ``terms`` and their names, as every regression here codes them: the grouping and
    categorical terms dummy-coded against their first level (a registry covariate: the first level of its data
    dictionary present in the cohort; a covariate grouping: its first group; otherwise the first in sorted order),
    numeric covariates as their values, age in years, sex as male = 1. A term without variation in the cohort is
    left out. ``labels`` receives the covariate terms' display names; ``notes`` why age is missing."""
    data, covs = pd.DataFrame(index=df.index), []
    variables = variables or {}
    labels = {} if labels is None else labels

    def dummies(var, order=None):
        if var not in df.columns or df[var].nunique() < 2:
            return
        present = set(df[var].dropna().astype(str).unique())
        levels = [lvl for lvl in order if lvl in present] if order else sorted(present)
        missing = df[var].isna()
        for lvl in levels[1:]:
            name = f"{var}={lvl}"
            data[name] = (df[var].astype(str) == lvl).astype(float).where(~missing)
            covs.append(name)
            if var in variables:
                labels[name] = f"{var}: {lvl} (vs {levels[0]})"

    def numeric(term):
        v = variables.get(term)
        if v is not None:
            return v.kind == "numeric"
        return covariates.is_key(term) and term in df.columns and pd.api.types.is_float_dtype(df[term])

    for term in terms:
        if term == "group":
            if group_by:
                dummies(group_by, group_order)
        elif term == "age":
            if "age_years" not in df.columns:
                continue
            if df["age_years"].notna().any() and df["age_years"].nunique() > 1:
                data["age_years"] = df["age_years"].astype(float)
                covs.append("age_years")
            elif df["age_years"].isna().all() and notes is not None:
                notes.append("Cox model: no patient has a birth date (the registry gave none), so age is left out.")
        elif term == group_by and "group" in terms:
            continue  # already in the model as the grouping
        elif term == "sex":
            if "sex" not in df.columns:
                continue
            if df["sex"].isin(["M", "F"]).all() and df["sex"].nunique() == 2:
                data["sex=M"] = (df["sex"] == "M").astype(float)
                covs.append("sex=M")
            elif notes is not None:
                shown = sorted(str(v) for v in df["sex"].dropna().unique())
                why = (f"every patient is {shown[0]}" if len(shown) == 1 else
                       f"sex is coded {', '.join(shown)}, not only M and F")
                notes.append(f"Cox model: sex is left out ({why}).")
        elif numeric(term):
            values = df[f"{term}__num"] if f"{term}__num" in df.columns else df[term]
            if values.nunique() > 1:
                data[term] = values.astype(float)
                covs.append(term)
                if term in variables:
                    labels[term] = f"{term} ({covariates.per_unit(variables[term].unit)})"
        elif term in variables:
            dummies(term, variables[term].levels)
        else:
            dummies(term)
    return data, covs


def _cox(df, dcol, ecol, group_by, terms=None, strata=(), variables=None, group_order=None, labels=None, notes=None):
    """Cox PH on the chosen ``terms`` (default: the grouping, age and sex), coded by :func:`_design`, with
    ``strata`` as separate baselines. ``notes`` also says how many patients lacked a term's value (left out)."""
    terms = list(COX_DEFAULT_TERMS if terms is None else terms)
    design, covs = _design(df, group_by, terms, variables, group_order, labels, notes)
    data = pd.concat([pd.DataFrame({dcol: df[dcol], ecol: df[ecol]}), design], axis=1)
    for var in strata:
        data[f"strata:{var}"] = df[var].astype(str).where(df[var].notna())
    strata_cols = [f"strata:{v}" for v in strata]
    lacking = int(data[covs + strata_cols].isna().any(axis=1).sum()) if covs else 0
    if lacking and notes is not None:
        notes.append(f"Cox model: {lacking} patient(s) without a value for one of its terms or strata are left out "
                     "(R's na.omit).")
        data = data[~data[covs + strata_cols].isna().any(axis=1)]
    events = int(data[ecol].sum())
    if not covs or events < 5 * len(covs):
        return None, f"Too few events ({events}) for a Cox model with {len(covs)} covariate(s) (need 5 per covariate)."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sv.cox_ph(data, dcol, ecol, covs, strata=strata_cols), None
    except Exception as exc:  # noqa: BLE001 - a degenerate fit (e.g. separation) is reported, not a 500
        logger.info("Cox fit failed on %s covariate(s): %s", len(covs), exc)
        return None, COX_FAILED


def km_figure(result, fmt="png"):
    """KM figure (months on the axis, at-risk table every 12 months) for an ``AnalysisResult``."""
    from . import figures

    tmax = max(float(k.time[-1]) for k in result.curves.values()) / ep.DAYS_PER_MONTH
    step = 6 if tmax <= 36 else 12
    risk = [float(i * step) for i in range(int(tmax // step) + 1)]
    title = f"{ENDPOINTS[result.endpoint]} from {'start of RT' if result.time_zero == 'rt_start' else 'diagnosis'}"
    curves = {group_label(result.group_by, k) if result.group_by else "All patients": v for k, v in result.curves.items()}
    return figures.km_figure(
        curves, risk_times=risk, fmt=fmt, time_scale=ep.DAYS_PER_MONTH, xlabel="Months", title=title,
        ylabel=ENDPOINTS[result.endpoint] + " probability",
    )


def swimmer_figure(courses, *, time_zero="rt_start", group_by="", group_cuts=None, fmt="png", limit=40, user=None):
    """Swimmer plot of up to ``limit`` patients (pseudonymous labels) from their stored assessments.

    The patients and their groups are the overall-survival analysis' (``analyze``) of the same cohort, time zero
    and grouping (``group_by``, ``group_cuts``): its usable patients, its group labels and its disclosure control
    (groups below the minimum cohort are not shown, and the title says so). Without a grouping the bars are one
    colour, as the analysis has one curve."""
    from django.conf import settings

    from . import deidentify, figures

    result = analyze(courses, endpoint="os", time_zero=time_zero, group_by=group_by, group_cuts=group_cuts,
                     cox=False, user=None)
    df = result.frame
    disclosure.record_release(user, [df["patient_id"].to_numpy()], kind="swimmer")
    n_cohort = len(df)
    df = df.sort_values("os_days", ascending=False).head(limit)
    mrns = dict(Patient.objects.filter(pk__in=[int(p) for p in df["patient_id"]]).values_list("pk", "mrn"))
    t0 = dict(zip(df["patient_id"], df["time_zero_date"]))
    events = {}
    for pid, date, resp, status in FollowUpAssessment.objects.active().filter(
        unit_assessments(df), kind=AssessmentKind.FOLLOWUP
    ).exclude(response="").values_list("patient_id", "date", "response", "disease_status"):
        kind = "recurrence" if status == rs.STATUS_RECURRENCE else resp
        if kind not in figures.MARKERS:
            continue
        months = (pd.Timestamp(date) - t0[pid]).days / ep.DAYS_PER_MONTH
        if months >= 0:
            events.setdefault(pid, []).append((months, kind))
    groups = df[group_by].to_numpy(dtype=object) if group_by else [None] * len(df)
    lanes = []
    for row, group in zip(df.itertuples(), groups):
        ev = list(events.get(row.patient_id, []))
        if row.os_event == 1:
            ev.append((row.os_days / ep.DAYS_PER_MONTH, "death"))
        lanes.append(figures.SwimmerLane(
            label=deidentify.pseudonym(mrns[row.patient_id], settings.RADPATH_PSEUDONYM_KEY),
            end=max(row.os_days / ep.DAYS_PER_MONTH, 0.01), events=ev, alive=row.os_event != 1,
            group=group_label(group_by, group) if group_by else None,
        ))
    shown = (f"The {len(lanes)} of {n_cohort} patients with the longest overall survival time"
             if len(lanes) < n_cohort else f"All {n_cohort} patients")
    if result.suppressed_groups:
        shown += (f"\n(group(s) {', '.join(group_label(group_by, g) for g in result.suppressed_groups)} not shown: "
                  f"fewer than {disclosure.min_cohort()} patients)")
    return figures.swimmer_figure(lanes, fmt=fmt, title=shown,
                                  xlabel=f"Months from {'start of RT' if time_zero == 'rt_start' else 'diagnosis'}")


TOXICITY_TIMES_MONTHS = (3, 6, 12, 24)


def cohort_patient_ids(cohort, time_zero=None):
    """The distinct patient ids of a cohort (the unit of the minimum cohort and the release ledger): its courses'
    patients and, unless the time zero is the start of RT (which they lack), its patients without radiotherapy."""
    from .cohorts import as_cohort

    cohort = as_cohort(cohort)
    ids = list(cohort.courses.order_by().values_list("patient_id", flat=True).distinct())
    if time_zero != "rt_start" and not cohort.without_rt.query.is_empty():
        ids += list(cohort.without_rt.order_by().values_list("patient_id", flat=True))
    return np.unique(np.array(ids, dtype=np.int64))


def toxicity_analysis(courses, *, times_months=TOXICITY_TIMES_MONTHS, user=None):
    """Cohort toxicity for the analysis page, the API and the ``toxicity`` export.

    Rates of grade >= 2 and >= 3 per CTCAE term, acute (to 90 days after the last fraction) and late, with Wilson
    CIs; cumulative incidence of grade >= 3 toxicity from the start of RT with death as a competing risk
    (Aalen-Johansen). Aggregates only: no row identifies a patient.
    """
    from .cohorts import as_cohort
    from .toxicity_analysis import toxicity_summary

    courses = as_cohort(courses).courses  # toxicity is graded per RT course
    patients = cohort_patient_ids(courses)
    disclosure.check_cohort_size(len(patients))
    summary = toxicity_summary(courses)
    disclosure.record_release(user, [patients], kind="toxicity")
    n = summary["n_courses"]
    rates = pd.concat([f for f in summary["rates"].values() if not f.empty], ignore_index=True) if n else pd.DataFrame()
    cif = summary["cumulative_incidence"]
    days = [round(m * 30.4375) for m in times_months]
    return {
        "n_courses": n,
        "rates": rates,
        "cumulative_incidence": {
            "method": "Aalen-Johansen; death before grade >= 3 toxicity is a competing risk; time zero = start of RT",
            "times_months": list(times_months),
            "grade3": cif.at(days) if cif is not None else [],
        },
    }


def toxicity_analysis_dict(courses, user=None):
    result = toxicity_analysis(courses, user=user)
    rates = result["rates"]
    ci = result["cumulative_incidence"]
    ci["points"] = [{"months": m, "incidence": v} for m, v in zip(ci["times_months"], ci["grade3"])]
    return {**result, "rates": rates.astype(object).where(rates.notna(), None).to_dict("records")}


# --------------------------------------------------------------------------------------------------------------
# Further methods on the same analysis: RMST, landmark, competing risks (cumulative incidence, Gray's test,
# Fine-Gray) and IPTW-weighted curves (pure statistics in outcomes.rmst / landmark / competing / iptw).
# --------------------------------------------------------------------------------------------------------------

COMPETING_CAUSES = {
    "os": ("death from this cancer", "death from any other or unknown cause"),
    "pfs": ("progression", "death without progression"),
    "lc": ("local failure", "death without local failure"),
    "ttr": ("recurrence", "death without recurrence"),
}
# IPTW propensity terms: age and the grouping variables (dummy-coded), not the grouping itself; and any registry
# covariate <registry>.<variable> (numeric as is, categorical as dummies against the dictionary's first level)
IPTW_TERMS = COX_TERMS[1:]


def _positive_days(value, name, allow_zero=False):
    """A number of days from a query value (None / '' -> None); RuleViolation naming ``name`` otherwise."""
    if value is None or value == "":
        return None
    try:
        days = float(value)
    except (TypeError, ValueError):
        raise RuleViolation(f"{name} must be a number of days.", field=name) from None
    if not np.isfinite(days) or days < 0 or (days == 0 and not allow_zero):
        raise RuleViolation(f"{name} must be {'zero or more' if allow_zero else 'more than zero'} days.", field=name)
    return days


LANDMARK_BY = {"": "the grouping (fixed at baseline)",
               "response": "response (CR or PR) by the landmark, from the date of the first response"}


def parse_methods(rmst_tau=None, landmark_days=None, competing=None, iptw_covariates=None, landmark_by=None):
    """The researcher's extra methods, checked (RuleViolation naming the field): RMST horizon and landmark in days,
    the landmark's grouping, competing risks on/off, IPTW covariates from ``IPTW_TERMS`` or registry covariates
    ``<registry>.<variable>`` (resolved in ``iptw_variables``)."""
    landmark_by = landmark_by or ""
    if landmark_by not in LANDMARK_BY:
        raise RuleViolation(f"landmark_by must be one of {', '.join(k for k in LANDMARK_BY if k)} (or empty).",
                            field="landmark_by")
    if isinstance(competing, str):
        if competing.lower() not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise RuleViolation("competing must be true or false.", field="competing")
        competing = competing.lower() in ("1", "true", "yes", "on")
    covs = iptw_covariates
    if isinstance(covs, str):
        covs = [c.strip() for c in covs.split(",") if c.strip()]
    covs = list(dict.fromkeys(covs or []))
    unknown = [c for c in covs if c not in IPTW_TERMS and not covariates.is_key(c)]
    if unknown:
        raise RuleViolation(f"unknown iptw_covariates {', '.join(unknown)}: choose from {', '.join(IPTW_TERMS)} or a "
                            "covariate <registry>.<variable>.", field="iptw_covariates")
    iptw_variables = {c: covariates.resolve(c, "iptw_covariates") for c in covs if c not in IPTW_TERMS}
    landmark = _positive_days(landmark_days, "landmark_days", allow_zero=True)
    if landmark_by and landmark is None:
        raise RuleViolation("landmark_by needs landmark_days.", field="landmark_by")
    return {"rmst_tau": _positive_days(rmst_tau, "rmst_tau"), "landmark_days": landmark, "landmark_by": landmark_by,
            "competing": bool(competing), "iptw_covariates": covs, "iptw_variables": iptw_variables}


def _competing_causes(df, endpoint, dcol, ecol):
    """Cause codes (0 censored, 1 the endpoint's event, 2 the competing event) and times, with the rule in words."""
    t = df[dcol].to_numpy(dtype=float).copy()
    e = df[ecol].to_numpy(dtype=int)
    cause = e.copy()
    if endpoint == "os":
        dcause = df["death_cause"].astype(object).where(df["death_cause"].notna(), "unknown").to_numpy()
        cause = np.where(e == 1, np.where(dcause == "disease", 1, 2), 0)
        unknown = int(((e == 1) & (dcause == "unknown")).sum())
        rule = ("Deaths from this cancer (cause 'disease') are the event; deaths from treatment, another cancer, "
                "another or an unknown cause compete" + (f" ({unknown} death(s) of unknown cause)." if unknown else "."))
    elif endpoint == "pfs":
        kind = df["pfs_event_type"].to_numpy(dtype=object)
        cause = np.where(e == 1, np.where(kind == "death", 2, 1), 0)
        rule = "Progression is the event; a death without progression is the competing event."
    else:
        died = (df["os_event"].to_numpy() == 1) & (e == 0)
        cause = np.where(died, 2, cause)
        t = np.where(died, df["os_days"].to_numpy(dtype=float), t)
        rule = (f"{ENDPOINTS[endpoint]}: a death without a recorded {COMPETING_CAUSES[endpoint][0]} is the competing "
                "event, at the date of death (not censored at the last assessment).")
    return t, cause, rule


def _first_response_days(usable):
    """Days from time zero to each patient's first CR/PR (NaN = none), from the course's derived outcome."""
    with_rt = usable["course_id"].notna()
    by_course = dict(CourseOutcome.objects.filter(course_id__in=[int(c) for c in usable["course_id"][with_rt]],
                                                  first_response_date__isnull=False)
                     .values_list("course_id", "first_response_date"))
    by_patient = dict(PatientOutcome.objects.filter(patient_id__in=[int(p) for p in usable["patient_id"][~with_rt]],
                                                    first_response_date__isnull=False)
                      .values_list("patient_id", "first_response_date")) if (~with_rt).any() else {}
    resp = pd.to_datetime(usable["course_id"].map(by_course).where(with_rt, usable["patient_id"].map(by_patient)))
    return (resp - pd.to_datetime(usable["time_zero_date"])).dt.days.to_numpy(dtype=float)


def _landmark_block(result, usable, dcol, ecol, landmark, k, landmark_by=""):
    from . import landmark as lm

    g = usable[result.group_by].to_numpy(dtype=object) if result.group_by else None
    label_of = (lambda v: group_label(result.group_by, v)) if result.group_by else (lambda v: "All patients")
    if landmark_by == "response":
        g = lm.landmark_groups(_first_response_days(usable), landmark, yes="responded", no="no response yet")
        label_of = {"responded": "Responded (CR/PR) by the landmark",
                    "no response yet": "No response by the landmark"}.get
    t, e = usable[dcol].to_numpy(dtype=float), usable[ecol].to_numpy()
    at_risk = t >= landmark
    if int(at_risk.sum()) < k:
        raise RuleViolation(f"Only {int(at_risk.sum())} patient(s) are still at risk at day {landmark:g}; a landmark "
                            f"analysis needs at least {k}. Choose an earlier landmark.", field="landmark_days")
    notes = []
    keep = at_risk.copy()
    if g is not None:
        labels = pd.Series(g[at_risk]).astype(str)
        small = sorted(lbl for lbl, n in labels.value_counts().items() if n < k)
        if small:
            keep &= ~pd.Series(g).astype(str).isin(small).to_numpy()
            notes.append(f"Landmark: group(s) {', '.join(small)} have fewer than {k} patients still at risk and are "
                         "not shown.")
        if not keep.any():
            raise RuleViolation(f"No group has {k} patients at risk at the landmark.", field="landmark_days")
    res = lm.landmark_analysis(t[keep | ~at_risk], e[keep | ~at_risk], landmark,
                               groups=None if g is None else g[keep | ~at_risk], conf_type=result.conf_type)
    pid = usable["patient_id"].to_numpy()
    sets = [pid[keep]]
    months = f"{landmark / ep.DAYS_PER_MONTH:.3g} months"
    names = [f"the landmark's at-risk set at {months}"]
    if g is not None:
        sets += [pid[keep & (pd.Series(g).astype(str).to_numpy() == lbl)] for lbl in res.curves]
        names += [f"landmark group {label_of(lbl)} at {months}" for lbl in res.curves]
    result.extra_sets.extend(sets)
    result.extra_labels.extend(names)
    times = [y * YEAR_DAYS for y in LANDMARK_YEARS]
    out = res.to_dict(times)
    for label, grp in out["groups"].items():
        grp["display"] = label_of(label)
        grp["median_months"] = {k2: (None if grp["median"].get(k2) is None else grp["median"][k2] / ep.DAYS_PER_MONTH)
                                for k2 in ("median", "lower", "upper")}
        for row, years in zip(grp["at_times"], LANDMARK_YEARS):
            row["years"] = years
    out["groups"] = list(out["groups"].values())
    out["group_rule"] = LANDMARK_BY[landmark_by]
    grouping = ("groups by the grouping, as at time zero" if not landmark_by else
                f"groups by {LANDMARK_BY[landmark_by]}, decided at the landmark: a response after it counts as none "
                "(no immortal-time bias; Anderson et al., J Clin Oncol 1983)")
    out["rule"] = ("Patients still under observation at the landmark (time >= landmark); time restarts at the "
                   f"landmark; {grouping}.")
    if res.logrank and res.logrank.note:
        notes.append(f"Landmark log-rank: {res.logrank.note}.")
    out["notes"] = notes
    return out


def _rmst_block(result, usable, dcol, ecol, tau):
    from . import rmst as rm

    t, e = usable[dcol].to_numpy(dtype=float), usable[ecol].to_numpy()
    g = usable[result.group_by].to_numpy(dtype=object) if result.group_by else None
    limit = rm.max_tau(t, g)
    if tau > limit + 1e-9:
        months = lambda d: f"{int(d / ep.DAYS_PER_MONTH * 10) / 10:.1f} months"  # noqa: E731 -- page in months, rounded down
        raise RuleViolation(f"rmst_tau ({tau:g} days = {months(tau)}) is beyond the last follow-up of "
                            f"{'a group' if g is not None else 'the cohort'} ({limit:g} days = {months(limit)}); choose "
                            f"at most {limit:g} days ({months(limit)}).", field="rmst_tau")
    per = rm.rmst_by_group(t, e, g, tau) if g is not None else {"all": rm.rmst(t, e, tau, label="all")}
    labels = list(per)
    groups = []
    for lbl in labels:
        d = per[lbl].to_dict()
        d["display"] = group_label(result.group_by, lbl) if result.group_by else "All patients"
        for key in ("rmst", "lower", "upper", "rmtl"):
            d[f"{key}_months"] = d[key] / ep.DAYS_PER_MONTH
        groups.append(d)
    comparisons = []
    for lbl in labels[1:]:  # each group against the first (reference) group
        c = rm.rmst_compare(per[lbl], per[labels[0]]).to_dict()
        comparisons.append({"group": lbl, "reference": labels[0],
                            "display": f"{group_label(result.group_by, lbl)} vs {group_label(result.group_by, labels[0])}",
                            **{k2: c[k2] for k2 in ("difference", "ratio", "rmtl_ratio")},
                            "difference_months": {k2: c["difference"][k2] / ep.DAYS_PER_MONTH
                                                  for k2 in ("estimate", "lower", "upper")}})
    return {"tau_days": tau, "tau_months": tau / ep.DAYS_PER_MONTH, "groups": groups, "comparisons": comparisons,
            "method": "area under the Kaplan-Meier curve to tau; Greenwood-type SE; contrasts as survRM2::rmst2 "
                      "(difference, RMST ratio and RMTL ratio on the log scale)"}


def _competing_block(result, usable, dcol, ecol, terms):
    from . import competing as cr

    t, cause, rule = _competing_causes(usable, result.endpoint, dcol, ecol)
    names = COMPETING_CAUSES[result.endpoint]
    g = usable[result.group_by].to_numpy(dtype=object) if result.group_by else None
    times = [y * YEAR_DAYS for y in LANDMARK_YEARS]
    curves = []
    for code, name in ((1, names[0]), (2, names[1])):
        per = cr.cumulative_incidence_by_group(t, cause, g, code) if g is not None else \
            {"all": cr.cumulative_incidence(t, cause, code, label="all")}
        for lbl, ci in per.items():
            curves.append({"cause": code, "cause_label": name, "label": lbl,
                           "display": group_label(result.group_by, lbl) if result.group_by else "All patients",
                           "n": ci.n, "events": ci.events,
                           "at_times": [dict(row, years=y) for row, y in zip(ci.at(times), LANDMARK_YEARS)]})
    out = {"rule": rule, "causes": {"1": names[0], "2": names[1]}, "cumulative_incidence": curves,
           "method": "Aalen-Johansen cumulative incidence, cmprsk variance, log-log 95 % CI", "gray": [],
           "fine_gray": None, "fine_gray_error": None, "cause_specific": None, "cause_specific_error": None}
    if g is not None and len(pd.unique(g[~pd.isna(g)])) >= 2:
        out["gray"] = [dict(cr.gray_test(t, cause, g, code).to_dict(), cause_label=name)
                       for code, name in ((1, names[0]), (2, names[1]))]
    labels = dict(result.term_labels)
    design, covs = _design(usable, result.group_by, list(COX_DEFAULT_TERMS if terms is None else terms),
                                 result.variables, result.group_order, labels)
    events = int((cause == 1).sum())
    if not covs or events < 5 * len(covs):
        out["fine_gray_error"] = (f"Too few events of {names[0]} ({events}) for a Fine-Gray model with {len(covs)} "
                                  "covariate(s) (need 5 per covariate).")
        return out
    frame = design.assign(_t=t, _c=cause)
    try:  # cause-specific hazards: the Cox model of this cause, the competing events censored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cs = sv.cox_ph(frame.assign(_cs=(cause == 1).astype(int)), "_t", "_cs", covs)
        out["cause_specific"] = cs.to_dict()
        for term in out["cause_specific"]["terms"]:
            term["label"] = covariate_label(term["covariate"], labels)
    except Exception as exc:  # noqa: BLE001 - reported, as for the Cox model
        logger.info("cause-specific Cox failed: %s", exc)
        out["cause_specific_error"] = COX_FAILED.replace("Cox model", "cause-specific Cox model")
    try:
        fg = cr.fine_gray(frame, "_t", "_c", covs, cause=1)
    except (ValueError, np.linalg.LinAlgError) as exc:
        logger.info("Fine-Gray fit failed: %s", exc)
        out["fine_gray_error"] = COX_FAILED.replace("Cox model", "Fine-Gray model")
        return out
    fgd = fg.to_dict()
    for term in fgd["terms"]:
        term["label"] = covariate_label(term["covariate"], labels)
    out["fine_gray"] = fgd
    return out


def _iptw_block(result, usable, dcol, ecol, terms):
    """IPTW between the two groups shown, the propensity on ``terms`` coded by :func:`_design` as the Cox model codes
    them (registry covariates: numeric as is, categorical against the dictionary's first level)."""
    from . import iptw

    if not result.group_by or len(result.curves) != 2:
        raise RuleViolation("IPTW-weighted curves compare exactly two groups: choose a grouping with two groups "
                            "shown.", field="iptw_covariates")
    labels = {}
    design, covs = _design(usable, result.group_by, terms, result.variables, labels=labels)
    if not covs:
        raise RuleViolation("none of the chosen iptw_covariates varies in this cohort.", field="iptw_covariates")
    frame = design.assign(_t=usable[dcol].to_numpy(dtype=float), _e=usable[ecol].to_numpy(),
                          _g=usable[result.group_by].astype(str).to_numpy())
    try:
        res = iptw.iptw_analysis(frame, "_t", "_e", "_g", covs, conf_type=result.conf_type)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise RuleViolation(f"The propensity model could not be fitted: {exc}.", field="iptw_covariates") from None
    times = [y * YEAR_DAYS for y in LANDMARK_YEARS]
    out = res.to_dict(times)
    for label, grp in out["groups"].items():
        grp["display"] = group_label(result.group_by, label)
        grp["label"] = label
        for row, years in zip(grp["at_times"], LANDMARK_YEARS):
            row["years"] = years
        med = grp["median"]
        grp["median_months"] = {k2: (None if med.get(k2) is None else med[k2] / ep.DAYS_PER_MONTH)
                                for k2 in ("median", "lower", "upper")}
    out["groups"] = list(out["groups"].values())
    out["covariate_labels"] = [covariate_label(c, labels) for c in covs]
    out["covariates"] = covs
    out["method"] = ("propensity by logistic regression, stabilised weights; weighted Kaplan-Meier with "
                     "infinitesimal-jackknife SE (R survfit with weights); marginal HR from the weighted Cox model "
                     "(Breslow ties) with robust SE; robust score test as the weighted log-rank")
    dropped = len(usable) - res.n
    if dropped:
        out["notes"].append(f"{dropped} patient(s) without a value for a propensity covariate left out of the IPTW "
                            "analysis.")
    return out


def add_methods(result, *, rmst_tau=None, landmark_days=None, competing=False, iptw_covariates=(), cox_terms=None,
                min_group=None, landmark_by=""):
    """Run the chosen extra methods on an ``AnalysisResult`` (its shown groups only) and attach them."""
    usable = result.frame
    dcol, ecol = f"{result.endpoint}_days", f"{result.endpoint}_event"
    k = disclosure.min_cohort() if min_group is None else min_group
    if rmst_tau is not None:
        result.methods["rmst"] = _rmst_block(result, usable, dcol, ecol, rmst_tau)
    if landmark_days is not None:
        result.methods["landmark"] = _landmark_block(result, usable, dcol, ecol, landmark_days, k, landmark_by)
    if competing:
        result.methods["competing"] = _competing_block(result, usable, dcol, ecol, cox_terms)
    if iptw_covariates:
        result.methods["iptw"] = _iptw_block(result, usable, dcol, ecol, iptw_covariates)
    return result


def forest_rows(result):
    """The Cox model's terms as forest-plot rows, labelled as in the analysis result (``cox.terms[].label``)."""
    from . import figures

    if not result.cox:
        raise RuleViolation(result.cox_error or "No Cox model for this analysis.", field="cox_terms")
    return [figures.ForestRow(covariate_label(t.covariate, result.term_labels), t.hazard_ratio,
                              t.hr_lower, t.hr_upper, t.p_value) for t in result.cox.terms]


def forest_title(result):
    """``Cox model, Overall survival (n = 686, events = 299), stratified by gbsg2.horth``."""
    title = f"Cox model, {ENDPOINTS[result.endpoint]} (n = {result.cox.n}, events = {result.cox.events})"
    if result.cox_strata:
        title += f", stratified by {', '.join(result.cox_strata)}"
    return title


def forest_figure(result, fmt="png"):
    """Forest plot of the Cox model's hazard ratios with 95 % CIs (log axis) for an ``AnalysisResult``: one row per
    term of the fitted model (the researcher's ``cox_terms``), labelled as in the result, strata in the title."""
    from . import figures

    rows = forest_rows(result)
    try:
        return figures.forest_figure(rows, fmt=fmt, title=forest_title(result),
                                     xlabel="Hazard ratio (95 % CI, log scale)")
    except ValueError:
        raise RuleViolation("The Cox model has no finite hazard ratio to plot.", field="cox_terms") from None
