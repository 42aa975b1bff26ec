"""Plan lifecycle, approval, delivered-dose accumulation and re-irradiation EQD2 sums.

Rules:
- Physicists and dosimetrists (``planning.run_plan``) create, start, cancel and retry plans; oncologists
  (``planning.approve_plan``) approve or reject a finished plan with a comment. A rejection needs a comment.
- The optimisation runs as a background job (``planning.tasks.run_plan_task``, Django's Tasks API). The job
  marks the plan running, beats a heartbeat on the plan row, reports (iteration, objective) progress and
  polls for cancellation; ``reap_stale_plans`` (run on every plan-status read and by
  ``manage.py reap_stale_plans``) marks running plans whose heartbeat stopped as failed with a reason. A failed
  plan can be retried: it is queued again as attempt n + 1, and a late write from an older attempt is ignored.
- Approval freezes the plan, supersedes the course's previously approved plan and clears the course for
  treatment (``workflow.delivery.clear_for_treatment``). A delivery gate blocks any course that has plans but no
  approved one, so courses without plans (the pathway's own tests, legacy data) are untouched.
- Delivered dose = the approved plan's per-fraction structure metrics times delivered fractions (each fraction
  counted against the plan that was approved when it was delivered).
- Re-irradiation: per organ, EQD2 = D (d + a/b) / (2 + a/b) of the earlier courses' delivered dose plus the new
  plan's planned dose, summed metric by metric (Dmax-like and mean), compared with the plan's organ goal limits
  read as EQD2 (organ tolerances such as QUANTEC's are stated for conventional 2 Gy fractions). Summing a metric
  rather than voxel doses assumes the hot spots coincide: conservative for the sum, the usual first check.
"""

import datetime as dt
import logging
import os
import re
import socket
import threading
import time
import traceback
import uuid
import zipfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from workflow.pathway import delivery, gates
from workflow.errors import ConflictError, RuleViolation
from workflow.models import AppointmentStatus, CourseStatus

from .models import plan_gate as gates_plan_gate  # noqa: E402
from .models import (
    ACTIVE_STATUSES,
    GeometrySource,
    Phantom,
    Plan,
    PlanMethod,
    PlanStatus,
    StructureDose,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------
# Defaults per disease site (DOMAIN.md section 6: TG-119 goals, QUANTEC organ constraints)
# Target goals are fractions of the prescription ("rx"), organ goals absolute Gy (or % for V metrics).
# --------------------------------------------------------------------------------------------------------------

SITE_PROTOCOLS = {
    "prostate": {
        "phantom": Phantom.PROSTATE,
        "goals": [
            ("PTV", "D95", ">=", {"rx": 1.0}), ("PTV", "D5", "<=", {"rx": 83 / 75.6}),
            ("Rectum", "D30", "<=", 70), ("Rectum", "D10", "<=", 75),
            ("Bladder", "D30", "<=", 70), ("Bladder", "D10", "<=", 75),
        ],
    },
    "head_and_neck": {
        "phantom": Phantom.HEADNECK,
        "goals": [
            ("PTV", "D90", ">=", {"rx": 1.0}), ("PTV", "D99", ">=", {"rx": 0.93}), ("PTV", "D20", "<=", {"rx": 1.10}),
            ("Cord", "Dmax", "<=", 40), ("Parotid L", "D50", "<=", 20), ("Parotid R", "D50", "<=", 20),
        ],
    },
    "spine": {
        "phantom": Phantom.SPINE,
        "goals": [
            ("PTV", "D95", ">=", {"rx": 1.0}), ("PTV", "D10", "<=", {"rx": 1.10}),
            ("Cord", "D0.03cc", "<=", 50), ("Lungs", "V20", "<=", 30),
        ],
    },
    "lung": {
        "phantom": Phantom.SPINE,
        "goals": [
            ("PTV", "D95", ">=", {"rx": 1.0}), ("Lungs", "V20", "<=", 30), ("Lungs", "Dmean", "<=", 20),
            ("Cord", "D0.03cc", "<=", 50), ("Esophagus", "Dmean", "<=", 34),
        ],
    },
    "pleural_mesothelioma": {
        "phantom": Phantom.MESOTHELIOMA,
        "goals": [
            ("PTV", "D95", ">=", {"rx": 1.0}),
            ("Lung L (contralateral)", "Dmean", "<=", 8.5), ("Lung L (contralateral)", "V20", "<=", 7),
            ("Cord", "D0.03cc", "<=", 50), ("Heart", "V25", "<=", 10), ("Liver", "Dmean", "<=", 30),
            ("Kidney L", "Dmean", "<=", 15), ("Kidney R", "Dmean", "<=", 15),
        ],
    },
    "other": {
        "phantom": Phantom.CSHAPE,
        "goals": [("PTV", "D95", ">=", {"rx": 1.0}), ("PTV", "D10", "<=", {"rx": 1.10}), ("Core", "D10", "<=", {"rx": 0.5})],
    },
}
SITE_PROTOCOLS["cns"] = SITE_PROTOCOLS["other"]
SITE_PROTOCOLS["sarcoma"] = SITE_PROTOCOLS["other"]

DEFAULT_GANTRIES = [0.0, 72.0, 144.0, 216.0, 288.0]

# alpha/beta (Gy) by organ name (first matching pattern wins); targets default to 10 Gy, other organs to 3 Gy.
DEFAULT_ALPHA_BETA = [
    (r"cord|brain ?stem|cauda|plexus", 2.0),
    (r"rectum|bladder|lung|heart|liver|kidney|esophag|oesophag|parotid|bowel|femoral", 3.0),
]
TARGET_ALPHA_BETA = 10.0
LATE_ALPHA_BETA = 3.0


def site_protocol(site):
    return SITE_PROTOCOLS.get(site or "other", SITE_PROTOCOLS["other"])


def default_goals(site, rx, structure_names=None):
    out = []
    for structure, metric, comparison, value in site_protocol(site)["goals"]:
        if structure_names is not None and structure not in structure_names:
            continue
        v = round(value["rx"] * rx, 2) if isinstance(value, dict) else float(value)
        out.append({"structure": structure, "metric": metric, "comparison": comparison, "value": v, "priority": 1})
    return out


def default_objectives(goals, rx, target, structure_names, body=None):
    """Objectives derived from the goals: the target towards Rx, each organ goal as an upper objective, and (with
    a body) a hot-spot penalty above 105 % of Rx anywhere."""
    objs = [{"kind": "squared_deviation", "structure": target, "dref": float(rx), "weight": 100.0}]
    if body:
        objs.append({"kind": "squared_overdose", "structure": body, "dref": round(1.05 * rx, 3), "weight": 30.0})
    for g in goals:
        s, m = g["structure"], g["metric"].lower()
        if s == target or s not in structure_names or g["comparison"] not in ("<=", "<"):
            continue
        if m == "dmean":
            objs.append({"kind": "mean_dose", "structure": s, "dref": 0.8 * g["value"], "weight": 10.0})
        elif m in ("dmax",) or m.endswith("cc"):
            objs.append({"kind": "squared_overdose", "structure": s, "dref": 0.9 * g["value"], "weight": 10.0})
        elif m.startswith("d") and m[1:].replace(".", "", 1).rstrip("%").isdigit():
            objs.append({"kind": "max_dvh", "structure": s, "dref": 0.9 * g["value"], "volume_pct": float(m[1:].rstrip("%")), "weight": 10.0})
        elif m.startswith("v"):
            x = float(re.sub(r"[^0-9.]", "", m[1:]))
            objs.append({"kind": "max_dvh", "structure": s, "dref": x, "volume_pct": 0.8 * g["value"], "weight": 10.0})
    return objs


# --------------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------------


def _number(value, field, where, lo=None, hi=None):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError({field: f"{where}: {value!r} is not a number."})
    if not np.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValidationError({field: f"{where}: {v:g} is outside {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}."})
    return v


def validate_objectives(objectives, structure_names):
    from .engine import objectives as eobj

    if not isinstance(objectives, list):
        raise ValidationError({"objectives": "Objectives must be a list of objects."})
    out = []
    for i, o in enumerate(objectives):
        where = f"objective {i + 1}"
        if not isinstance(o, dict):
            raise ValidationError({"objectives": f"{where} must be an object."})
        kind = o.get("kind")
        if kind not in eobj.KINDS:
            raise ValidationError({"objectives": f"{where}: kind must be one of {', '.join(eobj.KINDS)}."})
        if o.get("structure") not in structure_names:
            raise ValidationError({"objectives": f"{where}: unknown structure {o.get('structure')!r}."})
        clean = {"kind": kind, "structure": o["structure"], "dref": _number(o.get("dref"), "objectives", where, 0, 200),
                 "weight": _number(o.get("weight", 1.0), "objectives", where, 1e-6, 1e6)}
        if kind in ("max_dvh", "min_dvh"):
            clean["volume_pct"] = _number(o.get("volume_pct", 50 if kind == "max_dvh" else 95), "objectives", where, 0, 100)
        if kind == "eud":
            clean["a"] = _number(o.get("a", 8.0), "objectives", where, 0.01, 100)
        if kind == "mean_dose" and "upper" in o:
            clean["upper"] = bool(o["upper"])
        if kind in ("squared_underdose", "squared_overdose") and o.get("constraint"):
            clean["constraint"] = True
        extra = set(o) - set(clean) - {"constraint", "upper"}
        if extra:
            raise ValidationError({"objectives": f"{where}: unknown field(s) {', '.join(sorted(extra))}."})
        try:
            eobj.from_dict(clean)
        except TypeError as exc:
            raise ValidationError({"objectives": f"{where}: {exc}"})
        out.append(clean)
    return out


def validate_goals(goals, structure_names):
    from .engine import goals as egoals

    if not isinstance(goals, list):
        raise ValidationError({"goals": "Goals must be a list of objects."})
    out = []
    probe = np.array([1.0, 2.0, 3.0])
    for i, g in enumerate(goals):
        where = f"goal {i + 1}"
        if not isinstance(g, dict):
            raise ValidationError({"goals": f"{where} must be an object."})
        if g.get("structure") not in structure_names:
            raise ValidationError({"goals": f"{where}: unknown structure {g.get('structure')!r}."})
        metric = str(g.get("metric", "")).strip()
        if metric.lower() not in ("hi", "ci"):
            try:
                egoals.metric_value(metric, probe, 1.0)
            except ValueError:
                raise ValidationError({"goals": f"{where}: unknown metric {metric!r} (use D95, D0.03cc, V20, Dmean, Dmax, HI, CI)."})
        if g.get("comparison") not in ("<=", "<", ">=", ">"):
            raise ValidationError({"goals": f"{where}: comparison must be one of <=, <, >=, >."})
        clean = {"structure": g["structure"], "metric": metric, "comparison": g["comparison"],
                 "value": _number(g.get("value"), "goals", where, 0, 1000),
                 "priority": int(_number(g.get("priority", 1), "goals", where, 1, 9))}
        if g.get("label"):
            clean["label"] = str(g["label"])[:120]
        extra = set(g) - {"structure", "metric", "comparison", "value", "priority", "label"}
        if extra:
            raise ValidationError({"goals": f"{where}: unknown field(s) {', '.join(sorted(extra))}."})
        out.append(clean)
    return out


# --------------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------------


def media_path(rel):
    return Path(settings.MEDIA_ROOT) / rel


def save_npz(path_or_file, arrays, level=1):
    """``np.savez_compressed`` at deflate level 1, large float volumes stored uncompressed: a 200-slice 512 x 512
    CT's density and dose in well under a second each instead of ~5 s; ``np.load`` reads it the same
    (Fortran-ordered arrays are written without a copy)."""
    with zipfile.ZipFile(path_or_file, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for key, arr in arrays.items():
            arr = np.asanyarray(arr)
            # floating volumes above 16 MB (a clinical CT's dose or density) are stored: deflate gains ~20 % on
            # float noise at ~3 s per 200 MB; masks and small arrays compress well and fast
            stored = arr.dtype.kind == "f" and arr.nbytes > 16 * 1024**2
            zf.compression = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)


def plans_dir():
    d = Path(settings.MEDIA_ROOT) / "plans"
    d.mkdir(parents=True, exist_ok=True)
    return d


def load_geometry(plan_or_source, phantom=None, imported=None, grid_mm=None):
    """The engine ``Geometry`` of a plan (or of an explicit phantom/imported geometry)."""
    from .engine import phantoms
    from .engine.grid import Geometry, Grid

    if isinstance(plan_or_source, Plan):
        plan = plan_or_source
        source, phantom, imported, grid_mm = plan.geometry_source, plan.phantom, plan.imported_geometry, plan.grid_mm
    else:
        source = plan_or_source
    if source == GeometrySource.PHANTOM:
        if phantom not in phantoms.BUILDERS:
            raise ValidationError({"phantom": f"Unknown phantom {phantom!r}."})
        return phantoms.BUILDERS[phantom](spacing=float(grid_mm))
    if imported is None:
        raise ValidationError({"imported_geometry": "An imported geometry is needed."})
    data = np.load(media_path(imported.file))
    g = imported.grid
    geo = Geometry(Grid(tuple(g["shape"]), tuple(g["spacing"]), tuple(g["origin"])), data["density"].astype(np.float32),
                   name=imported.name)
    for i, s in enumerate(imported.structures):
        geo.add(s["name"], data[f"mask_{i}"], s["kind"], s.get("prescription_gy"))
    return geo


def geometry_structures(source, phantom=None, imported=None, grid_mm=10.0):
    if source == GeometrySource.IMPORTED:
        return [(s["name"], s["kind"]) for s in imported.structures]
    geo = load_geometry(source, phantom=phantom, grid_mm=max(float(grid_mm or 10), 10.0))
    return [(n, s.kind) for n, s in geo.structures.items()]


def _primary_target(structures):
    targets = [n for n, k in structures if k == "target"]
    if not targets:
        raise ValidationError({"geometry_source": "The geometry has no target structure."})
    return targets[0]


# --------------------------------------------------------------------------------------------------------------
# Plan creation, versions
# --------------------------------------------------------------------------------------------------------------


def _require(user, perm):
    if user is not None and not user.has_perm(perm):
        raise PermissionDenied("Your role does not allow this.")


def _next_version(course):
    last = Plan.objects.filter(course=course).order_by("-version").values_list("version", flat=True).first()
    return (last or 0) + 1


def _prepare(course, *, method=PlanMethod.INVERSE, geometry_source=GeometrySource.PHANTOM, phantom=None,
             imported_geometry=None, grid_mm=5.0, gantry_angles=None, beam_weights=None, beamlet_mm=5.0,
             objectives=None, goals=None, max_iterations=150, name=""):
    """Validated plan inputs for ``course`` (defaults from the disease site, DOMAIN.md section 6)."""
    if course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
        raise RuleViolation(f"The course is {course.get_status_display().lower()}.", field="course")
    if method not in (PlanMethod.INVERSE, PlanMethod.FORWARD):
        raise ValidationError({"method": "Method must be inverse or forward (external plans are imported)."})
    site = course.diagnosis.site if course.diagnosis_id else "other"
    if geometry_source == GeometrySource.PHANTOM:
        phantom = phantom or site_protocol(site)["phantom"]
        if phantom not in Phantom.values:
            raise ValidationError({"phantom": f"Unknown phantom {phantom!r}."})
        imported_geometry = None
    elif geometry_source == GeometrySource.IMPORTED:
        if imported_geometry is None:
            raise ValidationError({"imported_geometry": "Choose an imported CT + structure set."})
        if imported_geometry.patient_id != course.patient_id:
            raise ValidationError({"imported_geometry": "The imported geometry belongs to another patient."})
        phantom = ""
    else:
        raise ValidationError({"geometry_source": "Geometry source must be phantom or imported."})
    grid_mm = _number(grid_mm, "grid_mm", "grid spacing", 1.0, 20.0)
    beamlet_mm = _number(beamlet_mm, "beamlet_mm", "beamlet size", 2.0, 20.0)
    gantry_angles = DEFAULT_GANTRIES if gantry_angles in (None, []) else gantry_angles
    if not isinstance(gantry_angles, (list, tuple)) or not (1 <= len(gantry_angles) <= 36):
        raise ValidationError({"gantry_angles": "Give 1 to 36 gantry angles."})
    gantry_angles = [_number(a, "gantry_angles", "gantry angle", 0, 360) % 360.0 for a in gantry_angles]
    if beam_weights:
        if len(beam_weights) != len(gantry_angles):
            raise ValidationError({"beam_weights": f"Give one weight per beam ({len(gantry_angles)})."})
        beam_weights = [_number(w, "beam_weights", "beam weight", 0, 100) for w in beam_weights]
    max_iterations = int(_number(max_iterations, "max_iterations", "iterations", 1, 5000))
    rx = float(course.total_dose_gy)
    structures = geometry_structures(geometry_source, phantom, imported_geometry, grid_mm)
    names = [n for n, _ in structures]
    target = _primary_target(structures)
    goals = validate_goals(default_goals(site, rx, names) if goals is None else goals, names)
    if not goals:
        goals = [{"structure": target, "metric": "D95", "comparison": ">=", "value": rx, "priority": 1}]
    body = next((n for n, k in structures if k == "body"), None)
    objectives = validate_objectives(default_objectives(goals, rx, target, names, body) if objectives is None else objectives, names)
    if method == PlanMethod.INVERSE and not objectives:
        raise ValidationError({"objectives": "An inverse plan needs at least one objective."})
    return dict(
        name=name or "", method=method, geometry_source=geometry_source, phantom=phantom or "",
        imported_geometry=imported_geometry, grid_mm=grid_mm, gantry_angles=gantry_angles, beam_weights=beam_weights or [],
        beamlet_mm=beamlet_mm, max_iterations=max_iterations, objectives=objectives, goals=goals,
        prescription_gy=rx, fractions=course.fractions_planned,
    )


def create_plan(course, *, user, parent=None, **inputs):
    """A draft plan for ``course``; see ``_prepare`` for the inputs and their defaults."""
    _require(user, "planning.run_plan")
    fields = _prepare(course, **inputs)
    with transaction.atomic():
        plan = Plan(course=course, version=_next_version(course), parent=parent, created_by=user, **fields)
        plan._history_user = user
        plan.save()
    return plan


INPUT_FIELDS = ("method", "geometry_source", "phantom", "imported_geometry", "grid_mm", "gantry_angles", "beam_weights",
                "beamlet_mm", "objectives", "goals", "max_iterations", "name")


def new_version(plan, *, user, **changes):
    """A new draft version of ``plan`` with ``changes`` (the way to change an approved, frozen plan)."""
    unknown = set(changes) - set(INPUT_FIELDS)
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "This field cannot be changed."})
    if plan.method == PlanMethod.EXTERNAL:
        raise RuleViolation("An imported external plan cannot be re-planned; create a new plan.", field="method")
    fields = {f: getattr(plan, f) for f in INPUT_FIELDS}
    fields.update(changes)
    return create_plan(plan.course, user=user, parent=plan, **fields)


def update_plan(plan, *, user, **changes):
    """Edit a draft, failed or done (unapproved) plan in place; a done plan loses its result and returns to draft."""
    _require(user, "planning.run_plan")
    plan.refresh_from_db()
    if plan.is_frozen:
        raise RuleViolation(f"Plan v{plan.version} is {plan.status} and frozen; make a new version.", field="status", code="plan_frozen")
    if plan.is_active:
        raise ConflictError("The plan is being computed; cancel it first.", field="status")
    unknown = set(changes) - set(INPUT_FIELDS)
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "This field cannot be changed."})
    inputs = {f: getattr(plan, f) for f in INPUT_FIELDS}
    inputs.update(changes)
    fields = _prepare(plan.course, **inputs)
    with transaction.atomic():
        for f, v in fields.items():
            setattr(plan, f, v)
        _clear_result(plan)
        plan.status = PlanStatus.DRAFT
        plan._history_user = user
        plan.save()
    return plan


def _clear_result(plan):
    plan.structure_doses.all().delete()
    plan.result_file = ""
    plan.metrics = {}
    plan.goal_results = []
    plan.beam_summary = []
    plan.total_mu = None
    plan.progress_pct = 0
    plan.iteration = 0
    plan.objective_value = None
    plan.progress_message = ""


# --------------------------------------------------------------------------------------------------------------
# Job lifecycle
# --------------------------------------------------------------------------------------------------------------


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
    _require(user, "planning.run_plan")
    with transaction.atomic():
        plan = Plan.objects.select_for_update().get(pk=plan.pk)
        if plan.voided_at:
            raise RuleViolation("The plan is voided.", field="status")
        if plan.status not in allowed:
            raise ConflictError(f"Plan v{plan.version} is {plan.status}; it cannot be started now.", field="status", code="bad_status")
        if plan.course.status in (CourseStatus.COMPLETED, CourseStatus.STOPPED):
            raise RuleViolation(f"The course is {plan.course.get_status_display().lower()}.", field="course")
        _clear_result(plan)
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
    _require(user, "planning.run_plan")
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
    from rq.exceptions import NoSuchJobError
    from rq.job import JobStatus
    from rq.job_lifecycle import record_job_failure
    from django_tasks_rq.backend import Job

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
        outcome = _compute(plan, job)
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


def _compute(plan, job):
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
                           "mu": round(s.mu, 1), "isocentre_mm": [round(float(v), 2) for v in b.isocentre]})
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
                     extra_arrays={"weights_optimised": np.asarray(res.weights, np.float32)})
        locked.status = PlanStatus.DONE
        locked.finished_at = timezone.now()
        locked.progress_pct = 100.0
        locked.iteration = int(res.iterations)
        locked.objective_value = metrics["objective"]
        locked.progress_message = "Done"
        locked.save()
    return "done"


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


def dvh_rows(geo, dose, n_bins=200):
    from .engine import dvh as edvh

    top = float(dose.max()) * 1.02 + 1e-6
    out = []
    vcc = geo.grid.voxel_volume_cc
    for name, s in geo.structures.items():
        d = edvh.voxel_doses(dose, s.mask)
        h = edvh.cumulative_dvh(name, d, vcc, bin_gy=top / n_bins, max_gy=top)
        stats = edvh.structure_stats(d, vcc)
        out.append({"name": name, "kind": s.kind, "volume_cc": float(stats.pop("volume_cc", 0.0)),
                    "metrics": {k: round(float(v), 4) for k, v in stats.items()},
                    "dvh_dose_gy": [round(float(x), 4) for x in h.dose_gy],
                    "dvh_volume_pct": [round(float(x), 4) for x in h.volume_pct]})
    return out


def store_result(plan, geo, dose, *, weights=None, beams=None, beam_summary=None, extra_metrics=None,
                 extra_arrays=None):
    """Write the dose grid (+ fluences) to ``MEDIA_ROOT/plans`` and the DVHs, metrics and goals to the database.

    For a computed plan ``weights`` is the deliverable beamlet fluence (what the segments deliver) and
    ``dose`` its dose; ``extra_arrays`` are stored alongside (e.g. the optimised, unsequenced fluence).
    The caller saves ``plan`` (status etc.)."""
    from .engine import dvh as edvh
    from .engine import goals as egoals

    dose = np.asarray(dose, np.float32)
    rel = f"plans/plan-{plan.pk}-v{plan.version}-a{plan.attempts}.npz"
    arrays = {"dose": dose, "shape": np.asarray(geo.grid.shape), "spacing": np.asarray(geo.grid.spacing),
              "origin": np.asarray(geo.grid.origin)}
    if weights is not None and beams is not None:
        arrays["weights"] = np.asarray(weights, np.float32)
        arrays["beam_of"] = np.concatenate([np.full(b.n_beamlets, i) for i, b in enumerate(beams)])
        arrays["ia"] = np.concatenate([b.ia for b in beams])
        arrays["ib"] = np.concatenate([b.ib for b in beams])
        arrays["gantry"] = np.asarray([b.gantry_deg for b in beams])
    for k, v in (extra_arrays or {}).items():
        arrays[k] = np.asarray(v)
    plans_dir()
    save_npz(media_path(rel), arrays)
    plan.result_file = rel
    plan.structure_doses.all().delete()
    rows = dvh_rows(geo, dose)
    StructureDose.objects.bulk_create([StructureDose(plan=plan, **r) for r in rows])
    goals = [egoals.Goal(**{k: g[k] for k in ("structure", "metric", "comparison", "value", "priority") if k in g},
                         label=g.get("label", "")) for g in plan.goals if g["structure"] in geo.structures]
    plan.goal_results = egoals.evaluate(goals, dose, geo.masks, geo.grid.voxel_volume_cc, rx=plan.prescription_gy)
    metrics = dict(extra_metrics or {})
    if geo.targets:
        t = geo.primary_target
        metrics["target"] = t.name
        t_dose = edvh.voxel_doses(dose, t.mask)
        hi = edvh.homogeneity_index(t_dose)
        ci = edvh.paddick_ci(dose, t.mask, geo.body.mask, plan.prescription_gy)
        metrics["HI"] = round(hi, 4) if np.isfinite(hi) else None
        metrics["CI"] = round(ci, 4) if np.isfinite(ci) else None
        if metrics["HI"] is None:  # not defined: say why instead of a number (or a division by zero)
            metrics["HI_reason"] = edvh.homogeneity_reason(t_dose)
        if metrics["CI"] is None:
            metrics["CI_reason"] = edvh.paddick_reason(dose, t.mask, geo.body.mask, plan.prescription_gy)
    metrics["Dmax_body"] = round(float(dose.max()), 3)
    plan.metrics = metrics
    if beam_summary is not None:
        plan.beam_summary = beam_summary
        plan.total_mu = round(sum(b.get("mu", 0.0) for b in beam_summary), 1)
    return plan


def dose_model_statement(plan):
    """What the plan page says about the dose it shows: the dose model and how accurate it is, or None for a plan
    without a computed dose (e.g. an imported RT Dose, shown as imported).

    A computed plan's dose is the accurate (untruncated) pencil-beam dose of its deliverable fluence; the fast
    matrix the optimiser used, and how much dose it alone would have dropped, are stated beside it."""
    acc = (plan.metrics or {}).get("dose_accuracy")
    if not acc:
        return None
    fm = acc.get("fast_matrix") or {}

    def pct(v):
        return None if v is None else round(100.0 * float(v), 1)

    return {
        "model": (plan.metrics or {}).get("dose_model", ""),
        "stored_dropped_target_pct": pct(acc.get("stored_dropped_target", 0.0)),
        "stored_dropped_body_pct": pct(acc.get("stored_dropped_body", 0.0)),
        "fast_dropped_target_pct": pct(acc.get("fast_dropped_target")),
        "fast_dropped_body_pct": pct(acc.get("fast_dropped_body")),
        "fast_rel_threshold": fm.get("rel_threshold"), "fast_cutoff_mm": fm.get("cutoff_mm"),
        "model_error_target_pct": None if acc.get("model_error_target_mean") is None
        else round(100.0 * float(acc["model_error_target_mean"]), 2),
    }


def load_dose(plan):
    """(dose cube, engine Grid) of a plan's result."""
    from .engine.grid import Grid

    if not plan.result_file:
        raise RuleViolation("The plan has no result yet.", field="status")
    data = np.load(media_path(plan.result_file))
    grid = Grid(tuple(int(v) for v in data["shape"]), tuple(float(v) for v in data["spacing"]), tuple(float(v) for v in data["origin"]))
    return data["dose"], grid


# --------------------------------------------------------------------------------------------------------------
# Review and approval
# --------------------------------------------------------------------------------------------------------------


def approve_plan(plan, *, user, comment="", now=None):
    """Approve a finished plan: freeze it, supersede the course's earlier approved plan, clear the course.

    Refused (409 ``approval_blocked``, naming the step) while an approval gate blocks: a blocking care-path step
    before the approval (physics plan check, prior-dose review) not done or skipped."""
    _require(user, "planning.approve_plan")
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
    _require(user, "planning.approve_plan")
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


plan_gate = gates_plan_gate  # registered at import of planning.models


def current_plan(course):
    return Plan.objects.filter(course=course, status=PlanStatus.APPROVED, voided_at__isnull=True).order_by("-version").first()


# --------------------------------------------------------------------------------------------------------------
# Delivered dose and EQD2
# --------------------------------------------------------------------------------------------------------------

DOSE_METRICS = ("Dmean", "Dmax", "D0.03cc", "D95", "D98", "D2", "D50", "Dmin")


def _plan_for_fraction(plans, delivered_at):
    chosen = None
    for p in plans:  # ascending approval time
        if p.approved_at and p.approved_at <= delivered_at and (p.superseded_at is None or p.superseded_at > delivered_at):
            chosen = p
    return chosen or (plans[-1] if plans else None)


def course_dose(course):
    """Planned vs delivered dose per structure for the course's approved plan(s).

    Returns ``{"plan": Plan|None, "planned_fractions", "delivered_fractions", "structures": [{name, kind, planned: {metric: Gy},
    delivered: {metric: Gy}}]}``. Each delivered fraction adds its plan's metric / planned fractions."""
    plans = list(Plan.objects.filter(course=course, status__in=[PlanStatus.APPROVED, PlanStatus.SUPERSEDED], voided_at__isnull=True)
                 .exclude(approved_at=None).order_by("approved_at").prefetch_related("structure_doses"))
    current = next((p for p in reversed(plans) if p.status == PlanStatus.APPROVED), plans[-1] if plans else None)
    fractions = list(course.fractions.filter(status=AppointmentStatus.DELIVERED).values_list("delivered_at", "delivered_dose_gy"))
    out = {"plan": current, "planned_fractions": course.fractions_planned, "delivered_fractions": len(fractions), "structures": []}
    if current is None:
        return out
    delivered = {}
    for at, dose_gy in fractions:
        p = _plan_for_fraction(plans, at or timezone.now())
        # a fraction given at a reduced dose scales the plan's dose by the ratio actually given
        ratio = float(dose_gy) / p.dose_per_fraction_gy if dose_gy is not None and p.dose_per_fraction_gy else 1.0
        for sd in p.structure_doses.all():
            acc = delivered.setdefault(sd.name, {})
            for m in DOSE_METRICS:
                if m in sd.metrics:
                    acc[m] = acc.get(m, 0.0) + sd.metrics[m] / p.fractions * ratio
    for sd in current.structure_doses.all():
        out["structures"].append({
            "name": sd.name, "kind": sd.kind, "volume_cc": sd.volume_cc,
            "planned": {m: sd.metrics[m] for m in DOSE_METRICS if m in sd.metrics},
            "delivered": {m: round(v, 3) for m, v in delivered.get(sd.name, {}).items()},
        })
    return out


def eqd2(total_gy, n_fractions, alpha_beta):
    """EQD2 = D (d + a/b) / (2 + a/b), d = D / n."""
    from .engine import radiobiology

    if not n_fractions or total_gy is None:
        return 0.0
    return float(radiobiology.eqd2(total_gy, total_gy / n_fractions, alpha_beta))


def alpha_beta_for(name, kind="oar", overrides=None):
    """alpha/beta (Gy) for a structure: explicit ``overrides`` by name, then settings.PLANNING_ALPHA_BETA (name ->
    value), then the built-in patterns (cord 2 Gy, other late-responding organs 3 Gy, targets 10 Gy)."""
    for table in (overrides or {}, getattr(settings, "PLANNING_ALPHA_BETA", {}) or {}):
        for key, value in table.items():
            if key.lower() == name.lower():
                return float(value)
    if kind == "target":
        return TARGET_ALPHA_BETA
    for pattern, value in DEFAULT_ALPHA_BETA:
        if re.search(pattern, name, re.I):
            return value
    return LATE_ALPHA_BETA


def _same_organ(a, b):
    norm = lambda s: re.sub(r"[^a-z0-9]", "", re.sub(r"\(.*?\)", "", s.lower()))  # noqa: E731
    return norm(a) == norm(b)


EQD2_METRICS = ("Dmax", "D0.03cc", "Dmean")


def reirradiation_summary(plan, *, alpha_beta=None):
    """Cumulative EQD2 per organ: earlier courses of the patient (dose actually delivered) + this plan (planned).

    Returns a list of rows ``{name, alpha_beta, previous: {metric: EQD2}, planned: {...}, total: {...},
    goals: [{goal, limit_eqd2, total_eqd2, exceeded}], exceeded}`` for each organ at risk of ``plan``; an upper
    goal on Dmax / D0.03cc / Dmean is flagged when the cumulative EQD2 exceeds its limit (read as EQD2)."""
    course = plan.course
    earlier = []
    for c in course.patient.courses.exclude(pk=course.pk).filter(voided_at__isnull=True, created_at__lt=course.created_at):
        cd = course_dose(c)
        if cd["plan"] is not None and cd["delivered_fractions"]:
            earlier.append((c, cd))
    rows = []
    for sd in plan.structure_doses.all():
        if sd.kind != "oar":
            continue
        ab = alpha_beta_for(sd.name, sd.kind, alpha_beta)
        planned = {m: eqd2(sd.metrics[m], plan.fractions, ab) for m in EQD2_METRICS if m in sd.metrics}
        previous = {m: 0.0 for m in planned}
        sources = []
        for c, cd in earlier:
            for s in cd["structures"]:
                if _same_organ(s["name"], sd.name):
                    n = cd["delivered_fractions"]
                    for m in planned:
                        if m in s["delivered"]:
                            previous[m] += eqd2(s["delivered"][m], n, ab)
                    sources.append(f"{c.treated_site} ({n} fx)")
        total = {m: planned[m] + previous[m] for m in planned}
        goal_rows = []
        for g in plan.goals:
            metric = g["metric"]
            key = {"dmax": "Dmax", "d0.03cc": "D0.03cc", "dmean": "Dmean"}.get(metric.lower())
            if g["structure"] != sd.name or key is None or key not in total or g["comparison"] not in ("<=", "<"):
                continue
            limit = float(g["value"])  # organ limits (QUANTEC) are for 2 Gy fractions: read them as EQD2
            goal_rows.append({"goal": f"{sd.name} {metric} {g['comparison']} {g['value']:g} Gy", "metric": key,
                              "limit_eqd2": round(limit, 2), "total_eqd2": round(total[key], 2),
                              "exceeded": total[key] > limit + 1e-9})
        rows.append({"name": sd.name, "alpha_beta": ab, "sources": sources,
                     "previous": {m: round(v, 2) for m, v in previous.items()},
                     "planned": {m: round(v, 2) for m, v in planned.items()},
                     "total": {m: round(v, 2) for m, v in total.items()},
                     "goals": goal_rows, "exceeded": any(r["exceeded"] for r in goal_rows)})
    return {"earlier_courses": [c for c, _ in earlier], "rows": rows}
