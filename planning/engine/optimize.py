"""Fluence (beamlet-weight) optimisation: minimise sum_k p_k f_k(D w) subject to w >= 0.

* Quasi-Newton L-BFGS-B (scipy) with the analytic gradient ``D^T (sum_k p_k df_k/dd)`` (chain rule through
  the linear dose ``d = D w``); one iteration costs one ``D @ w`` and one ``D^T @ g`` sparse product
  (:class:`planning.engine.pencilbeam.SparseProducts`: threaded, float32 throughout). Dose and dose-space
  gradient stay float32 in buffers the problem owns (objectives add into them in place, see
  :meth:`planning.engine.objectives.Objective.accumulate`); only the beamlet-space gradient handed to
  L-BFGS-B is float64.
* Hard-ish constraints (``Objective.constraint``) by a quadratic-penalty continuation: while a constraint is
  broken, its weight is multiplied by ``penalty_growth`` and the optimisation warm-starts (at most
  ``constraint_rounds`` further rounds of ``max_iter // 2`` iterations). matRad uses IPOPT for true
  constraints; this keeps a bound-only solver.
* Optional fluence smoothing: ``smoothing * mean((w_i - w_j)^2)`` over neighbouring beamlets of the same beam
  (rows and columns of the fluence map), which makes leaf sequencing cheaper (fewer segments and MU).
* Progress: ``callback(iteration, objective)`` after each iteration; cancellation: ``should_cancel()``
  returning True (or the callback raising :class:`OptimizationCancelled`) stops the run and
  :class:`PlanResult` keeps the last iterate with ``cancelled=True``.
* The loop (L-BFGS-B on ``w >= 0``, penalty continuation, progress, cancellation) is :class:`BoundedLBFGSB`; the
  segment-weight optimisation of :mod:`planning.engine.aperture` runs the same loop on segment weights.
* Normalisation to the prescription (:func:`normalise`): scale w so the primary target's D95 (or mean)
  equals Rx, the TG-119 convention.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from .objectives import Objective, accumulate_plain
from .pencilbeam import DoseInfluence, products


# --------------------------------------------------------------------------- BLAS threads during L-BFGS-B
# L-BFGS-B's own linear algebra is tiny (vectors of n_beamlets, matrices of 2 x maxcor), but the OpenBLAS bundled
# with numpy and scipy hands it to its thread pool, whose threads then busy-wait on the other core: on the
# benchmark (2 cores, shared) one L-BFGS-B step took 4 ms instead of 0.5 ms and the sparse products ran at a
# third of their speed, 300 iterations 7.5 s instead of 3.6 s. So the optimiser runs with OpenBLAS at one thread
# (set through OpenBLAS's own ``*_set_num_threads``, found in the libraries already loaded; restored afterwards;
# nothing happens where there is no OpenBLAS). The setting is per process: other threads' BLAS calls are
# single-threaded while an optimisation runs.

_BLAS_LOCK = threading.Lock()
_BLAS_USERS = 0
_BLAS_SAVED: list = []


_BLAS_CONTROLS: dict = {}


def _openblas_controls() -> list:
    """(get, set) ctypes functions of every OpenBLAS loaded in this process (Linux; [] elsewhere); looked up once
    per process (numpy's and scipy's are loaded by the imports of this module)."""
    pid = os.getpid()
    if pid not in _BLAS_CONTROLS:
        _BLAS_CONTROLS.clear()
        _BLAS_CONTROLS[pid] = _find_openblas_controls()
    return _BLAS_CONTROLS[pid]


def _find_openblas_controls() -> list:
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln.split()[-1]})
    except OSError:
        return []
    out = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0))
        except OSError:
            continue
        for pre, suf in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            get = getattr(lib, f"{pre}_get_num_threads{suf}", None)
            set_ = getattr(lib, f"{pre}_set_num_threads{suf}", None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                out.append((get, set_))
                break
    return out


@contextlib.contextmanager
def single_threaded_blas():
    """Run the block with every loaded OpenBLAS at one thread (nested and concurrent uses are counted; the last
    one out restores the previous settings)."""
    global _BLAS_USERS, _BLAS_SAVED
    with _BLAS_LOCK:
        if _BLAS_USERS == 0:
            try:
                _BLAS_SAVED = [(set_, get()) for get, set_ in _openblas_controls()]
                for set_, _ in _BLAS_SAVED:
                    set_(1)
            except Exception:  # noqa: BLE001 - a speed measure only: never fail an optimisation over it
                _BLAS_SAVED = []
        _BLAS_USERS += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_USERS -= 1
            if _BLAS_USERS == 0:
                for set_, n in _BLAS_SAVED:
                    set_(n)
                _BLAS_SAVED = []


class OptimizationCancelled(Exception):
    """Raised (by a callback or ``should_cancel``) to stop an optimisation."""


@dataclass
class PlanResult:
    weights: np.ndarray
    dose: np.ndarray  # on the calculation voxels (dij rows)
    objective: float
    history: list = field(default_factory=list)  # (iteration, objective)
    iterations: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    message: str = ""
    scale: float = 1.0  # normalisation factor applied


@dataclass
class DoseCorrection:
    """An accurate-dose correction of a fast (truncated) influence matrix, held fixed during an optimisation:
    the optimiser's dose model becomes ``d(w) = scale * (D w) + offset`` (voxel-wise), fitted at a fluence
    ``w0`` so that it equals the accurate dose there (the "intermediate dose" of commercial planning systems).

    Where the fast dose is at least ``floor_rel`` of its maximum the correction is a ratio (``scale =
    accurate / fast``, no offset): the missing scatter is about proportional to the local dose, and a ratio
    keeps the model linear in the fluence, so normalising a plan (scaling ``w``) scales the modelled dose too;
    below it (far from the fields, where the truncated matrix has little or nothing) an additive offset. The
    gradient is ``D^T (scale * g)``, exact for the model."""

    scale: np.ndarray   # float32, one per calculation voxel
    offset: np.ndarray  # float32, one per calculation voxel

    @classmethod
    def fit(cls, fast: np.ndarray, accurate: np.ndarray, floor_rel: float = 0.02) -> "DoseCorrection":
        f = np.asarray(fast, np.float64)
        a = np.asarray(accurate, np.float64)
        big = f >= floor_rel * max(float(f.max(initial=0.0)), 1e-30)
        scale = np.ones_like(f)
        scale[big] = a[big] / f[big]
        offset = np.where(big, 0.0, a - f)
        return cls(scale.astype(np.float32), offset.astype(np.float32))

    def apply(self, d: np.ndarray) -> np.ndarray:
        """The corrected dose of a fast dose ``d`` (in place when ``d`` is float32)."""
        d = np.asarray(d, np.float32)
        d *= self.scale
        d += self.offset
        return d


def corrected_dose(dij, w, correction: DoseCorrection | None = None) -> np.ndarray:
    """``dij.dose(w)``, corrected when a :class:`DoseCorrection` is given."""
    d = np.array(dij.dose(w), np.float32)
    return d if correction is None else correction.apply(d)


def smoothing_operator(dij: DoseInfluence) -> sp.csr_matrix:
    """Sparse first-difference operator between 4-neighbour beamlets of each beam's fluence map."""
    rows, cols, vals = [], [], []
    n = 0
    col0 = 0
    for b in dij.beams:
        key = {(int(a), int(c)): col0 + j for j, (a, c) in enumerate(zip(b.ia, b.ib))}
        ia, ib = b.ia.astype(int), b.ib.astype(int)
        for da, db in ((1, 0), (0, 1)):
            for j in range(b.n_beamlets):
                k = key.get((ia[j] + da, ib[j] + db))
                if k is not None:
                    rows += [n, n]
                    cols += [col0 + j, k]
                    vals += [1.0, -1.0]
                    n += 1
        col0 += b.n_beamlets
    return sp.csr_matrix((vals, (rows, cols)), shape=(max(n, 1), dij.n_beamlets))


class PlanningProblem:
    """Objective function and gradient in beamlet space for a set of dose-space objectives."""

    def __init__(self, dij: DoseInfluence, rows: dict[str, np.ndarray], objectives: list[Objective],
                 smoothing: float = 0.0, correction: DoseCorrection | None = None):
        self.dij = dij
        self.correction = correction
        self.rows = rows
        self.objectives = [copy.copy(o) for o in objectives]  # penalty escalation must not touch the caller's
        missing = {o.structure for o in self.objectives} - set(rows)
        if missing:
            raise KeyError(f"objectives refer to unknown structures {sorted(missing)}")
        # per objective: the structure's rows, or None when it covers every calculation voxel (no gather)
        n = dij.n_voxels
        self._rows = [None if (rows[o.structure].size == n) else rows[o.structure] for o in self.objectives]
        self.smoothing = float(smoothing)
        self.L = smoothing_operator(dij) if smoothing > 0 else None
        self.n_evals = 0
        self.products = products(dij)
        # float32 work buffers (one problem is evaluated by one thread at a time, as by scipy's minimize)
        self._gd = np.zeros(n, np.float32)
        self._work = np.empty(n, np.float32)
        m = max((r.size for r in self._rows if r is not None), default=0)
        self._sub_d = np.empty(m, np.float32)
        self._sub_g = np.empty(m, np.float32)

    def dose(self, w):
        d = self.products.matvec(w)
        return d if self.correction is None else self.correction.apply(d)

    def value_and_grad(self, w):
        self.n_evals += 1
        d = self.dose(w)
        gd = self._gd
        gd.fill(0.0)
        f = 0.0
        for o, r in zip(self.objectives, self._rows):
            acc = getattr(o, "accumulate", None)
            if r is None:
                v = acc(d, gd, o.weight, self._work) if acc else accumulate_plain(o, d, gd, o.weight)
            else:
                k = r.size
                dr = np.take(d, r, out=self._sub_d[:k])
                gr = self._sub_g[:k]
                gr.fill(0.0)
                v = acc(dr, gr, o.weight, self._work[:k]) if acc else accumulate_plain(o, dr, gr, o.weight)
                gd[r] += gr
            f += o.weight * v
        if self.correction is not None:
            gd *= self.correction.scale
        g = self.products.rmatvec(gd).astype(np.float64)
        if self.L is not None:
            Lw = self.L @ w
            m = max(self.L.shape[0], 1)
            f += self.smoothing * float(Lw @ Lw) / m
            g += 2.0 * self.smoothing * (self.L.T @ Lw) / m
        return float(f), g

    def value(self, w):
        return self.value_and_grad(w)[0]


def initial_weights(dij: DoseInfluence, target_rows: np.ndarray, rx: float) -> np.ndarray:
    """Uniform weights scaled so the mean target dose equals ``rx`` (matRad's start point)."""
    w = np.ones(dij.n_beamlets)
    m = float(dij.dose(w)[target_rows].mean())
    return w * (rx / m if m > 0 else 1.0)


def normalise(dij: DoseInfluence, w: np.ndarray, target_rows: np.ndarray, rx: float,
              method: str = "D95", correction: DoseCorrection | None = None, dose: np.ndarray | None = None) -> float:
    """Factor that brings the target to the prescription: ``D95`` (95 % of the target gets Rx), ``D50``
    or ``mean``; on ``dij``'s dose of ``w`` (corrected by ``correction``), or on ``dose`` when given (e.g. the
    accurate dose of ``w``)."""
    if dose is None:
        dose = corrected_dose(dij, w, correction)
    d = np.asarray(dose)[target_rows].astype(np.float64)
    if method == "mean":
        v = d.mean()
    elif method.startswith("D"):
        x = float(method[1:])
        v = np.quantile(d, 1.0 - x / 100.0)
    else:
        raise ValueError(method)
    return float(rx / v) if v > 0 else 1.0


class BoundedLBFGSB:
    """The engine's optimisation loop, serving beamlet weights (:func:`optimize`) and segment weights
    (:func:`planning.engine.aperture.optimize_segment_weights`) alike: L-BFGS-B on ``x >= 0`` with the problem's
    analytic gradient (``problem.value_and_grad``), optionally with some entries held at zero, and the
    quadratic-penalty continuation for constraints (:meth:`solve`). Progress: ``callback(iteration, objective)``
    after each iteration, counted over every run of the loop (also kept in ``history``); cancellation:
    ``should_cancel()`` returning True, or the callback raising :class:`OptimizationCancelled`, ends the run with
    its last iterate."""

    def __init__(self, *, tol: float = 1e-9, callback=None, should_cancel=None):
        self.tol = tol
        self.callback = callback
        self.should_cancel = should_cancel
        self.iterations = 0
        self.history: list = []  # (iteration, objective)
        self._last = None

    def _iterate(self, intermediate_result):
        self.iterations += 1
        self._last = np.asarray(intermediate_result.x).copy()
        fun = float(intermediate_result.fun)
        self.history.append((self.iterations, fun))
        if self.callback is not None:
            self.callback(self.iterations, fun)
        if self.should_cancel is not None and self.should_cancel():
            raise OptimizationCancelled()

    def run(self, problem, x, iters: int, free=None):
        """One L-BFGS-B run from ``x`` of at most ``iters`` iterations over the entries where ``free`` is True (all
        when None; the others are held at zero). Returns (x, message, cancelled)."""
        x = np.asarray(x, np.float64)
        if free is None:
            idx, fg, start = None, problem.value_and_grad, x.copy()
        else:
            idx, n = np.flatnonzero(free), x.size

            def fg(xf):
                full = np.zeros(n)
                full[idx] = xf
                f, g = problem.value_and_grad(full)
                return f, g[idx]

            start = x[idx].copy()
        self._last = start
        try:
            with single_threaded_blas():
                res = minimize(fg, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * start.size,
                               callback=self._iterate,
                               options={"maxiter": iters, "ftol": self.tol, "gtol": 1e-10, "maxcor": 20})
            xf, msg, cancelled = res.x, str(res.message), False
        except OptimizationCancelled:
            xf, msg, cancelled = self._last, "cancelled", True
        xf = np.maximum(xf, 0.0)
        if idx is None:
            return xf, msg, cancelled
        out = np.zeros(x.size)
        out[idx] = xf
        return out, msg, cancelled

    def solve(self, make_problem, x, objectives: list, rows: dict, constraint_dose, *, max_iter: int,
              constraint_rounds: int, penalty_growth: float, free=None):
        """Runs with the penalty continuation: while a constraint of ``objectives`` (``Objective.constraint``) is
        broken on ``constraint_dose(problem, x)``, its weight is multiplied by ``penalty_growth`` and the run
        warm-starts (at most ``constraint_rounds`` further rounds of ``max_iter // 2``, at least 20, iterations).
        ``make_problem()`` gives each round's problem (after the escalation of the round before). Returns
        (x, message, cancelled, the x at the end of every round)."""
        rounds: list = []
        msg, cancelled = "", False
        for rnd in range(constraint_rounds + 1):
            prob = make_problem()
            x, msg, cancelled = self.run(prob, x, max_iter if rnd == 0 else max(max_iter // 2, 20), free)
            rounds.append(x)
            if cancelled:
                break
            d = constraint_dose(prob, x)
            broken = [o for o in objectives if getattr(o, "constraint", False)
                      and o.violated(np.asarray(d[rows[o.structure]], np.float64))]
            if not broken or rnd == constraint_rounds:
                break
            for o in broken:
                o.weight *= penalty_growth
        return x, msg, cancelled, rounds


def optimize(dij: DoseInfluence, rows: dict[str, np.ndarray], objectives: list[Objective], *,
             target: str | None = None, rx: float | None = None, x0=None, max_iter: int = 300,
             smoothing: float = 0.0, callback=None, should_cancel=None, constraint_rounds: int = 4,
             penalty_growth: float = 10.0, normalise_to: str | None = "D95", tol: float = 1e-9,
             correction: DoseCorrection | None = None) -> PlanResult:
    """Inverse-plan beamlet weights. ``rows`` maps structure -> dij row indices (see
    :meth:`DoseInfluence.row_index`). ``target``/``rx`` set the start point and the final normalisation.
    ``correction``: optimise on the corrected dose model (:class:`DoseCorrection`); the result's dose and
    normalisation are then on that model too."""
    prob = PlanningProblem(dij, rows, objectives, smoothing, correction)
    if x0 is None:
        if target is None or rx is None:
            x0 = np.ones(dij.n_beamlets)
        else:
            x0 = initial_weights(dij, rows[target], rx)
    t0 = time.perf_counter()
    loop = BoundedLBFGSB(tol=tol, callback=callback, should_cancel=should_cancel)
    x, msg, cancelled, _ = loop.solve(lambda: prob, np.asarray(x0, np.float64).copy(), prob.objectives, rows,
                                      lambda p, w: p.dose(w), max_iter=max_iter, constraint_rounds=constraint_rounds,
                                      penalty_growth=penalty_growth)
    f = prob.value(x)
    scale = 1.0
    if normalise_to and target is not None and rx is not None:
        scale = normalise(dij, x, rows[target], rx, normalise_to, correction)
        x = x * scale
    return PlanResult(weights=x, dose=corrected_dose(dij, x, correction), objective=f, history=loop.history,
                      iterations=loop.iterations, seconds=time.perf_counter() - t0, cancelled=cancelled, message=msg,
                      scale=scale)
