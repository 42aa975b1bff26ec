"""Side effects: logging CTCAE v5.0 toxicity, treatment holds for severe events, weekly on-treatment reviews. The
cohort analysis built on these records is in ``outcomes.toxicity_analysis``.

Rules:
- The term must be a CTCAE v5.0 term (``workflow.toxicity.ctcae``, case-insensitive) and the grade one that term allows.
- Onset before the course start (its first booked or delivered fraction) is allowed only for a baseline event;
  a baseline event starts before the course. Onset and resolution are not in the future; resolution >= onset.
- A grade change is an update of the event: django-simple-history keeps every version, so the grade history is
  the event's history; the worst grade and the date it was first reached are derived from it.
- A non-baseline event at or above the hold threshold (``settings.RADPATH_HOLD_GRADE``, default 3, overridable per
  term with ``settings.RADPATH_HOLD_GRADE_BY_TERM``) on a course not yet completed or stopped puts the course on
  hold: a delivery gate blocks its next fractions until an oncologist records a decision — resume, modify (with
  a note), or stop (with a reason; stops the course via ``workflow.pathway.delivery.stop_course``).
- Weekly review k is due at the course's (5 x k)-th delivered fraction; its due date is that fraction's day (the
  booked day while it is not yet delivered, so missed fractions push it later). It is due on that day (booked
  or delivered) and overdue on later days once the fraction is delivered.
- Acute = onset from RT start to 90 days after RT end; late = after that; baseline = before RT start.
"""

import datetime as dt
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import ctcae
from ..pathway import gates
from ..errors import ConflictError, RuleViolation
from ..pathway.models import AppointmentStatus, CourseStatus, TerminationReason
from ..pathway.scheduling import local_day
from .models import ActionTaken, Attribution, CourseHold, HoldDecision, ToxicityEvent, WeeklyReview

DEFAULT_HOLD_GRADE = 3
REVIEW_EVERY = 5
ACUTE_WINDOW_DAYS = 90
RECENT_COURSE_DAYS = 14
"""Completed/stopped courses stay on the review worklist this many days, so the last week's review is not lost."""

CLOSED = (CourseStatus.COMPLETED, CourseStatus.STOPPED)


# --- thresholds and course dates ----------------------------------------------------------------------------------


def hold_grade(term):
    """The grade from which an event of ``term`` puts the course on hold."""
    by_term = {str(k).casefold(): int(v) for k, v in (getattr(settings, "RADPATH_HOLD_GRADE_BY_TERM", None) or {}).items()}
    return by_term.get(str(term).strip().casefold(), int(getattr(settings, "RADPATH_HOLD_GRADE", DEFAULT_HOLD_GRADE)))


def _live_fractions(course):
    return course.fractions.filter(status__in=[AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED]).order_by("number", "starts_at")


def course_start(course):
    """First day of RT: the first delivered or booked fraction's day (None when nothing is booked)."""
    first = course.fractions.filter(status__in=[AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED]).order_by("starts_at").first()
    return local_day(first.starts_at) if first else None


def course_end(course):
    """Last day of RT: completion day; the last delivered fraction of a stopped course; else the last booked day."""
    if course.completed_on:
        return course.completed_on
    statuses = [AppointmentStatus.DELIVERED] if course.status == CourseStatus.STOPPED else [AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED]
    last = course.fractions.filter(status__in=statuses).order_by("-starts_at").first()
    return local_day(last.starts_at) if last else None


def phase(onset, rt_start, rt_end, acute_days=ACUTE_WINDOW_DAYS):
    """'baseline' before RT start, 'acute' up to ``acute_days`` after RT end, 'late' after (also when RT is ongoing:
    acute)."""
    if rt_start is None or onset < rt_start:
        return "baseline"
    if rt_end is None or onset <= rt_end + dt.timedelta(days=acute_days):
        return "acute"
    return "late"


def event_phase(event):
    if event.baseline:
        return "baseline"
    return phase(event.onset_date, course_start(event.course), course_end(event.course))


# --- logging and grading ------------------------------------------------------------------------------------------


def _check_dates(course, *, onset_date, resolved_date, baseline, today):
    if onset_date is None:
        raise RuleViolation("Onset date is required.", field="onset_date")
    if onset_date > today:
        raise RuleViolation("Onset date is in the future.", field="onset_date")
    if resolved_date is not None:
        if resolved_date < onset_date:
            raise RuleViolation("Resolution date is before the onset date.", field="resolved_date")
        if resolved_date > today:
            raise RuleViolation("Resolution date is in the future.", field="resolved_date")
    start = course_start(course)
    if baseline:
        if start is not None and onset_date >= start:
            raise RuleViolation(
                f"A baseline event starts before the course (first fraction {start:%d %b %Y}); untick baseline.",
                field="baseline",
            )
    elif start is None or onset_date < start:
        when = f"before the course start ({start:%d %b %Y})" if start else "before the course has any treatment booked"
        raise RuleViolation(f"Onset is {when}: mark the event as baseline if it was present before treatment.", field="onset_date")


def _choice(value, choices, name):
    if value not in choices.values:
        raise RuleViolation(f"{name.replace('_', ' ').capitalize()} must be one of {', '.join(choices.values)}.", field=name)
    return value


def log_event(
    course,
    *,
    term,
    grade,
    onset_date,
    user=None,
    attribution=Attribution.POSSIBLE,
    serious=False,
    action_taken=ActionTaken.NONE,
    baseline=False,
    resolved_date=None,
    notes="",
    today=None,
    now=None,
):
    """Record a side effect; a severe one puts the course on hold (see the module docstring). Returns the event."""
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    t = ctcae.validate_grade(term, grade)
    _choice(attribution, Attribution, "attribution")
    _choice(action_taken, ActionTaken, "action_taken")
    if course.is_voided:
        raise ConflictError("The course is voided.")
    _check_dates(course, onset_date=onset_date, resolved_date=resolved_date, baseline=baseline, today=today)
    grade = int(grade)
    with transaction.atomic():
        event = ToxicityEvent(
            course=course,
            term=t.term,
            meddra_code=t.meddra_code,
            soc=t.soc,
            grade=grade,
            grade_date=onset_date,
            onset_date=onset_date,
            resolved_date=resolved_date,
            baseline=bool(baseline),
            attribution=attribution,
            serious=bool(serious),
            action_taken=action_taken,
            notes=notes or "",
            worst_grade=grade,
            worst_grade_date=onset_date,
            recorded_by=user,
            recorded_at=now,
        )
        event._history_user = user
        event.save()
        _maybe_hold(event, user=user, now=now)
    return event


def regrade(event, *, grade, user=None, on_date=None, today=None, now=None):
    """Record a new grade (as of ``on_date``) for an event; the old one stays in the history."""
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    on_date = on_date or today
    ctcae.validate_grade(event.term, grade)
    grade = int(grade)
    with transaction.atomic():
        event = ToxicityEvent.objects.select_for_update().get(pk=event.pk)
        if event.is_voided:
            raise ConflictError("This event is voided.")
        if on_date < event.grade_date:
            raise RuleViolation(f"A new grade cannot predate the current one ({event.grade_date:%d %b %Y}).", field="on_date")
        if on_date > today:
            raise RuleViolation("The grade date is in the future.", field="on_date")
        previous_worst = event.worst_grade
        event.grade = grade
        event.grade_date = on_date
        if grade > event.worst_grade:
            event.worst_grade, event.worst_grade_date = grade, on_date
        event._history_user = user
        event.save()
        if grade > previous_worst:
            _maybe_hold(event, user=user, now=now)
    return event


def resolve(event, *, resolved_date, user=None, today=None):
    today = today or timezone.localdate()
    with transaction.atomic():
        event = ToxicityEvent.objects.select_for_update().get(pk=event.pk)
        if event.is_voided:
            raise ConflictError("This event is voided.")
        if resolved_date is None:
            raise RuleViolation("Resolution date is required.", field="resolved_date")
        if resolved_date < event.onset_date:
            raise RuleViolation("Resolution date is before the onset date.", field="resolved_date")
        if resolved_date > today:
            raise RuleViolation("Resolution date is in the future.", field="resolved_date")
        event.resolved_date = resolved_date
        event._history_user = user
        event.save(update_fields=["resolved_date", "updated_at"])
    return event


def grade_history(event):
    """[(date, grade, user)] oldest first, one entry per grade change, from the audit history."""
    out = []
    for h in event.history.order_by("history_date", "history_id"):
        if not out or (h.grade, h.grade_date) != (out[-1][1], out[-1][0]):
            if out and h.grade == out[-1][1]:
                continue
            out.append((h.grade_date, h.grade, h.history_user))
    return out


def derive_worst(history):
    """(worst grade, first date it was reached) from [(date, grade, ...)]; (None, None) if empty."""
    worst, when = None, None
    for entry in history:
        day, grade = entry[0], entry[1]
        if worst is None or grade > worst:
            worst, when = grade, day
    return worst, when


# --- holds --------------------------------------------------------------------------------------------------------


def open_hold(course):
    return CourseHold.objects.active().filter(course=course, decision="").select_related("event").first()


def _maybe_hold(event, *, user, now):
    """Put the course on hold for a severe, non-baseline event on an open course (one open hold per course)."""
    course = event.course
    course.refresh_from_db(fields=["status"])
    if event.baseline or event.grade < hold_grade(event.term) or course.status in CLOSED:
        return None
    reason = f"{event.term} grade {event.grade} (onset {event.onset_date:%d %b %Y})"
    hold = open_hold(course)
    if hold is not None:
        if reason not in hold.reason:
            hold.reason = f"{hold.reason}; {reason}"[:300]
            hold._history_user = user
            hold.save(update_fields=["reason", "updated_at"])
    else:
        hold = CourseHold(course=course, event=event, reason=reason, opened_at=now, opened_by=user)
        hold._history_user = user
        try:
            with transaction.atomic():
                hold.save()
        except IntegrityError:  # another request opened one first
            hold = open_hold(course)
    if event.action_taken == ActionTaken.NONE:
        event.action_taken = ActionTaken.HELD
        event._history_user = user
        event.save(update_fields=["action_taken", "updated_at"])
    return hold


@gates.register_gate
def toxicity_gate(course):
    hold = open_hold(course)
    if hold is None:
        return None
    return f"Toxicity hold: {hold.reason}. An oncologist must record a decision (resume, modify or stop)."


def record_hold_decision(hold, *, decision, user, note="", today=None, now=None):
    """Release (resume / modify) or stop: the oncologist's decision on a hold, audited with who and when."""
    now = now or timezone.now()
    if decision not in HoldDecision.values:
        raise RuleViolation(f"Decision must be one of {', '.join(HoldDecision.values)}.", field="decision")
    note = (note or "").strip()
    if decision in (HoldDecision.MODIFY, HoldDecision.STOP) and not note:
        what = "how the plan is modified" if decision == HoldDecision.MODIFY else "why the course is stopped"
        raise RuleViolation(f"Say {what}.", field="note")
    from ..pathway.delivery import stop_course

    with transaction.atomic():
        hold = CourseHold.objects.select_for_update().get(pk=hold.pk)
        if hold.is_voided or hold.decision:
            raise ConflictError(f"This hold was already decided ({hold.get_decision_display() or 'voided'}).")
        hold.decision = decision
        hold.decision_note = note[:300]
        hold.decided_by = user
        hold.decided_at = now
        hold._history_user = user
        hold.save(update_fields=["decision", "decision_note", "decided_by", "decided_at", "updated_at"])
        if decision == HoldDecision.STOP:
            if hold.course.status not in CLOSED:
                stop_course(hold.course, reason=TerminationReason.TOXICITY, note=note, user=user, on_date=today or timezone.localdate(now))
            if hold.event_id:
                event = hold.event
                event.action_taken = ActionTaken.STOPPED
                event._history_user = user
                event.save(update_fields=["action_taken", "updated_at"])
    return hold


# --- weekly on-treatment reviews ----------------------------------------------------------------------------------


@dataclass
class Milestone:
    course: object
    number: int
    due_fraction: int
    due_date: dt.date
    fraction_delivered: bool
    review: object = None

    def status(self, today):
        if self.review is not None:
            return "done"
        if self.fraction_delivered:
            return "overdue" if self.due_date < today else "due"
        # not delivered yet: due on the day its fraction is booked, else waiting for the fraction
        return "due" if self.due_date == today else "upcoming"


def review_milestones(course):
    """Every weekly review of the course: review k at live fraction 5k (delivered or booked)."""
    by_number = {f.number: f for f in _live_fractions(course)}
    done = {r.number: r for r in WeeklyReview.objects.active().filter(course=course)}
    out = []
    for k in range(1, course.fractions_planned // REVIEW_EVERY + 1):
        f = by_number.get(k * REVIEW_EVERY)
        if f is None:
            if k in done:
                r = done[k]
                out.append(Milestone(course, k, r.due_fraction, r.due_date, True, r))
            continue
        out.append(Milestone(course, k, f.number, local_day(f.starts_at), f.status == AppointmentStatus.DELIVERED, done.get(k)))
    return out


@dataclass
class ReviewDue:
    milestone: Milestone
    status: str
    latest_toxicities: list = field(default_factory=list)
    hold: object = None

    @property
    def course(self):
        return self.milestone.course

    @property
    def number(self):
        return self.milestone.number

    @property
    def due_date(self):
        return self.milestone.due_date

    @property
    def due_fraction(self):
        return self.milestone.due_fraction

    @property
    def days_overdue(self):
        return 0 if self.status != "overdue" else (self._today - self.due_date).days

    _today: dt.date = None


def latest_toxicities(course, limit=5):
    return list(ToxicityEvent.objects.active().filter(course=course).order_by("-grade_date", "-pk")[:limit])


def reviews_due(*, today=None, user=None, mine=False, courses=None):
    """The review worklist: due and overdue reviews, most overdue first, with each course's latest toxicities.

    ``mine=True`` keeps the courses ``user`` cleared for treatment (the responsible oncologist).
    """
    from ..pathway.models import Course

    today = today or timezone.localdate()
    qs = courses if courses is not None else Course.objects.active()
    qs = qs.filter(status=CourseStatus.ON_TREATMENT) | qs.filter(status=CourseStatus.APPROVED) | qs.filter(
        status__in=CLOSED, completed_on__gte=today - dt.timedelta(days=RECENT_COURSE_DAYS)
    ) | qs.filter(status=CourseStatus.STOPPED, stopped_on__gte=today - dt.timedelta(days=RECENT_COURSE_DAYS))
    if mine and user is not None:
        qs = qs.filter(plan_approved_by=user)
    rows = []
    for course in qs.distinct().select_related("patient"):
        for m in review_milestones(course):
            if course.status == CourseStatus.STOPPED and not m.fraction_delivered:
                continue
            status = m.status(today)
            if status in ("due", "overdue"):
                row = ReviewDue(m, status, latest_toxicities(course), open_hold(course))
                row._today = today
                rows.append(row)
    rows.sort(key=lambda r: (r.due_date, r.course.patient.family_name, r.number))
    return rows


def complete_review(course, *, number, findings, user=None, review_date=None, weight_kg=None, now=None):
    now = now or timezone.now()
    review_date = review_date or timezone.localdate(now)
    findings = (findings or "").strip()
    if not findings:
        raise RuleViolation("Record the review's findings.", field="findings")
    milestone = next((m for m in review_milestones(course) if m.number == int(number)), None)
    if milestone is None:
        raise RuleViolation(f"The course has no review {number}.", field="number")
    if milestone.review is not None:
        raise ConflictError(f"Review {number} was already completed on {milestone.review.review_date:%d %b %Y}.")
    if milestone.due_date > review_date:
        raise RuleViolation(f"Review {number} is not due until {milestone.due_date:%d %b %Y}.", field="number")
    review = WeeklyReview(
        course=course,
        number=milestone.number,
        due_fraction=milestone.due_fraction,
        due_date=milestone.due_date,
        review_date=review_date,
        findings=findings,
        weight_kg=weight_kg,
        completed_by=user,
        completed_at=now,
    )
    review._history_user = user
    try:
        with transaction.atomic():
            review.save()
    except IntegrityError:
        raise ConflictError(f"Review {number} was already completed.") from None
    return review


# --- per-course worst grades (the cohort analysis: outcomes.toxicity_analysis) --------------------------------------


def worst_grades(course):
    """{(term, phase): (worst grade, date)} for one course, phase in acute / late / baseline."""
    start, end = course_start(course), course_end(course)
    out = {}
    for ev in ToxicityEvent.objects.active().filter(course=course):
        p = "baseline" if ev.baseline else phase(ev.onset_date, start, end)
        key = (ev.term, p)
        if key not in out or ev.worst_grade > out[key][0]:
            out[key] = (ev.worst_grade, ev.worst_grade_date)
    return out
