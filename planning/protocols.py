"""Site protocols (TG-119 / QUANTEC defaults per disease site, alpha/beta per organ) and the validation of a
plan's objectives and clinical goals (a 400 naming the field and the entry, never a 500)."""

import logging
import re

import numpy as np
from django.core.exceptions import ValidationError

from .models import (
    Phantom,
)

log = logging.getLogger(__name__)


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


def check_number(value, field, where, lo=None, hi=None):
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
        clean = {"kind": kind, "structure": o["structure"], "dref": check_number(o.get("dref"), "objectives", where, 0, 200),
                 "weight": check_number(o.get("weight", 1.0), "objectives", where, 1e-6, 1e6)}
        if kind in ("max_dvh", "min_dvh"):
            clean["volume_pct"] = check_number(o.get("volume_pct", 50 if kind == "max_dvh" else 95), "objectives", where, 0, 100)
        if kind == "eud":
            clean["a"] = check_number(o.get("a", 8.0), "objectives", where, 0.01, 100)
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
                 "value": check_number(g.get("value"), "goals", where, 0, 1000),
                 "priority": int(check_number(g.get("priority", 1), "goals", where, 1, 9))}
        if g.get("label"):
            clean["label"] = str(g["label"])[:120]
        extra = set(g) - {"structure", "metric", "comparison", "value", "priority", "label"}
        if extra:
            raise ValidationError({"goals": f"{where}: unknown field(s) {', '.join(sorted(extra))}."})
        out.append(clean)
    return out

