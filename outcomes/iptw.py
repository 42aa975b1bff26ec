"""Inverse-probability-of-treatment weighted (IPTW) Kaplan-Meier curves and Cox model.

Pure numpy/scipy/pandas, no Django. Rules (Cole & Hernan, Comput Methods Programs Biomed 2004;75:45; Xie & Liu,
Stat Med 2005;24:3089; Austin, Stat Med 2014;33:1242):

* Propensity e(x) = P(treated | x) by logistic regression (maximum likelihood, Newton-Raphson = R ``glm(family =
  binomial)``) on the chosen numeric covariates (dummy-code categories before).
* Stabilised weights: P(treated) / e(x) for the treated, P(untreated) / (1 - e(x)) for the others; their sum is
  close to n. Reported: min / max weight and Kish's effective sample size (sum w)^2 / sum w^2 per group.
* Weighted Kaplan-Meier: S(t) = prod (1 - d_w / n_w) with weighted events and weighted numbers at risk; the raw
  (unweighted) numbers at risk are reported beside the weighted ones. SE of S: the infinitesimal jackknife
  (robust) one that R's ``survfit(..., weights = w)`` reports for non-integer weights, or the weighted Greenwood
  one (``robust = FALSE``); CI as :mod:`outcomes.survival` (default "log").
* Marginal hazard ratio: weighted Cox model (Breslow ties) with the robust sandwich SE and the robust score test
  (the weighted log-rank analogue), R ``coxph(Surv(t, e) ~ treated, weights = w, robust = TRUE, ties =
  "breslow")`` and its ``rscore``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from . import survival as sv
from .competing import fine_gray


@dataclass
class Propensity:
    covariates: list[str]
    coef: dict  # intercept + covariates, logit scale
    score: np.ndarray
    weights: np.ndarray
    converged: bool


def logistic_regression(x: np.ndarray, y: np.ndarray, max_iter: int = 50, tol: float = 1e-10):
    """Maximum-likelihood logistic regression with an intercept (Newton-Raphson / IRLS). Returns (coef, converged)."""
    design = np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(max_iter):
        p = 1 / (1 + np.exp(-design @ beta))
        wts = p * (1 - p)
        hess = design.T @ (design * wts[:, None])
        try:
            step = np.linalg.solve(hess, design.T @ (y - p))
        except np.linalg.LinAlgError:
            return beta, False
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            return beta, True
    return beta, False


def propensity_weights(df: pd.DataFrame, treatment_col: str, covariates: Sequence[str]) -> Propensity:
    """Propensity score and stabilised IPTW weights (module docstring). ``treatment_col`` is 0/1."""
    cols = list(covariates)
    if not cols:
        raise ValueError("choose at least one covariate for the propensity model")
    y = df[treatment_col].to_numpy(dtype=float)
    if not set(np.unique(y)) <= {0.0, 1.0} or len(np.unique(y)) < 2:
        raise ValueError("the treatment must have exactly two groups")
    x = df[cols].to_numpy(dtype=float)
    beta, ok = logistic_regression(x, y)
    e = 1 / (1 + np.exp(-(np.column_stack([np.ones(len(y)), x]) @ beta)))
    p1 = y.mean()
    w = np.where(y == 1, p1 / e, (1 - p1) / (1 - e))
    return Propensity(covariates=cols, coef=dict(zip(["(Intercept)", *cols], beta.tolist())), score=e, weights=w,
                      converged=ok and bool(np.all((e > 1e-8) & (e < 1 - 1e-8))))


@dataclass
class WeightedKM:
    km: sv.KaplanMeier  # survival / CI from the weighted estimate; n_risk / n_event hold the RAW counts
    weighted_n_risk: np.ndarray
    weighted_n_event: np.ndarray
    sum_weights: float
    effective_n: float
    se_type: str

    def at(self, times) -> list[dict]:
        out = []
        for s in sv.survival_at(self.km, times):
            row = s.to_dict()
            i = np.searchsorted(self.km.time, s.time, side="left")
            row["weighted_n_risk"] = float(self.weighted_n_risk[i]) if i < self.km.time.size and \
                s.survival is not None else None
            row["raw_n_risk"] = row.pop("n_risk")
            out.append(row)
        return out


def weighted_kaplan_meier(durations, events, weights, conf_type: str = "log", conf_level: float = 0.95,
                          robust: bool = True, label: str | None = None) -> WeightedKM:
    """Weighted KM with raw and weighted numbers at risk; SE infinitesimal-jackknife (default) or Greenwood."""
    t = np.asarray(durations, dtype=float)
    e = np.asarray(events, dtype=float)
    w = np.asarray(weights, dtype=float)
    keep = ~(np.isnan(t) | np.isnan(e) | np.isnan(w))
    t, e, w = t[keep], e[keep], w[keep]
    if t.size == 0:
        raise ValueError("no observations")
    times, inv = np.unique(t, return_inverse=True)
    dw = np.bincount(inv, weights=w * e, minlength=times.size)
    tot_w = np.bincount(inv, weights=w, minlength=times.size)
    nw = tot_w[::-1].cumsum()[::-1]
    d_raw = np.bincount(inv, weights=e, minlength=times.size)
    tot = np.bincount(inv, minlength=times.size).astype(float)
    n_raw = tot[::-1].cumsum()[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1 - dw / nw)
        h = np.where(nw - dw > 0, dw / (nw * (nw - dw)), 0.0)
    cum_h = np.cumsum(h)
    if robust:
        # influence of subject i on log S(t): C(min(t, T_i)) - event_i [T_i <= t] / (n_w(T_i) - d_w(T_i)),
        # C = cumsum d_w / (n_w (n_w - d_w)); var log S(t) = sum_i w_i^2 infl_i(t)^2 (survfit's IJ variance)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(nw - dw > 0, 1 / (nw - dw), 0.0)
        u_done = cum_h[inv] - e * k[inv]  # subjects whose time is <= t
        done = np.bincount(inv, weights=w ** 2 * u_done ** 2, minlength=times.size).cumsum()
        w2_later = np.concatenate([np.bincount(inv, weights=w ** 2, minlength=times.size)[::-1].cumsum()[::-1][1:],
                                   [0.0]])
        var = cum_h ** 2 * w2_later + done
        se_type = "infinitesimal jackknife (R survfit with weights)"
    else:
        var = cum_h
        se_type = "weighted Greenwood (R survfit robust = FALSE)"
    sigma = np.sqrt(var)
    sigma = np.where(surv <= 0, np.nan, sigma)
    lower, upper = sv.confidence_band(surv, sigma, conf_type, conf_level)
    km = sv.KaplanMeier(time=times, n_risk=n_raw.astype(int), n_event=d_raw.astype(int),
                        n_censor=(tot - d_raw).astype(int), survival=surv, std_err=surv * sigma, sigma=sigma,
                        lower=lower, upper=upper, conf_type=conf_type, conf_level=conf_level, n=int(t.size),
                        events=int(e.sum()), label=label)
    return WeightedKM(km=km, weighted_n_risk=nw, weighted_n_event=dw, sum_weights=float(w.sum()),
                      effective_n=float(w.sum() ** 2 / (w ** 2).sum()), se_type=se_type)


@dataclass
class IptwResult:
    treatment: str
    covariates: list[str]
    propensity_coef: dict
    weight_min: float
    weight_max: float
    curves: dict  # label -> WeightedKM
    hazard_ratio: float
    hr_lower: float
    hr_upper: float
    hr_se: float
    robust_score: float
    robust_score_p: float
    n: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self, times=()) -> dict:
        groups = {}
        for label, wk in self.curves.items():
            med = sv.median_survival(wk.km).to_dict()
            groups[label] = {"n": wk.km.n, "events": wk.km.events, "sum_weights": wk.sum_weights,
                             "effective_n": wk.effective_n, "se_type": wk.se_type, "median": med,
                             "at_times": wk.at(times)}
        return sv._clean({
            "treatment": self.treatment, "covariates": self.covariates, "propensity_coef": self.propensity_coef,
            "weights": "stabilised", "weight_min": self.weight_min, "weight_max": self.weight_max, "n": self.n,
            "groups": groups, "hazard_ratio": self.hazard_ratio, "hr_lower": self.hr_lower,
            "hr_upper": self.hr_upper, "hr_se": self.hr_se, "robust_score": self.robust_score,
            "robust_score_p": self.robust_score_p, "notes": self.notes,
        })


def iptw_analysis(df: pd.DataFrame, duration_col: str, event_col: str, group_col: str, covariates: Sequence[str],
                  treated=None, conf_type: str = "log", conf_level: float = 0.95) -> IptwResult:
    """IPTW-weighted KM per group and the weighted Cox HR (module docstring). ``group_col`` must have two values;
    ``treated`` names the one coded 1 (default: the second in sorted order). Rows missing any used value dropped."""
    cols = list(covariates)
    data = df[[duration_col, event_col, group_col, *cols]].dropna().copy()
    labels = sorted(data[group_col].astype(str).unique())
    if len(labels) != 2:
        raise ValueError(f"IPTW compares exactly two groups; {group_col} has {len(labels)}")
    treated = labels[1] if treated is None else str(treated)
    data["_a"] = (data[group_col].astype(str) == treated).astype(float)
    ps = propensity_weights(data, "_a", cols)
    data["_w"] = ps.weights
    notes = [] if ps.converged else ["the propensity model did not converge or separates the groups: weights "
                                     "are extreme and the estimates unreliable"]
    curves = {}
    for label in labels:
        sel = data[group_col].astype(str) == label
        curves[label] = weighted_kaplan_meier(data.loc[sel, duration_col], data.loc[sel, event_col],
                                              data.loc[sel, "_w"], conf_type, conf_level, label=label)
    cox = fine_gray(data, duration_col, event_col, ["_a"], cause=1, conf_level=conf_level, weights_col="_w")
    term = cox.terms[0]
    return IptwResult(treatment=f"{treated} vs {labels[0] if treated == labels[1] else labels[1]}",
                      covariates=cols, propensity_coef=ps.coef, weight_min=float(ps.weights.min()),
                      weight_max=float(ps.weights.max()), curves=curves, hazard_ratio=term.shr,
                      hr_lower=term.lower, hr_upper=term.upper, hr_se=term.se, robust_score=cox.robust_score,
                      robust_score_p=cox.robust_score_p, n=int(len(data)), notes=notes + cox.notes)
