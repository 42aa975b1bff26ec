"""Plan lifecycle in-process: create with site defaults, queue, run, done; validation; cancel; reaper; retry."""

import datetime as dt

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from planning import services
from planning.models import Plan, PlanStatus, StructureDose
from workflow.errors import ConflictError

from .conftest import FAST


def run_db_worker(monkeypatch):
    """One ``db_worker --batch`` pass in-process (its connection recycling would close the test transaction)."""
    from django_tasks_db.management.commands import db_worker

    monkeypatch.setattr(db_worker, "close_old_connections", lambda: None)
    call_command("db_worker", "--batch", "--no-reload", "--no-startup-delay", "--interval", "0", verbosity=0)


def statuses(plan):
    return [h.status for h in plan.history.order_by("history_date", "history_id")]


def test_site_defaults_and_validation(cshape_course, physicist):
    plan = services.create_plan(cshape_course, user=physicist, **FAST)
    assert plan.version == 1 and plan.status == PlanStatus.DRAFT and plan.phantom == "cshape"
    assert plan.prescription_gy == 50.0 and plan.fractions == 25
    goals = {(g["structure"], g["metric"]): g["value"] for g in plan.goals}
    assert goals[("PTV", "D95")] == 50.0 and goals[("Core", "D10")] == 25.0 and goals[("PTV", "D10")] == 55.0
    assert plan.objectives[0] == {"kind": "squared_deviation", "structure": "PTV", "dref": 50.0, "weight": 100.0}
    assert plan.objectives[1] == {"kind": "squared_overdose", "structure": "BODY", "dref": 52.5, "weight": 30.0}
    assert {"kind": "max_dvh", "structure": "Core", "dref": 22.5, "volume_pct": 10.0, "weight": 10.0} in plan.objectives
    with pytest.raises(ValidationError) as e:
        services.create_plan(cshape_course, user=physicist, goals=[{"structure": "Liver", "metric": "Dmean", "comparison": "<=", "value": 3}], **FAST)
    assert "goals" in e.value.error_dict and "Liver" in str(e.value)
    with pytest.raises(ValidationError) as e:
        services.create_plan(cshape_course, user=physicist, goals=[{"structure": "Core", "metric": "Q7", "comparison": "<=", "value": 3}], **FAST)
    assert "unknown metric" in str(e.value)
    with pytest.raises(ValidationError) as e:
        services.create_plan(cshape_course, user=physicist, objectives=[{"kind": "max_dvh", "structure": "Core", "dref": "x"}], **FAST)
    assert "objectives" in e.value.error_dict
    with pytest.raises(ValidationError):
        services.create_plan(cshape_course, user=physicist, objectives=[{"kind": "teleport", "structure": "Core", "dref": 1}], **FAST)
    with pytest.raises(ValidationError) as e:
        services.create_plan(cshape_course, user=physicist, gantry_angles=[0, 90], beam_weights=[1], **FAST)
    assert "beam_weights" in e.value.error_dict
    assert Plan.objects.count() == 1


def test_only_planners_create_and_start(cshape_course, users):
    for role in ("oncologist", "therapist", "scheduler", "researcher"):
        with pytest.raises(PermissionDenied):
            services.create_plan(cshape_course, user=users[role], **FAST)
    plan = services.create_plan(cshape_course, user=users["dosimetrist"], **FAST)
    with pytest.raises(PermissionDenied):
        services.start_plan(plan, user=users["oncologist"])


def test_queued_running_done_immediate(cshape_course, physicist, immediate_tasks):
    plan = services.create_plan(cshape_course, user=physicist, **FAST)
    plan = services.start_plan(plan, user=physicist)
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    assert statuses(plan) == ["draft", "queued", "running", "done"]
    assert plan.attempts == 1 and plan.progress_pct == 100.0 and 0 < plan.iteration <= FAST["max_iterations"]
    assert plan.task_id and plan.worker and plan.finished_at >= plan.started_at
    # result: dose grid + fluences as a file, DVH and metrics rows in the database
    data = np.load(services.media_path(plan.result_file))
    assert data["dose"].shape == (41, 31, 16) and data["weights"].size == data["beam_of"].size > 0
    names = set(StructureDose.objects.filter(plan=plan).values_list("name", flat=True))
    assert names == {"BODY", "PTV", "Core"}
    ptv = plan.structure_doses.get(name="PTV")
    assert ptv.metrics["D95"] == pytest.approx(50.0, abs=0.05)  # normalised to Rx at D95
    assert ptv.dvh_volume_pct[0] == 100.0 and len(ptv.dvh_dose_gy) == len(ptv.dvh_volume_pct)
    goal = {g["goal"]: g for g in plan.goal_results}
    assert goal["PTV D95 >= 50 Gy"]["passed"]
    assert len(plan.beam_summary) == 5 and plan.total_mu > 0
    assert all(b["mu"] > 0 and b["segments"] > 0 for b in plan.beam_summary)


def test_forward_plan(cshape_course, physicist, immediate_tasks):
    plan = services.create_plan(cshape_course, user=physicist, method="forward", gantry_angles=[0, 120, 240], beam_weights=[1, 1, 2], **FAST)
    plan = services.start_plan(plan, user=physicist)
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    assert plan.structure_doses.get(name="PTV").metrics["D95"] == pytest.approx(50.0, abs=0.05)
    assert [b["gantry_deg"] for b in plan.beam_summary] == [0.0, 120.0, 240.0]


def test_db_backend_queue_then_worker(cshape_course, physicist, db_tasks, monkeypatch):
    """The default backend: start writes the plan queued + a task row; a db_worker pass runs it to done."""
    plan = services.start_plan(services.create_plan(cshape_course, user=physicist, **FAST), user=physicist)
    assert plan.status == PlanStatus.QUEUED
    task = DBTaskResult.objects.get(pk=plan.task_id)
    assert task.status == "READY" and task.args_kwargs["args"] == [plan.pk, 1]
    assert services.plan_status(plan)["status"] == "queued"
    run_db_worker(monkeypatch)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    assert DBTaskResult.objects.get(pk=plan.task_id).status == "SUCCESSFUL"
    assert statuses(plan) == ["draft", "queued", "running", "done"]


def test_cancel_queued_and_stale_message_is_ignored(cshape_course, physicist, db_tasks, monkeypatch):
    plan = services.start_plan(services.create_plan(cshape_course, user=physicist, **FAST), user=physicist)
    plan = services.cancel_plan(plan, user=physicist)
    assert plan.status == PlanStatus.FAILED and plan.failure_reason == "Cancelled by physicist before it started."
    # the queued message still runs later: it sees the plan is no longer queued and does nothing
    run_db_worker(monkeypatch)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.FAILED and not plan.result_file
    with pytest.raises(ConflictError):
        services.cancel_plan(plan, user=physicist)
    # retryable: attempt 2 runs; the attempt-1 message would be ignored
    plan = services.retry_plan(plan, user=physicist)
    assert plan.status == PlanStatus.QUEUED and plan.attempts == 2 and plan.failure_reason == ""
    assert services.execute_plan(plan.pk, 1)["skipped"]
    run_db_worker(monkeypatch)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.DONE


def test_reaper_marks_stale_running_plan_failed(cshape_course, physicist, db_tasks, settings):
    plan = services.start_plan(services.create_plan(cshape_course, user=physicist, **FAST), user=physicist)
    old = timezone.now() - dt.timedelta(minutes=5)
    Plan.objects.filter(pk=plan.pk).update(status=PlanStatus.RUNNING, started_at=old, heartbeat_at=old, worker="host:123")
    fresh = services.create_plan(cshape_course, user=physicist, **FAST)
    Plan.objects.filter(pk=fresh.pk).update(status=PlanStatus.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now())
    settings.PLANNING_STALE_SECONDS = 60
    status = services.plan_status(plan)  # a status read runs the reaper
    assert status["status"] == "failed" and "stopped responding" in status["failure_reason"] and "host:123" in status["failure_reason"]
    assert Plan.objects.get(pk=fresh.pk).status == PlanStatus.RUNNING
    # the management command does the same
    Plan.objects.filter(pk=fresh.pk).update(heartbeat_at=old)
    call_command("reap_stale_plans", "--stale-after", "30", verbosity=0)
    assert Plan.objects.get(pk=fresh.pk).status == PlanStatus.FAILED
    plan = services.retry_plan(plan, user=physicist)
    assert plan.status == PlanStatus.QUEUED and plan.attempts == 2


def test_job_failure_is_recorded(cshape_course, physicist, immediate_tasks):
    plan = services.create_plan(cshape_course, user=physicist, **FAST)
    Plan.objects.filter(pk=plan.pk).update(objectives=[{"kind": "squared_deviation", "structure": "Nowhere", "dref": 1, "weight": 1}])
    plan = services.start_plan(plan, user=physicist)
    assert plan.status == PlanStatus.FAILED and "Nowhere" in plan.failure_reason
