"""The plan job's lifecycle: queue, start, cancel, retry, heartbeat and the reaper of lost workers.

The optimisation runs as a background job (``planning.tasks.run_plan_task``, Django's Tasks API). The job marks
the plan running, beats a heartbeat on the plan row, reports (iteration, objective) progress and polls for
cancellation; ``reap_stale_plans`` (run on every plan-status read, by any running ``db_worker`` and by
``manage.py reap_stale_plans``) marks running plans whose heartbeat stopped as failed with a reason, and fails
the queue's own record of the job (database row or RQ job). A failed plan can be retried: it is queued again as
attempt n + 1, and a late write from an older attempt is ignored.
"""

import datetime as dt
import logging
import os
import socket
import threading
import time
import traceback
import uuid

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from workflow.errors import ConflictError, RuleViolation
from workflow.models import CourseStatus

from .geometry import load_geometry
from .models import (
    ACTIVE_STATUSES,
    Plan,
    PlanMethod,
    PlanStatus,
)
from .plans import clear_result, require_permission
from .results import store_result

log = logging.getLogger(__name__)


def heartbeat_seconds():
    return float(getattr(settings, "PLANNING_HEARTBEAT_SECONDS", os.environ.get("RADPATH_PLAN_HEARTBEAT_SECONDS", 5)))


def stale_after_seconds():
    return float(getattr(settings, "PLANNING_STALE_SECONDS", os.environ.get("RADPATH_PLAN_STALE_SECONDS", 60)))


def _enqueue(plan):
    from . import tasks

    try:
        result = tasks.run_plan_task.enqueue(plan.pk, plan.attempts)
    except Exception as exc:  # the queue (Redis, database) is unreachable: say so, leave the plan retryable
        log.exception("could not enqueue plan %s", plan.pk)
        Plan.objects.filter(pk=plan.pk, status=PlanStatus.QUEUED, attempts=plan.attempts).update(
            status=PlanStatus.FAILED, failure_reason=f"Could not queue the job: {exc}", finished_at=timezone.now())
        plan.refresh_from_db()
        return plan
    Plan.objects.filter(pk=plan.pk, attempts=plan.attempts).update(task_id=str(result.id))
    plan.refresh_from_db()
    return plan


def _queue(plan, user, allowed):
    require_permission(user, "planning.run_plan")
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.voided_at:
            raise RuleViolation("The plan is voided.", field="status")
        if plan.status not in allowed:
            raise ConflictError(f"Plan v{plan.version} is {plan.status}; it cannot be started now.", field="status", code="bad_status")
        if plan.course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
            raise RuleViolation(f"The course is {plan.course.get_status_display().lower()}.", field="course")
        clear_result(plan)
        plan.status = PlanStatus.QUEUED
        plan.attempts += 1
        plan.queued_at = timezone.now()
        plan.started_at = plan.finished_at = plan.heartbeat_at = None
        plan.cancel_requested = False
        plan.cancel_requested_by = ""
        plan.failure_reason = ""
        plan.worker = ""
        plan.task_id = ""
        plan.progress_message = "Waiting for a worker"
        plan._history_user = user
        plan.save()
    return _enqueue(plan)


def start_plan(plan, *, user):
    """Queue a draft plan's optimisation as a background job."""
    return _queue(plan, user, (PlanStatus.DRAFT,))


def retry_plan(plan, *, user):
    """Queue a failed plan again (attempt n + 1)."""
    return _queue(plan, user, (PlanStatus.FAILED,))


def cancel_plan(plan, *, user):
    """Cancel a queued plan at once, or ask a running job to stop (it ends failed, "Cancelled ...", retryable)."""
    require_permission(user, "planning.run_plan")
    who = user.get_username() if user else "system"
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.status == PlanStatus.QUEUED:
            plan.status = PlanStatus.FAILED
            plan.failure_reason = f"Cancelled by {who} before it started."
            plan.finished_at = timezone.now()
            plan.progress_message = "Cancelled"
            plan._history_user = user
            plan.save()
        elif plan.status == PlanStatus.RUNNING:
            Plan.objects.filter(pk=plan.pk).update(cancel_requested=True, cancel_requested_by=who, progress_message=f"Cancelling (requested by {who})")
            plan.refresh_from_db()
        else:
            raise ConflictError(f"Plan v{plan.version} is {plan.status}; only a queued or running plan can be cancelled.", field="status")
    return plan


WORKER_LOST = "Worker lost"
PLAN_TASK_PATH = "planning.tasks.run_plan_task"


def reap_stale_plans(*, now=None, stale_after=None):
    """Mark running plans whose heartbeat is older than ``stale_after`` seconds failed (worker died); returns them.

    The queue's own record of such a job (a django-tasks-db row left RUNNING by the killed worker) is marked failed
    with the same reason (``reap_lost_task_rows``), so neither the plan nor the task table shows it running.
    """
    now = now or timezone.now()
    stale_after = stale_after_seconds() if stale_after is None else stale_after
    cutoff = now - timezone.timedelta(seconds=stale_after)
    stale = Plan.objects.filter(status=PlanStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff))
    reaped = []
    for pk in list(stale.values_list("pk", flat=True)):
        with transaction.atomic():
            plan = Plan.objects.select_for_update().get(pk=pk)
            beat = plan.heartbeat_at or plan.started_at
            if plan.status != PlanStatus.RUNNING or (beat and beat >= cutoff):
                continue
            plan.status = PlanStatus.FAILED
            plan.failure_reason = (
                f"{WORKER_LOST}: the worker{(' ' + plan.worker) if plan.worker else ''} stopped responding: no heartbeat since "
                f"{timezone.localtime(beat):%Y-%m-%d %H:%M:%S} (limit {stale_after:g} s). The job was lost; retry the plan."
            )
            plan.finished_at = now
            plan.progress_message = WORKER_LOST
            plan.save()
            reaped.append(plan)
    reap_lost_task_rows(now=now, stale_after=stale_after)
    reap_lost_rq_jobs(now=now, stale_after=stale_after)
    return reaped


def progress_text(plan):
    """One line for the progress bar: status, the job's message, the iteration (only when the message does not
    already name one, so it never reads "iteration 63 · iteration 63") and the objective."""
    parts = [plan.get_status_display()]
    if plan.progress_message and plan.progress_message != parts[0]:
        parts.append(plan.progress_message)
    if plan.iteration and "iteration" not in (plan.progress_message or "").lower():
        parts.append(f"iteration {plan.iteration}")
    if plan.objective_value is not None:
        parts.append(f"objective {plan.objective_value:.3f}")
    return " · ".join(parts)


def _uuid(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def reap_lost_task_rows(*, now=None, stale_after=None):
    """Mark plan-job rows of the database queue that a killed worker left RUNNING as FAILED; returns their ids.

    A row is lost when it started more than ``stale_after`` seconds ago and no plan is running it with a live
    heartbeat (the plan row, not the queue, is where a job proves it is alive). Its error is the plan's failure
    reason (``WorkerLost``), so the task table, the admin and ``TaskResult.errors`` say what happened.
    """
    if "django_tasks_db" not in settings.INSTALLED_APPS:
        return []
    from django_tasks_db.models import DBTaskResult, TaskResultStatus

    now = now or timezone.now()
    stale_after = stale_after_seconds() if stale_after is None else stale_after
    cutoff = now - timezone.timedelta(seconds=stale_after)
    rows = list(DBTaskResult.objects.filter(status=TaskResultStatus.RUNNING, task_path=PLAN_TASK_PATH, started_at__lt=cutoff)
                .values_list("id", flat=True))
    if not rows:
        return []
    alive = {_uuid(t) for t in Plan.objects.filter(status=PlanStatus.RUNNING, heartbeat_at__gte=cutoff).values_list("task_id", flat=True)}
    reasons = {_uuid(t): r for t, r in Plan.objects.exclude(task_id="").values_list("task_id", "failure_reason")}
    lost = []
    for row_id in rows:
        if row_id in alive:
            continue
        reason = reasons.get(row_id) or f"{WORKER_LOST}: the job stopped without finishing (limit {stale_after:g} s)."
        n = DBTaskResult.objects.filter(pk=row_id, status=TaskResultStatus.RUNNING).update(
            status=TaskResultStatus.FAILED, finished_at=now, return_value=None,
            exception_class_path="planning.services.WorkerLost", traceback=reason)
        if n:
            lost.append(row_id)
    if lost:
        log.warning("marked %d plan task row(s) of lost workers failed: %s", len(lost), ", ".join(map(str, lost)))
    return lost


def reap_lost_rq_jobs(*, now=None, stale_after=None):
    """The same for RQ (``TASKS_BACKEND=rq``): a plan job a killed work-horse left STARTED is failed; returns ids.

    RQ itself fails an abandoned job only when its registry entry expires (the job timeout, an hour here), so the
    task result read RUNNING until then. A job is lost when it started more than ``stale_after`` seconds ago, a plan
    ran it and no plan runs it with a live heartbeat; its failure (FailedJobRegistry, a failed Result whose text is
    the plan's failure reason) is what ``TaskResult.status`` / ``errors`` then report.
    """
    backend = str(settings.TASKS.get("default", {}).get("BACKEND", ""))
    if not backend.startswith("django_tasks_rq"):
        return []
    import django_rq
    from django_tasks_rq.backend import Job
    from rq.exceptions import NoSuchJobError
    from rq.job import JobStatus
    from rq.job_lifecycle import record_job_failure

    now = now or timezone.now()
    stale_after = stale_after_seconds() if stale_after is None else stale_after
    cutoff = now - timezone.timedelta(seconds=stale_after)
    queue = django_rq.get_queue("default")
    registry = queue.started_job_registry
    job_ids = registry.get_job_ids(cleanup=False)
    if not job_ids:
        return []
    alive = set(Plan.objects.filter(status=PlanStatus.RUNNING, heartbeat_at__gte=cutoff).values_list("task_id", flat=True))
    reasons = dict(Plan.objects.filter(task_id__in=job_ids).values_list("task_id", "failure_reason"))
    lost = []
    for job_id in job_ids:
        if job_id in alive or job_id not in reasons:
            continue
        try:
            job = Job.fetch(job_id, connection=queue.connection)
        except NoSuchJobError:
            continue
        started = job.started_at
        if started is not None and timezone.is_naive(started):
            started = timezone.make_aware(started, dt.timezone.utc)
        if job.get_status() != JobStatus.STARTED or (started is not None and started >= cutoff):
            continue
        reason = reasons[job_id] or f"{WORKER_LOST}: the job stopped without finishing (limit {stale_after:g} s)."
        with queue.connection.pipeline() as pipe:
            record_job_failure(job, reason, pipe)
            registry.remove_executions(job, pipeline=pipe)
            pipe.execute()
        lost.append(job_id)
    if lost:
        log.warning("marked %d RQ plan job(s) of lost workers failed: %s", len(lost), ", ".join(lost))
    return lost


class WorkerLost(Exception):
    """The error recorded on a task row whose worker died mid-job (never raised)."""


def plan_status(plan):
    """The progress/status payload for a progress bar; runs the reaper first so a dead job never looks alive."""
    reap_stale_plans()
    plan.refresh_from_db()
    return {
        "id": plan.pk, "version": plan.version, "status": plan.status, "status_display": plan.get_status_display(),
        "progress_pct": round(plan.progress_pct, 1), "iteration": plan.iteration, "max_iterations": plan.max_iterations,
        "objective": plan.objective_value, "message": plan.progress_message, "failure_reason": plan.failure_reason,
        "attempts": plan.attempts, "cancel_requested": plan.cancel_requested,
        "heartbeat_at": plan.heartbeat_at.isoformat() if plan.heartbeat_at else None,
        "finished": plan.status not in ACTIVE_STATUSES, "text": progress_text(plan),
    }


class _JobCancelled(Exception):
    pass


class _Job:
    """Per-run helper: throttled progress writes, a heartbeat thread, cancellation polling."""

    def __init__(self, plan_id, attempt):
        self.plan_id, self.attempt = plan_id, attempt
        self.cancel = threading.Event()
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._last = 0.0
        self.thread = None

    def mine(self):
        return Plan.objects.filter(pk=self.plan_id, attempts=self.attempt, status=PlanStatus.RUNNING)

    def beat(self):
        n = self.mine().update(heartbeat_at=timezone.now())
        if n == 0:
            self.lost.set()
            self.cancel.set()
            return
        if Plan.objects.filter(pk=self.plan_id, cancel_requested=True).exists():
            self.cancel.set()

    def start_heartbeat(self):
        # A job run inline inside a transaction (tests on the immediate backend) beats from the main thread only.
        if connection.in_atomic_block:
            return

        def loop():
            try:
                while not self._stop.wait(heartbeat_seconds()):
                    try:
                        self.beat()
                    except Exception:  # a locked database for a moment must not kill the heartbeat
                        log.warning("heartbeat of plan %s failed", self.plan_id, exc_info=True)
            finally:
                connection.close()

        self.thread = threading.Thread(target=loop, name=f"plan-{self.plan_id}-heartbeat", daemon=True)
        self.thread.start()

    def stop_heartbeat(self):
        self._stop.set()
        if self.thread:
            self.thread.join(timeout=10)

    def progress(self, pct, message, iteration=None, objective=None, force=False):
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        fields = {"progress_pct": float(min(max(pct, 0), 100)), "progress_message": message[:200], "heartbeat_at": timezone.now()}
        if iteration is not None:
            fields["iteration"] = int(iteration)
        if objective is not None and np.isfinite(objective):
            fields["objective_value"] = float(objective)
        if self.mine().update(**fields) == 0:
            self.lost.set()
            self.cancel.set()
        if self.thread is None and Plan.objects.filter(pk=self.plan_id, cancel_requested=True).exists():
            self.cancel.set()

    def check(self):
        if self.cancel.is_set():
            raise _JobCancelled()


def execute_plan(plan_id, attempt):
    """The body of the background job: compute plan ``plan_id`` for attempt ``attempt``."""
    if not connection.in_atomic_block:
        close_old_connections()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    with transaction.atomic():
        plan = Plan.objects.select_for_update().filter(pk=plan_id).first()
        if plan is None or plan.status != PlanStatus.QUEUED or plan.attempts != attempt:
            return {"plan": plan_id, "skipped": True, "status": getattr(plan, "status", None)}
        plan.status = PlanStatus.RUNNING
        plan.started_at = plan.heartbeat_at = timezone.now()
        plan.worker = worker
        plan.progress_message = "Starting"
        plan.save()
    job = _Job(plan_id, attempt)
    job.start_heartbeat()
    try:
        outcome = compute_plan(plan, job)
    except _JobCancelled:
        outcome = None
    except Exception as exc:
        job.stop_heartbeat()
        _finish_failed(plan_id, attempt, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return {"plan": plan_id, "status": "failed", "error": str(exc)}
    job.stop_heartbeat()
    if outcome is None:
        if job.lost.is_set():
            return {"plan": plan_id, "status": "lost"}
        who = Plan.objects.filter(pk=plan_id).values_list("cancel_requested_by", flat=True).first() or "user"
        _finish_failed(plan_id, attempt, f"Cancelled by {who} while running.", "")
        return {"plan": plan_id, "status": "cancelled"}
    return {"plan": plan_id, "status": outcome}


def _finish_failed(plan_id, attempt, reason, tb):
    with transaction.atomic():
        plan = Plan.objects.select_for_update().filter(pk=plan_id, attempts=attempt, status=PlanStatus.RUNNING).first()
        if plan is None:
            return
        plan.status = PlanStatus.FAILED
        plan.failure_reason = reason[:2000]
        plan.finished_at = timezone.now()
        plan.progress_message = "Cancelled" if reason.startswith("Cancelled") else "Failed"
        plan.save()
    if tb:
        log.error("plan %s failed: %s", plan_id, tb)


# Intensity levels of the step-and-shoot leaf sequencing of computed plans (then segment-weight optimisation).
SEQUENCING_LEVELS = 10
SEGMENT_WEIGHT_MAX_ITER = 100


# Rounds of optimisation on the fast matrix corrected to the accurate dose (planning.engine.accurate).
CORRECTION_ROUNDS = 2


def segment_arrays_of(beams, sequences):
    """The deliverable segments as arrays for the result file (what the RT Plan export writes as control points):
    ``seg_beam`` (beam of each segment), ``seg_mu`` (MU per fraction), ``seg_open`` (segments x all beamlets, the
    beamlets each segment opens; aperture cells that are no beamlet deliver nothing and are left out)."""
    beam_of, opened, mus = [], [], []
    n = int(sum(b.n_beamlets for b in beams))
    col0 = 0
    for i, (b, seq) in enumerate(zip(beams, sequences)):
        r, c = b.ib - b.ib.min(), b.ia - b.ia.min()
        for seg in seq.segments:
            row = np.zeros(n, bool)
            row[col0:col0 + b.n_beamlets] = np.asarray(seg.aperture, bool)[r, c]
            opened.append(row)
            beam_of.append(i)
            mus.append(float(seg.mu))
        col0 += b.n_beamlets
    return {"seg_beam": np.asarray(beam_of, np.int32), "seg_mu": np.asarray(mus, np.float64),
            "seg_open": np.asarray(opened, bool).reshape(len(opened), n)}


def compute_plan(plan, job):
    from .engine import accurate, forward, pencilbeam
    from .engine import beams as ebeams
    from .engine import objectives as eobj

    job.progress(1, "Loading geometry", force=True)
    geo = load_geometry(plan)
    target = geo.primary_target.name
    rx = plan.prescription_gy
    bs = ebeams.make_beams(geo, plan.gantry_angles, bixel_mm=plan.beamlet_mm)
    if any(b.n_beamlets == 0 for b in bs):
        raise ValueError("A beam has no beamlets: the target is empty on this grid.")

    def dij_progress(i, n):
        job.progress(2 + 18 * i / n, f"Dose calculation: beam {i}/{n}", force=True)
        job.check()

    dij = pencilbeam.dose_influence(geo, bs, progress=dij_progress)
    rows = {name: dij.row_index(s.mask) for name, s in geo.structures.items()}
    job.check()
    # Optimise fast, report accurately: the optimiser works on the truncated matrix ``dij`` corrected to the
    # accurate dose in CORRECTION_ROUNDS rounds; the deliverable plan (step-and-shoot leaf sequencing, segment
    # weights re-optimised against the plan's own objectives) is normalised to the prescription on the accurate
    # (untruncated) dose of the fluence its segments deliver, and that dose is what is stored: DVHs, goals,
    # approval, EQD2, planned vs delivered, RT Dose. The MU are those of its segments (planning.engine.accurate).
    job.progress(20, "Accurate dose: geometry", force=True)
    acc = pencilbeam.AccurateDose.for_influence(geo, dij)
    objs = None
    forward_w = None
    if plan.method == PlanMethod.FORWARD:
        job.progress(60, "Forward plan: conformal fields", force=True)
        forward_w = forward.conformal_weights(geo, dij, plan.beam_weights or None, target_mask=geo.primary_target.mask)
    else:
        objs = [eobj.from_dict(o) for o in plan.objectives]
    # the plan's iteration budget covers the fast optimisation and the correction rounds
    total_iter = plan.max_iterations
    round_iter = max(total_iter // 6, 1)
    first_iter = max(total_iter - CORRECTION_ROUNDS * round_iter, 1)

    def cb(stage, it, f):
        done = it if stage == 0 else first_iter + (stage - 1) * round_iter + it
        msg = f"Optimising: iteration {it}" if stage == 0 else f"Optimising on the accurate dose (round {stage}): iteration {it}"
        job.progress(20 + 70 * min(done / max(total_iter, 1), 1.0), msg, done, f)

    swo_iter = min(plan.max_iterations, SEGMENT_WEIGHT_MAX_ITER)

    def swo_cb(it, f):
        job.progress(90 + 9 * min(it / max(swo_iter, 1), 1.0), f"Segment weights: iteration {it}")

    ap = accurate.plan_accurately(dij, rows, objs, target=target, rx=rx, accurate=acc, normalise_to="D95",
                                  max_iter=first_iter, correction_rounds=CORRECTION_ROUNDS,
                                  round_iter=round_iter, n_levels=SEQUENCING_LEVELS, n_fractions=plan.fractions,
                                  swo_max_iter=swo_iter, forward_weights=forward_w, callback=cb, swo_callback=swo_cb,
                                  should_cancel=job.cancel.is_set)
    res, dp = ap.result, ap.deliverable
    if res.cancelled or dp is None or (dp.swo is not None and dp.swo.cancelled) or ap.dose is None:
        raise _JobCancelled()
    if objs is not None:
        job.progress(90, f"Optimised: {res.iterations} iterations", res.iterations, res.objective, force=True)
    job.check()
    dose = np.zeros(int(np.prod(geo.grid.shape)), np.float32)
    dose[dij.voxels] = ap.dose
    dose = dose.reshape(geo.grid.shape)
    beams_info = []
    for b, s in zip(bs, dp.sequences):
        beams_info.append({"gantry_deg": b.gantry_deg, "beamlets": int(b.n_beamlets), "segments": len(s.segments),
                           "mu": round(s.mu, 2), "isocentre_mm": [round(float(v), 2) for v in b.isocentre]})
    segment_arrays = segment_arrays_of(bs, dp.sequences)
    metrics = {"iterations": int(res.iterations), "objective": None if not np.isfinite(res.objective) else float(res.objective),
               "seconds": round(float(res.seconds), 2), "normalisation": float(res.scale), "beamlets": int(dij.n_beamlets),
               "sequencing_levels": SEQUENCING_LEVELS,
               "segments_sequenced": dp.segments_sequenced, "mu_sequenced": round(dp.mu_sequenced, 1),
               "segments": dp.segments, "deliverable_normalisation": float(dp.scale),
               "dose_model": accurate.DOSE_MODEL, "dose_accuracy": ap.accuracy,
               "accurate_dose_seconds": round(float(ap.seconds_accurate), 2)}
    if dp.swo is not None:
        metrics.update({"segment_weight_iterations": int(dp.swo.iterations),
                        "segment_weight_objective": [float(v) if np.isfinite(v) else None
                                                     for v in (dp.swo.objective_start, dp.swo.objective)],
                        "segment_weight_seconds": round(float(dp.swo.seconds), 2)})
    with transaction.atomic():
        locked = Plan.objects.select_for_update().filter(pk=plan.pk, attempts=job.attempt, status=PlanStatus.RUNNING).first()
        if locked is None:
            job.lost.set()
            return None
        if locked.cancel_requested:
            raise _JobCancelled()
        store_result(locked, geo, dose, weights=dp.weights, beams=bs, beam_summary=beams_info, extra_metrics=metrics,
                     extra_arrays={"weights_optimised": np.asarray(res.weights, np.float32), **segment_arrays})
        locked.status = PlanStatus.DONE
        locked.finished_at = timezone.now()
        locked.progress_pct = 100.0
        locked.iteration = int(res.iterations)
        locked.objective_value = metrics["objective"]
        locked.progress_message = "Done"
        locked.save()
    return "done"


