"""Results of a computed or imported plan: the accurate dose and geometry stored as one npz, DVHs and the
structure metrics, and the statement of the dose model and its accuracy shown with them."""

import logging

import numpy as np

from workflow.errors import RuleViolation

from .geometry import media_path, plans_dir, save_npz
from .models import (
    StructureDose,
)

log = logging.getLogger(__name__)


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

