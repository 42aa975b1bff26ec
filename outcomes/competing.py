"""Competing risks: cumulative incidence (Aalen-Johansen), Gray's test and Fine-Gray regression.

Pure numpy/scipy/pandas, no Django. Event codes: 0 = censored, 1, 2, ... = the cause of the (first) event; the
cause of interest is chosen per call. Written from the published formulas; the numbers are checked against R's
``cmprsk`` (its own saved test output) and ``survival::finegray`` + ``coxph`` (tests/outcomes_stats).

* Cumulative incidence of cause k (Aalen-Johansen / Kalbfleisch-Prentice):
  ``F_k(t) = sum_{t_j <= t} S(t_j-) d_kj / n_j`` with S the all-cause Kaplan-Meier curve. Its variance is the
  asymptotic (Aalen-type) estimator of ``cmprsk::cuminc`` (Gray's ``cinc``), with the tie correction
  ``1 - (d - 1)/(n - 1)``; the 95 % CI is the log-log one tidycmprsk/Pintilie use, ``F^exp(+-z se/(F log F))``.
* Gray's K-sample test (Gray, Ann Stat 1988;16:1141): the score compares each group's subdistribution hazard
  with the pooled one, weight ``(1 - F(t-))^rho`` (rho = 0: the log-rank analogue), with Gray's asymptotic
  covariance; chi-square on K - 1 df. Strata add their scores and covariances (``cuminc(..., strata)``).
* Fine-Gray proportional subdistribution hazards (Fine & Gray, JASA 1999;94:496): a Cox partial likelihood in
  which subjects who had a competing event stay in the risk set with weight ``G(t-)/G(T_i-)`` (G = the Kaplan-
  Meier curve of the censoring), Breslow ties, Newton-Raphson. Standard errors: the model-based inverse
  information and the robust sandwich clustered on subject, i.e. what R's ``coxph(Surv(fgstart, fgstop,
  fgstatus) ~ x, weights = fgwt, cluster = id, ties = "breslow")`` reports on ``finegray()`` data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .survival import _clean, split_by_labels


def _as_cr(durations, causes):
    t = np.asarray(durations, dtype=float)
    c = np.asarray(causes, dtype=float)
    if t.shape != c.shape or t.ndim != 1:
        raise ValueError("durations and causes must be 1-D and of equal length")
    keep = ~(np.isnan(t) | np.isnan(c))
    t, c = t[keep], c[keep]
    if np.any(t < 0):
        raise ValueError("negative time")
    if np.any((c < 0) | (c != np.round(c))):
        raise ValueError("causes must be coded 0 = censored, 1, 2, ... = cause of the event")
    return t, c.astype(int), keep


# --------------------------------------------------------------------------------------------
# Cumulative incidence
# --------------------------------------------------------------------------------------------


@dataclass
class CumulativeIncidence:
    cause: int
    label: str | None
    n: int
    events: int  # events of this cause
    competing: int  # events of any other cause
    time: np.ndarray  # the times where F jumps (events of this cause)
    cif: np.ndarray
    variance: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n_risk: np.ndarray
    max_time: float  # last follow-up: beyond it the curve is not estimated (cmprsk: NA)
    conf_level: float = 0.95

    def at(self, times: Iterable[float]) -> list[dict]:
        """F, its SE and CI at ``times`` (cmprsk ``timepoints``: the step value; None after the last follow-up)."""
        out = []
        for t in times:
            t = float(t)
            if t > self.max_time:
                out.append({"time": t, "cif": None, "std_err": None, "lower": None, "upper": None})
                continue
            i = np.searchsorted(self.time, t, side="right") - 1
            if i < 0:
                out.append({"time": t, "cif": 0.0, "std_err": 0.0, "lower": None, "upper": None})
                continue
            out.append(_clean({"time": t, "cif": self.cif[i], "std_err": math.sqrt(self.variance[i]),
                               "lower": self.lower[i], "upper": self.upper[i]}))
        return out

    def to_dict(self) -> dict:
        return _clean({"cause": self.cause, "label": self.label, "n": self.n, "events": self.events,
                       "competing": self.competing, "conf_level": self.conf_level, "max_time": self.max_time,
                       "time": self.time.tolist(), "cif": self.cif.tolist(),
                       "std_err": np.sqrt(self.variance).tolist(), "lower": self.lower.tolist(),
                       "upper": self.upper.tolist(), "n_risk": self.n_risk.tolist()})


def _loglog_ci(f, var, conf_level):
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var)
        expo = z * se / (f * np.log(f))
        lower = f ** np.exp(-expo)
        upper = f ** np.exp(expo)
    bad = (f <= 0) | (f >= 1)
    return np.where(bad, np.nan, lower), np.where(bad, np.nan, upper)


def cumulative_incidence(durations, causes, cause: int = 1, conf_level: float = 0.95,
                         label: str | None = None) -> CumulativeIncidence:
    """Aalen-Johansen cumulative incidence of ``cause`` with cmprsk's variance (module docstring)."""
    t, c, _ = _as_cr(durations, causes)
    if t.size == 0:
        raise ValueError("no observations")
    times, inv = np.unique(t, return_inverse=True)
    d1 = np.bincount(inv, weights=(c == cause), minlength=times.size)
    dall = np.bincount(inv, weights=(c > 0), minlength=times.size)
    d2 = dall - d1
    n_at = np.bincount(inv, minlength=times.size).astype(float)
    rs = n_at[::-1].cumsum()[::-1]
    s_after = np.cumprod(1.0 - dall / rs)  # S(t_j)
    s_before = np.concatenate([[1.0], s_after[:-1]])  # S(t_j-)
    f = np.cumsum(s_before * d1 / rs)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_s = np.where(s_after > 0, 1.0 / s_after, 0.0)
        tie2 = np.where(d2 > 1, 1 - (d2 - 1) / (rs - 1), 1.0)
        tie1 = np.where(d1 > 1, 1 - (d1 - 1) / (rs - 1), 1.0)
    # contributions of the other causes (only where S(t) > 0) and of this cause, on the terms of
    # var F(t) = v1 + F^2 v3 - 2 F v2
    w2 = np.where((d2 > 0) & (s_after > 0), s_before ** 2 * tie2 * d2 / rs ** 2, 0.0)
    w1 = np.where(d1 > 0, s_before ** 2 * tie1 * d1 / rs ** 2, 0.0)
    b2 = f * inv_s
    b1 = 1 + inv_s * f
    v1 = np.cumsum(b2 ** 2 * w2 + b1 ** 2 * w1)
    v2 = np.cumsum(inv_s * b2 * w2 + inv_s * b1 * w1)
    v3 = np.cumsum(inv_s ** 2 * w2 + inv_s ** 2 * w1)
    var = v1 + f ** 2 * v3 - 2 * f * v2
    jump = d1 > 0
    ft, vt = f[jump], np.maximum(var[jump], 0.0)
    lower, upper = _loglog_ci(ft, vt, conf_level)
    return CumulativeIncidence(cause=cause, label=label, n=int(t.size), events=int((c == cause).sum()),
                               competing=int(((c > 0) & (c != cause)).sum()), time=times[jump], cif=ft,
                               variance=vt, lower=lower, upper=upper, n_risk=rs[jump].astype(int),
                               max_time=float(times[-1]), conf_level=conf_level)


def cumulative_incidence_by_group(durations, causes, groups, cause: int = 1,
                                  conf_level: float = 0.95) -> dict[str, CumulativeIncidence]:
    """:func:`cumulative_incidence` per distinct group value (missing groups dropped), keyed ``str(value)``."""
    t, c = np.asarray(durations, dtype=float), np.asarray(causes, dtype=float)
    return {label: cumulative_incidence(tg, cg, cause, conf_level, label)
            for label, (tg, cg) in split_by_labels(groups, t, c)}


# --------------------------------------------------------------------------------------------
# Gray's test
# --------------------------------------------------------------------------------------------


@dataclass
class GrayTest:
    cause: int
    groups: list[str]
    statistic: float | None
    df: int
    p_value: float | None
    rho: float
    stratified: bool
    test: str = "Gray's test (cmprsk cuminc)"
    note: str | None = None

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def _gray_stratum(t, c, g, ng, cause, rho):
    """Score (ng) and covariance (ng x ng) of Gray's test in one stratum; all groups kept, sliced by the caller."""
    times, inv = np.unique(t, return_inverse=True)
    m = times.size
    cell = inv * ng + g
    tot = np.bincount(cell, minlength=m * ng).reshape(m, ng).astype(float)
    d1 = np.bincount(cell, weights=(c == cause), minlength=m * ng).reshape(m, ng)
    d2 = np.bincount(cell, weights=(c > 0) & (c != cause), minlength=m * ng).reshape(m, ng)
    rs = tot[::-1].cumsum(axis=0)[::-1]
    nd1, nd2 = d1.sum(axis=1), d2.sum(axis=1)
    ev = (nd1 + nd2) > 0
    rs, d1, d2, nd1, nd2 = rs[ev], d1[ev], d2[ev], nd1[ev], nd2[ev]
    at = rs > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at, (rs - d1 - d2) / rs, 1.0)
        skm = np.cumprod(factor, axis=0)  # right-continuous KM per group
        skmm = np.vstack([np.ones((1, ng)), skm[:-1]])  # left-continuous
        f1 = np.cumsum(np.where(at, skmm * d1 / rs, 0.0), axis=0)
        f1m = np.vstack([np.zeros((1, ng)), f1[:-1]])
        t1 = np.where(at, rs / skmm, 0.0)  # the group's subdistribution risk set over its S(t-)
        tr = t1.sum(axis=1)
        tq = np.where(at, rs * (1 - f1m) / skmm, 0.0).sum(axis=1)
        f = np.cumsum(nd1 / tr)  # pooled cumulative incidence
        fm = np.concatenate([[0.0], f[:-1]])
        fb = (1 - fm) ** rho
        a = fb[:, None, None] * (np.einsum("ti,ij->tij", t1, np.eye(ng)) - np.einsum("ti,tj->tij", t1, t1)
                                 / tr[:, None, None])
        cstep = a * (nd1 / (tr * (1 - fm)))[:, None, None]
        cm = np.cumsum(cstep, axis=0)  # c as updated at each time (used at that time)
        score = (fb[:, None] * np.where(at, d1 - nd1[:, None] * rs * (1 - f1m) / (skmm * tq[:, None]), 0.0)).sum(0)
        # this cause's jumps
        on1 = (nd1 > 0)[:, None] & at
        t4 = np.where(skm > 0, 1 - (1 - f)[:, None] / skm, 1.0)
        t5 = np.where((nd1 > 1)[:, None], 1 - (nd1[:, None] - 1) / (tr[:, None] * skmm - 1), 1.0)
        t3 = np.where(on1, t5 * skmm * nd1[:, None] / (tr[:, None] * rs), 0.0)
        b = a - t4[:, None, :] * cm  # b[t, i, k]
        v = np.einsum("tik,tjk,tk->ij", b, b, t3)
        v2 = np.einsum("tik,tk->ik", b, t4 * t3)
        v3 = (t4 ** 2 * t3).sum(0)
        # the other causes' jumps
        on2 = (d2 > 0) & (skm > 0)
        t4o = np.where(on2, (1 - f)[:, None] / np.where(skm > 0, skm, 1.0), 0.0)
        t5o = np.where(d2 > 1, 1 - (d2 - 1) / (rs - 1), 1.0)
        t3o = np.where(on2, t5o * skmm ** 2 * d2 / rs ** 2, 0.0)
        dmat = t4o[:, None, :] * cm
        v += np.einsum("tik,tjk,tk->ij", dmat, dmat, t3o)
        v2 -= np.einsum("tik,tk->ik", dmat, t4o * t3o)
        v3 += (t4o ** 2 * t3o).sum(0)
    cfin = cm[-1] if cm.shape[0] else np.zeros((ng, ng))
    v += np.einsum("ik,jk,k->ij", cfin, cfin, v3) + cfin @ v2.T + v2 @ cfin.T
    return score, v


def gray_test(durations, causes, groups, cause: int = 1, strata=None, rho: float = 0.0) -> GrayTest:
    """Gray's test that the cumulative incidence of ``cause`` is the same in all groups (module docstring)."""
    t, c, keep = _as_cr(durations, causes)
    g = np.asarray(groups, dtype=object)[keep]
    st = np.zeros(t.size, dtype=object) if strata is None else np.asarray(strata, dtype=object)[keep]
    ok = ~pd.isna(g) & ~pd.isna(st)
    t, c, g, st = t[ok], c[ok], g[ok], st[ok]
    codes, uniques = pd.factorize(g)
    labels, remap = np.unique(np.asarray(uniques).astype(str), return_inverse=True)
    gi = remap[codes]
    ng = labels.size
    if ng < 2:
        raise ValueError("Gray's test needs at least two groups")
    score = np.zeros(ng)
    var = np.zeros((ng, ng))
    for s in pd.unique(st):
        sel = st == s
        sc, v = _gray_stratum(t[sel], c[sel], gi[sel], ng, cause, rho)
        score += sc
        var += v
    s1, v1 = score[: ng - 1], var[: ng - 1, : ng - 1]
    result = GrayTest(cause=cause, groups=labels.tolist(), statistic=None, df=ng - 1, p_value=None, rho=rho,
                      stratified=strata is not None)
    if not np.any(c == cause):
        result.note = f"no event of cause {cause}: the test is undefined"
        return result
    try:
        stat = float(s1 @ np.linalg.solve(v1, s1))
    except np.linalg.LinAlgError:
        result.note = "singular covariance: the groups cannot be compared"
        return result
    result.statistic = stat
    result.p_value = float(stats.chi2.sf(stat, ng - 1))
    return result


# --------------------------------------------------------------------------------------------
# Fine-Gray regression
# --------------------------------------------------------------------------------------------


@dataclass
class FineGrayTerm:
    covariate: str
    coef: float
    shr: float  # subdistribution hazard ratio exp(coef)
    lower: float
    upper: float
    se: float  # robust (clustered on subject)
    se_model: float  # inverse information
    p_value: float


@dataclass
class FineGrayResult:
    cause: int
    terms: list[FineGrayTerm]
    n: int
    events: int
    competing: int
    log_likelihood: float
    iterations: int
    converged: bool
    ties: str = "breslow"
    conf_level: float = 0.95
    se_type: str = "robust (clustered on subject), as coxph on finegray() data with cluster = id"
    notes: list[str] = field(default_factory=list)
    robust_score: float | None = None  # robust score test of all coefficients = 0 (R coxph's rscore)
    robust_score_p: float | None = None
    weighted: bool = False

    def to_dict(self) -> dict:
        return _clean(asdict(self))


def _censoring_left_limits(t, c):
    """G(T_i-) for every subject and a function giving G(s-) at arbitrary times (KM of the censoring; a censoring
    tied with an event happens after it, so the subjects with an event at that time are out of G's risk set, as
    R's ``finegray``)."""
    times, inv = np.unique(t, return_inverse=True)
    cens = np.bincount(inv, weights=(c == 0), minlength=times.size)
    n_at = np.bincount(inv, minlength=times.size).astype(float)
    rs = n_at[::-1].cumsum()[::-1] - (n_at - cens)  # at risk of censoring: not those with an event at that time
    with np.errstate(divide="ignore", invalid="ignore"):
        g_after = np.cumprod(np.where(cens > 0, 1 - cens / rs, 1.0))
    g_before = np.concatenate([[1.0], g_after[:-1]])

    def g_minus(s):
        i = np.searchsorted(times, s, side="left")  # times strictly before s: 0..i-1
        return np.where(i > 0, g_after[np.maximum(i - 1, 0)], 1.0)

    return g_before[inv], g_minus


def fine_gray(df: pd.DataFrame, duration_col: str, cause_col: str, covariates: Sequence[str], cause: int = 1,
              conf_level: float = 0.95, max_iter: int = 50, tol: float = 1e-9,
              weights_col: str | None = None) -> FineGrayResult:
    """Fine-Gray subdistribution-hazard regression of ``cause`` on numeric ``covariates`` (module docstring).

    Rows with a missing value in a used column are dropped (R's na.omit). Competing events are every cause
    code other than 0 and ``cause``; with none, this is the Cox model with Breslow ties. ``weights_col``: case
    weights (e.g. inverse-probability-of-treatment weights), R's ``coxph(weights = )``; the robust SE and the
    robust score test (R ``fit$rscore``, the weighted log-rank analogue) then account for them.
    """
    cols = list(covariates)
    if not cols:
        raise ValueError("Fine-Gray needs at least one covariate")
    data = df[[duration_col, cause_col, *cols, *([weights_col] if weights_col else [])]].dropna()
    t, c, _ = _as_cr(data[duration_col].to_numpy(), data[cause_col].to_numpy())
    x = data[cols].to_numpy(dtype=float)
    w = data[weights_col].to_numpy(dtype=float) if weights_col else np.ones(t.size)
    if np.any(w <= 0):
        raise ValueError("weights must be positive")
    n, p = x.shape
    order = np.argsort(t, kind="mergesort")
    t, c, x, w = t[order], c[order], x[order], w[order]
    is_event = c == cause
    is_comp = (c > 0) & ~is_event
    g_ti, g_minus = _censoring_left_limits(t, c)
    ev_times, ev_inv = np.unique(t[is_event], return_inverse=True)
    if ev_times.size == 0:
        raise ValueError(f"no event of cause {cause}")
    d = np.bincount(ev_inv, weights=w[is_event], minlength=ev_times.size)  # weighted events per time
    xsum_ev = np.zeros((ev_times.size, p))
    np.add.at(xsum_ev, ev_inv, w[is_event, None] * x[is_event])
    g_ev = g_minus(ev_times)  # G(t_j-)
    # position of each subject against the event times
    first_after = np.searchsorted(ev_times, t, side="right")  # competing i is weighted at event times j >= this
    last_in = np.searchsorted(ev_times, t, side="right")  # ordinary at-risk: event times j < this (t_j <= T_i)
    m = ev_times.size
    scale = np.where(is_comp, 1.0 / np.where(g_ti > 0, g_ti, np.nan), 0.0)

    def sums(beta):
        eta = x @ beta
        r = w * np.exp(eta)
        # ordinary risk set at t_j: subjects with T_i >= t_j  -> reverse cumulative over last_in
        def at_risk(vals):
            acc = np.zeros((m + 1,) + vals.shape[1:])
            np.add.at(acc, last_in, vals)
            return acc[::-1].cumsum(axis=0)[::-1][1:]  # sum over subjects with last_in > j, i.e. T_i >= t_j

        def comp(vals):
            acc = np.zeros((m + 1,) + vals.shape[1:])
            np.add.at(acc, first_after, vals * scale.reshape((-1,) + (1,) * (vals.ndim - 1)))
            return np.cumsum(acc, axis=0)[:m]  # competing with first_after <= j, i.e. T_i < t_j

        s0 = at_risk(r) + g_ev * comp(r)
        s1 = at_risk(r[:, None] * x) + g_ev[:, None] * comp(r[:, None] * x)
        xx = np.einsum("ni,nj->nij", x, x)
        s2 = at_risk(r[:, None, None] * xx) + g_ev[:, None, None] * comp(r[:, None, None] * xx)
        return eta, r, s0, s1, s2

    beta = np.zeros(p)
    loglik_prev = None
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        eta, r, s0, s1, s2 = sums(beta)
        loglik = float((w * eta)[is_event].sum() - (d * np.log(s0)).sum())
        xbar = s1 / s0[:, None]
        u = xsum_ev.sum(0) - (d[:, None] * xbar).sum(0)
        info = (d[:, None, None] * (s2 / s0[:, None, None] - np.einsum("ti,tj->tij", xbar, xbar))).sum(0)
        step = np.linalg.solve(info, u)
        if loglik_prev is not None and abs(loglik - loglik_prev) < tol * (abs(loglik) + tol) and \
                np.max(np.abs(step)) < 1e-6:
            converged = True
            break
        # step halving if the likelihood went down
        new = beta + step
        eta_n = x @ new
        _, _, s0n, _, _ = sums(new)
        ll_new = float((w * eta_n)[is_event].sum() - (d * np.log(s0n)).sum())
        halvings = 0
        while ll_new < loglik - 1e-12 and halvings < 20:
            step = step / 2
            new = beta + step
            eta_n = x @ new
            _, _, s0n, _, _ = sums(new)
            ll_new = float((w * eta_n)[is_event].sum() - (d * np.log(s0n)).sum())
            halvings += 1
        beta, loglik_prev = new, loglik
    def residuals(beta):
        """Score, information and per-subject (weighted) score residuals at ``beta``."""
        eta, r, s0, s1, s2 = sums(beta)
        loglik = float((w * eta)[is_event].sum() - (d * np.log(s0)).sum())
        xbar = s1 / s0[:, None]
        info = (d[:, None, None] * (s2 / s0[:, None, None] - np.einsum("ti,tj->tij", xbar, xbar))).sum(0)
        dl = d / s0  # Breslow baseline increments
        cum_dl = np.concatenate([[0.0], np.cumsum(dl)])
        cum_xdl = np.vstack([np.zeros((1, p)), np.cumsum(xbar * dl[:, None], axis=0)])
        gdl = g_ev * dl
        suf_gdl = np.concatenate([np.cumsum(gdl[::-1])[::-1], [0.0]])
        suf_gxdl = np.vstack([np.cumsum((xbar * gdl[:, None])[::-1], axis=0)[::-1], np.zeros((1, p))])
        a = cum_dl[last_in] + np.where(is_comp, scale * suf_gdl[first_after], 0.0)
        bvec = cum_xdl[last_in] + np.where(is_comp[:, None], scale[:, None] * suf_gxdl[first_after], 0.0)
        resid = -(r[:, None] * (x * a[:, None] - bvec))  # r already carries the case weight
        ev_idx = np.nonzero(is_event)[0]
        resid[ev_idx] += w[ev_idx, None] * (x[ev_idx] - xbar[ev_inv])
        return loglik, info, resid

    loglik, info, resid = residuals(beta)
    inv_info = np.linalg.inv(info)
    robust = inv_info @ (resid.T @ resid) @ inv_info
    _, _, resid0 = residuals(np.zeros(p))
    u0 = resid0.sum(0)
    try:
        robust_score = float(u0 @ np.linalg.solve(resid0.T @ resid0, u0))
    except np.linalg.LinAlgError:
        robust_score = float("nan")
    se_r = np.sqrt(np.diag(robust))
    se_m = np.sqrt(np.diag(inv_info))
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    terms = [FineGrayTerm(covariate=name, coef=float(b), shr=math.exp(b), lower=math.exp(b - z * s),
                          upper=math.exp(b + z * s), se=float(s), se_model=float(sm),
                          p_value=float(2 * stats.norm.sf(abs(b / s))))
             for name, b, s, sm in zip(cols, beta, se_r, se_m)]
    notes = [] if converged else ["Newton-Raphson did not converge: the estimates are unreliable"]
    return FineGrayResult(cause=cause, terms=terms, n=int(n), events=int(is_event.sum()),
                          competing=int(is_comp.sum()), log_likelihood=loglik, iterations=it, converged=converged,
                          conf_level=conf_level, notes=notes, robust_score=robust_score,
                          robust_score_p=float(stats.chi2.sf(robust_score, p)) if robust_score == robust_score
                          else None, weighted=weights_col is not None)
