"""Plan creation and versions: physicists and dosimetrists (``planning.run_plan``) create a plan from the
course's prescription with the site's defaults, edit a draft, and make a new version of any plan (the old one
kept)."""

import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from workflow.errors import ConflictError, RuleViolation
from workflow.models import CourseStatus

from .geometry import geometry_structures, primary_target
from .models import (
    GeometrySource,
    Phantom,
    Plan,
    PlanMethod,
    PlanStatus,
)
from .protocols import (
    DEFAULT_GANTRIES,
    check_number,
    default_goals,
    default_objectives,
    site_protocol,
    validate_goals,
    validate_objectives,
)

log = logging.getLogger(__name__)


def require_permission(user, perm):
    if user is not None and not user.has_perm(perm):
        raise PermissionDenied("Your role does not allow this.")


def next_version(course):
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
    grid_mm = check_number(grid_mm, "grid_mm", "grid spacing", 1.0, 20.0)
    beamlet_mm = check_number(beamlet_mm, "beamlet_mm", "beamlet size", 2.0, 20.0)
    gantry_angles = DEFAULT_GANTRIES if gantry_angles in (None, []) else gantry_angles
    if not isinstance(gantry_angles, (list, tuple)) or not (1 <= len(gantry_angles) <= 36):
        raise ValidationError({"gantry_angles": "Give 1 to 36 gantry angles."})
    gantry_angles = [check_number(a, "gantry_angles", "gantry angle", 0, 360) % 360.0 for a in gantry_angles]
    if beam_weights:
        if len(beam_weights) != len(gantry_angles):
            raise ValidationError({"beam_weights": f"Give one weight per beam ({len(gantry_angles)})."})
        beam_weights = [check_number(w, "beam_weights", "beam weight", 0, 100) for w in beam_weights]
    max_iterations = int(check_number(max_iterations, "max_iterations", "iterations", 1, 5000))
    rx = float(course.total_dose_gy)
    structures = geometry_structures(geometry_source, phantom, imported_geometry, grid_mm)
    names = [n for n, _ in structures]
    target = primary_target(structures)
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
    require_permission(user, "planning.run_plan")
    fields = _prepare(course, **inputs)
    with transaction.atomic():
        plan = Plan(course=course, version=next_version(course), parent=parent, created_by=user, **fields)
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
    require_permission(user, "planning.run_plan")
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
        clear_result(plan)
        plan.status = PlanStatus.DRAFT
        plan._history_user = user
        plan.save()
    return plan


def clear_result(plan):
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

