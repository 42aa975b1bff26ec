"""Delivered dose and re-irradiation EQD2.

- Delivered dose = the approved plan's per-fraction structure metrics times delivered fractions (each fraction
  counted against the plan that was approved when it was delivered).
- Re-irradiation: per organ, EQD2 = D (d + a/b) / (2 + a/b) of the earlier courses' delivered dose plus the new
  plan's planned dose, summed metric by metric (Dmax-like and mean), compared with the plan's organ goal limits
  read as EQD2 (organ tolerances such as QUANTEC's are stated for conventional 2 Gy fractions). Summing a metric
  rather than voxel doses assumes the hot spots coincide: conservative for the sum, the usual first check.
"""

import logging
import re

from django.conf import settings
from django.utils import timezone

from workflow.models import AppointmentStatus

from .models import (
    Plan,
    PlanStatus,
)
from .protocols import DEFAULT_ALPHA_BETA, LATE_ALPHA_BETA, TARGET_ALPHA_BETA

log = logging.getLogger(__name__)


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
