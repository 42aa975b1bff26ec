"""Plan jobs on real worker processes: two workers run two plans concurrently, a running job is cancelled, a
worker killed mid-job leaves the plan failed (heartbeat reaper) and the retry completes, and a surviving
``db_worker`` fails the killed worker's plan and its task-table row by itself.

Workers are ``manage.py db_worker`` subprocesses on the test database (the embedded default); with
RADPATH_CI_REDIS=1 (CI's second pass) the same tests run on RQ workers (``manage.py rqworker --job-class
django_tasks_rq.Job``) on the Redis at 127.0.0.1:6379 (or REDIS_URL).
"""

import os
import signal
import time

from planning import services
from planning.models import Plan, PlanStatus

from .conftest import FAST, wait_for


def _status(plan):
    return Plan.objects.get(pk=plan.pk)


def _done(plan, workers):
    def check():
        p = _status(plan)
        if p.status == PlanStatus.FAILED:
            raise AssertionError(f"plan failed: {p.failure_reason}\n{workers.logs()}")
        return p.status == PlanStatus.DONE

    return check


def test_two_workers_run_two_plans_concurrently(workers, cshape_course, patient, physicist):
    from tests.conftest import make_course

    other = make_course(patient, cshape_course.diagnosis, treated_site="Second site")
    workers.start(2)
    # A worker still importing Django when both jobs are queued would leave both to the other one.
    workers.wait_ready()
    inputs = dict(FAST, max_iterations=60)
    a = services.start_plan(services.create_plan(cshape_course, user=physicist, **inputs), user=physicist)
    b = services.start_plan(services.create_plan(other, user=physicist, **inputs), user=physicist)
    assert a.status == b.status == PlanStatus.QUEUED and a.task_id and b.task_id
    seen_progress = set()

    def both_done():
        pa, pb = _status(a), _status(b)
        for p in (pa, pb):
            if p.status == PlanStatus.FAILED:
                raise AssertionError(f"{p.failure_reason}\n{workers.logs()}")
            if p.status == PlanStatus.RUNNING and p.iteration:
                seen_progress.add((p.pk, p.iteration))
        return pa.status == pb.status == PlanStatus.DONE

    wait_for(both_done, timeout=120, message="both plans done")
    pa, pb = _status(a), _status(b)
    assert pa.worker and pb.worker and pa.worker != pb.worker, "each plan ran on its own worker process"
    assert pa.started_at < pb.finished_at and pb.started_at < pa.finished_at, "the two jobs overlapped in time"
    assert seen_progress, "progress (iteration, objective) was reported while running"
    assert pa.structure_doses.count() == 3 and pb.total_mu > 0


def test_cancel_running_job(workers, cshape_course, physicist):
    workers.start(1)
    plan = services.start_plan(services.create_plan(cshape_course, user=physicist, **dict(FAST, max_iterations=3000)), user=physicist)
    wait_for(lambda: _status(plan).iteration >= 2, timeout=60, message="the optimisation to start")
    services.cancel_plan(plan, user=physicist)
    wait_for(lambda: _status(plan).status == PlanStatus.FAILED, timeout=30, message="cancellation")
    p = _status(plan)
    assert p.failure_reason == "Cancelled by physicist while running." and not p.result_file
    assert p.iteration < 3000


def test_worker_killed_mid_job_fails_then_retry_succeeds(workers, cshape_course, physicist, settings):
    settings.PLANNING_STALE_SECONDS = 2.0
    (first,) = workers.start(1)
    plan = services.start_plan(services.create_plan(cshape_course, user=physicist, **dict(FAST, max_iterations=100)), user=physicist)
    wait_for(lambda: _status(plan).status == PlanStatus.RUNNING and _status(plan).heartbeat_at, timeout=60, message="running")
    # SIGKILL the worker mid-job: its process group and the process running the job (RQ runs each job in a
    # work-horse it forks into a session of its own; for db_worker that is the worker itself)
    job_pid = int(_status(plan).worker.rsplit(":", 1)[1])
    workers.kill(first)
    try:
        os.kill(job_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p = _status(plan)
    assert p.status == PlanStatus.RUNNING, "nothing else has noticed yet"
    time.sleep(2.5)
    status = services.plan_status(p)  # reading the status runs the reaper
    assert status["status"] == "failed", status
    assert "stopped responding" in status["failure_reason"] and "retry" in status["failure_reason"]
    # the queue's own record (a django-tasks-db row, or the RQ job in CI's Redis pass) is failed with the reason
    from planning.tasks import run_plan_task

    result = run_plan_task.get_result(p.task_id)
    assert result.status.name == "FAILED", result.status
    assert status["failure_reason"] in result.errors[-1].traceback
    workers.start(1)
    plan = services.retry_plan(plan, user=physicist)
    assert plan.attempts == 2
    wait_for(_done(plan, workers), timeout=90, message="retry done")
    assert _status(plan).history.filter(status="failed").exists()


def test_a_surviving_worker_fails_the_killed_workers_plan_and_task_row(db_workers, cshape_course, physicist):
    """Issue 13: a killed worker's task row stayed RUNNING for ever. Nobody reads the plan's status here: the
    second worker's reaper (at start, then every 0.5 s; stale after 2 s without a heartbeat) does it all."""
    from django_tasks_db.models import DBTaskResult, TaskResultStatus

    from planning.tasks import run_plan_task

    db_workers.extra_env.update(RADPATH_PLAN_STALE_SECONDS="2", RADPATH_REAP_INTERVAL_SECONDS="0.5")
    (first,) = db_workers.start(1)
    plan = services.start_plan(services.create_plan(cshape_course, user=physicist, **dict(FAST, max_iterations=150)), user=physicist)
    wait_for(lambda: _status(plan).status == PlanStatus.RUNNING and _status(plan).heartbeat_at, timeout=60, message="running")
    row = DBTaskResult.objects.get(pk=plan.task_id)
    assert row.status == TaskResultStatus.RUNNING
    db_workers.kill(first)  # SIGKILL: no chance to record anything
    assert DBTaskResult.objects.get(pk=row.pk).status == TaskResultStatus.RUNNING
    assert _status(plan).status == PlanStatus.RUNNING

    db_workers.start(1)
    wait_for(lambda: DBTaskResult.objects.get(pk=row.pk).status == TaskResultStatus.FAILED, timeout=60,
             message=f"the task row failed by the surviving worker\n{db_workers.logs()}")
    p = _status(plan)
    assert p.status == PlanStatus.FAILED and p.progress_message == "Worker lost"
    assert p.failure_reason.startswith("Worker lost: the worker ") and "retry the plan" in p.failure_reason
    row = DBTaskResult.objects.get(pk=row.pk)
    assert row.exception_class_path == "planning.services.WorkerLost" and row.traceback == p.failure_reason
    assert row.finished_at is not None
    result = run_plan_task.get_result(plan.task_id)
    assert result.status.name == "FAILED" and result.errors[0].exception_class_path == "planning.services.WorkerLost"

    plan = services.retry_plan(plan, user=physicist)  # the surviving worker runs the retry
    assert plan.attempts == 2 and plan.task_id != str(row.pk)
    wait_for(_done(plan, db_workers), timeout=120, message="retry done")
    # the worker records the task's success just after the job marked the plan done
    wait_for(lambda: DBTaskResult.objects.get(pk=plan.task_id).status == TaskResultStatus.SUCCESSFUL, timeout=30,
             message="the retry's task row successful")
