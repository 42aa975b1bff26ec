"""Prescriptions: the defaults a new course starts from, and the audited amendment of a started course.

Rules:
- The dose per fraction is derived from the total dose and the number of fractions (d = D / N, to 0.01 Gy); the
  model refuses a total that N x d misses by more than 0.01 Gy, so 40 Gy in 6 fractions is refused rather than
  rounded to 6.67 Gy x 6 = 40.02 Gy.
- Defaults by technique and intent are the usual schedules (DOMAIN notes): 50 Gy / 25 adjuvant, 60 Gy / 30
  curative, 20 Gy / 5 palliative, SBRT 40 Gy / 5, IORT a single 12 Gy fraction, re-irradiation 30 Gy / 10.
- Once a course has started, its prescription changes only through ``amend_prescription``: oncologists only
  (``workflow.add_prescriptionamendment``), a reason required, before and after kept in a
  ``PrescriptionAmendment`` row and in the course history. The new number of fractions may not go below the
  delivered count; the scheduled fractions follow it (added after the last live fraction, or the last ones
  cancelled with their machine time freed), and a count equal to the delivered one completes the course. A
  completed or stopped course is not amended.
- A new dose per fraction no longer fits the approved plan: the amendment withdraws the course's clearance, so
  no further fraction is delivered until a plan for the new prescription is approved (the same number of
  fractions at the same dose per fraction keeps it).
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from . import scheduling, signals
from .calendar import ClinicCalendar
from ..errors import ConflictError
from .models import AppointmentStatus, Course, CourseStatus, Technique
from .models import PrescriptionAmendment

CENTIGRAY = Decimal("0.01")

DEFAULTS_BY_TECHNIQUE = {
    Technique.SBRT: (Decimal("40"), 5),
    Technique.IORT_ELECTRONS: (Decimal("12"), 1),
}
DEFAULTS_BY_INTENT = {
    "curative": (Decimal("60"), 30),
    "adjuvant": (Decimal("50"), 25),
    "neoadjuvant": (Decimal("50"), 25),
    "palliative": (Decimal("20"), 5),
    "reirradiation": (Decimal("30"), 10),
}
FALLBACK = (Decimal("50"), 25)
DEFAULT_MINUTES = {Technique.SBRT: 30, Technique.IORT_ELECTRONS: 30}


def default_prescription(technique, intent):
    """(total dose Gy, fractions, dose per fraction Gy, appointment minutes) to prefill a new course."""
    total, n = DEFAULTS_BY_TECHNIQUE.get(technique) or DEFAULTS_BY_INTENT.get(intent) or FALLBACK
    return total, n, dose_per_fraction(total, n), DEFAULT_MINUTES.get(technique, 15)


def defaults_table():
    """Every (technique, intent) default, for the course form's script (JSON-friendly strings)."""
    from .models import Intent

    return {
        f"{t}|{i}": {"total": str(d[0]), "fractions": d[1], "dpf": str(d[2]), "minutes": d[3]}
        for t in Technique.values
        for i in Intent.values
        for d in [default_prescription(t, i)]
    }


def dose_per_fraction(total_dose_gy, fractions):
    """d = D / N rounded to 0.01 Gy (the model then checks N x d against D)."""
    try:
        return (Decimal(total_dose_gy) / int(fractions)).quantize(CENTIGRAY, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ZeroDivisionError, TypeError, ValueError):
        return None


@dataclass
class Amendment:
    record: PrescriptionAmendment
    added: list
    cancelled: list
    completed: bool
    clearance_withdrawn: bool = False


def _decimal(value, field):
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationError({field: "Give a number."}) from None
    if not d.is_finite():
        raise ValidationError({field: "Give a finite number."})
    return d


def _shift_back(calendar, day, n):
    """The treatment day ``n`` treatment days before ``day``."""
    import datetime as dt

    while n > 0:
        day -= dt.timedelta(days=1)
        n -= calendar.is_open(day)
    return day


def amend_prescription(course, *, reason, user, total_dose_gy=None, fractions_planned=None, dose_per_fraction_gy=None):
    """Change a course's prescription with a reason, keep before/after, and keep its fractions consistent.

    Give the new number of fractions and either the total dose or the dose per fraction (the other is derived;
    what is not given stays as it was). Raises ``PermissionDenied`` (not an oncologist), ``ValidationError`` naming
    the field (no reason, fewer fractions than delivered, total not N x d) or ``ConflictError`` (course closed).
    """
    if user is None or not user.has_perm("workflow.add_prescriptionamendment"):
        raise PermissionDenied("Only an oncologist amends a prescription.")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the prescription is amended."})
    with transaction.atomic():
        course = Course.objects.select_for_update().get(pk=course.pk)
        if course.is_voided:
            raise ConflictError("This course is voided.", field="course", code="voided")
        if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
            raise ConflictError(
                f"The course is {course.get_status_display().lower()}; a finished course's prescription is not amended.",
                field="course",
                code="course_closed",
            )
        before = (course.total_dose_gy, course.fractions_planned, course.dose_per_fraction_gy)
        n = course.fractions_planned if fractions_planned in (None, "") else fractions_planned
        try:
            n = int(n)
        except (TypeError, ValueError):
            raise ValidationError({"fractions_planned": "Give a whole number of fractions."}) from None
        if n < 1:
            raise ValidationError({"fractions_planned": "At least one fraction."})
        if dose_per_fraction_gy not in (None, ""):
            d = _decimal(dose_per_fraction_gy, "dose_per_fraction_gy")
            total = _decimal(total_dose_gy, "total_dose_gy") if total_dose_gy not in (None, "") else d * n
        else:
            total = _decimal(total_dose_gy, "total_dose_gy") if total_dose_gy not in (None, "") else Decimal(course.total_dose_gy)
            d = dose_per_fraction(total, n)
        delivered = course.fractions.filter(status=AppointmentStatus.DELIVERED).count()
        if n < delivered:
            raise ValidationError(
                {"fractions_planned": f"{delivered} fractions are already delivered; the course cannot have fewer."}
            )
        after = (total, n, d)
        if [Decimal(before[0]), before[1], Decimal(before[2])] == [Decimal(total), n, Decimal(d)]:
            raise ValidationError({"fractions_planned": "The amendment changes nothing."})
        course.total_dose_gy, course.fractions_planned, course.dose_per_fraction_gy = after
        course.full_clean()

        live = course.fractions.filter(status__in=scheduling.LIVE)
        scheduled = course.fractions.filter(status=AppointmentStatus.SCHEDULED)
        old_last = live.order_by("-starts_at").first()
        added, cancelled = [], []
        if scheduled.exists():
            difference = n - live.count()
            if difference > 0:
                added = scheduling.append_fractions(course, difference, user=user)
            elif difference < 0:
                cancelled = scheduling.cancel_last_scheduled(
                    course, -difference, user=user, reason=f"Prescription amended to {n} fractions"
                )
        update = ["total_dose_gy", "fractions_planned", "dose_per_fraction_gy", "updated_at"]
        new_last = live.order_by("-starts_at").first()
        if course.booked_end_date and old_last and new_last and (added or cancelled):
            calendar = ClinicCalendar()
            prolonged = max(calendar.working_days_between(course.booked_end_date, scheduling.local_day(old_last.starts_at)), 0)
            course.booked_end_date = _shift_back(calendar, scheduling.local_day(new_last.starts_at), prolonged)
            update.append("booked_end_date")
        completed = delivered > 0 and n == delivered
        withdrawn = course.plan_approved and not completed and Decimal(d) != Decimal(before[2])
        if withdrawn:
            course.plan_approved, course.plan_approved_by, course.plan_approved_at = False, None, None
            update += ["plan_approved", "plan_approved_by", "plan_approved_at"]
            if course.status == CourseStatus.APPROVED:
                simulated = course.simulations.active().filter(status=AppointmentStatus.DELIVERED).exists()
                course.status = CourseStatus.SIMULATED if simulated else CourseStatus.PLANNED
                update.append("status")
        if completed:
            scheduling.cancel_scheduled(course, user=user, reason="Course completed by a prescription amendment")
            last_delivered = course.fractions.filter(status=AppointmentStatus.DELIVERED).order_by("-starts_at").first()
            course.status = CourseStatus.COMPLETED
            course.completed_on = scheduling.local_day(last_delivered.starts_at)
            update += ["status", "completed_on"]
        course._history_user = user
        course._change_reason = f"Prescription amended: {reason}"[:100]
        course.save(update_fields=update)
        record = PrescriptionAmendment.objects.create(
            course=course,
            amended_by=user,
            reason=reason[:300],
            before_total_dose_gy=before[0],
            before_fractions=before[1],
            before_dose_per_fraction_gy=before[2],
            after_total_dose_gy=total,
            after_fractions=n,
            after_dose_per_fraction_gy=d,
            delivered_fractions=delivered,
            fractions_added=len(added),
            fractions_cancelled=len(cancelled),
            clearance_withdrawn=withdrawn,
        )
        if completed:
            from .followup import propose_followups

            propose_followups(course, user=user)
    if completed:
        signals.course_completed.send(sender=Course, course=course, user=user)
    return Amendment(record, added, cancelled, completed, withdrawn)

