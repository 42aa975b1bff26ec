"""Normal-tissue complication probability (NTCP): published models as data, evaluated on a stored DVH, checked
against observed toxicity and refitted to a clinic's own patients. Pure numpy/scipy; no Django.

Why here and not in ``planning/engine``: the engine computes dose; NTCP joins that dose to the toxicity observed
afterwards (calibration, AUC, maximum-likelihood refits), which is outcomes research, and every statistic in
``outcomes`` is a pure function like these. The only dose-side piece (EQD2) is reused from
``planning.engine.radiobiology``.

Rules:

* A model (``outcomes/data/ntcp_models.json``) names its endpoint (CTCAE v5.0 term and the grade counted, >=),
  organ (a regular expression for the whole organ's structure name, and one for its parts, e.g. left and right
  lung, pooled by volume when the whole organ is not contoured), dose metric, fractionation correction
  (EQD2 with the organ's alpha/beta), population, source and citation.
* The stored cumulative DVH (``V(D) = % of volume receiving >= D``) becomes a differential one: bin
  ``[D_i, D_i+1)`` holds ``V_i - V_i+1`` of the volume at its centre. With ``eqd2`` every bin's physical dose D
  (course total) is converted on its own: EQD2 = D (D/N + a/b) / (2 + a/b), N the course's fractions (Fowler,
  BJR 1989), so a hot bin gets the larger fraction-size penalty, which a conversion of the mean would miss.
* Forms: Lyman-Kutcher-Burman NTCP = Phi((gEUD - TD50) / (m TD50)), gEUD = (sum v_i D_i^(1/n))^n (Lyman 1985,
  Kutcher & Burman 1989, Niemierko 1999); logistic NTCP = 1 / (1 + exp(4 gamma50 (1 - x / D50))) or
  1 / (1 + exp(-(b0 + b1 x))) on the metric x (mean dose or Vx).
* Fit: maximum likelihood (Bernoulli) for the two dose-response parameters (LKB TD50, m with n fixed, or n too;
  logistic D50, gamma50); 95 % profile-likelihood intervals where 2 (l_max - l_profile) = chi-square(1) 0.95
  quantile 3.841 (Venzon & Moolgavkar 1988).
* Validation: calibration by risk decile (observed rate with Wilson interval against mean predicted), Brier
  score, AUC = Mann-Whitney with DeLong's variance (DeLong et al., Biometrics 1988; fast midrank form of
  Sun & Xu, IEEE SPL 2014), a dose-response table (observed rate per dose bin beside the model curve).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import optimize, stats

from planning.engine import radiobiology

MODELS_FILE = Path(__file__).resolve().parent / "data" / "ntcp_models.json"
CHI2_95 = float(stats.chi2.ppf(0.95, 1))
FORMS = ("lkb", "logistic")


# ----------------------------------------------------------------------------------------------------- DVH
@dataclass
class DVH:
    """Differential DVH: ``dose_gy[i]`` bin centre (Gy), ``fraction[i]`` of the organ's volume (sums to 1)."""

    dose_gy: np.ndarray
    fraction: np.ndarray
    volume_cc: float = 0.0

    @classmethod
    def from_cumulative(cls, dose_gy, volume_pct, volume_cc=0.0) -> "DVH":
        """From a cumulative DVH on bin edges (``volume_pct[i]`` % receives >= ``dose_gy[i]``)."""
        d = np.asarray(dose_gy, float)
        v = np.asarray(volume_pct, float)
        if d.size == 0 or d.size != v.size:
            raise ValueError("a cumulative DVH needs matching, non-empty dose and volume arrays")
        v = np.minimum.accumulate(np.clip(v, 0.0, None))  # cumulative volume never rises with dose
        diff = np.append(v[:-1] - v[1:], v[-1])
        width = np.diff(d)
        centres = np.append(d[:-1] + 0.5 * width, d[-1])
        total = diff.sum()
        if total <= 0:
            raise ValueError("the DVH holds no volume")
        return cls(centres, diff / total, float(volume_cc))

    @classmethod
    def from_voxels(cls, dose_gy, volume_cc=0.0) -> "DVH":
        d = np.asarray(dose_gy, float).ravel()
        return cls(d, np.full(d.size, 1.0 / d.size), float(volume_cc))

    def eqd2(self, n_fractions: int, alpha_beta_gy: float) -> "DVH":
        """The same DVH with every bin's dose converted to EQD2 (course of ``n_fractions`` equal fractions)."""
        return DVH(radiobiology.eqd2_voxelwise(self.dose_gy, int(n_fractions), alpha_beta_gy), self.fraction, self.volume_cc)

    def mean(self) -> float:
        return float(np.sum(self.fraction * self.dose_gy))

    def geud(self, n: float) -> float:
        return radiobiology.geud(self.dose_gy, n, self.fraction)

    def v(self, x_gy: float) -> float:
        """Vx: % of the volume in bins whose dose is >= x Gy."""
        return float(100.0 * self.fraction[self.dose_gy >= x_gy].sum())


def pool(dvhs: list[DVH]) -> DVH:
    """Several structures as one organ (e.g. left + right lung): bins weighted by each structure's volume."""
    if not dvhs:
        raise ValueError("nothing to pool")
    if len(dvhs) == 1:
        return dvhs[0]
    total = sum(h.volume_cc for h in dvhs)
    if total <= 0:
        raise ValueError("pooling needs each structure's volume")
    d = np.concatenate([h.dose_gy for h in dvhs])
    f = np.concatenate([h.fraction * (h.volume_cc / total) for h in dvhs])
    return DVH(d, f, total)


# ---------------------------------------------------------------------------------------------- dose-response
def lkb(geud_gy, td50: float, m: float):
    """LKB (probit) NTCP of a gEUD."""
    return stats.norm.cdf((np.asarray(geud_gy, float) - td50) / (m * td50))


def logistic_d50(x, d50: float, gamma50: float):
    """Logistic NTCP in D50 / gamma50 form (gamma50 = normalised slope at 50 %)."""
    return 1.0 / (1.0 + np.exp(4.0 * gamma50 * (1.0 - np.asarray(x, float) / d50)))


def logistic_b(x, b0: float, b1: float):
    return 1.0 / (1.0 + np.exp(-(b0 + b1 * np.asarray(x, float))))


_VX = re.compile(r"^V(\d+(?:\.\d+)?)$")


def metric_value(dvh: DVH, metric: str, n: float | None = None) -> float:
    """Dmean, gEUD (volume parameter ``n``) or Vx (%) of a differential DVH."""
    if metric == "Dmean":
        return dvh.mean()
    if metric == "gEUD":
        return dvh.geud(n)
    m = _VX.match(metric)
    if m:
        return dvh.v(float(m.group(1)))
    raise ValueError(f"unknown dose metric {metric!r} (Dmean, gEUD or Vx)")


@dataclass(frozen=True)
class Model:
    """One published NTCP model (see ``outcomes/data/ntcp_models.json``)."""

    id: str
    name: str
    endpoint_term: str
    endpoint_grade: int
    organ: str
    whole: str
    parts: str
    form: str
    metric: str
    parameters: dict
    correction: str = "eqd2"
    alpha_beta_gy: float = 3.0
    population: str = ""
    sites: tuple = ()
    source: str = ""
    citation: str = ""
    verified_against: str = ""
    endpoint_description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Model":
        form = d["form"]
        if form not in FORMS:
            raise ValueError(f"model {d.get('id')}: form must be one of {FORMS}")
        p = {k: float(v) for k, v in d["parameters"].items()}
        need = {"lkb": [{"td50", "m", "n"}], "logistic": [{"d50", "gamma50"}, {"b0", "b1"}]}[form]
        if not any(s <= set(p) for s in need):
            raise ValueError(f"model {d['id']}: {form} needs parameters {' or '.join(sorted(map(str, need)))}")
        fr = d.get("fractionation", {})
        return cls(
            id=d["id"], name=d["name"], endpoint_term=d["endpoint"]["term"], endpoint_grade=int(d["endpoint"]["grade"]),
            endpoint_description=d["endpoint"].get("description", ""), organ=d["organ"],
            whole=d["structures"]["whole"], parts=d["structures"].get("parts", ""), form=form, metric=d["metric"],
            parameters=p, correction=fr.get("correction", "none"), alpha_beta_gy=float(fr.get("alpha_beta_gy", 3.0)),
            population=d.get("population", ""), sites=tuple(d.get("sites", ())), source=d.get("source", ""),
            citation=d.get("citation", ""), verified_against=d.get("verified_against", ""),
        )

    @property
    def endpoint(self) -> str:
        return f"{self.endpoint_term} grade >= {self.endpoint_grade}"

    @property
    def d50(self) -> float:
        """Dose (of the metric) at 50 % risk."""
        p = self.parameters
        if self.form == "lkb":
            return p["td50"]
        return p["d50"] if "d50" in p else -p["b0"] / p["b1"]

    def structures_for(self, names) -> list[str]:
        """The plan's structure names this model reads: the whole organ if contoured, else all of its parts."""
        names = list(names)
        whole = [s for s in names if re.search(self.whole, s.strip(), re.I)]
        if whole:
            return whole[:1]
        if self.parts:
            return [s for s in names if re.search(self.parts, s.strip(), re.I)]
        return []

    def corrected(self, dvh: DVH, n_fractions: int) -> DVH:
        return dvh.eqd2(n_fractions, self.alpha_beta_gy) if self.correction == "eqd2" else dvh

    def metric_of(self, dvh: DVH, n_fractions: int, n: float | None = None) -> float:
        """The model's dose metric of a physical-dose DVH after its fractionation correction."""
        return metric_value(self.corrected(dvh, n_fractions), self.metric, self.parameters.get("n") if n is None else n)

    def probability(self, x, **override):
        """NTCP at metric value(s) ``x`` (parameters may be overridden, e.g. by a refit)."""
        p = {**self.parameters, **override}
        if self.form == "lkb":
            return lkb(x, p["td50"], p["m"])
        if "d50" in p and "gamma50" in p:
            return logistic_d50(x, p["d50"], p["gamma50"])
        return logistic_b(x, p["b0"], p["b1"])

    def predict(self, dvh: DVH, n_fractions: int) -> dict:
        x = self.metric_of(dvh, n_fractions)
        return {"metric": self.metric, "value": x, "ntcp": float(self.probability(x))}

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "endpoint": self.endpoint, "endpoint_term": self.endpoint_term,
                "endpoint_grade": self.endpoint_grade, "organ": self.organ, "form": self.form, "metric": self.metric,
                "parameters": dict(self.parameters), "fractionation": self.correction, "alpha_beta_gy": self.alpha_beta_gy,
                "population": self.population, "source": self.source, "citation": self.citation,
                "verified_against": self.verified_against}


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Model, ...]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    models = tuple(Model.from_dict(d) for d in data["models"])
    ids = [m.id for m in models]
    if len(set(ids)) != len(ids):
        raise ValueError("model ids must be unique")
    return models


def load_models(path: str | Path | None = None) -> tuple[Model, ...]:
    return _load(str(path or MODELS_FILE))


def get_model(model_id: str, path=None) -> Model:
    for m in load_models(path):
        if m.id == model_id:
            return m
    raise KeyError(model_id)


# ------------------------------------------------------------------------------------------------ fitting
def _nll(p, y):
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass
class Fit:
    """Maximum-likelihood fit: estimates, 95 % profile-likelihood intervals (None where the profile does not
    drop by 3.841 inside the search range, i.e. the data do not bound it), log-likelihood at the optimum."""

    names: tuple
    estimate: dict
    ci: dict
    log_likelihood: float
    n: int
    events: int
    converged: bool

    def to_dict(self):
        return {"parameters": {k: {"estimate": round(v, 4), "ci95": [None if c is None else round(c, 4) for c in self.ci[k]]}
                               for k, v in self.estimate.items()},
                "log_likelihood": round(self.log_likelihood, 4), "n": self.n, "events": self.events,
                "converged": self.converged, "ci_method": "profile likelihood (chi-square 1 df, 3.841)"}


def _fit(nll, x0, bounds, names, n, events):
    x0 = np.asarray(x0, float)
    best = optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    nm = optimize.minimize(nll, best.x, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
    if nm.fun < best.fun and all(lo <= v <= hi for v, (lo, hi) in zip(nm.x, bounds)):
        best = nm
    theta, lmax = np.asarray(best.x, float), -float(best.fun)

    def profile(j, value):
        if len(theta) == 1:
            return -nll(np.array([value]))
        free = [k for k in range(len(theta)) if k != j]

        def sub(z):
            full = theta.copy()
            full[j] = value
            full[free] = z
            return nll(full)

        r = optimize.minimize(sub, theta[free], method="L-BFGS-B", bounds=[bounds[k] for k in free])
        return -float(r.fun)

    ci = {}
    for j, name in enumerate(names):
        lo_b, hi_b = bounds[j]
        target = lmax - CHI2_95 / 2.0
        ends = []
        for side, limit in ((-1, lo_b), (1, hi_b)):
            g = lambda v: profile(j, v) - target  # noqa: E731
            step = max(abs(theta[j]) * 0.05, 1e-3)
            a, b = theta[j], theta[j]
            found = None
            for _ in range(60):
                b = a + side * step
                if (side < 0 and b <= limit) or (side > 0 and b >= limit):
                    b = limit
                if g(b) < 0:
                    found = optimize.brentq(g, min(a, b), max(a, b), xtol=1e-6)
                    break
                if b == limit:
                    break
                a, step = b, step * 1.5
            ends.append(found)
        ci[name] = tuple(ends)
    return Fit(tuple(names), dict(zip(names, map(float, theta))), ci, lmax, n, events, bool(best.success or nm.success))


def fit_logistic(x, y, *, x0=None) -> Fit:
    """MLE of D50 and gamma50 of the logistic NTCP on metric values ``x`` and 0/1 outcomes ``y``."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    _check(x, y)
    x0 = x0 or (max(float(np.median(x)), 1.0), 1.0)
    hi = max(float(x.max()) * 20, 200.0)
    return _fit(lambda t: _nll(logistic_d50(x, t[0], t[1]), y), x0, [(1e-3, hi), (1e-3, 20.0)], ("d50", "gamma50"),
                len(y), int(y.sum()))


def fit_lkb(dvhs, y, *, n=None, x0=None) -> Fit:
    """MLE of LKB TD50 and m on (already corrected) DVHs; n too unless ``n`` is given to hold it fixed."""
    y = np.asarray(y, float)
    if n is not None:
        x = np.array([h.geud(n) for h in dvhs])
        _check(x, y)
        x0 = x0 or (max(float(np.median(x)), 1.0), 0.3)
        hi = max(float(x.max()) * 20, 200.0)
        return _fit(lambda t: _nll(lkb(x, t[0], t[1]), y), x0, [(1e-3, hi), (1e-3, 5.0)], ("td50", "m"), len(y), int(y.sum()))
    geuds = _geud_all(dvhs)
    _check(geuds(1.0), y)
    x0 = x0 or (max(float(np.median(geuds(1.0))), 1.0), 0.3, 1.0)
    hi = max(max(h.dose_gy.max() for h in dvhs) * 20, 200.0)
    return _fit(lambda t: _nll(lkb(geuds(t[2]), t[0], t[1]), y), x0,
                [(1e-3, hi), (1e-3, 5.0), (0.01, 5.0)], ("td50", "m", "n"), len(y), int(y.sum()))


def _geud_all(dvhs):
    """gEUD(n) of every DVH at once (one pass over the concatenated bins), for fits that vary n."""
    d = np.maximum(np.concatenate([h.dose_gy for h in dvhs]), 0.0)
    w = np.concatenate([h.fraction / h.fraction.sum() for h in dvhs])
    starts = np.cumsum([0] + [len(h.dose_gy) for h in dvhs[:-1]])
    scale = max(float(d.max()), 1e-9)  # doses relative to the maximum keep d^(1/n) finite for small n
    u = d / scale

    def geuds(n):
        return scale * np.add.reduceat(w * u ** (1.0 / n), starts) ** n

    return geuds


def _check(x, y):
    if len(x) != len(y) or len(y) == 0:
        raise ValueError("need one outcome per patient")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("outcomes must be 0 or 1")
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("a fit needs patients with and without the complication")


# ------------------------------------------------------------------------------------------------ validation
def brier(p, y) -> float:
    p, y = np.asarray(p, float), np.asarray(y, float)
    return float(np.mean((p - y) ** 2))


def wilson(k: int, n: int, z: float = 1.959963984540054):
    if n == 0:
        return (None, None)
    ph = k / n
    den = 1 + z * z / n
    c = (ph + z * z / (2 * n)) / den
    h = z * math.sqrt(ph * (1 - ph) / n + z * z / (4 * n * n)) / den
    return (max(0.0, c - h), min(1.0, c + h))


def _midrank(x):
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    t = np.zeros(n)
    i = 0
    while i < n:
        j = i
        while j < n and xs[j] == xs[i]:
            j += 1
        t[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(n)
    out[order] = t
    return out


def auc_delong(p, y, conf_level: float = 0.95) -> dict:
    """AUC (probability a random case scores above a random non-case, ties 1/2) with DeLong's standard error
    and a Wald interval on the logit scale (kept inside 0-1)."""
    p, y = np.asarray(p, float), np.asarray(y, int)
    pos, neg = p[y == 1], p[y == 0]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return {"auc": None, "se": None, "ci95": [None, None], "n_events": int(m), "n_nonevents": int(n), "method": "DeLong"}
    tx, ty, tz = _midrank(pos), _midrank(neg), _midrank(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v01 = (tz[:m] - tx) / n  # structural components of the cases
    v10 = 1.0 - (tz[m:] - ty) / m
    s = (np.var(v01, ddof=1) / m if m > 1 else 0.0) + (np.var(v10, ddof=1) / n if n > 1 else 0.0)
    se = math.sqrt(s)
    z = stats.norm.ppf(0.5 + conf_level / 2)
    if 0 < auc < 1 and se > 0:
        lg, lse = math.log(auc / (1 - auc)), se / (auc * (1 - auc))
        ci = [1 / (1 + math.exp(-(lg - z * lse))), 1 / (1 + math.exp(-(lg + z * lse)))]
    else:
        ci = [max(0.0, auc - z * se), min(1.0, auc + z * se)]
    return {"auc": auc, "se": se, "ci95": ci, "n_events": int(m), "n_nonevents": int(n),
            "method": "DeLong (1988) variance, logit-scale Wald interval"}


def calibration_by_decile(p, y, groups: int = 10) -> list[dict]:
    """Patients sorted by predicted risk, cut into ``groups`` near-equal groups (fewer when the cohort is small):
    mean predicted vs observed rate (Wilson 95 % CI) per group."""
    p, y = np.asarray(p, float), np.asarray(y, int)
    if len(p) == 0:
        return []
    groups = max(1, min(groups, len(p)))
    order = np.argsort(p, kind="mergesort")
    out = []
    for k, idx in enumerate(np.array_split(order, groups), start=1):
        if len(idx) == 0:
            continue
        lo, hi = wilson(int(y[idx].sum()), len(idx))
        out.append({"group": k, "n": int(len(idx)), "events": int(y[idx].sum()), "predicted": float(p[idx].mean()),
                    "observed": float(y[idx].mean()), "observed_ci95": [lo, hi],
                    "risk_range": [float(p[idx].min()), float(p[idx].max())]})
    return out


def dose_response_bins(x, y, edges) -> list[dict]:
    """Observed complication rate (Wilson 95 % CI) per dose bin ``[edges[i], edges[i+1])``."""
    x, y = np.asarray(x, float), np.asarray(y, int)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (x >= lo) & (x < hi) if hi != edges[-1] else (x >= lo) & (x <= hi)
        n = int(sel.sum())
        if n == 0:
            continue
        k = int(y[sel].sum())
        a, b = wilson(k, n)
        out.append({"from_gy": float(lo), "to_gy": float(hi), "n": n, "events": k, "observed": k / n,
                    "observed_ci95": [a, b], "mean_dose_gy": float(x[sel].mean())})
    return out


def dose_edges(x, width: float = 5.0) -> np.ndarray:
    x = np.asarray(x, float)
    top = max(float(np.ceil((x.max() if x.size else width) / width) * width), width)
    return np.arange(0.0, top + width / 2, width)
