"""Care-path pages: a worklist per role, the department board with pathway timing, and the task actions.

Thin views: the rules (who completes what, reasons, due dates) are in ``workflow.carepaths``; a refused action is
shown as a message. Pages need identified-data access and ``view_caretask`` (researchers get 403).
"""

import math

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from . import services as carepaths
from .. import params
from ..errors import RuleViolation
from ..forms import service_error_text
from .models import CarePath, CareTask
from ..roles import user_roles

ERRORS = (RuleViolation, DjangoValidationError, PermissionDenied)
guard = permission_required(("workflow.view_identified", "workflow.view_caretask"), raise_exception=True)
WORK_ROLES = [r for r, _ in CareTask._meta.get_field("role").choices]


def _day(request):
    try:
        return params.parse_date(request.GET.get("date"), "date", default=timezone.localdate())
    except DjangoValidationError:
        messages.warning(request, "That date was not understood; showing today.")
        return timezone.localdate()


def _back(request, fallback):
    target = request.POST.get("next")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect(fallback)


@guard
def worklist(request):
    today = _day(request)
    mine = [r for r in WORK_ROLES if r in user_roles(request.user)]
    choices = WORK_ROLES if request.user.is_superuser or request.user.has_perm(carepaths.MANAGE_PERM) else mine
    role = request.GET.get("role") or (mine[0] if len(mine) == 1 else "")
    if role and role not in WORK_ROLES:
        role = ""
    sections = carepaths.worklist(user=request.user, role=role or None, today=today)
    users_by_role = {}
    for user in get_user_model().objects.filter(is_active=True, groups__name__in=WORK_ROLES).distinct().prefetch_related("groups"):
        for group in user.groups.all():
            users_by_role.setdefault(group.name, []).append(user)
    for tasks in sections.values():
        for task in tasks:
            task.can_complete = carepaths.can_complete(request.user, task)
            task.can_manage = carepaths.can_manage(request.user, task)
            task.colleagues = users_by_role.get(task.role, [])
    titles = {"overdue": "Overdue", "due_today": "Due today", "upcoming": "Upcoming", "on_hold": "On hold"}
    return render(request, "workflow/carepath/worklist.html", {
        "today": today, "role": role, "roles": choices, "my_roles": mine,
        "sections": [(key, titles[key], tasks) for key, tasks in sections.items()],
        "total": sum(len(t) for t in sections.values()),
    })


@guard
def board_chart(request):
    """The board's timing chart as its own PNG, so drawing it never holds up the board (it loads after)."""
    summary = carepaths.timing_summary(carepaths.carepath_timing_frame())
    response = HttpResponse(carepaths.timing_chart_png(summary.tail(12)), content_type="image/png")
    response["Cache-Control"] = "private, max-age=300"
    return response


@guard
def board(request):
    today = _day(request)
    data = carepaths.board(today=today)
    frame = carepaths.carepath_timing_frame()
    summary = carepaths.timing_summary(frame)
    months = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
              for row in summary.tail(12).to_dict(orient="records")] if len(summary) else []
    steps = sorted(carepaths.step_on_time_rates(frame).items(), key=lambda kv: kv[1][2])
    return render(request, "workflow/carepath/board.html", {
        "today": today, "board": data, "columns": [c for c in data["columns"] if c["cards"]],
        "months": months, "steps": steps, "chart": len(summary) > 0,
    })


@guard
def path_detail(request, pk):
    path = get_object_or_404(CarePath.objects.active().select_related("course__patient"), pk=pk)
    tasks = list(path.tasks.active().select_related("assignee", "completed_by").order_by("order"))
    today = timezone.localdate()
    calendar = carepaths.ClinicCalendar()
    for task in tasks:
        if task.status in carepaths.LIVE:
            carepaths.annotate_urgency(task, today, calendar)
    return render(request, "workflow/carepath/path_detail.html", {
        "path": path, "course": path.course, "tasks": tasks, "timing": carepaths.course_timing(path, calendar),
        "blocker": carepaths.carepath_gate(path.course),
    })


ACTIONS = ("complete", "hold", "release", "skip", "reassign")


@require_POST
@guard
def task_action(request, pk, action):
    if action not in ACTIONS:
        raise PermissionDenied("Unknown action.")
    task = get_object_or_404(CareTask.objects.active().select_related("path__course__patient"), pk=pk)
    who = f"{task.path.course.patient.name}: {task.name}"
    reason = request.POST.get("reason", "").strip()
    try:
        if action == "complete":
            carepaths.complete_task(task, request.user, note=reason)
            done = "completed"
        elif action == "hold":
            carepaths.hold(task, user=request.user, reason=reason)
            done = "put on hold"
        elif action == "release":
            carepaths.release(task, user=request.user)
            done = "released"
        elif action == "skip":
            carepaths.skip(task, user=request.user, reason=reason)
            done = "skipped"
        else:
            to_user = None
            if request.POST.get("to_user"):
                to_user = get_user_model().objects.filter(pk=request.POST["to_user"], is_active=True).first()
                if to_user is None:
                    raise RuleViolation("Unknown user.", field="to_user")
            carepaths.reassign(task, user=request.user, to_user=to_user, to_role=request.POST.get("to_role") or None, reason=reason)
            done = f"reassigned to {to_user.get_username() if to_user else request.POST.get('to_role')}"
    except ERRORS as exc:
        messages.error(request, f"{who}: {service_error_text(exc) if not isinstance(exc, PermissionDenied) else str(exc)}")
    else:
        messages.success(request, f"{who} {done}.")
    return _back(request, reverse("carepath-worklist"))
