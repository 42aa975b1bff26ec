"""Kaplan-Meier, median survival, log-rank and Cox models, matching R's ``survival`` package.

Pure functions on numpy arrays / pandas frames; no Django. Results are plain dataclasses whose
``to_dict()`` is JSON-ready (NaN / inf become ``None``, the way R prints ``NA``).

Conventions (what reviewers compare against, R ``survival`` >= 3):

* Kaplan-Meier product-limit estimate ``S(t) = prod_{t_i <= t} (1 - d_i / n_i)`` over the unique
  observed times; events and censorings at the same time: the censored subjects are still at risk
  at that time (R and lifelines agree).
* Standard error on the cumulative-hazard scale (Greenwood):
  ``sigma(t) = sqrt(sum_{t_i <= t} d_i / (n_i (n_i - d_i)))``.
* 95 % confidence interval, two methods, every result records which one it used:

  - ``"log"`` (R ``survfit`` default, ``conf.type = "log"``): ``S * exp(+-z sigma)``, upper limit
    capped at 1.
  - ``"log-log"`` (lifelines' default, R ``conf.type = "log-log"``):
    ``exp(-exp(log(-log S) -+ z sigma / |log S|))``.

  When ``S = 0`` the interval is undefined (R prints ``NA``); we return ``None``.
* Median (and other quantiles) as R's ``quantile.survfit`` / ``print.survfit``: the time where a
  horizontal line at 0.5 meets the step curve; if the curve sits exactly at 0.5 over an interval,
  the midpoint of that flat segment (up to the last follow-up time when the flat runs to the end);
  ``None`` (R: ``NA``) when not reached. The CI of the median is where the lower and upper
  confidence bands cross 0.5 (lower band -> lower limit).
* Log-rank test (``survdiff``, rho = 0) for k groups: chi-square on k - 1 df.
* Cox proportional hazards through lifelines' ``CoxPHFitter`` (Efron ties, R ``coxph`` default),
  with the Grambsch-Therneau test of proportional hazards on scaled Schoenfeld residuals
  (lifelines ``proportional_hazard_test``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

CONF_TYPES = ("log", "log-log", "plain")
_TOL = math.sqrt(np.finfo(float).eps)  # R: sqrt(.Machine$double.eps)


def _clean(value):
    """JSON-ready scalar: numpy -> python, NaN/inf -> None (R's NA)."""
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if (math.isnan(v) or math.isinf(v)) else v
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Kaplan-Meier
# --------------------------------------------------------------------------------------------


@dataclass
class KaplanMeier:
    """A Kaplan-Meier curve: one entry per unique observed time (events and censorings), as R."""

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    n_censor: np.ndarray
    survival: np.ndarray
    std_err: np.ndarray  # SE of S(t) (R summary's "std.err") = S * sigma
    sigma: np.ndarray  # SE of the cumulative hazard (R's fit$std.err)
    lower: np.ndarray
    upper: np.ndarray
    conf_type: str
    conf_level: float
    n: int
    events: int
    label: str | None = None

    def to_dict(self) -> dict:
        return _clean(
            {
                "label": self.label,
                "n": self.n,
                "events": self.events,
                "conf_type": self.conf_type,
                "conf_level": self.conf_level,
                "time": self.time.tolist(),
                "n_risk": self.n_risk.tolist(),
                "n_event": self.n_event.tolist(),
                "n_censor": self.n_censor.tolist(),
                "survival": self.survival.tolist(),
                "std_err": self.std_err.tolist(),
                "lower": self.lower.tolist(),
                "upper": self.upper.tolist(),
            }
        )


def _as_arrays(durations, events) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events)
    if e.dtype == bool:
        e = e.astype(int)
    e = e.astype(float)
    if t.shape != e.shape or t.ndim != 1:
        raise ValueError("durations and events must be 1-D and of equal length")
    keep = ~(np.isnan(t) | np.isnan(e))
    t, e = t[keep], e[keep]
    if np.any(t < 0):
        raise ValueError("negative survival time")
    if not np.all(np.isin(e, (0.0, 1.0))):
        raise ValueError("events must be coded 0 = censored, 1 = event (R's 1/2 coding: subtract 1)")
    return t, e.astype(int)


def confidence_band(
    surv: np.ndarray, sigma: np.ndarray, conf_type: str = "log", conf_level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise CI for S(t) from ``sigma`` = SE of the cumulative hazard.

    ``log``: S exp(+-z sigma) (R survfit default), ``log-log``: exp(-exp(log(-log S) -+ z sigma/|log S|))
    (lifelines default; R ``conf.type="log-log"``), ``plain``: S (1 +- z sigma). Undefined (NaN) where S = 0.
    """
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type must be one of {CONF_TYPES}")
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    s = np.asarray(surv, dtype=float)
    sg = np.asarray(sigma, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "log":
            lower = s * np.exp(-z * sg)
            upper = np.minimum(s * np.exp(z * sg), 1.0)
        elif conf_type == "log-log":
            log_s = np.log(s)
            theta = np.log(-log_s)
            half = z * sg / np.abs(log_s)
            lower = np.exp(-np.exp(theta + half))
            upper = np.exp(-np.exp(theta - half))
            one = s >= 1.0  # no event yet: interval is the point 1 (R)
            lower = np.where(one, 1.0, lower)
            upper = np.where(one, 1.0, upper)
        else:
            lower = np.maximum(s - z * s * sg, 0.0)
            upper = np.minimum(s + z * s * sg, 1.0)
    zero = s <= 0.0
    lower = np.where(zero, np.nan, lower)
    upper = np.where(zero, np.nan, upper)
    return lower, upper


def kaplan_meier(
    durations: Sequence[float],
    events: Sequence[int],
    conf_type: str = "log",
    conf_level: float = 0.95,
    label: str | None = None,
) -> KaplanMeier:
    """Kaplan-Meier estimate with Greenwood SE and a ``conf_type`` CI (see module docstring).

    Vectorised: unique times via ``np.unique``, risk sets by reverse cumulative sums, S(t) by a
    cumulative product. Ties are handled as R: all events at t share the risk set of subjects with
    time >= t; subjects censored at t are in that risk set.
    """
    t, e = _as_arrays(durations, events)
    if t.size == 0:
        raise ValueError("no observations")
    times, inverse = np.unique(t, return_inverse=True)
    n_event = np.bincount(inverse, weights=e, minlength=times.size)
    n_total = np.bincount(inverse, minlength=times.size).astype(float)
    n_censor = n_total - n_event
    n_risk = n_total[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard_step = n_event / n_risk
        surv = np.cumprod(1.0 - hazard_step)
        var_terms = np.where(n_event > 0, n_event / (n_risk * (n_risk - n_event)), 0.0)
    sigma = np.sqrt(np.cumsum(var_terms))
    sigma = np.where(surv <= 0, np.nan, sigma)
    lower, upper = confidence_band(surv, sigma, conf_type, conf_level)
    return KaplanMeier(
        time=times,
        n_risk=n_risk.astype(int),
        n_event=n_event.astype(int),
        n_censor=n_censor.astype(int),
        survival=surv,
        std_err=surv * sigma,
        sigma=sigma,
        lower=lower,
        upper=upper,
        conf_type=conf_type,
        conf_level=conf_level,
        n=int(t.size),
        events=int(e.sum()),
        label=label,
    )


def _find_quantile(times: np.ndarray, surv: np.ndarray, p: float, xmax: float) -> float | None:
    """Time where F = 1 - S first reaches ``p`` (R quantile.survfit's rule, not its code).

    Step curve starts at F = 0 (time 0). If F equals p (within sqrt(eps)) on a flat segment, the
    answer is the midpoint of that segment; a flat running to the end of the curve ends at ``xmax``
    (the last follow-up time). None when never reached. NaN points (a band where S = 0) are ignored,
    so an upper band that is only undefined at the end gives None (R: NA).
    """
    s = np.asarray(surv, dtype=float)
    ok = ~np.isnan(s)  # undefined band values (S = 0) are skipped, as R's approx() drops NA
    x = np.concatenate([[0.0], np.asarray(times, dtype=float)[ok]])
    y = np.concatenate([[0.0], 1.0 - s[ok]])
    # keep the first time each level is reached (censor-only rows repeat the level)
    keep = np.concatenate([[True], np.diff(y) != 0])
    x, y = x[keep], y[keep]
    if p <= 0:
        return float(x[0])
    hit = np.nonzero(y + _TOL >= p)[0]
    if hit.size == 0:
        return None
    i1 = hit[0]
    beyond = np.nonzero(y - _TOL >= p)[0]
    if beyond.size and beyond[0] == i1:  # curve jumps across p at x[i1]: the simple case
        return float(x[i1])
    if beyond.size == 0:  # curve flat at exactly p until the end of follow-up
        return float((x[i1] + xmax) / 2.0)
    return float((x[i1] + x[beyond[0]]) / 2.0)


@dataclass
class MedianSurvival:
    median: float | None
    lower: float | None
    upper: float | None
    conf_type: str
    conf_level: float
    n: int
    events: int
    label: str | None = None

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def survival_quantile(km: KaplanMeier, p: float = 0.5) -> MedianSurvival:
    """Quantile of the survival time (p = 0.5: median) with CI from where the bands cross 1 - p.

    R ``print.survfit``: median where the curve crosses 0.5 (midpoint of an exact flat at 0.5),
    lower limit where the *lower* band crosses, upper limit where the *upper* band crosses; NA when
    not reached (lifelines reports inf; we report None).
    """
    xmax = float(km.time[-1])
    return MedianSurvival(
        median=_find_quantile(km.time, km.survival, p, xmax),
        lower=_find_quantile(km.time, km.lower, p, xmax),
        upper=_find_quantile(km.time, km.upper, p, xmax),
        conf_type=km.conf_type,
        conf_level=km.conf_level,
        n=km.n,
        events=km.events,
        label=km.label,
    )


def median_survival(km: KaplanMeier) -> MedianSurvival:
    """Median survival with CI, the way R prints it (see :func:`survival_quantile`)."""
    return survival_quantile(km, 0.5)


@dataclass
class SurvivalAt:
    time: float
    n_risk: int | None
    n_event: int | None  # events since the previous requested time, as R's summary(fit, times=) n.event
    survival: float | None
    std_err: float | None
    lower: float | None
    upper: float | None
    conf_type: str

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def survival_at(km: KaplanMeier, times: Iterable[float]) -> list[SurvivalAt]:
    """S(t) with CI at given times (R ``summary(fit, times=...)``, ``extend=FALSE``).

    S is the value of the step curve at the last observed time <= t; n_risk is the number still
    under observation at t (time >= t). n_event counts the events in the interval since the previous
    requested time (in increasing order; the first interval starts at 0), as R reports it: the n_event
    of all requested times add up to the events up to the last one. Times after the last follow-up give
    None (not estimable).
    """
    out = []
    t_max = float(km.time[-1])
    times = [float(t) for t in times]
    ordered = sorted(set(times))
    cum_events = np.concatenate([[0], np.cumsum(km.n_event)])
    events_to = {t: int(cum_events[np.searchsorted(km.time, t, side="right")]) for t in ordered}
    previous = dict(zip(ordered, [None, *ordered[:-1]]))
    for t in times:
        in_interval = events_to[t] - (events_to[previous[t]] if previous[t] is not None else 0)
        if t > t_max:
            out.append(SurvivalAt(t, None, None, None, None, None, None, km.conf_type))
            continue
        idx = np.searchsorted(km.time, t, side="right") - 1
        first_ge = np.searchsorted(km.time, t, side="left")
        n_risk = int(km.n_risk[first_ge]) if first_ge < km.time.size else 0
        if idx < 0:
            out.append(SurvivalAt(t, n_risk, 0, 1.0, 0.0, 1.0, 1.0, km.conf_type))
            continue
        out.append(
            SurvivalAt(
                time=t,
                n_risk=n_risk,
                n_event=in_interval,
                survival=float(km.survival[idx]),
                std_err=float(km.std_err[idx]),
                lower=float(km.lower[idx]),
                upper=float(km.upper[idx]),
                conf_type=km.conf_type,
            )
        )
    return out


def number_at_risk(km: KaplanMeier, times: Iterable[float]) -> list[int]:
    """Number at risk (time >= t) at each requested time: the table printed under a KM plot."""
    out = []
    for t in times:
        i = np.searchsorted(km.time, float(t), side="left")
        out.append(int(km.n_risk[i]) if i < km.time.size else 0)
    return out


def kaplan_meier_by_group(
    df: pd.DataFrame,
    duration_col: str,
    event_col: str,
    group_col: str | None = None,
    conf_type: str = "log",
    conf_level: float = 0.95,
) -> dict[str, KaplanMeier]:
    """Stratified KM curves (R ``survfit(Surv(t, e) ~ group)``); one curve for ``group_col=None``.

    Rows with a missing group are dropped (R's default na.action). Keys are ``str(group)``, sorted.
    """
    if group_col is None:
        return {"all": kaplan_meier(df[duration_col], df[event_col], conf_type, conf_level, "all")}
    return kaplan_meier_by_labels(df[duration_col].to_numpy(), df[event_col].to_numpy(), df[group_col].to_numpy(),
                                  conf_type, conf_level)


def split_by_labels(groups, *arrays):
    """Yield ``(str(value), [array[value's rows] ...])`` per distinct group value, missing values dropped, in the
    sorted order of the values: the per-group split every by-group estimator uses."""
    g = np.asarray(groups, dtype=object)
    has = ~pd.isna(g)
    codes, uniques = pd.factorize(g[has], sort=True)
    kept = [np.asarray(a)[has] for a in arrays]
    for i, u in enumerate(uniques):
        rows = codes == i
        yield str(u), [a[rows] for a in kept]


def kaplan_meier_by_labels(durations, events, groups, conf_type: str = "log",
                           conf_level: float = 0.95) -> dict[str, KaplanMeier]:
    """:func:`kaplan_meier_by_group` on plain arrays: one curve per distinct group value (missing dropped), keyed
    ``str(value)`` in the order of the values."""
    return {label: kaplan_meier(t, e, conf_type, conf_level, label)
            for label, (t, e) in split_by_labels(groups, durations, events)}


@dataclass
class SurvivalSummary:
    """What a report shows per curve: n, events, median with CI and S(t) at landmark times."""

    label: str | None
    n: int
    events: int
    conf_type: str
    conf_level: float
    median: MedianSurvival
    at_times: list[SurvivalAt] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "n": self.n,
            "events": self.events,
            "conf_type": self.conf_type,
            "conf_level": self.conf_level,
            "median": self.median.to_dict(),
            "at_times": [s.to_dict() for s in self.at_times],
        }


def summarize(km: KaplanMeier, times: Iterable[float] = ()) -> SurvivalSummary:
    """Median with CI and survival at ``times`` (e.g. 1, 2, 5 years in the data's time unit)."""
    return SurvivalSummary(
        label=km.label,
        n=km.n,
        events=km.events,
        conf_type=km.conf_type,
        conf_level=km.conf_level,
        median=median_survival(km),
        at_times=survival_at(km, times),
    )


# --------------------------------------------------------------------------------------------
# Log-rank
# --------------------------------------------------------------------------------------------


@dataclass
class LogRankResult:
    groups: list[str]
    n: list[int]
    observed: list[float]
    expected: list[float]
    chisq: float | None
    df: int
    p_value: float | None
    test: str = "log-rank (Mantel-Haenszel; R survdiff rho=0)"
    note: str | None = None  # why there is no statistic, when there is none

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def logrank_test(durations, events, groups) -> LogRankResult:
    """k-sample log-rank test (R ``survdiff``, rho = 0).

    At each distinct event time: expected events in group g = d * n_g / n; variance matrix
    V_gh = sum d (n - d) / (n - 1) * n_g / n * (delta_gh - n_h / n). Statistic
    (O - E)' V^- (O - E) on the first k - 1 groups, chi-square with k - 1 df.
    """
    t, e = _as_arrays(durations, events)
    g = np.asarray(groups)
    if g.shape[0] != np.asarray(durations).shape[0]:
        raise ValueError("groups must have the same length as durations")
    keep = ~pd.isna(np.asarray(durations, dtype=float)) & ~pd.isna(np.asarray(events, dtype=float))
    g = g[keep]
    notna = ~pd.isna(g)
    t, e, g = t[notna], e[notna], g[notna]
    codes, uniques = pd.factorize(g)  # hashing; only the few distinct labels are sorted as strings
    labels, remap = np.unique(np.asarray(uniques).astype(str), return_inverse=True)
    gi = remap[codes]
    k = labels.size
    if k < 2:
        raise ValueError("log-rank needs at least two groups")
    times, ti = np.unique(t, return_inverse=True)
    m = times.size
    cell = ti * k + gi  # (time, group) cell of each subject
    d_g = np.bincount(cell, weights=e, minlength=m * k).reshape(m, k)
    n_at = np.bincount(cell, minlength=m * k).reshape(m, k).astype(float)
    r_g = n_at[::-1].cumsum(axis=0)[::-1]  # at risk per group
    d = d_g.sum(axis=1)
    r = r_g.sum(axis=1)
    ev = d > 0
    d, r, d_g, r_g = d[ev], r[ev], d_g[ev], r_g[ev]
    frac = r_g / r[:, None]
    expected = (d[:, None] * frac).sum(axis=0)
    observed = d_g.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(r > 1, d * (r - d) / (r - 1), 0.0)
    v = np.einsum("t,tg,th->gh", w, frac, -frac)
    v[np.diag_indices(k)] += (w[:, None] * frac).sum(axis=0)
    diff = observed - expected
    sub = v[: k - 1, : k - 1]
    dfree = int(np.linalg.matrix_rank(sub))
    result = LogRankResult(
        groups=labels.tolist(),
        n=np.bincount(gi, minlength=k).astype(int).tolist(),
        observed=observed.tolist(),
        expected=expected.tolist(),
        chisq=None,
        df=dfree,
        p_value=None,
    )
    if dfree == 0:
        # No event, or no event while two groups were at risk together: the variance is zero and the
        # test has no information. R's survdiff prints chisq 0 on 0 df; say why instead of a bare 0.
        result.note = ("no events in the cohort: the log-rank test is undefined" if not d.size else
                       "no event happened while more than one group was at risk: the groups cannot be compared")
        return result
    result.chisq = float(diff[: k - 1] @ np.linalg.pinv(sub) @ diff[: k - 1])
    result.p_value = float(stats.chi2.sf(result.chisq, dfree))
    return result


def logrank_by_column(df: pd.DataFrame, duration_col: str, event_col: str, group_col: str) -> LogRankResult:
    """Convenience wrapper: :func:`logrank_test` on frame columns."""
    return logrank_test(df[duration_col].to_numpy(), df[event_col].to_numpy(), df[group_col].to_numpy())


# --------------------------------------------------------------------------------------------
# Cox proportional hazards
# --------------------------------------------------------------------------------------------


@dataclass
class CoxTerm:
    covariate: str
    coef: float
    hazard_ratio: float
    hr_lower: float
    hr_upper: float
    se: float
    p_value: float
    ph_test_statistic: float | None = None
    ph_p_value: float | None = None


@dataclass
class CoxResult:
    terms: list[CoxTerm]
    n: int
    events: int
    log_likelihood: float
    concordance: float
    ties: str
    ph_transform: str
    conf_level: float
    ph_global_ok: bool | None  # False if any covariate's PH test p < 0.05

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def cox_ph(
    df: pd.DataFrame,
    duration_col: str,
    event_col: str,
    covariates: Sequence[str] | None = None,
    conf_level: float = 0.95,
    ph_transform: str = "km",
    penalizer: float = 0.0,
    strata: Sequence[str] = (),
) -> CoxResult:
    """Cox proportional-hazards model (lifelines ``CoxPHFitter``, Efron ties as R ``coxph``).

    Returns per covariate HR = exp(coef), its Wald CI and p, and the proportional-hazards test of
    Grambsch & Therneau (1994) on scaled Schoenfeld residuals (lifelines
    ``proportional_hazard_test`` with ``time_transform`` = ``ph_transform``; R ``cox.zph`` default
    transform is "km"). Covariates must be numeric (dummy-code categories before calling). Rows with
    missing values in the used columns are dropped (R's na.omit). ``strata``: columns whose levels get a
    baseline hazard of their own (R ``+ strata(x)``); they take no coefficient.
    """
    from lifelines import CoxPHFitter
    from lifelines.statistics import proportional_hazard_test

    strata = list(strata)
    cols = list(covariates) if covariates is not None else [
        c for c in df.columns if c not in (duration_col, event_col, *strata)
    ]
    data = df[[duration_col, event_col, *cols, *strata]].dropna()
    data = data.astype({c: float for c in (duration_col, event_col, *cols)})
    cph = CoxPHFitter(alpha=1 - conf_level, penalizer=penalizer, strata=strata or None)
    # Newton-Raphson until the step is below 1e-12 (lifelines' default 1e-7 stops a few 1e-7 short of R's coxph,
    # whose estimates are converged to ~1e-10; one more quadratic step reaches them)
    cph.fit(data, duration_col=duration_col, event_col=event_col, fit_options={"precision": 1e-12})
    summ = cph.summary
    ph = None
    try:
        ph = proportional_hazard_test(cph, data, time_transform=ph_transform).summary
    except Exception:  # noqa: BLE001 - PH test is advisory; a degenerate fit must not block the HRs
        ph = None
    lo_col = [c for c in summ.columns if c.startswith("exp(coef) lower")][0]
    hi_col = [c for c in summ.columns if c.startswith("exp(coef) upper")][0]
    terms = []
    for cov in cols:
        row = summ.loc[cov]
        stat = pval = None
        if ph is not None and cov in ph.index:
            stat = float(ph.loc[cov, "test_statistic"])
            pval = float(ph.loc[cov, "p"])
        terms.append(
            CoxTerm(
                covariate=cov,
                coef=float(row["coef"]),
                hazard_ratio=float(row["exp(coef)"]),
                hr_lower=float(row[lo_col]),
                hr_upper=float(row[hi_col]),
                se=float(row["se(coef)"]),
                p_value=float(row["p"]),
                ph_test_statistic=stat,
                ph_p_value=pval,
            )
        )
    ph_ok = None if ph is None else bool((ph["p"] >= 0.05).all())
    return CoxResult(
        terms=terms,
        n=int(data.shape[0]),
        events=int(data[event_col].sum()),
        log_likelihood=float(cph.log_likelihood_),
        concordance=float(cph.concordance_index_),
        ties="efron",
        ph_transform=ph_transform,
        conf_level=conf_level,
        ph_global_ok=ph_ok,
    )


# --------------------------------------------------------------------------------------------
# Bridge from endpoints frames (outcomes.endpoints.endpoints_frame) to a report
# --------------------------------------------------------------------------------------------

UNITS = {"days": 1.0, "months": 30.4375, "years": 365.25}


def km_for_endpoint(
    frame: pd.DataFrame,
    endpoint: str = "os",
    group_col: str | None = None,
    unit: str = "months",
    conf_type: str = "log",
    conf_level: float = 0.95,
) -> dict[str, KaplanMeier]:
    """KM curves for an endpoint of an endpoints frame (columns ``<endpoint>_days`` / ``_event``).

    Times are converted from days to ``unit`` (days, months = 30.4375 d, years = 365.25 d). Rows
    without a time (data issues) are dropped.
    """
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {tuple(UNITS)}")
    tcol, ecol = f"{endpoint}_days", f"{endpoint}_event"
    cols = [tcol, ecol] + ([group_col] if group_col else [])
    data = frame[cols].dropna(subset=[tcol, ecol]).copy()
    data["_t"] = data[tcol].astype(float) / UNITS[unit]
    data["_e"] = data[ecol].astype(int)
    return kaplan_meier_by_group(data, "_t", "_e", group_col, conf_type, conf_level)


def survival_report(
    frame: pd.DataFrame,
    endpoint: str = "os",
    group_col: str | None = None,
    unit: str = "months",
    landmarks_years: Sequence[float] = (1, 2, 5),
    conf_type: str = "log",
    conf_level: float = 0.95,
) -> dict:
    """JSON-ready report: per group n, events, median with CI, S at 1/2/5 years with CI, and the
    log-rank test across groups (when there are >= 2). States endpoint, unit and CI method."""
    curves = km_for_endpoint(frame, endpoint, group_col, unit, conf_type, conf_level)
    per_year = UNITS["years"] / UNITS[unit]
    times = [y * per_year for y in landmarks_years]
    groups = {}
    for label, km in curves.items():
        summ = summarize(km, times).to_dict()
        for row, years in zip(summ["at_times"], landmarks_years):
            row["years"] = years
        groups[label] = summ
    report = {
        "endpoint": endpoint,
        "unit": unit,
        "conf_type": conf_type,
        "conf_level": conf_level,
        "group_col": group_col,
        "groups": groups,
        "logrank": None,
    }
    if group_col and len(curves) >= 2:
        tcol, ecol = f"{endpoint}_days", f"{endpoint}_event"
        data = frame[[tcol, ecol, group_col]].dropna()
        report["logrank"] = logrank_test(data[tcol].astype(float), data[ecol].astype(int), data[group_col]).to_dict()
    return report
