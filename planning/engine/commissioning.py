"""Beam commissioning of the pencil-beam kernel against reference data (pure numpy/scipy).

The reference is matRad's "Generic" 6 MV photon machine (the SVD pencil beam of matRad / pyRadPlan, from its
``photons_Generic.mat``), evaluated for water at SSD 100 cm by ``benchmarks/matrad_reference.py`` into
``tests/engine/data/matrad_generic_6mv.json``: central-axis depth doses of 1x1 ... 20x20 cm^2 fields, lateral
profiles of one 5 mm beamlet at 15-200 mm depth and of the 10x10 field, and the figures derived from them.

Everything is compared *relative to each model's own 10x10 cm^2 field at 100 mm depth on the axis*: beamlet
shape, beamlet output and field output factors are what a kernel must get right (an optimiser exploits a beamlet
that is too wide or too weak against the field it sums to), while the absolute dose per unit weight is a
calibration convention. RadPath's is its own (:attr:`pencilbeam.Machine.norm`: unit weight on an infinite field
gives 1 Gy at dmax; MU from :func:`pencilbeam.mu_per_unit_weight`, 1 MU = 1 cGy at dmax for 10x10 at SSD 100 cm),
so MU calibration is unchanged by a refit; matRad's absolute scale differs by a constant factor
(:func:`matrad_weight_factor`: the factor that makes a fluence weight deliver the same 10x10 reference dose in
both engines, i.e. both calibrated on the same reference field, as a physicist transfers MU between systems).

:func:`figures` computes the reference's quantities for a :class:`~planning.engine.pencilbeam.Machine`,
:func:`compare` the differences, :func:`fit` the least-squares fit that produced ``pencilbeam.DEFAULT_MACHINE``
(see the pencilbeam module docstring for the result and its residuals).
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from .pencilbeam import DEFAULT_MACHINE, Machine, field_dose

SSD_MM = 1000.0
D_REF_MM = 100.0

#: the Machine fields the fit adjusts (all others kept)
FIT_FIELDS = ("mu", "lam", "s0", "sigma_p0", "sigma_p1", "c_s0", "c_s1", "sigma_s0", "sigma_s1",
              "c_t0", "c_t1", "c_t_len", "sigma_t0", "sigma_t1", "c_u0", "c_u1", "sigma_u0", "sigma_u1")


def load_reference(path) -> dict:
    return json.loads(Path(path).read_text())


def _dose(m: Machine, field_mm: float, depth, x=0.0):
    depth = np.asarray(depth, float)
    return field_dose(m, depth, SSD_MM + depth, np.asarray(x, float), 0.0, field_mm, field_mm)


def reference_dose(m: Machine) -> float:
    """Dose per unit weight of the 10x10 field at 100 mm depth on the axis, SSD 100 cm."""
    return float(_dose(m, 100.0, D_REF_MM))


def _crossing(x, p, level):
    right = x >= 0
    xs, ps = x[right], p[right]
    i = np.flatnonzero(ps < level)[0]
    return float(xs[i - 1] + (level - ps[i - 1]) * (xs[i] - xs[i - 1]) / (ps[i] - ps[i - 1]))


def fwhm(x, p) -> float:
    """Full width at half maximum of a symmetric profile given for x >= 0 (x[0] = 0: the axis)."""
    return 2.0 * _crossing(np.asarray(x), np.asarray(p) / p[0], 0.5)


def penumbra_80_20(x, p) -> float:
    q = np.asarray(p) / p[0]
    return _crossing(np.asarray(x), q, 0.2) - _crossing(np.asarray(x), q, 0.8)


def figures(m: Machine, ref: dict) -> dict:
    """The reference's quantities computed with machine ``m`` (same depths, fields and sample points)."""
    r10 = reference_dose(m)
    fields = ref["fields_mm"]
    depths = np.asarray(ref["pdd_depths_mm"], float)
    d_fine = np.arange(0.0, 60.0, 0.1)
    out = {"cax_rel": {}, "dmax_mm": {}, "pdd10_pct": {}, "output_factor_d100": {}}
    for f in fields:
        k = str(f)
        out["cax_rel"][k] = (_dose(m, f, depths) / r10).tolist()
        cf = _dose(m, f, d_fine)
        out["dmax_mm"][k] = float(d_fine[np.argmax(cf)])
        out["pdd10_pct"][k] = float(100 * _dose(m, f, D_REF_MM) / cf.max())
        out["output_factor_d100"][k] = float(_dose(m, f, D_REF_MM) / r10)
    xb = np.asarray(ref["beamlet_5mm"]["x_mm"], float)
    out["beamlet_5mm"] = {}
    for k in ref["beamlet_5mm"]["depths"]:
        p = _dose(m, 5.0, float(k), xb)
        out["beamlet_5mm"][k] = {"fwhm_mm": fwhm(xb, p), "cax_rel": float(p[0] / r10), "profile_rel": p / r10}
    xf = np.asarray(ref["field_10x10"]["x_mm"], float)
    out["field_10x10"] = {}
    for k in ref["field_10x10"]["depths"]:
        p = _dose(m, 100.0, float(k), xf)
        out["field_10x10"][k] = {"half_width_50_mm": _crossing(xf, p / p[0], 0.5),
                                 "penumbra_80_20_mm": penumbra_80_20(xf, p), "profile_rel": p / r10}
    # plane integral of a 5 mm beamlet (over the isocentre-plane area, as the reference): N T(d) w^2 (SAD/t)^2
    out["beamlet_5mm_plane_integral_rel"] = {
        k: float(m.norm * m.depth_dose(float(k)) * 25.0 * (m.sad / (SSD_MM + float(k))) ** 2 / r10)
        for k in ref["beamlet_5mm_plane_integral_rel"]}
    return out


def compare(m: Machine, ref: dict) -> dict:
    """Differences of ``m`` from the reference: the figures the commissioning tests check.

    ``*_rel_err``: (RadPath - reference) / reference; ``*_mm``: RadPath - reference in mm; depth-dose and profile
    errors are the largest over the sampled points (depth doses from 10 mm, i.e. beyond the build-up)."""
    f = figures(m, ref)
    depths = np.asarray(ref["pdd_depths_mm"], float)
    beyond = depths >= 10.0
    res = {"beamlet_fwhm_mm": {}, "beamlet_cax_rel_err": {}, "beamlet_integral_rel_err": {},
           "output_factor_rel_err": {}, "pdd_max_rel_err": {}, "dmax_mm": {}, "penumbra_mm": {},
           "half_width_50_mm": {}, "field_profile_max_err": {}}
    for k, v in ref["beamlet_5mm"]["depths"].items():
        res["beamlet_fwhm_mm"][k] = f["beamlet_5mm"][k]["fwhm_mm"] - v["fwhm_mm"]
        res["beamlet_cax_rel_err"][k] = f["beamlet_5mm"][k]["cax_rel"] / v["cax_rel"] - 1
        res["beamlet_integral_rel_err"][k] = (f["beamlet_5mm_plane_integral_rel"][k]
                                              / ref["beamlet_5mm_plane_integral_rel"][k] - 1)
    for k in map(str, ref["fields_mm"]):
        res["output_factor_rel_err"][k] = f["output_factor_d100"][k] / ref["output_factor_d100"][k] - 1
        rp = np.asarray(f["cax_rel"][k])
        rf = np.asarray(ref["cax_rel"][k])
        # depth dose normalised at 100 mm (its shape; the output factor carries the scale)
        pr, pf = rp / np.interp(D_REF_MM, depths, rp), rf / np.interp(D_REF_MM, depths, rf)
        res["pdd_max_rel_err"][k] = float(np.max(np.abs(pr[beyond] / pf[beyond] - 1)))
        res["dmax_mm"][k] = f["dmax_mm"][k] - ref["dmax_mm"][k]
    for k, v in ref["field_10x10"]["depths"].items():
        res["penumbra_mm"][k] = f["field_10x10"][k]["penumbra_80_20_mm"] - v["penumbra_80_20_mm"]
        res["half_width_50_mm"][k] = f["field_10x10"][k]["half_width_50_mm"] - v["half_width_50_mm"]
        pr = np.asarray(f["field_10x10"][k]["profile_rel"])
        pf = np.asarray(v["profile_rel"])
        res["field_profile_max_err"][k] = float(np.max(np.abs(pr - pf)) / pf[0])
    return res


def _residuals(m: Machine, ref: dict) -> np.ndarray:
    f = figures(m, ref)
    depths = np.asarray(ref["pdd_depths_mm"], float)
    sel = depths >= 5.0
    r = []
    for k in map(str, ref["fields_mm"]):
        r.append((np.asarray(f["cax_rel"][k])[sel] / np.asarray(ref["cax_rel"][k])[sel] - 1) * 2.0)
    xb = np.asarray(ref["beamlet_5mm"]["x_mm"])
    for k, v in ref["beamlet_5mm"]["depths"].items():
        pf = np.asarray(v["profile_rel"])
        pr = f["beamlet_5mm"][k]["profile_rel"]
        near = xb <= 12.0
        r.append((pr[near] - pf[near]) / pf[0] * 3.0)                      # shape around the beamlet, absolute
        far = xb > 3.0
        r.append(np.log(np.maximum(pr[far], 1e-12) / pf[far]) * 0.05)     # the tail, relative
        r.append([(f["beamlet_5mm"][k]["fwhm_mm"] - v["fwhm_mm"]) * 0.5])
        r.append([(f["beamlet_5mm_plane_integral_rel"][k] / ref["beamlet_5mm_plane_integral_rel"][k] - 1) * 2.0])
    for k, v in ref["field_10x10"]["depths"].items():
        pf = np.asarray(v["profile_rel"])
        r.append((f["field_10x10"][k]["profile_rel"][::4] - pf[::4]) / pf[0])
        r.append([(f["field_10x10"][k]["penumbra_80_20_mm"] - v["penumbra_80_20_mm"]) * 0.5])
    return np.concatenate([np.ravel(np.asarray(a, float)) for a in r])


def fit(ref: dict, start: Machine = DEFAULT_MACHINE, fields=FIT_FIELDS, max_nfev: int = 400) -> tuple[Machine, dict]:
    """Least-squares fit of ``fields`` of ``start`` to the reference (depth doses of every field from 5 mm,
    beamlet profiles near the axis and their tails, beamlet FWHM and plane integral, 10x10 profiles and
    penumbrae). Returns the fitted machine and :func:`compare` of it."""
    x0 = np.array([getattr(start, k) for k in fields], float)
    scale = np.where(np.abs(x0) > 0, np.abs(x0), 1e-3)

    def make(x):
        return replace(start, **{k: float(v) for k, v in zip(fields, x * scale)})

    def fun(x):
        try:
            return _residuals(make(x), ref)
        except (IndexError, ValueError, FloatingPointError):
            return np.full(_residuals(start, ref).size, 10.0)

    # widths, weights at the surface and depth-dose parameters are positive; weight slopes may be negative
    lb = np.array([-np.inf if k in ("c_s1", "c_t1", "c_u1") else 0.0 for k in fields])
    sol = least_squares(fun, x0 / scale, bounds=(lb, np.inf), max_nfev=max_nfev, x_scale="jac")
    m = make(sol.x)
    return m, compare(m, ref)


def matrad_weight_factor(m: Machine, ref: dict) -> float:
    """Factor converting a matRad/pyRadPlan fluence weight into a RadPath weight that gives the same dose on the
    10x10 reference (100 mm depth, SSD 100 cm): ``w_radpath = factor * w_matrad``."""
    return float(ref["dose_10x10_d100_per_unit_weight"] / reference_dose(m))


def machine_dict(m: Machine) -> dict:
    return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(m).items()}
