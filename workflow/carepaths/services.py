"""Care-path services: start a course's path, complete / reassign / hold / skip tasks, worklists, board, timing.

Rules:
- A course's path starts when the course is created (``post_save``), unless the course is created completed or
  stopped (historical or registry-imported courses get none); the template is the active one matching the
  course's intent and technique with the highest priority. Its steps are copied into the path (``snapshot``) and the
  tasks made from that copy, so later template edits never touch a running path.
- A task opens when every step in its ``after`` list is done or skipped; its due date is ``due_days`` working days
  (clinic calendar: weekends, public holidays and closures skipped) or calendar days (moved to the next open day)
  after it opened, or after the completion of its ``due_anchor`` step.
- Only a member of the task's role completes it by hand; a pathway event (``workflow.pathway.signals``) completes the task
  waiting for it whatever its state, dated the day the event happened. Reassign, hold and skip need the task's role
  or ``workflow.manage_caretask``; hold and skip need a reason. Every change is in the task's history with the user.
- A task that blocks treatment keeps the course's fractions from being delivered from the day it opens until it is
  done or skipped, whether the path has reached it or not (on hold and pending still block): one rule for every
  course. A plan is approved only when the blocking steps before the approval step are done or skipped.
  Courses without a path (historical, imported, or a voided path) are never blocked by care paths.
- Timing: per course consult-to-sim, sim-to-plan-approval and sim-to-first-fraction in working days (and calendar
  days) and the share of tasks done by their due date; per clinic and month medians and 90th percentiles.
"""

import datetime as dt
import json
from collections import OrderedDict
from pathlib import Path

from django.apps import apps as django_apps
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Q
from django.db.models.signals import post_migrate, post_save
from django.utils import timezone

from ..pathway import gates, signals
from ..pathway.calendar import ClinicCalendar
from ..errors import ConflictError, RuleViolation
from .models import CarePath, CarePathStatus, CarePathTemplate, CareTask, DueUnit, PathEvent, TaskStatus, TemplateStep
from ..pathway.models import Course, CourseStatus
from ..roles import user_roles

DEFAULTS_FILE = Path(__file__).resolve().parents[1] / "data" / "carepath_templates.json"  # workflow/data/
FINISHED = (TaskStatus.DONE, TaskStatus.SKIPPED, TaskStatus.CANCELLED)
SATISFIED = (TaskStatus.DONE, TaskStatus.SKIPPED)
LIVE = (TaskStatus.OPEN, TaskStatus.ON_HOLD)
MANAGE_PERM = "workflow.manage_caretask"


# --- templates -------------------------------------------------------------------------------------------------


def load_default_templates(**kwargs):
    """Create each default template (``data/carepath_templates.json``) whose code is not in the database yet.

    Idempotent and never overwrites: a clinic's edits in the admin survive every migrate."""
    using = kwargs.get("using") or DEFAULT_DB_ALIAS
    if CarePathTemplate._meta.db_table not in connections[using].introspection.table_names():
        return []  # migrated back before the care-path tables
    data = json.loads(DEFAULTS_FILE.read_text())
    created = []
    with transaction.atomic(using=using):
        for spec in data["templates"]:
            if CarePathTemplate.objects.using(using).filter(code=spec["code"]).exists():
                continue
            template = CarePathTemplate.objects.db_manager(using).create(
                code=spec["code"], name=spec["name"], description=spec.get("description", ""), intents=spec.get("intents", []),
                techniques=spec.get("techniques", []), priority=spec.get("priority", 0),
            )
            for order, step in enumerate(spec["steps"], start=1):
                TemplateStep.objects.db_manager(using).create(
                    template=template, order=order, code=step["code"], name=step["name"], role=step["role"],
                    after=step.get("after", []), due_days=step.get("due_days", 1), due_unit=step.get("due_unit", DueUnit.WORKING),
                    due_anchor=step.get("due_anchor", ""), event=step.get("event", ""), blocks_treatment=step.get("blocks_treatment", False),
                )
            created.append(template)
    return created


def select_template(course):
    """The active template for ``course``: matching intent and technique (empty = any), highest priority."""
    for template in CarePathTemplate.objects.filter(active=True).order_by("-priority", "pk"):
        if template.matches(course):
            return template
    return None


def validate_steps(steps):
    """Check a template's steps form a chain: known codes, ``after`` and anchors refer to earlier steps."""
    seen = set()
    for step in sorted(steps, key=lambda s: s["order"]):
        unknown = [c for c in step["after"] if c not in seen]
        if unknown:
            raise RuleViolation(f"Step '{step['code']}' comes after unknown or later step(s): {', '.join(unknown)}.", field="after")
        if step["due_anchor"] and step["due_anchor"] not in seen:
            raise RuleViolation(f"Step '{step['code']}' is due from an unknown or later step '{step['due_anchor']}'.", field="due_anchor")
        seen.add(step["code"])


# --- instantiation ---------------------------------------------------------------------------------------------


HISTORICAL = (CourseStatus.COMPLETED, CourseStatus.STOPPED)


def needs_path(course):
    """A care path is for a course still to be treated: a completed or stopped course (a historical course, a
    registry import) gets none, since its steps happened outside RadPath and would only fill the worklists."""
    return course.status not in HISTORICAL and not course.voided_at


def instantiate_path(course, *, template=None, started_on=None, user=None):
    """Start ``course``'s care path (idempotent: an existing path is returned unchanged). None if no template fits
    or the course is already completed or stopped (``needs_path``)."""
    existing = CarePath.objects.filter(course=course).first()
    if existing is not None:
        return existing
    if not needs_path(course):
        return None
    template = template or select_template(course)
    if template is None:
        return None
    steps = [s.as_snapshot() for s in template.steps.order_by("order")]
    validate_steps(steps)
    started_on = started_on or timezone.localdate()
    with transaction.atomic():
        path = CarePath(
            course=course, template=template, template_code=template.code, template_name=template.name,
            template_version=template.version, snapshot=steps, started_on=started_on,
        )
        path._history_user = user
        path.save()
        for step in steps:
            task = CareTask(path=path, **{k: step[k] for k in ("order", "code", "name", "role", "after", "due_days", "due_unit", "due_anchor", "event", "blocks_treatment")})
            task._history_user = user
            task.save()
        _open_ready(path, on=started_on, user=user)
    return path


def _on_course_created(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        instantiate_path(instance, user=getattr(instance, "_history_user", None))


# --- opening, due dates ------------------------------------------------------------------------------------------


def due_date(task, opened_on, by_code, calendar):
    base = opened_on
    if task.due_anchor:
        anchor = by_code.get(task.due_anchor)
        if anchor is not None and anchor.status == TaskStatus.DONE and anchor.completed_on:
            base = anchor.completed_on
    if task.due_unit == DueUnit.CALENDAR:
        day = base + dt.timedelta(days=task.due_days)
        return day if calendar.is_open(day) else calendar.next_open_day(day)
    return calendar.add_working_days(base, task.due_days)


def _open_ready(path, *, on, user=None, calendar=None):
    """Open every pending task whose ``after`` steps are all done or skipped; dated from their latest completion."""
    calendar = calendar or ClinicCalendar()
    tasks = list(path.tasks.active().order_by("order"))
    by_code = {t.code: t for t in tasks}
    opened = []
    changed = True
    while changed:
        changed = False
        for task in tasks:
            if task.status != TaskStatus.PENDING:
                continue
            before = [by_code[c] for c in task.after if c in by_code]
            if any(b.status not in SATISFIED for b in before):
                continue
            dates = [b.completed_on for b in before if b.completed_on]
            opened_on = max(dates) if dates else (path.started_on or on)
            task.status = TaskStatus.OPEN
            task.opened_on = opened_on
            task.due_date = due_date(task, opened_on, by_code, calendar)
            task._history_user = user
            task.save(update_fields=["status", "opened_on", "due_date", "updated_at"])
            opened.append(task)
            changed = True
    if tasks and all(t.status in FINISHED for t in tasks) and path.status == CarePathStatus.ACTIVE:
        path.status = CarePathStatus.COMPLETED
        path._history_user = user
        path.save(update_fields=["status", "updated_at"])
    return opened


# --- permissions -----------------------------------------------------------------------------------------------


def has_role(user, role):
    return bool(user and user.is_authenticated and role in user_roles(user))


def can_complete(user, task):
    return has_role(user, task.role)


def can_manage(user, task):
    return bool(user and user.is_authenticated and (has_role(user, task.role) or user.has_perm(MANAGE_PERM)))


def _lock(task):
    task = CareTask.objects.select_for_update().select_related("path").get(pk=task.pk)
    if task.is_voided or task.path.is_voided:
        raise ConflictError("This task is voided.")
    return task


# --- task actions ------------------------------------------------------------------------------------------------


def complete_task(task, user, *, on=None, note=""):
    """``user`` (a member of the task's role) completes an open task; the next steps open."""
    if not can_complete(user, task):
        raise PermissionDenied(f"Only the {task.role} role completes '{task.name}'.")
    on = on or timezone.localdate()
    with transaction.atomic():
        task = _lock(task)
        if task.status == TaskStatus.PENDING:
            raise RuleViolation(f"'{task.name}' waits for earlier steps: {', '.join(task.after)}.", field="status", code="not_open")
        if task.status == TaskStatus.ON_HOLD:
            raise RuleViolation(f"'{task.name}' is on hold ({task.status_reason}); release it first.", field="status", code="on_hold")
        if task.status in FINISHED:
            raise ConflictError(f"'{task.name}' is already {task.get_status_display().lower()}.", code="already_finished")
        if task.opened_on and on < task.opened_on:
            raise RuleViolation("A task cannot be completed before it opened.", field="on")
        _finish(task, TaskStatus.DONE, on=on, user=user, reason=note)
        _open_ready(task.path, on=on, user=user)
    return task


def _finish(task, status, *, on, user, reason="", event=""):
    task.status = status
    task.completed_on = on
    task.completed_at = timezone.now()
    task.completed_by = user if user is not None and user.is_authenticated else None
    task.completed_by_event = event
    if reason:
        task.status_reason = reason[:200]
    task._history_user = user
    task.save(update_fields=["status", "completed_on", "completed_at", "completed_by", "completed_by_event", "status_reason", "updated_at"])


def complete_by_event(course, event, *, on, user=None):
    """The pathway event ``event`` happened for ``course`` on ``on``: complete the tasks waiting for it."""
    path = CarePath.objects.filter(course_id=course.pk, voided_at__isnull=True).first()
    if path is None:
        return []
    done = []
    with transaction.atomic():
        for task in path.tasks.active().filter(event=event).exclude(status__in=FINISHED).select_for_update():
            on_day = max(on, task.opened_on) if task.opened_on else on
            _finish(task, TaskStatus.DONE, on=on_day, user=user, event=event)
            done.append(task)
        if done:
            _open_ready(path, on=on, user=user)
    return done


def reassign(task, *, user, to_user=None, to_role=None, reason=""):
    """Give the task to another member of its role (``to_user``) and/or to another role (``to_role``)."""
    if not can_manage(user, task):
        raise PermissionDenied(f"Only the {task.role} role or a care-path manager reassigns '{task.name}'.")
    if to_user is None and not to_role:
        raise RuleViolation("Give a user or a role to reassign to.", field="to_user")
    with transaction.atomic():
        task = _lock(task)
        if task.status in FINISHED:
            raise ConflictError(f"'{task.name}' is already {task.get_status_display().lower()}.", code="already_finished")
        role = to_role or task.role
        valid_roles = [r for r, _ in CareTask._meta.get_field("role").choices]
        if role not in valid_roles:
            raise RuleViolation(f"Unknown role '{role}'.", field="to_role")
        if to_user is not None and not has_role(to_user, role):
            raise RuleViolation(f"{to_user.get_username()} is not in the {role} role.", field="to_user")
        task.role = role
        task.assignee = to_user
        task.status_reason = (reason or f"Reassigned to {to_user.get_username() if to_user else role}")[:200]
        task._history_user = user
        task.save(update_fields=["role", "assignee", "status_reason", "updated_at"])
    return task


def hold(task, *, user, reason):
    if not can_manage(user, task):
        raise PermissionDenied(f"Only the {task.role} role or a care-path manager puts '{task.name}' on hold.")
    if not (reason or "").strip():
        raise RuleViolation("Give the reason the task is on hold.", field="reason")
    with transaction.atomic():
        task = _lock(task)
        if task.status != TaskStatus.OPEN:
            raise RuleViolation(f"Only an open task can be put on hold; '{task.name}' is {task.get_status_display().lower()}.", field="status")
        task.status = TaskStatus.ON_HOLD
        task.status_reason = reason.strip()[:200]
        task._history_user = user
        task.save(update_fields=["status", "status_reason", "updated_at"])
    return task


def release(task, *, user):
    if not can_manage(user, task):
        raise PermissionDenied(f"Only the {task.role} role or a care-path manager releases '{task.name}'.")
    with transaction.atomic():
        task = _lock(task)
        if task.status != TaskStatus.ON_HOLD:
            raise RuleViolation(f"'{task.name}' is not on hold.", field="status")
        task.status = TaskStatus.OPEN
        task.status_reason = ""
        task._history_user = user
        task.save(update_fields=["status", "status_reason", "updated_at"])
    return task


def skip(task, *, user, reason, on=None):
    """Skip an open, held or pending step with a reason; it counts as done for the steps after it."""
    if not can_manage(user, task):
        raise PermissionDenied(f"Only the {task.role} role or a care-path manager skips '{task.name}'.")
    if not (reason or "").strip():
        raise RuleViolation("Give the reason the step is skipped.", field="reason")
    on = on or timezone.localdate()
    with transaction.atomic():
        task = _lock(task)
        if task.status in FINISHED:
            raise ConflictError(f"'{task.name}' is already {task.get_status_display().lower()}.", code="already_finished")
        _finish(task, TaskStatus.SKIPPED, on=on, user=user, reason=reason.strip())
        _open_ready(task.path, on=on, user=user)
    return task


# --- automatic completion from pathway events ----------------------------------------------------------------


def _local_day(moment):
    return timezone.localtime(moment).date() if moment else timezone.localdate()


def _on_simulation_completed(sender, visit, user=None, **kwargs):
    complete_by_event(visit.course, PathEvent.SIMULATION_COMPLETED, on=_local_day(visit.starts_at), user=user)


def _on_course_cleared(sender, course, user=None, **kwargs):
    complete_by_event(course, PathEvent.COURSE_CLEARED, on=_local_day(course.plan_approved_at), user=user)


def _on_fraction_delivered(sender, fraction, user=None, **kwargs):
    if fraction.number == 1:
        complete_by_event(fraction.course, PathEvent.FIRST_FRACTION, on=_local_day(fraction.starts_at), user=user)


def _on_course_completed(sender, course, user=None, **kwargs):
    complete_by_event(course, PathEvent.COURSE_COMPLETED, on=course.completed_on or timezone.localdate(), user=user)


def stop_path(course, *, user=None):
    """A stopped course's path stops: its unfinished tasks are cancelled (kept, with the reason)."""
    path = CarePath.objects.filter(course_id=course.pk, voided_at__isnull=True).first()
    if path is None:
        return None
    with transaction.atomic():
        for task in path.tasks.active().exclude(status__in=FINISHED):
            task.status = TaskStatus.CANCELLED
            task.status_reason = f"Course stopped: {course.termination_reason or 'stopped'}"[:200]
            task._history_user = user
            task.save(update_fields=["status", "status_reason", "updated_at"])
        path.status = CarePathStatus.STOPPED
        path._history_user = user
        path.save(update_fields=["status", "updated_at"])
    return path


def _on_course_stopped(sender, course, user=None, **kwargs):
    stop_path(course, user=user)


# --- delivery gate ---------------------------------------------------------------------------------------------


UNFINISHED = (TaskStatus.PENDING, TaskStatus.OPEN, TaskStatus.ON_HOLD)


def _blocking_unfinished(course, codes=None):
    qs = CareTask.objects.active().filter(
        path__course_id=course.pk, path__voided_at__isnull=True, blocks_treatment=True, status__in=UNFINISHED)
    if codes is not None:
        qs = qs.filter(code__in=codes)
    return list(qs.order_by("order").values_list("name", "role", "status"))


def _describe(blocking):
    return "; ".join(f"{name} ({role}{', not reached yet' if status == TaskStatus.PENDING else ''})" for name, role, status in blocking)


def carepath_gate(course):
    """Delivery gate: the course's blocking steps not yet done or skipped, as a reason; None if there are none.

    One rule for every course: a blocking step (physics plan check, prior-dose review, plan approval) blocks every
    fraction until it is done or skipped, whether the path has reached it (open, on hold) or not (pending)."""
    blocking = _blocking_unfinished(course)
    if not blocking:
        return None
    return f"Care path: blocking task not done: {_describe(blocking)}."


def _ancestors(tasks, code):
    by_code = {t["code"]: t for t in tasks}
    seen, todo = set(), list(by_code.get(code, {}).get("after", []))
    while todo:
        c = todo.pop()
        if c in seen or c not in by_code:
            continue
        seen.add(c)
        todo.extend(by_code[c]["after"])
    return seen


def approval_gate(course):
    """Plan-approval gate: the blocking steps that come before the path's plan approval (the physics plan check,
    a prior-dose review) and are not done or skipped, as a reason; None if approval may go ahead."""
    tasks = list(CareTask.objects.active().filter(path__course_id=course.pk, path__voided_at__isnull=True)
                 .values("code", "after", "event"))
    approval = next((t["code"] for t in tasks if t["event"] == PathEvent.COURSE_CLEARED), None)
    if approval is None:
        return None
    blocking = _blocking_unfinished(course, codes=_ancestors(tasks, approval))
    if not blocking:
        return None
    return f"Care path: complete or skip {_describe(blocking)} before the plan is approved."


# --- worklists and board ---------------------------------------------------------------------------------------


def annotate_urgency(task, today, calendar):
    """Set ``days_late`` (working days past due, >0 overdue) and ``urgency`` on the task; return it."""
    if task.due_date is None:
        task.days_late = None
    elif task.due_date < today:
        task.days_late = calendar.working_days_between(task.due_date, today)
    else:
        task.days_late = -calendar.working_days_between(today, task.due_date)
    if task.status == TaskStatus.ON_HOLD:
        task.urgency = "on_hold"
    elif task.due_date is None or task.due_date > today:
        task.urgency = "upcoming"
    elif task.due_date == today:
        task.urgency = "due_today"
    else:
        task.urgency = "overdue"
    return task


def _urgency_key(task):
    return (task.due_date or dt.date.max, not task.blocks_treatment, task.path.started_on, task.order, task.pk)


def worklist(user=None, role=None, today=None):
    """Open and held tasks of ``role`` (or every role of ``user``), in sections overdue / due today / upcoming /
    on hold, most urgent first (earliest due date, so most working days late first; blocking tasks first)."""
    today = today or timezone.localdate()
    calendar = ClinicCalendar()
    roles = [role] if role else sorted(user_roles(user)) if user else []
    mine = Q(role__in=roles)
    if user is not None:
        mine = (mine & (Q(assignee__isnull=True) | Q(assignee=user))) | Q(assignee=user)
    qs = (
        CareTask.objects.active()
        .filter(mine, status__in=LIVE, path__voided_at__isnull=True, path__course__voided_at__isnull=True)
        .select_related("path__course__patient", "assignee")
    )
    tasks = sorted((annotate_urgency(t, today, calendar) for t in qs.distinct()), key=_urgency_key)
    sections = OrderedDict((k, []) for k in ("overdue", "due_today", "upcoming", "on_hold"))
    for task in tasks:
        sections[task.urgency].append(task)
    return sections


def current_task(tasks):
    """The path's position: the first unfinished task (open before pending), or None when finished."""
    live = [t for t in tasks if t.status in LIVE]
    if live:
        return min(live, key=lambda t: t.order)
    pending = [t for t in tasks if t.status == TaskStatus.PENDING]
    return min(pending, key=lambda t: t.order) if pending else None


BOARD_DONE = "finished"


def board(today=None):
    """Every active path's position: ``{"columns": [(code, name, [card, ...]), ...], "today": today}``.

    Columns follow the step order across templates; a card is the path's first open step (several open steps in
    parallel show in the first one's column, the others listed on the card)."""
    today = today or timezone.localdate()
    calendar = ClinicCalendar()
    paths = (
        CarePath.objects.active()
        .filter(status=CarePathStatus.ACTIVE, course__voided_at__isnull=True)
        .select_related("course__patient")
        .prefetch_related("tasks")
    )
    columns = OrderedDict()
    for template in CarePathTemplate.objects.order_by("priority", "pk").prefetch_related("steps"):
        for step in template.steps.all():
            columns.setdefault(step.code, [step.name, step.order, []])
    cards = []
    for path in paths:
        tasks = [t for t in path.tasks.all() if t.voided_at is None]
        current = current_task(tasks)
        if current is None:
            continue
        annotate_urgency(current, today, calendar)
        parallel = [t for t in tasks if t.status in LIVE and t.pk != current.pk]
        card = {"path": path, "course": path.course, "patient": path.course.patient, "task": current, "parallel": parallel,
                "blocked": any(t.blocks_treatment and t.status in LIVE for t in tasks)}
        cards.append(card)
        columns.setdefault(current.code, [current.name, current.order, []])[2].append(card)
    ordered = sorted(columns.items(), key=lambda kv: kv[1][1])
    result = []
    for code, (name, _order, col_cards) in ordered:
        col_cards.sort(key=lambda c: (c["task"].due_date or dt.date.max, c["patient"].family_name))
        result.append({"code": code, "name": name, "cards": col_cards})
    return {"today": today, "columns": result, "count": len(cards),
            "overdue": sum(c["task"].urgency == "overdue" for c in cards)}


# --- timing ----------------------------------------------------------------------------------------------------

INTERVALS = (
    ("consult_to_sim", "consult", "simulation"),
    ("sim_to_plan_approval", "simulation", "plan_approval"),
    ("sim_to_first_fraction", "simulation", "first_fraction"),
)


def course_timing(path, calendar=None):
    """One course's pathway timing: milestone dates, the three intervals (working and calendar days), on-time."""
    calendar = calendar or ClinicCalendar()
    tasks = [t for t in path.tasks.all() if t.voided_at is None]
    done = {t.code: t.completed_on for t in tasks if t.status == TaskStatus.DONE and t.completed_on}
    row = {"consult_on": done.get("consult"), "sim_on": done.get("simulation"), "plan_approved_on": done.get("plan_approval"),
           "first_fraction_on": done.get("first_fraction")}
    for name, a, b in INTERVALS:
        if done.get(a) and done.get(b):
            row[name] = calendar.working_days_between(done[a], done[b])
            row[name + "_calendar_days"] = (done[b] - done[a]).days
        else:
            row[name] = None
            row[name + "_calendar_days"] = None
    measured = [t for t in tasks if t.status == TaskStatus.DONE and t.due_date and t.completed_on]
    on_time = [t for t in measured if t.completed_on <= t.due_date]
    row["tasks_measured"] = len(measured)
    row["tasks_on_time"] = len(on_time)
    row["on_time_rate"] = len(on_time) / len(measured) if measured else None
    row["steps_on_time"] = {t.code: t.completed_on <= t.due_date for t in measured}
    return row


def carepath_timing_frame(paths=None, *, clinic=None, calendar=None):
    """Pathway timing, one row per course (pure: reads the paths given, or every live path; writes nothing).

    Columns: clinic, course_id, template, intent, technique, month (of simulation, else of path start),
    consult_on, sim_on, plan_approved_on, first_fraction_on, consult_to_sim, sim_to_plan_approval,
    sim_to_first_fraction (working days), the same with ``_calendar_days``, tasks_measured, tasks_on_time,
    on_time_rate, and ``on_time__<step>`` (True/False/NaN) per step. No patient identifiers.
    """
    import pandas as pd

    calendar = calendar or ClinicCalendar()
    clinic = clinic or getattr(settings, "CLINIC_NAME", "RadPath clinic")
    if paths is None:
        paths = CarePath.objects.active().filter(course__voided_at__isnull=True)
    if hasattr(paths, "select_related"):
        paths = paths.select_related("course").prefetch_related("tasks")
    rows = []
    for path in paths:
        timing = course_timing(path, calendar)
        steps = timing.pop("steps_on_time")
        month_from = timing["sim_on"] or path.started_on
        row = {"clinic": clinic, "course_id": path.course_id, "template": path.template_code, "intent": path.course.intent,
               "technique": path.course.technique, "month": f"{month_from:%Y-%m}"}
        row.update(timing)
        row.update({f"on_time__{code}": ok for code, ok in steps.items()})
        rows.append(row)
    columns = ["clinic", "course_id", "template", "intent", "technique", "month", "consult_on", "sim_on", "plan_approved_on",
               "first_fraction_on"] + [n for n, _, _ in INTERVALS] + [n + "_calendar_days" for n, _, _ in INTERVALS] + [
               "tasks_measured", "tasks_on_time", "on_time_rate"]
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame.columns:
            frame[col] = pd.Series(dtype="object")
    extra = sorted(c for c in frame.columns if c.startswith("on_time__"))
    frame = frame[columns + extra]
    for name, _, _ in INTERVALS:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("Float64")
        frame[name + "_calendar_days"] = pd.to_numeric(frame[name + "_calendar_days"], errors="coerce").astype("Float64")
    frame["on_time_rate"] = pd.to_numeric(frame["on_time_rate"], errors="coerce").astype("Float64")
    return frame.sort_values(["month", "course_id"]).reset_index(drop=True)


def timing_summary(frame):
    """Per clinic and month: courses, and for each interval the count, median and 90th percentile (working days);
    the on-time rate over every measured task. One grouped aggregation (no Python loop over months)."""
    import pandas as pd

    if not len(frame):
        return pd.DataFrame()
    values = frame[["clinic", "month"]].copy()
    for name, _, _ in INTERVALS:
        values[name] = frame[name].astype("float64")
    values["tasks_on_time"] = frame["tasks_on_time"].astype("float64")
    values["tasks_measured"] = frame["tasks_measured"].astype("float64")
    grouped = values.groupby(["clinic", "month"], sort=True)
    out = grouped.size().rename("courses").to_frame()
    for name, _, _ in INTERVALS:
        out[f"{name}_n"] = grouped[name].count()
        out[f"{name}_median"] = grouped[name].median()
        out[f"{name}_p90"] = grouped[name].quantile(0.9)
    measured = grouped["tasks_measured"].sum()
    out["on_time_rate"] = (grouped["tasks_on_time"].sum() / measured).where(measured > 0)
    out = out.reset_index()
    out = out.astype(object).where(out.notna(), None)
    for col in ["courses"] + [f"{n}_n" for n, _, _ in INTERVALS]:
        out[col] = out[col].astype(int)
    return out


def step_on_time_rates(frame):
    """On-time rate per step code over the frame: {code: (on_time, measured, rate)}."""
    rates = {}
    for col in [c for c in frame.columns if c.startswith("on_time__")]:
        values = frame[col].dropna()
        if len(values):
            rates[col[len("on_time__"):]] = (int(values.astype(bool).sum()), len(values), float(values.astype(bool).mean()))
    return rates


def timing_chart_png(summary, months=12):
    """A small PNG: median (line) and 90th percentile (dashed) per month of the three intervals."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.8), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    data = summary.tail(months) if len(summary) else summary
    labels = {"consult_to_sim": "Consult to sim", "sim_to_plan_approval": "Sim to approval", "sim_to_first_fraction": "Sim to 1st fraction"}
    colours = {"consult_to_sim": "#6b4fbb", "sim_to_plan_approval": "#0b5cad", "sim_to_first_fraction": "#1a7f37"}
    x = list(range(len(data)))
    for name, label in labels.items():
        if len(data):
            ax.plot(x, data[f"{name}_median"].astype(float), marker="o", color=colours[name], label=f"{label} (median)")
            ax.plot(x, data[f"{name}_p90"].astype(float), linestyle="--", color=colours[name], alpha=0.6)
    ax.set_xticks(x)
    ax.set_xticklabels(list(data["month"]) if len(data) else [], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("Working days", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    ax.set_title("Pathway timing per month (dashed: 90th percentile)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --- replay (historical data, demo) ---------------------------------------------------------------------------


def replay_path(path, *, started_on, completions, users, today=None, actor=None):
    """Rebuild a path's tasks from dated facts: reopen from ``started_on`` and complete, in step order, each task
    whose code is in ``completions`` ({code: date}) on that date (not before it opened, never after ``today``)
    by ``users[task.role]``. Used to load historical pathways (the demo); every change is in the history."""
    today = today or timezone.localdate()
    with transaction.atomic():
        path.started_on = started_on
        path.status = CarePathStatus.ACTIVE
        path._history_user = actor
        path.save(update_fields=["started_on", "status", "updated_at"])
        for task in path.tasks.active():
            task.status = TaskStatus.PENDING
            task.opened_on = task.due_date = task.completed_on = task.completed_at = None
            task.completed_by = None
            task.completed_by_event = task.status_reason = ""
            task._history_user = actor
            task.save()
        calendar = ClinicCalendar()
        _open_ready(path, on=started_on, calendar=calendar)
        progressed = True
        while progressed:
            progressed = False
            for task in path.tasks.active().filter(status=TaskStatus.OPEN).order_by("order"):
                when = completions.get(task.code)
                if when is None:
                    continue
                when = max(when, task.opened_on)
                if when > today:
                    continue
                user = users.get(task.role)
                _finish(task, TaskStatus.DONE, on=when, user=user, event=task.event if task.event else "")
                _open_ready(path, on=when, user=user, calendar=calendar)
                progressed = True
    return path


# --- wiring ------------------------------------------------------------------------------------------------------

post_save.connect(_on_course_created, sender=Course, dispatch_uid="carepaths_start_on_course_created")
signals.simulation_completed.connect(_on_simulation_completed, dispatch_uid="carepaths_simulation_completed")
signals.course_cleared.connect(_on_course_cleared, dispatch_uid="carepaths_course_cleared")
signals.fraction_delivered.connect(_on_fraction_delivered, dispatch_uid="carepaths_fraction_delivered")
signals.course_completed.connect(_on_course_completed, dispatch_uid="carepaths_course_completed")
signals.course_stopped.connect(_on_course_stopped, dispatch_uid="carepaths_course_stopped")
post_migrate.connect(load_default_templates, sender=django_apps.get_app_config("workflow"), dispatch_uid="carepaths_default_templates")
gates.register_gate(carepath_gate)
gates.register_approval_gate(approval_gate)
