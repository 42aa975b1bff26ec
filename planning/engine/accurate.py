"""Optimise fast, report accurately: plans whose stored dose is the accurate dose of the deliverable fluence.

The optimiser works on the truncated dose-influence matrix (:func:`planning.engine.pencilbeam.dose_influence`:
fast, but on 5 mm beamlets it drops about 10 % of the dose, 7.6 % in the PTV). Every dose RadPath stores, shows,
exports or judges (DVHs, goals, EQD2, MU) is instead the untruncated calculation of the final fluence
(:class:`planning.engine.pencilbeam.AccurateDose`). Between the two:

1. the fluence is optimised on the fast matrix;
2. ``correction_rounds`` times: the accurate dose of the current fluence is calculated and the optimisation
   continues (warm start) on the fast matrix corrected to it (:class:`planning.engine.optimize.DoseCorrection`,
   the "intermediate dose" of commercial systems): the optimiser now sees the scatter the matrix drops, so the
   trade-offs are made on the accurate dose;
3. the fluence is leaf-sequenced and the segment weights optimised on the corrected model
   (:func:`planning.engine.aperture.deliverable_plan`), then once more with the correction refitted at the
   deliverable fluence;
4. the deliverable fluence's accurate dose is calculated, the plan normalised to the prescription on it
   (segment weights and MU scaled), and that dose is the plan's dose.

Why this and not a more accurate matrix: on the C-shape a matrix that meets the accuracy bounds by itself
(``rel_threshold=1e-4, cutoff_mm=50``: PTV 0.2 %, body 0.8 % dropped) has 12x the nonzeros, so every iteration
costs 12x the memory traffic and end to end RadPath would no longer be 5x faster than pyRadPlan; the corrected
model keeps the fast matrix and adds one accurate calculation per round (no matrix: about the cost of building
the fast matrix once). The accuracy figures of every plan are in :attr:`AccuratePlan.accuracy`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .aperture import (DeliverablePlan, delivered_fluence, deliverable_plan, optimize_segment_weights,
                       scale_sequences)
from .optimize import DoseCorrection, PlanResult, normalise, optimize
from .pencilbeam import DEFAULT_MACHINE, AccurateDose, DoseInfluence, dropped_fraction

DOSE_MODEL = ("pencil beam, untruncated (every beamlet to every voxel; the optimiser's truncated matrix is "
              "corrected to this dose)")


@dataclass
class AccuratePlan:
    result: PlanResult              # the optimised (ideal) fluence, normalised on its accurate dose
    deliverable: DeliverablePlan    # sequences / segment weights / MU, normalised on the accurate dose
    dose: np.ndarray                # accurate dose of the deliverable fluence (calculation voxels, float32)
    dose_optimised: np.ndarray      # accurate dose of the optimised fluence
    fast_dose: np.ndarray           # the fast (truncated) matrix's dose of the deliverable fluence
    accuracy: dict = field(default_factory=dict)
    dose_sequenced_plain: np.ndarray | None = None  # accurate dose of plain sequencing (renormalised on it)
    seconds_accurate: float = 0.0   # time spent in accurate calculations

    @property
    def weights(self) -> np.ndarray:
        return self.deliverable.weights


def _accuracy(dij, fast, accurate_d, model, rows, target) -> dict:
    t = rows[target] if target is not None else None
    out = {
        "fast_dropped_target": round(dropped_fraction(fast, accurate_d, t), 5) if t is not None else None,
        "fast_dropped_body": round(dropped_fraction(fast, accurate_d), 5),
        "stored_dropped_target": 0.0, "stored_dropped_body": 0.0,  # the stored dose is the untruncated one
        "fast_matrix": {"rel_threshold": getattr(dij, "rel_threshold", None),
                        "cutoff_mm": getattr(dij, "cutoff_mm", None), "nnz": int(dij.nnz)},
    }
    if model is not None and t is not None:  # what the optimiser's corrected model missed at the final fluence
        a = np.asarray(accurate_d, np.float64)[t]
        m = np.asarray(model, np.float64)[t]
        out["model_error_target_mean"] = round(float(m.mean() / a.mean() - 1.0), 5) if a.mean() > 0 else None
    return out


def optimise_accurately(dij: DoseInfluence, rows: dict, objectives: list, accurate, *, target: str | None = None,
                        rx: float | None = None, normalise_to: str | None = "D95", max_iter: int = 300,
                        smoothing: float = 0.0, correction_rounds: int = 2, round_iter: int | None = None,
                        callback=None, should_cancel=None, tol: float = 1e-9) -> PlanResult:
    """The fluence part of :func:`plan_accurately`: optimise on the fast matrix, then ``correction_rounds`` warm
    restarts on it corrected to ``accurate(w)`` (a callable: weights -> accurate dose on ``dij``'s rows) of the
    current fluence. ``callback(stage, iteration, objective)``; the result's ``iterations`` are the total. The
    result's dose is the corrected model's; the caller takes the accurate dose of its weights."""
    def cb_for(stage):
        return None if callback is None else (lambda it, f: callback(stage, it, f))

    res = optimize(dij, rows, objectives, target=target, rx=rx, max_iter=max_iter, smoothing=smoothing,
                   callback=cb_for(0), should_cancel=should_cancel, normalise_to=normalise_to, tol=tol)
    n_it = res.iterations
    for rnd in range(1, correction_rounds + 1):
        if res.cancelled:
            break
        corr = DoseCorrection.fit(dij.dose(res.weights), accurate(res.weights))
        res = optimize(dij, rows, objectives, target=target, rx=rx, x0=res.weights,
                       max_iter=round_iter or max(max_iter // 3, 30), smoothing=smoothing, callback=cb_for(rnd),
                       should_cancel=should_cancel, normalise_to=normalise_to, tol=tol, correction=corr)
        n_it += res.iterations
    res.iterations = n_it
    return res


def plan_accurately(dij: DoseInfluence, rows: dict, objectives: list | None, *, target: str, rx: float,
                    accurate: AccurateDose | None = None, geo=None, normalise_to: str = "D95",
                    max_iter: int = 300, smoothing: float = 0.0, correction_rounds: int = 2,
                    round_iter: int | None = None, n_levels: int = 20, n_fractions: int = 1,
                    machine=DEFAULT_MACHINE, segment_weight_opt: bool = True, normalised_objective: bool = True,
                    swo_max_iter: int = 100, forward_weights: np.ndarray | None = None, callback=None,
                    swo_callback=None, should_cancel=None, tol: float = 1e-9) -> AccuratePlan:
    """Plan on ``dij`` and return the deliverable plan with its accurate dose (see the module docstring).

    ``accurate``: the accurate calculation on ``dij``'s voxels (built from ``geo`` when None).
    ``forward_weights``: a forward plan's beamlet weights (no optimisation; sequenced, normalised on the accurate
    dose). ``round_iter``: iterations of each correction round (default ``max(max_iter // 3, 30)``).
    ``callback(stage, iteration, objective)`` reports the fluence optimisation (stage 0, then the rounds 1, 2 ...),
    ``swo_callback(iteration, objective)`` the segment-weight steps. A cancelled optimisation returns early
    with ``result.cancelled`` (no deliverable step)."""
    if accurate is None:
        if geo is None:
            raise ValueError("geo or accurate is needed")
        accurate = AccurateDose.for_influence(geo, dij, machine)
    acc = accurate.dose
    t_acc0 = accurate.seconds

    t_rows = rows[target]
    corr = None
    if forward_weights is not None:
        w = np.asarray(forward_weights, np.float64)
        res = PlanResult(weights=w, dose=None, objective=float("nan"), message="forward")
        objectives = None
    else:
        res = optimise_accurately(dij, rows, objectives, acc, target=target, rx=rx, normalise_to=normalise_to,
                                  max_iter=max_iter, smoothing=smoothing, correction_rounds=correction_rounds,
                                  round_iter=round_iter, callback=callback, should_cancel=should_cancel, tol=tol)
        if res.cancelled:
            return AccuratePlan(res, None, None, None, None, {}, None, accurate.seconds - t_acc0)
    # the optimised fluence on its accurate dose
    d_opt = acc(res.weights)
    s = normalise(dij, res.weights, t_rows, rx, normalise_to, dose=d_opt)
    res.weights = res.weights * s
    res.dose = d_opt * np.float32(s)
    res.scale *= s
    if objectives:
        corr = DoseCorrection.fit(dij.dose(res.weights), res.dose)
    # the deliverable plan on the corrected model, then once more with the correction refitted at its fluence
    dp = deliverable_plan(dij, res.weights, rows, objectives, target=target, rx=rx, normalise_to=normalise_to,
                          n_levels=n_levels, n_fractions=n_fractions, machine=machine,
                          segment_weight_opt=segment_weight_opt, normalised_objective=normalised_objective,
                          max_iter=swo_max_iter, callback=swo_callback, should_cancel=should_cancel, correction=corr)
    if dp.swo is not None and dp.swo.cancelled:
        return AccuratePlan(res, dp, None, d_opt, None, {}, None, accurate.seconds - t_acc0)
    model = None
    if objectives and segment_weight_opt and dp.swo is not None:
        d_acc = acc(dp.weights)
        corr = DoseCorrection.fit(dij.dose(dp.weights), d_acc)
        swo2 = optimize_segment_weights(dij, dp.sequences, rows, objectives, target=target, rx=rx,
                                        normalise_to=normalise_to if normalised_objective else None,
                                        max_iter=max(swo_max_iter // 2, 20), n_fractions=n_fractions,
                                        machine=machine, callback=swo_callback, should_cancel=should_cancel,
                                        correction=corr)
        if swo2.cancelled:
            return AccuratePlan(res, dp, None, d_opt, None, {}, None, accurate.seconds - t_acc0)
        dp.sequences = swo2.sequences
        dp.swo.iterations += swo2.iterations
        dp.swo.objective = swo2.objective
        dp.swo.segments_after = swo2.segments_after
        dp.segments = int(sum(len(b.segments) for b in dp.sequences))
    w = delivered_fluence(dij, dp.sequences)
    if corr is not None:
        model = corr.apply(np.array(dij.dose(w), np.float32))
    d_acc = acc(w)
    # normalise the deliverable plan on its accurate dose: segment weights and MU scale with it
    s = normalise(dij, w, t_rows, rx, normalise_to, dose=d_acc)
    scale_sequences(dp.sequences, s)
    dp.weights = delivered_fluence(dij, dp.sequences)
    dp.scale *= s
    dp.mu = float(sum(b.mu for b in dp.sequences))
    dose = d_acc * np.float32(s)
    # the plainly sequenced plan, renormalised on its accurate dose (for comparison)
    d_plain = None
    if dp.weights_sequenced is not None and np.any(dp.weights_sequenced):
        d_plain = acc(dp.weights_sequenced)
        s_plain = normalise(dij, dp.weights_sequenced, t_rows, rx, normalise_to, dose=d_plain)
        dp.weights_sequenced = dp.weights_sequenced * s_plain
        dp.mu_sequenced *= s_plain
        d_plain = d_plain * np.float32(s_plain)
    fast = np.asarray(dij.dose(dp.weights), np.float32)
    info = _accuracy(dij, fast, dose, None if model is None else model * np.float32(s), rows, target)
    info["correction_rounds"] = correction_rounds if forward_weights is None else 0
    return AccuratePlan(res, dp, dose, res.dose, fast, info, d_plain, accurate.seconds - t_acc0)

