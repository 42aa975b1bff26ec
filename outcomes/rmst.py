"""Restricted mean survival time (RMST) up to a horizon ``tau``, per group and between two groups.

Pure functions (numpy/scipy), no Django. Rules, as R's ``survRM2::rmst2`` (Uno et al.) and ``survival``'s
``print(survfit(...), rmean = tau)`` compute them:

* RMST(tau) = the area under the Kaplan-Meier curve from 0 to tau (the mean survival time when follow-up is
  truncated at tau); RMTL(tau) = tau - RMST(tau), the mean time lost.
* Variance (Greenwood form): ``sum_{t_j <= tau} A_j^2 d_j / (n_j (n_j - d_j))`` over the event times, with
  ``A_j`` = the area under the curve from t_j to tau (terms with n_j = d_j count 0).
* Per-group CI: RMST +- z SE. Between groups (arm 1 vs arm 0): difference with SE sqrt(v1 + v0); ratio of RMSTs
  and ratio of RMTLs on the log scale (delta method: var log R = v / R^2); two-sided normal p-values.
* tau must not exceed the last follow-up time of any group (survRM2 refuses it; beyond it the curve is unknown).

References: Royston & Parmar, BMC Med Res Methodol 2013;13:152. Uno et al., J Clin Oncol 2014;32:2380-5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .survival import _clean, kaplan_meier


@dataclass
class Rmst:
    label: str | None
    tau: float
    n: int
    events: int
    rmst: float
    se: float
    lower: float
    upper: float
    rmtl: float  # tau - rmst
    conf_level: float

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def _area_pieces(times, surv, tau):
    """Step curve S (value surv[j] from times[j] on; 1 before the first time) cut at tau: interval starts, widths
    and heights, beginning at 0."""
    keep = times <= tau
    starts = np.concatenate([[0.0], times[keep]])
    heights = np.concatenate([[1.0], surv[keep]])
    ends = np.concatenate([starts[1:], [tau]])
    return starts, ends - starts, heights


def rmst(durations, events, tau: float, conf_level: float = 0.95, label: str | None = None) -> Rmst:
    """RMST up to ``tau`` with its SE and normal CI (see the module docstring for the rule)."""
    km = kaplan_meier(durations, events, label=label)
    tau = float(tau)
    if not tau > 0:
        raise ValueError("tau must be positive")
    if tau > km.time[-1] + 1e-12:
        raise ValueError(f"tau ({tau:g}) is beyond the last follow-up time ({km.time[-1]:g})"
                         + (f" of group {label}" if label else ""))
    starts, widths, heights = _area_pieces(km.time, km.survival, tau)
    areas = widths * heights
    total = float(areas.sum())
    # A_j = area from time j to tau = sum of the pieces that start at or after t_j
    tail = areas[::-1].cumsum()[::-1]  # tail[i] = area of pieces i..end (piece i starts at starts[i])
    keep = km.time <= tau
    d, n = km.n_event[keep].astype(float), km.n_risk[keep].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where((n - d) > 0, d / (n * (n - d)), 0.0)
    var = float(np.sum(tail[1:] ** 2 * h))  # piece i+1 starts at the (i)th observed time
    se = math.sqrt(var)
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    return Rmst(label=label, tau=tau, n=km.n, events=km.events, rmst=total, se=se, lower=total - z * se,
                upper=total + z * se, rmtl=tau - total, conf_level=conf_level)


@dataclass
class Contrast:
    measure: str
    estimate: float
    lower: float
    upper: float
    p_value: float

    def to_dict(self) -> dict:
        return _clean(asdict(self))


@dataclass
class RmstComparison:
    tau: float
    arm1: Rmst
    arm0: Rmst
    difference: Contrast  # RMST(arm1) - RMST(arm0)
    ratio: Contrast  # RMST(arm1) / RMST(arm0)
    rmtl_ratio: Contrast  # RMTL(arm1) / RMTL(arm0)
    conf_level: float

    def to_dict(self) -> dict:
        return {"tau": self.tau, "conf_level": self.conf_level, "arm1": self.arm1.to_dict(),
                "arm0": self.arm0.to_dict(), "difference": self.difference.to_dict(),
                "ratio": self.ratio.to_dict(), "rmtl_ratio": self.rmtl_ratio.to_dict()}


def _log_ratio(a, va, b, vb, z, measure):
    if a <= 0 or b <= 0:
        return Contrast(measure, float("nan"), float("nan"), float("nan"), float("nan"))
    lr = math.log(a / b)
    se = math.sqrt(va / a ** 2 + vb / b ** 2)
    p = 2 * stats.norm.sf(abs(lr / se)) if se > 0 else float("nan")
    return Contrast(measure, a / b, math.exp(lr - z * se), math.exp(lr + z * se), float(p))


def rmst_compare(arm1: Rmst, arm0: Rmst) -> RmstComparison:
    """Between-group contrasts of two :func:`rmst` results at the same tau (survRM2 ``rmst2``'s table)."""
    if abs(arm1.tau - arm0.tau) > 1e-12:
        raise ValueError("both groups need the same tau")
    conf = arm1.conf_level
    z = stats.norm.ppf(1 - (1 - conf) / 2)
    v1, v0 = arm1.se ** 2, arm0.se ** 2
    diff = arm1.rmst - arm0.rmst
    se = math.sqrt(v1 + v0)
    p = 2 * stats.norm.sf(abs(diff / se)) if se > 0 else float("nan")
    return RmstComparison(
        tau=arm1.tau, arm1=arm1, arm0=arm0, conf_level=conf,
        difference=Contrast("RMST difference", diff, diff - z * se, diff + z * se, float(p)),
        ratio=_log_ratio(arm1.rmst, v1, arm0.rmst, v0, z, "RMST ratio"),
        rmtl_ratio=_log_ratio(arm1.rmtl, v1, arm0.rmtl, v0, z, "RMTL ratio"),
    )


def rmst_by_group(durations, events, groups, tau: float, conf_level: float = 0.95) -> dict[str, Rmst]:
    """:func:`rmst` per distinct group value (missing groups dropped), keyed ``str(value)``, sorted."""
    t, e, g = np.asarray(durations, dtype=float), np.asarray(events), np.asarray(groups, dtype=object)
    has = ~pd.isna(g)
    codes, uniques = pd.factorize(g[has], sort=True)
    t, e = t[has], e[has]
    return {str(u): rmst(t[codes == i], e[codes == i], tau, conf_level, str(u)) for i, u in enumerate(uniques)}


def max_tau(durations, groups=None) -> float:
    """The largest admissible tau: the smallest of the groups' last follow-up times (survRM2's default)."""
    t = np.asarray(durations, dtype=float)
    if groups is None:
        return float(np.nanmax(t))
    g = np.asarray(groups, dtype=object)
    has = ~pd.isna(g)
    return float(pd.Series(t[has]).groupby(pd.Series(g[has]).astype(str).to_numpy()).max().min())
