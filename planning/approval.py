"""Review and approval (``planning.approve_plan``): an oncologist approves or rejects a finished plan with a
comment (a rejection needs one). Approval freezes the plan, supersedes the course's previously approved plan and
clears the course for treatment, once the care path's physics check (and a re-irradiation's prior-dose review)
is done or skipped."""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from workflow.pathway import delivery, gates
from workflow.errors import ConflictError, RuleViolation
from workflow.models import CourseStatus

from .models import (
    Plan,
    PlanStatus,
)
from .plans import require_permission

log = logging.getLogger(__name__)


def approve_plan(plan, *, user, comment="", now=None):
    """Approve a finished plan: freeze it, supersede the course's earlier approved plan, clear the course.

    Refused (409 ``approval_blocked``, naming the step) while an approval gate blocks: a blocking care-path step
    before the approval (physics plan check, prior-dose review) not done or skipped."""
    require_permission(user, "planning.approve_plan")
    now = now or timezone.now()
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.voided_at:
            raise RuleViolation("The plan is voided.", field="status")
        if plan.status != PlanStatus.DONE:
            raise ConflictError(f"Plan v{plan.version} is {plan.get_status_display().lower()}; only a finished plan can be approved.",
                                field="status", code="bad_status")
        course = plan.course
        if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
            raise RuleViolation(f"The course is {course.get_status_display().lower()}.", field="course")
        blockers = gates.approval_blockers(course)
        if blockers:
            raise ConflictError(" ".join(blockers), field="status", code="approval_blocked")
        for old in Plan.objects.select_for_update().filter(course=course, status=PlanStatus.APPROVED).exclude(pk=plan.pk):
            old.status = PlanStatus.SUPERSEDED
            old.superseded_at = now
            old._history_user = user
            old.save()
        plan.status = PlanStatus.APPROVED
        plan.approved_by = plan.reviewed_by = user
        plan.approved_at = plan.reviewed_at = now
        plan.review_comment = comment or ""
        plan._history_user = user
        plan.save()
        delivery.clear_for_treatment(course, user=user, now=now)
    return plan


def reject_plan(plan, *, user, comment, now=None):
    require_permission(user, "planning.approve_plan")
    if not (comment or "").strip():
        raise ValidationError({"comment": "Say why the plan is rejected."})
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.status != PlanStatus.DONE:
            raise ConflictError(f"Plan v{plan.version} is {plan.get_status_display().lower()}; only a finished plan can be rejected.",
                                field="status", code="bad_status")
        plan.status = PlanStatus.REJECTED
        plan.reviewed_by = user
        plan.reviewed_at = now or timezone.now()
        plan.review_comment = comment.strip()
        plan._history_user = user
        plan.save()
    return plan




def current_plan(course):
    return Plan.objects.filter(course=course, status=PlanStatus.APPROVED, voided_at__isnull=True).order_by("-version").first()
