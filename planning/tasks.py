"""Background jobs (Django's Tasks API, django-tasks backport).

The same task runs on the embedded database queue (``TASKS_BACKEND=db``: django-tasks-db, ``manage.py db_worker``)
or on RQ (``TASKS_BACKEND=rq``: django-tasks-rq, ``manage.py rqworker --job-class django_tasks_rq.Job``); the
plan row, not the queue, is the source of truth for status, progress, heartbeat and cancellation, so the
behaviour does not depend on the backend.
"""

from django_tasks import task


@task()
def run_plan_task(plan_id: int, attempt: int) -> dict:
    """Compute plan ``plan_id`` (attempt ``attempt``); a stale message for an older attempt does nothing."""
    from .services import execute_plan

    return execute_plan(plan_id, attempt)


@task()
def run_dose_check_task(check_id: int) -> dict:
    """Recalculate an imported plan's RT Plan and compare with its RT Dose (``planning.recalculation``)."""
    from .recalculation import execute_dose_check

    return execute_dose_check(check_id)
