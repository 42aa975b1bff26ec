"""Segment-weight (direct aperture weight) optimisation of a leaf-sequenced plan.

Leaf sequencing (:mod:`planning.engine.sequencing`) rounds every beam's optimal fluence to a few intensity
levels, which degrades the plan (on the TG-119 C-shape, 20 levels push PTV D10 and core D10 just over their
limits). Clinical planning systems therefore re-optimise the monitor units of the segments after sequencing
(segment-weight optimisation, SWO; e.g. Shepard et al., Med Phys 29:1007, 2002, and the "direct machine
parameter optimisation" step of commercial systems with the apertures held fixed):

* segment ``k`` (an MLC aperture of beam ``b``) delivers fluence ``x_k`` through its open beamlets, so the
  beamlet fluence is ``w = S x`` with ``S`` (beamlets x segments) the 0/1 aperture matrix and the dose is
  ``D w = (D S) x``; ``D_seg = D @ S`` (voxels x segments) is a small sparse matrix;
* ``x >= 0`` is optimised with L-BFGS-B against the same dose objectives as the fluence optimisation
  (:class:`planning.engine.optimize.PlanningProblem` on a :class:`SegmentInfluence`, which exposes the
  ``DoseInfluence`` interface the problem needs), starting from the sequenced weights; max/min-dose
  constraints use the same quadratic-penalty escalation as :func:`planning.engine.optimize.optimize` (one
  loop for both, :class:`planning.engine.optimize.BoundedLBFGSB`);
* by default the objective is that of the plan *as delivered*, i.e. renormalised to the prescription
  (:class:`NormalisedProblem`, ``F(x) = f(s(x) x)`` with ``s(x) = Rx / D95(x)``): the fluence optimiser
  minimises ``f`` and normalises afterwards, which trades target coverage for organ sparing in a way the
  normalisation then partly undoes; optimising ``F`` directly gives the segment weights the normalised plan
  is judged by (``normalised_objective=False`` optimises ``f`` and renormalises, as the fluence step does);
* segments whose weight ends at (about) zero are dropped, the rest re-polished;
* the step never returns a worse plan than it started from: the result's objective (with the penalty
  weights in force at the end; ``F``: the renormalised plan's) is at most that of the sequenced starting
  weights, else the start is kept.

The deliverable plan is then ``w = sum_k x_k aperture_k`` (exactly what the segments deliver), its dose
``D @ w``, and its MU the existing conversion (:func:`planning.engine.pencilbeam.mu_per_unit_weight`).
:func:`deliverable_plan` chains sequencing, this step and the renormalisation to the prescription.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .optimize import BoundedLBFGSB, DoseCorrection, PlanningProblem, corrected_dose, normalise
from .pencilbeam import DEFAULT_MACHINE, DoseInfluence, InfluenceShape, mu_per_unit_weight
from .sequencing import BeamSequence, Segment, sequence_plan


@dataclass
class SegmentInfluence(InfluenceShape):
    """Dose per unit segment weight, ``D_seg = D @ S`` (n_voxels x n_segments, CSR float32), with the part of
    the :class:`~planning.engine.pencilbeam.DoseInfluence` interface that the planning problem uses (a
    "beamlet" here is a segment; there is no beamlet grid, so no fluence smoothing)."""

    D: sp.csr_matrix
    DT: sp.csr_matrix
    voxels: np.ndarray
    grid_shape: tuple
    beams: list = field(default_factory=list)

    def dose(self, x: np.ndarray) -> np.ndarray:
        return self.D @ np.asarray(x, np.float32)


def segment_index(seqs: list[BeamSequence]) -> list[tuple[int, int]]:
    """(beam number, segment number) of every segment, in the column order of :func:`aperture_matrix`."""
    return [(i, j) for i, s in enumerate(seqs) for j in range(len(s.segments))]


def aperture_matrix(dij: DoseInfluence, seqs: list[BeamSequence]) -> sp.csc_matrix:
    """``S`` (n_beamlets x n_segments, 0/1): column k holds the beamlets open in segment k.

    A segment's aperture is a bool map on its beam's fluence map (rows = ``ib - ib.min()``, columns =
    ``ia - ia.min()``, :meth:`planning.engine.beams.Beam.fluence_map`); map cells that are not beamlets of the
    beam deliver nothing through the dose model and are left out."""
    if len(seqs) != len(dij.beams):
        raise ValueError("one BeamSequence per beam is needed")
    rows, cols = [], []
    col0 = 0
    k = 0
    for b, s in zip(dij.beams, seqs):
        r = b.ib - b.ib.min()
        c = b.ia - b.ia.min()
        for seg in s.segments:
            open_ = np.flatnonzero(np.asarray(seg.aperture, bool)[r, c])
            rows.append(col0 + open_)
            cols.append(np.full(open_.size, k))
            k += 1
        col0 += b.n_beamlets
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    return sp.csc_matrix((np.ones(r.size), (r, c)), shape=(dij.n_beamlets, k))


def segment_weights(seqs: list[BeamSequence]) -> np.ndarray:
    """Fluence weight of every segment (column order of :func:`aperture_matrix`)."""
    return np.array([seg.weight for s in seqs for seg in s.segments], np.float64)


def delivered_fluence(dij: DoseInfluence, seqs: list[BeamSequence]) -> np.ndarray:
    """Beamlet fluence the segments deliver: ``sum_k weight_k * aperture_k`` (float64)."""
    return aperture_matrix(dij, seqs) @ segment_weights(seqs)


def segment_influence(dij: DoseInfluence, S: sp.spmatrix) -> SegmentInfluence:
    """``D_seg = D @ S`` as a :class:`SegmentInfluence`."""
    DT = (sp.csr_matrix(S.T, dtype=np.float32) @ dij.DT).tocsr()
    DT.sort_indices()
    D = DT.T.tocsr()
    return SegmentInfluence(D, DT, getattr(dij, "voxels", None), getattr(dij, "grid_shape", None))


@dataclass
class SegmentWeightResult:
    sequences: list            # per-beam BeamSequence with the kept segments and their new weights and MU
    weights: np.ndarray        # deliverable beamlet fluence sum_k x_k aperture_k
    segment_weights: np.ndarray
    objective_start: float     # objective of the sequenced weights (penalty weights in force at the end)
    objective: float           # objective of the returned weights (same objective function)
    objectives: list           # the objectives with those penalty weights
    segments_before: int = 0
    segments_after: int = 0
    mu_before: float = 0.0
    mu_after: float = 0.0
    iterations: int = 0
    seconds: float = 0.0
    improved: bool = True      # False: the start was kept (the optimiser found nothing better)
    cancelled: bool = False
    message: str = ""
    normalised: bool = False   # objective of the plan normalised to the prescription (NormalisedProblem)


def _mu_units(dij, machine, n_fractions):
    return [mu_per_unit_weight(machine, b.bixel_mm) / max(n_fractions, 1) for b in dij.beams]


def _rebuild(seqs, x, keep, mu_units, S):
    """New BeamSequences with the kept segments, weights ``x`` and MU from the machine conversion."""
    out = []
    k = 0
    for bi, s in enumerate(seqs):
        segs = []
        for seg in s.segments:
            if keep[k]:
                segs.append(Segment(seg.aperture.copy(), float(x[k]), float(x[k] * mu_units[bi])))
            k += 1
        out.append(BeamSequence(s.gantry_deg, segs, s.quantum, s.fluence_in, None))
    # per-beam delivered maps from the new weights
    xk = np.where(keep, x, 0.0)
    for s in out:
        fl = np.zeros_like(s.fluence_in) if s.fluence_in is not None else None
        if fl is not None:
            for seg in s.segments:
                fl = fl + seg.weight * seg.aperture
        s.fluence_out = fl
    return out, S @ xk


class NormalisedProblem:
    """The objective of the *normalised* plan, ``F(x) = f(s(x) x)`` with ``s(x) = rx / N(x)`` and ``N`` the
    normalisation metric of the target: ``Dx`` (as :func:`planning.engine.optimize.normalise` computes it, a
    linearly interpolated quantile of the target's voxel doses) or ``mean``. ``F`` does not change when ``x``
    is scaled.

    Gradient: ``dF/dx = s g - (g . x) (s / N) dN/dx`` with ``g = grad f(s x)`` and ``dN/dx`` the row(s) of the
    quantile voxel(s) (or the mean row) of the target's part of ``D``. A single quantile voxel makes ``F``
    kinked wherever that voxel changes, which costs the line search several evaluations an iteration;
    ``window_pct`` > 0 replaces ``Dx`` by the mean dose of the order statistics within +-``window_pct`` % of
    the target volume around it (a smoothed Dx, used only to steer the search; :func:`optimize_segment_weights`
    judges candidates with the exact ``Dx``)."""

    def __init__(self, prob: PlanningProblem, seg: SegmentInfluence, target_rows: np.ndarray, rx: float,
                 method: str = "D95", window_pct: float = 0.0):
        self.prob = prob
        self.rx = float(rx)
        self.method = method
        self.window_pct = float(window_pct)
        self.Dt = seg.D[np.asarray(target_rows)].tocsr()
        corr = prob.correction  # the target's part of the corrected model: scale * (Dt x) + offset
        self._t_scale = None if corr is None else np.asarray(corr.scale, np.float64)[np.asarray(target_rows)]
        self._t_offset = None if corr is None else np.asarray(corr.offset, np.float64)[np.asarray(target_rows)]
        if self._t_scale is not None:
            self.Dt = sp.csr_matrix(sp.diags(self._t_scale.astype(np.float32)) @ self.Dt)
        if method == "mean":
            self._mean_row = np.asarray(self.Dt.mean(axis=0), np.float64).ravel()
        elif method.startswith("D"):
            self.q = 1.0 - float(method[1:]) / 100.0
        else:
            raise ValueError(method)

    def metric(self, x, window_pct: float | None = None):
        """(N(x), dN/dx); ``window_pct`` overrides the problem's (0: the exact Dx)."""
        d = np.asarray(self.Dt @ np.asarray(x, np.float32), np.float64)
        if self._t_offset is not None:
            d += self._t_offset
        n = d.size
        if n == 0:
            return 0.0, np.zeros(np.size(x))
        if self.method == "mean":
            return float(d.mean()), self._mean_row
        pos = self.q * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        k = int(np.ceil((self.window_pct if window_pct is None else window_pct) / 100.0 * n))
        if k > 0:  # mean of the order statistics lo-k .. hi+k
            a, b = max(lo - k, 0), min(hi + k, n - 1)
            part = np.argpartition(d, [a, b]) if b > a else np.argpartition(d, a)
            sel = part[a:b + 1]
            return float(d[sel].mean()), np.asarray(self.Dt[sel].mean(axis=0), np.float64).ravel()
        fr = pos - lo
        part = np.argpartition(d, [lo, hi]) if hi != lo else np.argpartition(d, lo)
        i, j = part[lo], part[hi]
        val = (1.0 - fr) * d[i] + fr * d[j]
        grad = (1.0 - fr) * self.Dt[i].toarray().ravel().astype(np.float64)
        if fr > 0:
            grad += fr * self.Dt[j].toarray().ravel()
        return float(val), grad

    def scale(self, x) -> float:
        """``s(x)`` with the exact normalisation metric."""
        v, _ = self.metric(x, 0.0)
        return self.rx / v if v > 0 else 1.0

    def value_and_grad(self, x):
        x = np.asarray(x, np.float64)
        v, dv = self.metric(x)
        if v <= 0:  # nothing reaches the target: no normalisation (as normalise() does)
            return self.prob.value_and_grad(x)
        s = self.rx / v
        f, g = self.prob.value_and_grad(s * x)
        return f, s * g - float(g @ x) * (s / v) * dv

    def value(self, x):
        return self.value_and_grad(x)[0]


def optimize_segment_weights(dij: DoseInfluence, seqs: list[BeamSequence], rows: dict[str, np.ndarray],
                             objectives: list, *, target: str | None = None, rx: float | None = None,
                             normalise_to: str | None = None, max_iter: int = 100, constraint_rounds: int = 2,
                             penalty_growth: float = 10.0, drop_rel: float = 1e-3, n_fractions: int = 1,
                             machine=DEFAULT_MACHINE, callback=None, should_cancel=None,
                             window_pct: float = 0.5, tol: float = 1e-9,
                             correction: DoseCorrection | None = None) -> SegmentWeightResult:
    """Re-optimise the weights (MU) of the segments of ``seqs`` against ``objectives``.

    ``rows`` maps structure -> dij rows as for :func:`planning.engine.optimize.optimize`. With ``target``,
    ``rx`` and ``normalise_to`` the objective is that of the plan normalised to the prescription
    (:class:`NormalisedProblem`: the plan that will be delivered; the search uses a Dx smoothed over
    +-``window_pct`` % of the target, the result is judged with the exact one) and the returned weights are
    normalised; otherwise the objective of the weights as they are. Segments whose weight ends below ``drop_rel`` times the
    largest segment weight are dropped and the rest re-polished. ``callback(iteration, objective)`` and
    ``should_cancel()`` work as in the fluence optimiser (a cancellation returns the best weights so far with
    ``cancelled=True``). ``correction``: optimise on the corrected dose model (a
    :class:`~planning.engine.optimize.DoseCorrection` of ``dij``'s rows, e.g. fitted to the accurate dose)."""
    t0 = time.perf_counter()
    mu_units = _mu_units(dij, machine, n_fractions)
    S = aperture_matrix(dij, seqs)
    x0 = segment_weights(seqs)
    n_seg = x0.size
    mu_before = float(sum(s.mu for s in seqs))
    if n_seg == 0 or not objectives:
        new, w = _rebuild(seqs, x0, np.ones(n_seg, bool), mu_units, S)
        return SegmentWeightResult(new, w, x0, float("nan"), float("nan"), list(objectives or []), n_seg, n_seg,
                                   mu_before, float(sum(s.mu for s in new)), 0, time.perf_counter() - t0,
                                   improved=False, message="nothing to optimise")
    seg = segment_influence(dij, S)
    objs = [copy.copy(o) for o in objectives]
    normalised = bool(normalise_to) and target is not None and rx is not None
    loop = BoundedLBFGSB(tol=tol, callback=callback, should_cancel=should_cancel)

    def problem(window=0.0):
        prob = PlanningProblem(seg, rows, objs, 0.0, correction)
        return NormalisedProblem(prob, seg, rows[target], rx, normalise_to, window) if normalised else prob

    def constraint_dose(prob, x):  # the constraints hold on the plan as it will be delivered (normalised)
        return corrected_dose(seg, x * (prob.scale(x) if normalised else 1.0), correction)

    x, msg, cancelled, rounds = loop.solve(lambda: problem(window_pct), x0.copy(), objs, rows, constraint_dose,
                                           max_iter=max_iter, constraint_rounds=constraint_rounds,
                                           penalty_growth=penalty_growth, free=np.ones(n_seg, bool))
    candidates = [x0, *rounds]
    # drop the segments the optimiser switched off (about zero MU) and re-polish the rest
    if not cancelled and x.max() > 0:
        keep = x > drop_rel * x.max()
        if not keep.all():
            x = np.where(keep, x, 0.0)
            x, msg2, cancelled = loop.run(problem(window_pct), x, max(max_iter // 4, 20), keep)
            candidates.append(x)
            msg = f"{msg}; {int((~keep).sum())} segments dropped, re-polished: {msg2}"
    prob = problem()  # the exact objective (exact Dx) with the penalty weights in force at the end
    values = [prob.value(c) for c in candidates]
    f_start = values[0]
    # the end of the pipeline (escalated constraints, ~0 MU segments dropped) unless it is worse than the start;
    # then the best candidate (at worst the start itself)
    best = len(values) - 1 if values[-1] <= f_start else int(np.argmin(values))
    x_best = candidates[best]
    improved = best != 0
    if normalised and improved:
        x_best = x_best * prob.scale(x_best)  # F is scale-free: report the weights at the prescription
    keep = x_best > 0 if improved else np.ones(n_seg, bool)
    new, w = _rebuild(seqs, x_best, keep, mu_units, S)
    return SegmentWeightResult(
        new, w, x_best[keep], f_start, values[best], objs, n_seg, int(keep.sum()), mu_before,
        float(sum(s.mu for s in new)), loop.iterations, time.perf_counter() - t0, improved, cancelled, msg,
        normalised)


@dataclass
class DeliverablePlan:
    """A sequenced, segment-weight-optimised and renormalised plan: what the linac delivers."""

    sequences: list            # per-beam BeamSequence (segment weights and MU per fraction, renormalised)
    weights: np.ndarray        # deliverable beamlet fluence (= sum of segment weight x aperture)
    scale: float               # renormalisation factor applied after the segment-weight step
    segments_sequenced: int    # straight out of the leaf sequencer
    mu_sequenced: float        # MU per fraction of the plainly sequenced plan, renormalised
    segments: int
    mu: float
    swo: SegmentWeightResult | None = None
    weights_sequenced: np.ndarray | None = None  # plain sequencing, renormalised (for comparison)

    def dose(self, dij: DoseInfluence) -> np.ndarray:
        return dij.dose(self.weights)


def scale_sequences(seqs: list[BeamSequence], s: float) -> None:
    """Multiply every segment's weight and MU (and the delivered maps) by ``s`` in place."""
    for b in seqs:
        for seg in b.segments:
            seg.weight *= s
            seg.mu *= s
        if b.fluence_out is not None:
            b.fluence_out = b.fluence_out * s


def deliverable_plan(dij: DoseInfluence, weights: np.ndarray, rows: dict[str, np.ndarray], objectives: list | None,
                     *, target: str | None = None, rx: float | None = None, normalise_to: str | None = "D95",
                     n_levels: int = 20, n_fractions: int = 1, machine=DEFAULT_MACHINE, segment_weight_opt: bool = True,
                     normalised_objective: bool = True, max_iter: int = 100, callback=None, should_cancel=None,
                     correction: DoseCorrection | None = None, **swo_kwargs) -> DeliverablePlan:
    """Leaf-sequence ``weights`` (``n_levels`` levels), re-optimise the segment weights against ``objectives``
    (skipped when there are none or ``segment_weight_opt`` is False), and renormalise the delivered fluence so
    ``target`` gets ``rx`` at ``normalise_to`` (as the optimised plan). MU are per fraction. ``correction``:
    segment weights and normalisation on the corrected dose model (see :func:`optimize_segment_weights`)."""
    seqs, w_seq = sequence_plan(dij, weights, n_levels=n_levels, machine=machine, n_fractions=n_fractions)
    n_before = int(sum(len(s.segments) for s in seqs))
    mu_before = float(sum(s.mu for s in seqs))

    def norm_factor(w):
        if normalise_to and target is not None and rx is not None:
            return normalise(dij, w, rows[target], rx, normalise_to, correction)
        return 1.0

    s_plain = norm_factor(w_seq)
    swo = None
    if segment_weight_opt and objectives:
        swo = optimize_segment_weights(dij, seqs, rows, objectives, target=target, rx=rx,
                                       normalise_to=normalise_to if normalised_objective else None,
                                       max_iter=max_iter, n_fractions=n_fractions,
                                       machine=machine, callback=callback, should_cancel=should_cancel,
                                       correction=correction, **swo_kwargs)
        final = swo.sequences
    else:
        final = seqs
    w = delivered_fluence(dij, final)
    s = norm_factor(w)
    scale_sequences(final, s)
    w = delivered_fluence(dij, final)  # = s * w, recomputed from the scaled segments
    return DeliverablePlan(final, w, s, n_before, mu_before * s_plain, int(sum(len(b.segments) for b in final)),
                           float(sum(b.mu for b in final)), swo, w_seq * s_plain)
