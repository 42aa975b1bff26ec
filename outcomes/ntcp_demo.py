"""Demo pneumonitis that follows a dose-response (a ``workflow.pathway.demo`` extension: ``seed(rng=, today=, users=, courses=)``).

Runs after the planning extension, so every demo course has its approved plan and stored DVH. For each thoracic
course (the QUANTEC model's sites) that finished radiotherapy at least 40 days ago and has no pneumonitis yet, the
predicted NTCP of its plan under the QUANTEC mean-lung-dose model (:data:`DEMO_MODEL`, lungs pooled, EQD2 with
alpha/beta 3 Gy, the plan's fractions) is the probability of CTCAE Pneumonitis grade >= 2: one draw of ``rng``
per course, in course order (reproducible). A case starts 5-20 weeks after the last fraction (subacute
pneumonitis), a quarter of them worsen to grade 3 a few days later (steroids, oxygen), and most resolve within
1-3 months. Nothing else in the demo changes (survival, other side effects: their own extensions and rngs).
"""

import datetime as dt

from workflow import roles
from workflow.toxicity import services as tox
from workflow.pathway.scheduling import local_datetime
from workflow.toxicity.models import ToxicityEvent

from . import ntcp_services
from .models import Death

DEMO_MODEL = "pneumonitis_quantec_mld"
MIN_DAYS_AFTER_RT = 40


def _at(day, hour=16, minute=30):
    return local_datetime(day, dt.time(hour, minute))


def seed(*, rng, today, users, courses):
    oncologist = users[roles.ONCOLOGIST]
    model = ntcp_services.model_or_error(DEMO_MODEL)
    counts = {"courses": 0, "events": 0, "expected": 0.0}
    for entry in sorted(courses, key=lambda e: e["course"].pk):
        course = entry["course"]
        course.refresh_from_db()
        if entry.get("site") not in model.sites or course.status not in ntcp_services.FINISHED:
            continue
        plan = ntcp_services._cohort_plans(type(course).objects.filter(pk=course.pk)).get(course.pk)
        end = tox.course_end(course)
        if plan is None or end is None or end + dt.timedelta(days=MIN_DAYS_AFTER_RT) > today:
            continue
        row = next((r for r in ntcp_services.plan_ntcp(plan) if r["model_id"] == DEMO_MODEL), None)
        if row is None:
            continue
        u = rng.random()  # one draw per eligible course, whatever the outcome, so the sequence is stable
        onset = end + dt.timedelta(days=rng.randint(35, 140))
        counts["courses"] += 1
        counts["expected"] += row["ntcp"]
        if ToxicityEvent.objects.active().filter(course=course, term=model.endpoint_term).exists() or u >= row["ntcp"]:
            continue
        death = Death.objects.active().filter(patient_id=course.patient_id).values_list("date", flat=True).first()
        last = min(today - dt.timedelta(days=3), (death - dt.timedelta(days=7)) if death else today)
        onset = min(onset, last)
        if onset <= end:
            continue
        ev = tox.log_event(course, term=model.endpoint_term, grade=2, onset_date=onset, user=oncologist,
                           attribution="probable", today=today, now=_at(onset),
                           notes="Dry cough and breathlessness; ground-glass change in the high-dose region; steroids.")
        worse = onset + dt.timedelta(days=rng.randint(3, 8))
        if rng.random() < 0.25 and worse <= last:
            ev = tox.regrade(ev, grade=3, on_date=worse, user=oncologist, today=today, now=_at(worse))
        resolved = ev.grade_date + dt.timedelta(days=rng.randint(30, 90))
        if resolved <= last:
            tox.resolve(ev, resolved_date=resolved, user=oncologist, today=today)
        counts["events"] += 1
    return counts
