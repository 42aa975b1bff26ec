"""Demo plans for the seeded clinic (extension of ``workflow.pathway.demo``; contract there).

- Every course that was cleared for treatment (phase approved, on treatment, completed, or stopped after
  clearance) gets an approved plan v1 (approved by the oncologist who cleared the course, when it was cleared),
  so the delivery gate, planned-vs-delivered dose and re-irradiation EQD2 pages have data.
- About half of the simulated courses get a finished plan awaiting the oncologist's review (their delivery is
  then gated on approving it).
- Fast: at most two real optimisations (coarse 8 mm grid, 10 mm beamlets, 60 iterations: a few seconds each), on
  the phantoms of the two most common disease sites; every other plan reuses one of those dose grids, scaled
  to its course's prescription (the plans are normalised to Rx at D95, so scaling is exact), with MU scaled by
  dose per fraction. Courses of other sites reuse the most common site's phantom.
"""

import threading
from collections import Counter

import numpy as np

from . import services
from .models import GeometrySource, Plan, PlanMethod, PlanStatus

GRID_MM, BEAMLET_MM, ITERATIONS = 8.0, 10.0, 60
MAX_OPTIMISATIONS = 2


class _QuietJob:
    """The job helper the engine run expects, without a worker: no progress rows, no heartbeat."""

    def __init__(self):
        self.attempt = 1
        self.cancel = threading.Event()
        self.lost = threading.Event()

    def progress(self, *args, **kwargs):
        pass

    def check(self):
        pass


def _new_plan(course, phantom, user, status):
    site = course.diagnosis.site if course.diagnosis_id else "other"
    rx = float(course.total_dose_gy)
    structures = services.geometry_structures(GeometrySource.PHANTOM, phantom, None, GRID_MM)
    names = [n for n, _ in structures]
    target = services.primary_target(structures)
    goals = services.validate_goals(services.default_goals(site, rx, names), names) or [
        {"structure": target, "metric": "D95", "comparison": ">=", "value": rx, "priority": 1}]
    body = next((n for n, k in structures if k == "body"), None)
    objectives = services.validate_objectives(services.default_objectives(goals, rx, target, names, body), names)
    plan = Plan(course=course, version=services.next_version(course), method=PlanMethod.INVERSE,
                geometry_source=GeometrySource.PHANTOM, phantom=phantom, grid_mm=GRID_MM,
                gantry_angles=list(services.DEFAULT_GANTRIES), beamlet_mm=BEAMLET_MM, max_iterations=ITERATIONS,
                objectives=objectives, goals=goals, prescription_gy=rx, fractions=course.fractions_planned,
                created_by=user, status=status, attempts=1, progress_message="Demo")
    plan._history_user = user
    plan.save()
    return plan


def seed(*, rng, today, users, courses):
    physicist, oncologist = users["physicist"], users["oncologist"]
    chosen = []
    for entry in courses:
        course = entry["course"]
        if course.plan_approved and entry["phase"] in ("approved", "on_treatment", "completed", "stopped"):
            chosen.append((entry, True))
        elif entry["phase"] == "simulated" and rng.random() < 0.5:
            chosen.append((entry, False))
    if not chosen:
        return
    phantom_of = {id(e): services.site_protocol(e["site"])["phantom"] for e, _ in chosen}
    common = [p for p, _ in Counter(phantom_of.values()).most_common(MAX_OPTIMISATIONS)]
    computed = {}  # phantom -> (plan, dose, rx per fraction)
    for entry, approved in chosen:
        course = entry["course"]
        phantom = phantom_of[id(entry)] if phantom_of[id(entry)] in common else common[0]
        if phantom not in computed:
            plan = _new_plan(course, phantom, physicist, PlanStatus.RUNNING)
            services.compute_plan(plan, _QuietJob())
            plan.refresh_from_db()
            computed[phantom] = (plan, services.load_dose(plan)[0])
        else:
            source, dose = computed[phantom]
            plan = _new_plan(course, phantom, physicist, PlanStatus.RUNNING)
            factor = plan.prescription_gy / source.prescription_gy
            per_fx = (plan.prescription_gy / plan.fractions) / (source.prescription_gy / source.fractions)
            beams = [dict(b, mu=round(b["mu"] * per_fx, 1)) for b in source.beam_summary]
            services.store_result(plan, services.load_geometry(plan), np.asarray(dose) * factor, beam_summary=beams,
                                  extra_metrics=dict(source.metrics, demo_scaled_from=source.pk))
            plan.iteration, plan.objective_value = source.iteration, source.objective_value
        plan.status = PlanStatus.DONE
        plan.progress_pct = 100.0
        plan.progress_message = "Done"
        plan.started_at = plan.finished_at = course.plan_approved_at or plan.created_at
        if approved:
            plan.status = PlanStatus.APPROVED
            plan.approved_by = plan.reviewed_by = course.plan_approved_by or oncologist
            plan.approved_at = plan.reviewed_at = course.plan_approved_at
            plan.review_comment = "Goals reviewed; approved for treatment."
            plan._history_user = plan.approved_by
        plan.save()
