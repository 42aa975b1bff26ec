"""Forward planning: conformal open fields shaped to the target's beam's-eye view, user beam weights.

Each beam's aperture is the set of its beamlets whose centre lies in the target projection enlarged by
``aperture_margin_mm`` (an MLC-shaped 3D-conformal field); every open beamlet of beam ``i`` gets weight
``beam_weights[i]``. The plan is then normalised to the prescription like an inverse plan, and evaluated
with the same dose-influence matrix.
"""
from __future__ import annotations

import numpy as np

from .beams import target_bixels
from .grid import Geometry
from .optimize import PlanResult, normalise
from .pencilbeam import DoseInfluence


def conformal_weights(geo: Geometry, dij: DoseInfluence, beam_weights=None, aperture_margin_mm: float = 5.0,
                      target_mask=None) -> np.ndarray:
    """Beamlet weights of open conformal fields (before normalisation)."""
    nb = len(dij.beams)
    bw = np.ones(nb) if beam_weights is None else np.asarray(beam_weights, float)
    if bw.shape != (nb,):
        raise ValueError(f"need {nb} beam weights")
    tm = geo.target_union() if target_mask is None else target_mask
    w = np.zeros(dij.n_beamlets)
    col0 = 0
    for i, b in enumerate(dij.beams):
        ia, ib = target_bixels(b, geo, tm, aperture_margin_mm)
        open_set = {(int(a), int(c)) for a, c in zip(ia, ib)}
        inside = np.array([(int(a), int(c)) in open_set for a, c in zip(b.ia, b.ib)], bool)
        w[col0:col0 + b.n_beamlets][inside] = bw[i]
        col0 += b.n_beamlets
    return w


def conformal_plan(geo: Geometry, dij: DoseInfluence, beam_weights=None, aperture_margin_mm: float = 5.0,
                   target: str | None = None, rx: float | None = None, normalise_to: str = "D95") -> PlanResult:
    """Forward plan normalised so the (primary) target gets ``rx`` at ``normalise_to``."""
    t = geo.primary_target if target is None else geo.structures[target]
    rx = t.prescription_gy if rx is None else rx
    w = conformal_weights(geo, dij, beam_weights, aperture_margin_mm, t.mask)
    rows = dij.row_index(t.mask)
    s = normalise(dij, w, rows, rx, normalise_to)
    w = w * s
    return PlanResult(weights=w, dose=dij.dose(w), objective=float("nan"), scale=s, message="forward")
