"""Delivery: recording fractions given, stopping a course, clearing it for treatment.

Rules:
- A fraction is delivered only if the course is cleared for treatment (plan approved) and no registered gate
  (``workflow.pathway.gates``: toxicity hold, blocking care-path task, ...) blocks it; in order (it must be the lowest
  live number not yet delivered); once (a second attempt fails, even from a racing request); and not before its
  day.
- Delivered dose and fractions remaining are derived from the delivered fractions, never stored twice.
- The course is on treatment from its first delivered fraction and completes with its last; completing it
  proposes the follow-up visits. A course can be stopped early with a termination reason; its scheduled fractions
  are cancelled and their machine time freed.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from . import gates, signals
from ..errors import RuleViolation
from .models import AppointmentStatus, Course, CourseStatus, Fraction, TerminationReason
from .scheduling import cancel_scheduled, local_day


def _course_gate(course):
    if not course.plan_approved:
        return "The course is not cleared for treatment: its plan is not approved."
    return None


def delivery_blockers(course):
    """Every reason the course's next fraction cannot be delivered now (empty when it can)."""
    reasons = []
    if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
        reasons.append(f"The course is {course.get_status_display().lower()}.")
    gate = _course_gate(course)
    if gate:
        reasons.append(gate)
    return reasons + gates.delivery_blockers(course)


@dataclass
class Progress:
    planned_fractions: int
    planned_dose_gy: Decimal
    delivered_fractions: int
    delivered_dose_gy: Decimal
    missed_fractions: int

    @property
    def remaining_fractions(self):
        return max(self.planned_fractions - self.delivered_fractions, 0)

    @property
    def remaining_dose_gy(self):
        return max(self.planned_dose_gy - self.delivered_dose_gy, Decimal("0"))

    def as_dict(self):
        return {
            "planned_fractions": self.planned_fractions,
            "planned_dose_gy": self.planned_dose_gy,
            "delivered_fractions": self.delivered_fractions,
            "delivered_dose_gy": self.delivered_dose_gy,
            "remaining_fractions": self.remaining_fractions,
            "remaining_dose_gy": self.remaining_dose_gy,
            "missed_fractions": self.missed_fractions,
        }


def course_progress(course):
    agg = course.fractions.aggregate(
        delivered=Count("pk", filter=Q(status=AppointmentStatus.DELIVERED)),
        dose=Sum("delivered_dose_gy", filter=Q(status=AppointmentStatus.DELIVERED)),
        missed=Count("pk", filter=Q(status=AppointmentStatus.MISSED)),
    )
    return Progress(
        planned_fractions=course.fractions_planned,
        planned_dose_gy=Decimal(course.total_dose_gy),
        delivered_fractions=agg["delivered"],
        delivered_dose_gy=agg["dose"] or Decimal("0.00"),
        missed_fractions=agg["missed"],
    )


def deliver_fraction(fraction, *, user, dose_gy=None, now=None):
    """Record ``fraction`` as delivered by ``user``; see the module docstring for the rules."""
    now = now or timezone.now()
    with transaction.atomic():
        course = Course.objects.select_for_update().get(pk=fraction.course_id)
        fraction = Fraction.objects.select_for_update().get(pk=fraction.pk)
        if fraction.status != AppointmentStatus.SCHEDULED:
            raise RuleViolation(f"Fraction {fraction.number} is already {fraction.status}.", field="status", code="not_scheduled")
        blockers = delivery_blockers(course)
        if blockers:
            raise RuleViolation(" ".join(blockers), field="course", code="delivery_blocked")
        delivered = course.fractions.filter(status=AppointmentStatus.DELIVERED).count()
        if fraction.number != delivered + 1:
            raise RuleViolation(
                f"Fraction {delivered + 1} must be delivered (or marked missed) before fraction {fraction.number}.",
                field="number",
                code="out_of_order",
            )
        if local_day(fraction.starts_at) > timezone.localtime(now).date():
            raise RuleViolation("This fraction is booked for a later day.", field="starts_at", code="not_due")
        if dose_gy is None:
            dose_gy = course.dose_per_fraction_gy
        dose_gy = Decimal(str(dose_gy))
        if dose_gy <= 0 or dose_gy > Decimal(course.dose_per_fraction_gy) * Decimal("1.1"):
            raise RuleViolation(
                f"Delivered dose {dose_gy} Gy is outside 0-{Decimal(course.dose_per_fraction_gy) * Decimal('1.1')} Gy.", field="dose_gy"
            )
        fraction.status = AppointmentStatus.DELIVERED
        fraction.delivered_dose_gy = dose_gy
        fraction.delivered_by = user
        fraction.delivered_at = now
        fraction._history_user = user
        fraction.save(update_fields=["status", "delivered_dose_gy", "delivered_by", "delivered_at", "updated_at"])
        completed = delivered + 1 >= course.fractions_planned
        if course.status != CourseStatus.ON_TREATMENT or completed:
            course.status = CourseStatus.COMPLETED if completed else CourseStatus.ON_TREATMENT
            if completed:
                course.completed_on = local_day(fraction.starts_at)
            course._history_user = user
            course.save(update_fields=["status", "completed_on", "updated_at"])
        if completed:
            cancel_scheduled(course, user=user, reason="Course completed")
            from .followup import propose_followups

            propose_followups(course, user=user)
    signals.fraction_delivered.send(sender=Fraction, fraction=fraction, user=user)
    if completed:
        signals.course_completed.send(sender=Course, course=course, user=user)
    return fraction


def stop_course(course, *, reason, note="", user=None, on_date=None):
    """Stop a course early: record why, cancel its scheduled fractions, free their machine time."""
    if reason not in TerminationReason.values:
        raise RuleViolation(f"Termination reason must be one of {', '.join(TerminationReason.values)}.", field="reason")
    with transaction.atomic():
        course = Course.objects.select_for_update().get(pk=course.pk)
        if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
            raise RuleViolation(f"The course is already {course.get_status_display().lower()}.", field="course")
        course.status = CourseStatus.STOPPED
        course.termination_reason = reason
        course.termination_note = note[:200]
        course.stopped_on = on_date or timezone.localdate()
        course._history_user = user
        course.save(update_fields=["status", "termination_reason", "termination_note", "stopped_on", "updated_at"])
        cancel_scheduled(course, user=user, reason=f"Course stopped: {reason}")
    signals.course_stopped.send(sender=Course, course=course, user=user)
    return course


def clear_for_treatment(course, *, user=None, now=None):
    """Record that the course's plan is approved, which clears it for treatment."""
    with transaction.atomic():
        course = Course.objects.select_for_update().get(pk=course.pk)
        if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
            raise RuleViolation(f"The course is {course.get_status_display().lower()}.", field="course")
        course.plan_approved = True
        course.plan_approved_by = user
        course.plan_approved_at = now or timezone.now()
        if course.status in (CourseStatus.PLANNED, CourseStatus.SIMULATED):
            course.status = CourseStatus.APPROVED
        course._history_user = user
        course.save(update_fields=["plan_approved", "plan_approved_by", "plan_approved_at", "status", "updated_at"])
    signals.course_cleared.send(sender=Course, course=course, user=user)
    return course
