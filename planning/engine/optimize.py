"""Fluence (beamlet-weight) optimisation: minimise sum_k p_k f_k(D w) subject to w >= 0.

* Quasi-Newton L-BFGS-B (scipy) with the analytic gradient ``D^T (sum_k p_k df_k/dd)`` (chain rule through
  the linear dose ``d = D w``); one iteration costs one ``D @ w`` and one ``D^T @ g`` sparse product.
* Hard-ish constraints (``Objective.constraint``) by a quadratic-penalty continuation: while a constraint is
  broken, its weight is multiplied by ``penalty_growth`` and the optimisation warm-starts (at most
  ``constraint_rounds`` further rounds of ``max_iter // 2`` iterations). matRad uses IPOPT for true
  constraints; this keeps a bound-only solver.
* Optional fluence smoothing: ``smoothing * mean((w_i - w_j)^2)`` over neighbouring beamlets of the same beam
  (rows and columns of the fluence map), which makes leaf sequencing cheaper (fewer segments and MU).
* Progress: ``callback(iteration, objective)`` after each iteration; cancellation: ``should_cancel()``
  returning True (or the callback raising :class:`OptimizationCancelled`) stops the run and
  :class:`PlanResult` keeps the last iterate with ``cancelled=True``.
* Normalisation to the prescription (:func:`normalise`): scale w so the primary target's D95 (or mean)
  equals Rx, the TG-119 convention.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize

from .objectives import Objective
from .pencilbeam import DoseInfluence


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
                 smoothing: float = 0.0):
        self.dij = dij
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

    def dose(self, w):
        return self.dij.D @ np.asarray(w, np.float32)

    def value_and_grad(self, w):
        self.n_evals += 1
        d = self.dose(w).astype(np.float64)
        gd = np.zeros(d.size, np.float64)
        f = 0.0
        for o, r in zip(self.objectives, self._rows):
            if r is None:
                v, g = o.value_and_gradient(d)
                gd += o.weight * g
            else:
                v, g = o.value_and_gradient(d[r])
                gd[r] += o.weight * g
            f += o.weight * v
        g = (self.dij.DT @ gd.astype(np.float32)).astype(np.float64)
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
              method: str = "D95") -> float:
    """Factor that brings the target to the prescription: ``D95`` (95 % of the target gets Rx), ``D50``
    or ``mean``."""
    d = dij.dose(w)[target_rows].astype(np.float64)
    if method == "mean":
        v = d.mean()
    elif method.startswith("D"):
        x = float(method[1:])
        v = np.quantile(d, 1.0 - x / 100.0)
    else:
        raise ValueError(method)
    return float(rx / v) if v > 0 else 1.0


def optimize(dij: DoseInfluence, rows: dict[str, np.ndarray], objectives: list[Objective], *,
             target: str | None = None, rx: float | None = None, x0=None, max_iter: int = 300,
             smoothing: float = 0.0, callback=None, should_cancel=None, constraint_rounds: int = 4,
             penalty_growth: float = 10.0, normalise_to: str | None = "D95", tol: float = 1e-9) -> PlanResult:
    """Inverse-plan beamlet weights. ``rows`` maps structure -> dij row indices (see
    :meth:`DoseInfluence.row_index`). ``target``/``rx`` set the start point and the final normalisation."""
    prob = PlanningProblem(dij, rows, objectives, smoothing)
    if x0 is None:
        if target is None or rx is None:
            x0 = np.ones(dij.n_beamlets)
        else:
            x0 = initial_weights(dij, rows[target], rx)
    x = np.asarray(x0, np.float64).copy()
    history: list = []
    state = {"it": 0, "x": x}
    t0 = time.perf_counter()

    def cb(intermediate_result):
        state["it"] += 1
        state["x"] = np.asarray(intermediate_result.x).copy()
        history.append((state["it"], float(intermediate_result.fun)))
        if callback is not None:
            callback(state["it"], float(intermediate_result.fun))
        if should_cancel is not None and should_cancel():
            raise OptimizationCancelled()

    cancelled = False
    msg = ""
    bounds = [(0.0, None)] * dij.n_beamlets
    for rnd in range(constraint_rounds + 1):
        try:
            res = minimize(prob.value_and_grad, x, jac=True, method="L-BFGS-B", bounds=bounds, callback=cb,
                           options={"maxiter": max_iter if rnd == 0 else max(max_iter // 2, 20), "ftol": tol,
                                    "gtol": 1e-10, "maxcor": 20})
            x = res.x
            msg = str(res.message)
        except OptimizationCancelled:
            x = state["x"]
            cancelled = True
            msg = "cancelled"
            break
        d = prob.dose(x)
        broken = [o for o in prob.objectives if o.constraint and o.violated(d[rows[o.structure]].astype(float))]
        if not broken or rnd == constraint_rounds:
            break
        for o in broken:
            o.weight *= penalty_growth
    f = prob.value(x)
    scale = 1.0
    if normalise_to and target is not None and rx is not None:
        scale = normalise(dij, x, rows[target], rx, normalise_to)
        x = x * scale
    return PlanResult(weights=x, dose=dij.dose(x), objective=f, history=history, iterations=state["it"],
                      seconds=time.perf_counter() - t0, cancelled=cancelled, message=msg, scale=scale)
