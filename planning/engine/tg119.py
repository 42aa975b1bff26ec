"""Plan the AAPM TG-119 test cases (and the mesothelioma / spine phantoms) and check their goals.

Usage::

    python -m planning.engine.tg119                 # the four TG-119 cases, 9 equispaced 6 MV beams
    python -m planning.engine.tg119 --cases all     # + mesothelioma and spine against QUANTEC-style goals
    python -m planning.engine.tg119 --quick --json  # coarse grid; one JSON object on stdout
    python -m planning.engine.tg119 --out out/tg119 # DVH and dose PNGs per case (default directory)

Goals: TG-119 (Ezzell et al., Med Phys 36:5359, 2009, Table of planning goals) and, for the extra phantoms,
QUANTEC (Int J Radiat Oncol Biol Phys 76(3) Suppl, 2010) plus the post-EPP hemithoracic IMRT limits for the
contralateral lung (mean < 8.5 Gy, V20 < 7 %; Allen et al., IJROBP 65:640, 2006; Rice et al. 2007).
Each plan: 9 coplanar beams at 0, 40, ..., 320 deg, 5 mm beamlets, pencil-beam dose, L-BFGS-B on squared
dose objectives, normalised so the primary target's D95 (multitarget: D99) equals the prescription, then
step-and-shoot sequenced (20 intensity levels), the segment weights re-optimised against the same objectives
(:mod:`planning.engine.aperture`; ``--swo off`` skips it) and renormalised. The "deliverable" column is this
plan, its MU those of the final segments.

Dose: optimised on the fast (truncated) matrix corrected to the accurate dose (``--correction-rounds``), every
reported value on the accurate, untruncated pencil-beam dose of the final fluence
(:mod:`planning.engine.accurate`); the "fast matrix" column shows what the truncated matrix alone would claim
for the same deliverable plan, and each case prints how much dose that matrix drops.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import beams as beammod
from . import dvh, phantoms
from . import objectives as ob
from .accurate import DOSE_MODEL, plan_accurately
from .goals import Goal, evaluate
from .grid import Geometry
from .pencilbeam import dose_influence

TG119_CASES = ["cshape", "prostate", "headneck", "multitarget"]
EXTRA_CASES = ["mesothelioma", "spine"]


def G(structure, metric, comparison, value, label="", priority=1):
    return Goal(structure, metric, comparison, value, priority, label)


def ring(geo: Geometry, target: np.ndarray, inner_mm: float, outer_mm: float) -> np.ndarray:
    """Planning helper: a shell ``inner_mm``..``outer_mm`` around the target inside the body."""
    sp = geo.grid.spacing
    return phantoms.expand(target, outer_mm, sp) & ~phantoms.expand(target, inner_mm, sp) & geo.body.mask


@dataclass
class Case:
    key: str
    title: str
    builder: object
    goals: list
    plan_setup: object  # geo -> (objectives, helper masks)
    normalise_to: str = "D95"
    smoothing: float = 5.0
    extra: dict = field(default_factory=dict)


def _cshape(geo):
    # DVH objectives aimed at the goals themselves: PTV D10 and core D10 (hard goal)
    ptv = geo.structures["PTV"].mask
    helpers = {"ring": ring(geo, ptv, 6, 25)}
    return [ob.SquaredUnderdose("PTV", 50.5, 400), ob.SquaredOverdose("PTV", 51.5, 200),
            ob.MaxDVH("PTV", 53.0, 1000, volume_pct=8),
            ob.SquaredOverdose("Core", 0.0, 20), ob.MaxDVH("Core", 9.0, 400, volume_pct=8),
            ob.SquaredOverdose("ring", 30.0, 10), ob.SquaredOverdose("BODY", 30.0, 2)], helpers


def _prostate(geo):
    ptv = geo.structures["PTV"].mask
    helpers = {"ring": ring(geo, ptv, 6, 25),
               "Rectum-PTV": geo.structures["Rectum"].mask & ~ptv,
               "Bladder-PTV": geo.structures["Bladder"].mask & ~ptv}
    return [ob.SquaredUnderdose("PTV", 76.5, 400), ob.SquaredOverdose("PTV", 79.0, 150),
            ob.SquaredOverdose("Rectum-PTV", 40.0, 20), ob.MaxDVH("Rectum", 65.0, 50, volume_pct=25),
            ob.SquaredOverdose("Bladder-PTV", 40.0, 10), ob.MaxDVH("Bladder", 65.0, 30, volume_pct=25),
            ob.SquaredOverdose("Femoral heads", 40.0, 5),
            ob.SquaredOverdose("ring", 50.0, 10), ob.SquaredOverdose("BODY", 50.0, 2)], helpers


def _headneck(geo):
    ptv = geo.structures["PTV"].mask
    helpers = {"ring": ring(geo, ptv, 6, 25)}
    objs = [ob.SquaredUnderdose("PTV", 51.0, 400), ob.SquaredOverdose("PTV", 53.0, 150),
            ob.MaxDose("Cord", 36.0, 50), ob.SquaredOverdose("Cord", 25.0, 5),
            ob.SquaredOverdose("ring", 35.0, 10), ob.SquaredOverdose("BODY", 35.0, 2)]
    for p in ("Parotid L", "Parotid R"):
        helpers[p + "-PTV"] = geo.structures[p].mask & ~ptv
        objs += [ob.MeanDose(p + "-PTV", 14.0, 30), ob.MaxDVH(p, 18.0, 30, volume_pct=45)]
    return objs, helpers


def _multitarget(geo):
    c, s, i = (geo.structures[k].mask for k in ("Central", "Superior", "Inferior"))
    helpers = {"ring": ring(geo, c | s | i, 6, 25)}
    return [ob.SquaredUnderdose("Central", 50.8, 400), ob.SquaredOverdose("Central", 52.0, 200),
            ob.SquaredUnderdose("Superior", 26.0, 300), ob.SquaredOverdose("Superior", 30.0, 100),
            ob.SquaredUnderdose("Inferior", 13.5, 300), ob.SquaredOverdose("Inferior", 18.0, 100),
            ob.SquaredOverdose("ring", 12.0, 5), ob.SquaredOverdose("BODY", 30.0, 2)], helpers


def _meso(geo):
    ptv = geo.structures["PTV"].mask
    helpers = {"ring": ring(geo, ptv, 6, 25)}
    objs = [ob.SquaredUnderdose("PTV", 55.0, 400), ob.SquaredOverdose("PTV", 58.0, 100),
            ob.MeanDose("Lung L (contralateral)", 5.0, 50), ob.MaxDVH("Lung L (contralateral)", 18.0, 50,
                                                                       volume_pct=4),
            ob.MaxDose("Cord", 42.0, 50), ob.MaxDVH("Heart", 22.0, 30, volume_pct=8),
            ob.MeanDose("Heart", 20.0, 10),
            ob.MeanDose("Kidney L", 8.0, 20), ob.MeanDose("Kidney R", 12.0, 20), ob.MeanDose("Liver", 25.0, 20),
            ob.MeanDose("Lung R (ipsilateral)", 20.0, 10),
            ob.SquaredOverdose("ring", 40.0, 5), ob.SquaredOverdose("BODY", 40.0, 2)]
    return objs, helpers


def _spine(geo):
    ptv = geo.structures["PTV"].mask
    helpers = {"ring": ring(geo, ptv, 6, 25)}
    return [ob.SquaredUnderdose("PTV", 61.0, 400), ob.SquaredOverdose("PTV", 64.0, 100),
            ob.MaxDose("Cord", 44.0, 100), ob.EUD("Cord", 30.0, 20, a=10),
            ob.MeanDose("Esophagus", 25.0, 20), ob.MaxDVH("Lungs", 18.0, 20, volume_pct=15),
            ob.SquaredOverdose("ring", 40.0, 5), ob.SquaredOverdose("BODY", 40.0, 2)], helpers


CASES = {
    "cshape": Case("cshape", "TG-119 C-shape", phantoms.c_shape, [
        G("PTV", "D95", ">=", 50.0), G("PTV", "D10", "<=", 55.0),
        G("Core", "D10", "<=", 25.0, "Core D10 <= 25 Gy (easy)"),
        G("Core", "D10", "<=", 10.0, "Core D10 <= 10 Gy (hard)", priority=2)], _cshape, smoothing=0.2),
    "prostate": Case("prostate", "TG-119 prostate", phantoms.prostate, [
        G("PTV", "D95", ">=", 75.6), G("PTV", "D5", "<=", 83.0),
        G("Rectum", "D30", "<=", 70.0), G("Rectum", "D10", "<=", 75.0),
        G("Bladder", "D30", "<=", 70.0), G("Bladder", "D10", "<=", 75.0)], _prostate),
    "headneck": Case("headneck", "TG-119 head and neck", phantoms.head_and_neck, [
        G("PTV", "D90", ">=", 50.0), G("PTV", "D99", ">=", 46.5), G("PTV", "D20", "<=", 55.0),
        G("Cord", "Dmax", "<=", 40.0), G("Parotid L", "D50", "<=", 20.0), G("Parotid R", "D50", "<=", 20.0)],
        _headneck),
    "multitarget": Case("multitarget", "TG-119 multitarget", phantoms.multitarget, [
        G("Central", "D99", ">=", 50.0), G("Central", "D10", "<=", 53.0),
        G("Superior", "D99", ">=", 25.0), G("Superior", "D10", "<=", 35.0),
        G("Inferior", "D99", ">=", 12.5), G("Inferior", "D10", "<=", 25.0)], _multitarget,
        normalise_to="D99"),
    "mesothelioma": Case("mesothelioma", "Pleural mesothelioma (hemithoracic IMRT)", phantoms.mesothelioma, [
        G("PTV", "D95", ">=", 54.0),
        G("Lung L (contralateral)", "Dmean", "<", 8.5), G("Lung L (contralateral)", "V20", "<", 7.0),
        G("Cord", "D0.03cc", "<=", 50.0), G("Heart", "V25", "<", 10.0),
        G("Kidney L", "Dmean", "<", 15.0), G("Kidney R", "Dmean", "<", 15.0), G("Liver", "Dmean", "<", 30.0)],
        _meso),
    "spine": Case("spine", "Thoracic spine (vertebral body around the cord)", phantoms.spine, [
        G("PTV", "D95", ">=", 60.0), G("Cord", "D0.03cc", "<=", 50.0), G("Esophagus", "Dmean", "<=", 34.0),
        G("Lungs", "V20", "<=", 30.0), G("Lungs", "Dmean", "<=", 20.0)], _spine),
}


@dataclass
class CaseResult:
    case: Case
    geo: Geometry
    dose_cube: np.ndarray
    rows: list
    info: dict
    weights: np.ndarray
    dij: object = None
    deliverable: object = None  # aperture.DeliverablePlan
    accurate_plan: object = None  # accurate.AccuratePlan (doses on the calculation voxels, accuracy figures)


def _num(v):
    return None if v is None or not np.isfinite(v) else round(float(v), 6)


def plan_case(key: str, spacing: float = 4.0, bixel_mm: float = 5.0, n_beams: int = 9, max_iter: int = 400,
              n_levels: int = 20, callback=None, should_cancel=None, geo: Geometry | None = None,
              segment_weight_opt: bool = True, swo_normalised: bool = True, swo_max_iter: int = 100,
              correction_rounds: int = 2) -> CaseResult:
    """Plan one case end to end (geometry, beams, dose-influence, optimisation, normalisation, sequencing,
    segment-weight optimisation, goals). Returns the accurate dose on the grid, the goal rows (``value`` on the
    optimised plan, ``value_sequenced`` on the deliverable one, both on the accurate dose;
    ``value_fast_matrix`` the deliverable plan on the truncated matrix) and timing/size/accuracy information."""
    case = CASES[key]
    t0 = time.perf_counter()
    geo = case.builder(spacing=spacing) if geo is None else geo
    t_geo = time.perf_counter()
    bs = beammod.make_beams(geo, beammod.equispaced_gantries(n_beams), bixel_mm=bixel_mm)
    dij = dose_influence(geo, bs)
    t_dij = time.perf_counter()
    objs, helpers = case.plan_setup(geo)
    masks = {**geo.masks, **helpers}
    rows = {k: dij.row_index(m) for k, m in masks.items()}
    tgt = geo.primary_target
    # optimise on the fast matrix, corrected to the accurate (untruncated) dose; every figure below is the
    # accurate dose (planning.engine.accurate)
    ap = plan_accurately(dij, rows, objs, target=tgt.name, rx=tgt.prescription_gy, geo=geo,
                         normalise_to=case.normalise_to, max_iter=max_iter, smoothing=case.smoothing,
                         correction_rounds=correction_rounds, n_levels=n_levels, n_fractions=geo.n_fractions or 1,
                         segment_weight_opt=segment_weight_opt, normalised_objective=swo_normalised,
                         swo_max_iter=swo_max_iter, should_cancel=should_cancel,
                         callback=None if callback is None else (lambda stage, it, f: callback(it, f)))
    res, dp = ap.result, ap.deliverable
    t_opt = time.perf_counter()
    seqs = dp.sequences

    def to_cube(d):
        c = np.zeros(int(np.prod(geo.grid.shape)), np.float32)
        c[dij.voxels] = d
        return c.reshape(geo.grid.shape)

    cube = to_cube(ap.dose_optimised)
    cube_seq = to_cube(ap.dose)
    cube_plain = to_cube(ap.dose_sequenced_plain)
    cube_fast = to_cube(ap.fast_dose)
    vcc = geo.grid.voxel_volume_cc
    goal_rows = evaluate(case.goals, cube, geo.masks, vcc, rx=tgt.prescription_gy)
    seq_rows = evaluate(case.goals, cube_seq, geo.masks, vcc, rx=tgt.prescription_gy)
    plain_rows = evaluate(case.goals, cube_plain, geo.masks, vcc, rx=tgt.prescription_gy)
    fast_rows = evaluate(case.goals, cube_fast, geo.masks, vcc, rx=tgt.prescription_gy)
    for r, s, p, f in zip(goal_rows, seq_rows, plain_rows, fast_rows):
        r["case"] = key
        r["value_sequenced"] = s["value"]
        r["passed_sequenced"] = s["passed"]
        r["value_sequenced_plain"] = p["value"]  # leaf sequencing without the segment-weight step
        r["value_fast_matrix"] = f["value"]  # the deliverable plan on the truncated matrix (what it would claim)
    tdose = cube[tgt.mask]
    info = {
        "case": key, "title": case.title, "grid": list(geo.grid.shape), "spacing_mm": list(geo.grid.spacing),
        "voxels": int(dij.n_voxels), "beamlets": int(dij.n_beamlets), "nnz": int(dij.nnz),
        "t_geometry_s": round(t_geo - t0, 2), "t_dose_s": round(t_dij - t_geo, 2),
        "t_optimise_s": round(t_opt - t_dij, 2), "iterations": res.iterations, "cancelled": res.cancelled,
        "rx_gy": tgt.prescription_gy, "n_fractions": geo.n_fractions,
        "HI": round(dvh.homogeneity_index(tdose), 3),
        "CI_paddick": round(dvh.paddick_ci(cube, tgt.mask, geo.body.mask, tgt.prescription_gy), 3),
        "segments": int(sum(len(s.segments) for s in seqs)),
        "mu_per_fraction": round(sum(s.mu for s in seqs), 1),
        "segments_sequenced": dp.segments_sequenced, "mu_per_fraction_sequenced": round(dp.mu_sequenced, 1),
        "t_accurate_s": round(ap.seconds_accurate, 2),
        "dose_model": DOSE_MODEL, "accuracy": ap.accuracy,
        "swo_iterations": dp.swo.iterations if dp.swo else 0,
        "swo_objective": [None if dp.swo is None else _num(dp.swo.objective_start),
                          None if dp.swo is None else _num(dp.swo.objective)],
    }
    out = CaseResult(case, geo, cube, goal_rows, info, res.weights, dij, dp, ap)
    out.info["t_total_s"] = round(time.perf_counter() - t0, 2)
    return out


def write_figures(r: CaseResult, out_dir: str) -> list[str]:
    from . import figures

    rx = r.geo.primary_target.prescription_gy
    p1 = figures.dvh_figure(r.geo, r.dose_cube, os.path.join(out_dir, f"{r.case.key}_dvh.png"),
                            title=f"{r.case.title}: DVH")
    p2 = figures.dose_slices_figure(r.geo, r.dose_cube, os.path.join(out_dir, f"{r.case.key}_dose.png"),
                                    title=f"{r.case.title}: dose (white dotted: {rx:g} Gy)", rx=rx)
    return [p1, p2]


def _parse_cases(s: str) -> list[str]:
    keys = []
    for tok in s.split(","):
        tok = tok.strip().lower().replace("-", "").replace("_", "")
        if tok in ("tg119", ""):
            keys += TG119_CASES
        elif tok in ("all",):
            keys += TG119_CASES + EXTRA_CASES
        elif tok in ("quantec", "extra"):
            keys += EXTRA_CASES
        elif tok in ("meso",):
            keys.append("mesothelioma")
        elif tok in ("hn", "headandneck"):
            keys.append("headneck")
        elif tok in CASES:
            keys.append(tok)
        else:
            raise SystemExit(f"unknown case {tok!r}; choose from {', '.join(CASES)}, tg119, quantec, all")
    return list(dict.fromkeys(keys))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m planning.engine.tg119", description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="tg119", help="comma list: cshape, prostate, headneck, multitarget, "
                    "mesothelioma, spine, or tg119 (default), quantec, all")
    ap.add_argument("--quick", action="store_true", help="coarse 6 mm grid and 150 iterations")
    ap.add_argument("--spacing", type=float, default=None, help="voxel size in mm (default 4, quick 6)")
    ap.add_argument("--max-iter", type=int, default=None, help="default 400, quick 150")
    ap.add_argument("--levels", type=int, default=20, help="intensity levels for leaf sequencing (default 20)")
    ap.add_argument("--swo", choices=["normalised", "plain", "off"], default="normalised",
                    help="segment-weight optimisation after sequencing: objective of the renormalised plan "
                    "(default), of the plan as optimised then renormalised (plain), or none (off: report plain "
                    "sequencing)")
    ap.add_argument("--correction-rounds", type=int, default=2,
                    help="rounds of optimisation on the fast matrix corrected to the accurate dose (default 2)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--out", default="out/tg119", help="directory for PNG figures")
    ap.add_argument("--no-figures", action="store_true")
    a = ap.parse_args(argv)
    spacing = a.spacing or (6.0 if a.quick else 4.0)
    max_iter = a.max_iter or (150 if a.quick else 400)
    keys = _parse_cases(a.cases)
    rows, plans, figs = [], [], []
    log = sys.stderr if a.json else sys.stdout
    for k in keys:
        print(f"planning {CASES[k].title} ({spacing:g} mm grid) ...", file=log, flush=True)
        r = plan_case(k, spacing=spacing, max_iter=max_iter, n_levels=a.levels,
                      segment_weight_opt=a.swo != "off", swo_normalised=a.swo == "normalised",
                      correction_rounds=a.correction_rounds)
        rows += r.rows
        plans.append(r.info)
        if not a.no_figures:
            figs += write_figures(r, a.out)
        if not a.json:
            _print_case(r)
    n_pass = sum(r["passed"] for r in rows)
    n_pass_seq = sum(r["passed_sequenced"] for r in rows)
    if a.json:
        print(json.dumps({"rows": [{k: r[k] for k in ("case", "goal", "limit", "value", "passed",
                                                      "value_sequenced", "passed_sequenced", "value_sequenced_plain",
                                                      "value_fast_matrix")}
                                  for r in rows],
                          "plans": plans, "figures": figs, "passed": n_pass, "passed_sequenced": n_pass_seq,
                          "total": len(rows), "dose_model": DOSE_MODEL}))
    else:
        print(f"\ndose: {DOSE_MODEL}; every value above is on that dose")
        print(f"{n_pass}/{len(rows)} goals passed on the optimised plans, {n_pass_seq}/{len(rows)} on the "
              f"deliverable (sequenced) plans" + (f"; figures in {a.out}" if figs else ""))
    return 0


def _print_case(r: CaseResult) -> None:
    i = r.info
    acc = i["accuracy"]
    print(f"\n== {r.case.title}: {i['voxels']} voxels, {i['beamlets']} beamlets, {i['nnz']:,} nonzeros; "
          f"dose influence {i['t_dose_s']} s, planning {i['t_optimise_s']} s ({i['iterations']} it, of which "
          f"accurate dose {i['t_accurate_s']} s)")
    print(f"   dose accuracy: stored dose untruncated (0 % dropped); the fast matrix drops "
          f"{100 * acc['fast_dropped_target']:.1f} % of the target dose, {100 * acc['fast_dropped_body']:.1f} % of "
          f"the body's; corrected model vs accurate at the final fluence, target mean "
          f"{100 * (acc.get('model_error_target_mean') or 0.0):+.2f} %")
    print(f"   {'goal':40s} {'limit':>8s} {'value':>8s}  pass  {'deliverable':>11s}  {'fast matrix':>11s}")
    for row in r.rows:
        print(f"   {row['goal']:40s} {row['limit']:8.2f} {row['value']:8.2f}  {'PASS' if row['passed'] else 'FAIL'}"
              f"  {row['value_sequenced']:11.2f}{'' if row['passed_sequenced'] else ' (fail)':7s}"
              f"  {row['value_fast_matrix']:9.2f}")
    print(f"   HI {i['HI']}, Paddick CI {i['CI_paddick']} (optimised); deliverable: {i['segments']} segments, "
          f"{i['mu_per_fraction']} MU per fraction ({i['n_fractions']} fx)")
    if r.deliverable is not None and r.deliverable.swo is not None:
        f0, f1 = i["swo_objective"]
        print(f"   leaf sequencing {i['segments_sequenced']} segments, {i['mu_per_fraction_sequenced']} MU; "
              f"segment-weight optimisation ({i['swo_iterations']} it, objective {f0:.4g} -> {f1:.4g}) "
              f"{i['segments']} segments, {i['mu_per_fraction']} MU")


if __name__ == "__main__":
    raise SystemExit(main())
