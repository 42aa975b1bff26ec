"""Landmark analysis: survival from a landmark time among the patients still at risk there.

Pure functions, no Django. Rule (Anderson, Cain & Gelber, J Clin Oncol 1983;1:710; Dafni, Circ Cardiovasc Qual
Outcomes 2011;4:363): keep the patients still under observation at the landmark L (time >= L, R's at-risk
convention, as ``subset(data, time >= L)`` in the usual R code), restart the clock at L (time - L), and fix each
patient's group at L. A group can be a baseline value (arm, sex) or a time-dependent status: "had the
intermediate event (response, transplant, toxicity) by L", from the time of that event. Patients whose
intermediate event comes after L count as "no" (that is the point: no immortal-time bias). Then the usual
Kaplan-Meier curves, medians and log-rank test (``outcomes.survival``), as R's ``survfit``/``survdiff`` on the
landmark data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import survival as sv


@dataclass
class LandmarkResult:
    landmark: float
    n_total: int
    n_at_risk: int  # still under observation at the landmark
    excluded_events: int  # events before the landmark
    excluded_censored: int  # censored before the landmark
    curves: dict
    logrank: sv.LogRankResult | None
    group_rule: str

    def to_dict(self, times=()) -> dict:
        return {
            "landmark": self.landmark, "n_total": self.n_total, "n_at_risk": self.n_at_risk,
            "excluded_events": self.excluded_events, "excluded_censored": self.excluded_censored,
            "group_rule": self.group_rule,
            "groups": {k: sv.summarize(km, times).to_dict() for k, km in self.curves.items()},
            "logrank": self.logrank.to_dict() if self.logrank else None,
        }


def landmark_groups(event_times, landmark: float, yes: str = "yes", no: str = "no") -> np.ndarray:
    """Group fixed at the landmark from the time of an intermediate event (NaN = never had it)."""
    t = np.asarray(event_times, dtype=float)
    return np.where(~np.isnan(t) & (t <= landmark), yes, no).astype(object)


def landmark_analysis(durations, events, landmark: float, groups=None, group_event_times=None,
                      conf_type: str = "log", conf_level: float = 0.95) -> LandmarkResult:
    """KM per group and log-rank from ``landmark`` on (module docstring).

    ``groups``: labels fixed at baseline; or ``group_event_times``: time of an intermediate event (NaN = none),
    giving "yes"/"no" at the landmark. Without either: one curve ("all").
    """
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=float)
    if landmark < 0:
        raise ValueError("landmark must not be negative")
    if groups is not None and group_event_times is not None:
        raise ValueError("give groups or group_event_times, not both")
    if group_event_times is not None:
        g = landmark_groups(group_event_times, landmark)
        rule = "intermediate event by the landmark (yes/no)"
    elif groups is not None:
        g = np.asarray(groups, dtype=object)
        rule = "baseline group"
    else:
        g = None
        rule = "all patients"
    ok = ~(np.isnan(t) | np.isnan(e))
    at_risk = ok & (t >= landmark)
    before = ok & (t < landmark)
    shifted = t[at_risk] - landmark
    ev = e[at_risk].astype(int)
    if shifted.size == 0:
        raise ValueError(f"no patient is still at risk at the landmark ({landmark:g})")
    if g is None:
        curves = {"all": sv.kaplan_meier(shifted, ev, conf_type, conf_level, "all")}
        lr = None
    else:
        gl = g[at_risk]
        curves = sv.kaplan_meier_by_labels(shifted, ev, gl, conf_type, conf_level)
        lr = sv.logrank_test(shifted, ev, gl) if len(curves) >= 2 else None
    return LandmarkResult(landmark=float(landmark), n_total=int(ok.sum()), n_at_risk=int(at_risk.sum()),
                          excluded_events=int((before & (e == 1)).sum()),
                          excluded_censored=int((before & (e == 0)).sum()),
                          curves=curves, logrank=lr, group_rule=rule)
