"""Clinical goals as data: (structure, metric, comparison, value, priority) with pass/fail evaluation.

Metric grammar (case-insensitive):

* ``D95`` / ``D95%``: dose (Gy) to the hottest 95 % of the volume; ``D0.03cc``: to the hottest 0.03 cm^3;
* ``V20`` / ``V20Gy``: % volume receiving >= 20 Gy;
* ``Dmean``, ``Dmax``, ``Dmin``; ``HI`` (ICRU 83), ``CI`` (Paddick, needs ``rx``).

Example: ``Goal.from_dict({"structure": "Cord", "metric": "D0.03cc", "comparison": "<=", "value": 50})``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from . import dvh


@dataclass
class Goal:
    structure: str
    metric: str
    comparison: str  # "<=", "<", ">=", ">"
    value: float
    priority: int = 1
    label: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "Goal":
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def unit(self) -> str:
        m = self.metric.upper()
        return "%" if m.startswith("V") else ("" if m in ("HI", "CI") else "Gy")

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return self.label or f"{self.structure} {self.metric} {self.comparison} {self.value:g}{unit}"

    def passed(self, achieved: float) -> bool:
        if achieved is None or np.isnan(achieved):
            return False
        achieved = round(float(achieved), 2)  # report precision: 0.01 Gy / 0.01 %
        return {
            "<=": achieved <= self.value + 1e-9,
            "<": achieved < self.value,
            ">=": achieved >= self.value - 1e-9,
            ">": achieved > self.value,
        }[self.comparison]


_D_PCT = re.compile(r"^D(\d+(?:\.\d+)?)%?$", re.I)
_D_CC = re.compile(r"^D(\d+(?:\.\d+)?)cc$", re.I)
_V_GY = re.compile(r"^V(\d+(?:\.\d+)?)(?:Gy)?$", re.I)


def metric_value(metric: str, dose: np.ndarray, voxel_cc: float, *, dose_cube=None, target_mask=None,
                 body_mask=None, rx: float | None = None) -> float:
    """Evaluate one metric on the voxel doses of a structure."""
    m = metric.strip()
    key = m.lower()
    if key == "dmean":
        return float(np.mean(dose)) if dose.size else float("nan")
    if key == "dmax":
        return float(np.max(dose)) if dose.size else float("nan")
    if key == "dmin":
        return float(np.min(dose)) if dose.size else float("nan")
    if key == "hi":
        return dvh.homogeneity_index(dose)
    if key == "ci":
        return dvh.paddick_ci(dose_cube, target_mask, body_mask, rx)
    if (g := _D_CC.match(m)):
        return dvh.d_cc(dose, float(g.group(1)), voxel_cc)
    if (g := _D_PCT.match(m)):
        return dvh.d_pct(dose, float(g.group(1)))
    if (g := _V_GY.match(m)):
        return dvh.v_gy(dose, float(g.group(1)))
    raise ValueError(f"unknown metric {metric!r}")


def evaluate(goals: list[Goal], dose_cube: np.ndarray, masks: dict[str, np.ndarray], voxel_cc: float,
             rx: float | None = None, body: str = "BODY") -> list[dict]:
    """Evaluate goals on a dose grid; returns rows {structure, goal, metric, comparison, limit, value, passed,
    priority}."""
    out = []
    for g in goals:
        mask = masks[g.structure]
        val = metric_value(g.metric, dvh.voxel_doses(dose_cube, mask), voxel_cc, dose_cube=dose_cube, target_mask=mask,
                           body_mask=masks.get(body), rx=rx)
        out.append({"structure": g.structure, "goal": g.describe(), "metric": g.metric,
                    "comparison": g.comparison, "limit": g.value,
                    "value": round(float(val), 3) if np.isfinite(val) else None,
                    "passed": bool(g.passed(val)), "priority": g.priority})
    return out
