"""The cohort toxicity analysis: the data-out frame of a cohort's toxicity events and the summary computed from it
with the pure statistics of ``outcomes.toxicity_stats`` (worst grade per course/term/phase, rates, Aalen-Johansen
cumulative incidence with death competing).

Django query code (reads the pathway's courses and fractions, the toxicity records, and this app's deaths and
assessments); the statistics themselves stay in ``toxicity_stats``. The acute/late rule and the RT days are the
toxicity domain's (``workflow.toxicity.services.phase`` / ``course_start`` / ``course_end``).
"""

from django.db.models import Max, Min, Q

from workflow.models import AppointmentStatus, Course, CourseStatus, FollowUpVisit, TerminationReason
from workflow.pathway.scheduling import local_day
from workflow.toxicity.models import ToxicityEvent, WeeklyReview
from workflow.toxicity.services import ACUTE_WINDOW_DAYS, phase

from . import toxicity_stats as ts
from .models import Death, FollowUpAssessment

EVENT_COLUMNS = [
    "event_id", "course_id", "patient_id", "term", "meddra_code", "soc", "grade", "worst_grade", "worst_grade_date",
    "onset_date", "resolved_date", "baseline", "attribution", "serious", "action_taken", "phase",
]
COURSE_COLUMNS = [
    "course_id", "patient_id", "technique", "treated_site", "site", "intent", "status", "termination_reason",
    "rt_start", "rt_end", "death_date", "last_followup_date",
]


def _cohort_facts(courses_qs):
    """Everything ``_course_row`` reads, for the whole cohort in a few queries (not five per course): per course its
    fraction days, events, latest weekly review and done follow-up visit; per patient the first recorded death
    and the latest assessment."""
    booked = Q(fractions__status__in=[AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED])
    courses = list(
        Course.objects.filter(pk__in=courses_qs.values("pk")).select_related("diagnosis").annotate(
            _first=Min("fractions__starts_at", filter=booked), _last=Max("fractions__starts_at", filter=booked),
            _last_delivered=Max("fractions__starts_at", filter=Q(fractions__status=AppointmentStatus.DELIVERED)),
        ).order_by(*(courses_qs.query.order_by or Course._meta.ordering))
    )
    ids = [c.pk for c in courses]
    patients = {c.patient_id for c in courses}
    events = {}
    for ev in ToxicityEvent.objects.active().filter(course_id__in=ids):
        events.setdefault(ev.course_id, []).append(ev)
    reviews = dict(WeeklyReview.objects.filter(course_id__in=ids, voided_at__isnull=True).values("course_id")
                   .annotate(m=Max("review_date")).values_list("course_id", "m"))
    visits = dict(FollowUpVisit.objects.filter(course_id__in=ids, status="done").values("course_id")
                  .annotate(m=Max("due_date")).values_list("course_id", "m"))
    deaths = {}
    for patient_id, date in Death.objects.filter(patient_id__in=patients, voided_at__isnull=True).order_by("date", "pk").values_list("patient_id", "date"):
        deaths.setdefault(patient_id, date)
    seen = dict(FollowUpAssessment.objects.filter(patient_id__in=patients, voided_at__isnull=True).values("patient_id")
                .annotate(m=Max("date")).values_list("patient_id", "m"))
    return courses, events, reviews, visits, deaths, seen


def _course_row(course, events, review, visit, death, seen):
    """One course of the cohort (see ``toxicity_frame``); the RT days follow ``course_start`` / ``course_end``."""
    start = local_day(course._first) if course._first else None
    if course.completed_on:
        end = course.completed_on
    else:
        last = course._last_delivered if course.status == CourseStatus.STOPPED else course._last
        end = local_day(last) if last else None
    fatal = [e.worst_grade_date for e in events if e.worst_grade == 5]
    if fatal:
        death = min([d for d in [death, *fatal] if d])
    if death is None and course.termination_reason == TerminationReason.DEATH and course.stopped_on:
        death = course.stopped_on
    contact = [d for d in [end, death, seen, review, visit] if d]
    for e in events:
        contact += [d for d in (e.onset_date, e.grade_date, e.resolved_date) if d]
    return {
        "course_id": course.pk,
        "patient_id": course.patient_id,
        "technique": course.technique,
        "treated_site": course.treated_site,
        "site": course.diagnosis.site if course.diagnosis_id else "",
        "intent": course.intent,
        "status": course.status,
        "termination_reason": course.termination_reason,
        "rt_start": start,
        "rt_end": end,
        "death_date": death,
        "last_followup_date": max(contact) if contact else start,
    }


def toxicity_frame(courses_qs):
    """One row per (non-voided) toxicity event of ``courses_qs``, with its course's RT dates and outcome dates.

    Columns: EVENT_COLUMNS + rt_start, rt_end, death_date, last_followup_date (dates as pandas datetimes). The
    course-level frame (every course, with or without events: the denominator) is in ``frame.attrs["courses"]``.
    This is the input of ``outcomes.toxicity_stats`` (events: course_id, term, grade, onset_date; courses:
    course_id, rt_start, rt_end, death_date, last_followup_date). ``grade`` is the event's worst grade.
    The cohort is read in a fixed number of queries whatever its size (``_cohort_facts``).
    """
    import pandas as pd

    course_rows, event_rows = [], []
    cohort, all_events, reviews, visits, deaths, seen = _cohort_facts(courses_qs)
    for course in cohort:
        events = all_events.get(course.pk, [])
        row = _course_row(course, events, reviews.get(course.pk), visits.get(course.pk), deaths.get(course.patient_id),
                          seen.get(course.patient_id))
        if row["rt_start"] is None:
            continue  # never treated: not part of a toxicity cohort
        course_rows.append(row)
        for e in events:
            event_rows.append({
                "event_id": e.pk,
                "course_id": course.pk,
                "patient_id": course.patient_id,
                "term": e.term,
                "meddra_code": e.meddra_code,
                "soc": e.soc,
                "grade": e.worst_grade,
                "worst_grade": e.worst_grade,
                "worst_grade_date": e.worst_grade_date,
                "onset_date": e.onset_date,
                "resolved_date": e.resolved_date,
                "baseline": e.baseline,
                "attribution": e.attribution,
                "serious": e.serious,
                "action_taken": e.action_taken,
                "phase": "baseline" if e.baseline else phase(e.onset_date, row["rt_start"], row["rt_end"]),
            })
    courses = pd.DataFrame(course_rows, columns=COURSE_COLUMNS)
    events = pd.DataFrame(event_rows, columns=EVENT_COLUMNS)
    frame = events.merge(courses[["course_id", "rt_start", "rt_end", "death_date", "last_followup_date"]], on="course_id", how="left")
    for col in ("onset_date", "resolved_date", "worst_grade_date", "rt_start", "rt_end", "death_date", "last_followup_date"):
        frame[col] = pd.to_datetime(frame[col])
    for col in ("rt_start", "rt_end", "death_date", "last_followup_date"):
        courses[col] = pd.to_datetime(courses[col])
    frame["grade"] = frame["grade"].astype(int)
    frame.attrs["courses"] = courses
    return frame


def toxicity_summary(courses_qs, *, acute_days=ACUTE_WINDOW_DAYS):
    """Cohort analysis with ``outcomes.toxicity_stats``: worst grade per course/term/phase, rates of grade >= 2 and
    >= 3 (acute, late, any) and the Aalen-Johansen cumulative incidence of grade >= 3 with death competing."""
    frame = toxicity_frame(courses_qs)
    courses = frame.attrs["courses"]
    n = len(courses)
    events = frame.loc[~frame["baseline"].astype(bool), ["course_id", "term", "grade", "onset_date"]]
    worst = ts.worst_grade_per_course(events, courses, acute_days=acute_days)
    rates = {p: ts.cohort_rates(worst, n, phase=p) for p in ("acute", "late", "any")} if n else {}
    cif = None
    if n:
        cr = ts.competing_risk_data(courses, events, min_grade=3)
        cif = ts.aalen_johansen(cr["time_days"], cr["event_code"])
    return {"n_courses": n, "worst": worst, "rates": rates, "cumulative_incidence": cif}
