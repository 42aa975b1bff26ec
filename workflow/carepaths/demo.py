"""Demo extension: every seeded course's care path, dated from what happened to the course.

``seed(rng=, today=, users=, courses=)`` (``workflow.pathway.demo`` extension contract). Each course already has its path
(started when the course was created) and the pathway events completed their steps; here each path is replayed from
the course's real dates (``carepaths.replay_path``) with the manual steps (consult, contouring, planning, physics
check, reviews, summaries) done at plausible times between them, mostly on time and some late. Courses before
treatment stop at different steps (some overdue), so the worklists and the board have patients at every step.
"""

import datetime as dt
from collections import Counter

from django.utils import timezone

from . import services as carepaths
from ..pathway.calendar import ClinicCalendar
from ..pathway.models import AppointmentStatus, CourseStatus
from .models import CarePath, TaskStatus


def _path(course):
    return CarePath.objects.filter(course=course, voided_at__isnull=True).first()


def replay_path(course, *, started_on, completions, users, today):
    """``workflow.pathway.demo.DEMO_PATH_STEPS`` hook: date the course's care path while its story is seeded (started at the
    consult, each step done on its day, events included)."""
    path = _path(course)
    if path is not None:
        carepaths.replay_path(path, started_on=started_on, completions=completions, users=users, today=today)


def complete_steps(course, completions, *, users, today):
    """``workflow.pathway.demo.DEMO_PATH_STEPS`` hook: complete the open manual steps in ``completions`` ({code: date}) that
    are due by today, in order."""
    path = _path(course)
    if path is None:
        return
    for _ in range(len(completions) + 1):
        progressed = False
        for task in path.tasks.active().filter(status=TaskStatus.OPEN).order_by("order"):
            when = completions.get(task.code)
            if when is None or when > today:
                continue
            carepaths.complete_task(task, users[task.role], on=max(when, task.opened_on or when))
            progressed = True
        if not progressed:
            break


def _wd(calendar, day, n):
    return calendar.add_working_days(day, n) if n >= 0 else _back(calendar, day, -n)


def _back(calendar, day, n):
    for _ in range(n):
        day -= dt.timedelta(days=1)
        while not calendar.is_open(day):
            day -= dt.timedelta(days=1)
    return day


def _facts(course):
    sim = course.simulations.filter(status=AppointmentStatus.DELIVERED, voided_at__isnull=True).order_by("starts_at").first()
    first = course.fractions.filter(status=AppointmentStatus.DELIVERED).order_by("starts_at").first()
    return {
        "sim": timezone.localtime(sim.starts_at).date() if sim else None,
        "approved": timezone.localtime(course.plan_approved_at).date() if course.plan_approved_at else None,
        "first": timezone.localtime(first.starts_at).date() if first else None,
        "completed": course.completed_on,
    }


def _chain(rng, calendar, start, codes, limit, late_every=4):
    """Dates for ``codes`` done one after another from ``start``, each 0-2 working days later (sometimes 3-4: late),
    never after ``limit``."""
    out, day = {}, start
    for code in codes:
        step = rng.randint(3, 4) if rng.random() < 1 / late_every else rng.randint(0, 2)
        day = _wd(calendar, day, step)
        if limit is not None and day > limit:
            day = limit
        out[code] = day
    return out


PRE_TREATMENT = ["consult", "or_booking", "simulation", "prior_dose_review", "contouring", "planning", "physics_check", "plan_approval"]
PLANNED_FRONTIERS = ["consult", "simulation"]
SIMULATED_FRONTIERS = ["physics_check", "planning", "plan_approval", "contouring", "prior_dose_review"]


def plan_completions(entry, *, rng, today, calendar, codes, frontier=None, overdue=False, after_end=None):
    """(started_on, {code: date}) for one seeded course; see the module docstring.

    Courses on or past treatment are dated from their facts. A course before treatment stops at ``frontier`` (that
    step stays open); ``overdue`` makes the steps before it quick so the frontier opened long enough ago to be late.
    """
    course = entry["course"]
    facts = _facts(course)
    phase = course.status
    sim = min(facts["sim"], today) if facts["sim"] else None
    anchor = sim or facts["first"] or facts["approved"]
    if anchor:
        consult = _back(calendar, anchor, rng.randint(2, 7))
    else:
        consult = _back(calendar, today, rng.randint(6, 10) if overdue else rng.randint(0, 2))
    started_on = _back(calendar, consult, rng.randint(0, 2))
    done = {"consult": consult, "or_booking": _wd(calendar, consult, rng.randint(1, 3))}
    if sim:
        done["simulation"] = sim
    pre = [c for c in PRE_TREATMENT if c in codes and c not in ("consult", "or_booking", "simulation", "plan_approval")]
    if facts["approved"]:
        done.update(_chain(rng, calendar, sim or consult, pre, facts["approved"]))
        done["or_booking"] = min(done["or_booking"], facts["approved"])
        done["plan_approval"] = facts["approved"]
    elif frontier is not None:
        order = [c for c in PRE_TREATMENT if c in codes]
        before = order[: order.index(frontier)] if frontier in order else order
        if frontier == "consult":
            started_on = consult
            done = {}
        elif frontier == "simulation":
            done = {"consult": consult}
        else:
            base = sim or consult
            chain = [c for c in pre if c in before]
            if overdue:
                done.update({c: base for c in chain})
            else:
                span = max(calendar.working_days_between(base, today), 0)
                done.update(_chain(rng, calendar, _wd(calendar, base, max(span - len(chain), 0)), chain, today))
            done = {c: d for c, d in done.items() if c in before}
    if facts["first"]:
        done["first_fraction"] = facts["first"]
        review = _wd(calendar, facts["first"], rng.randint(3, 7))
        if review <= today and (phase != CourseStatus.ON_TREATMENT or rng.random() < 0.7):
            done["weekly_review"] = review
    if facts["completed"]:
        done["last_fraction"] = facts["completed"]
        done["weekly_review"] = min(done.get("weekly_review", facts["completed"]), facts["completed"])
        eot = _wd(calendar, facts["completed"], rng.randint(1, 7))
        if after_end != "eot_summary" and eot <= today and ((today - facts["completed"]).days > 21 or after_end):
            done["eot_summary"] = eot
            follow = _wd(calendar, eot, rng.randint(2, 12))
            if after_end != "first_followup" and follow <= today and (today - facts["completed"]).days > 42:
                done["first_followup"] = follow
    return started_on, {k: v for k, v in done.items() if k in codes and v <= today}


def seed(*, rng, today, users, courses):
    """Replay each seeded course's care path; return counts (paths, open tasks per step, overdue)."""
    calendar = ClinicCalendar()
    actor = users.get("admin")
    seen = Counter()
    recent = sorted((e for e in courses if e["course"].status == CourseStatus.COMPLETED and e["course"].completed_on),
                    key=lambda e: e["course"].completed_on, reverse=True)
    after_end = {recent[i]["course"].pk: step for i, step in enumerate(["eot_summary", "first_followup", "eot_summary"][: len(recent)])}
    for entry in courses:
        course = entry["course"]
        path = CarePath.objects.filter(course=course).first() or carepaths.instantiate_path(course, user=actor)
        if path is None:
            continue
        codes = [c for c in path.tasks.order_by("order").values_list("code", flat=True)]
        frontier, overdue = None, False
        if course.status in (CourseStatus.PLANNED, CourseStatus.SIMULATED) and not course.plan_approved:
            has_sim = course.simulations.filter(status=AppointmentStatus.DELIVERED).exists()
            cycle = [c for c in (SIMULATED_FRONTIERS if has_sim else PLANNED_FRONTIERS) if c in codes]
            k = seen[has_sim]
            seen[has_sim] += 1
            frontier, overdue = cycle[k % len(cycle)], (k // len(cycle) + k) % 2 == 0
        started_on, done = plan_completions(entry, rng=rng, today=today, calendar=calendar, codes=set(codes), frontier=frontier,
                                             overdue=overdue, after_end=after_end.get(course.pk))
        carepaths.replay_path(path, started_on=started_on, completions=done, users=users, today=today, actor=actor)
        if course.status == CourseStatus.STOPPED:
            carepaths.stop_path(course, user=users.get("oncologist"))
    ids = [e["course"].pk for e in courses]
    open_tasks = list(carepaths.CareTask.objects.active().filter(status__in=carepaths.LIVE, path__course_id__in=ids))
    return {
        "paths": CarePath.objects.filter(course_id__in=ids).count(),
        "open_by_step": dict(Counter(t.code for t in open_tasks)),
        "overdue": sum(1 for t in open_tasks if t.due_date and t.due_date < today),
        "done": carepaths.CareTask.objects.filter(status=TaskStatus.DONE, path__course_id__in=ids).count(),
    }
