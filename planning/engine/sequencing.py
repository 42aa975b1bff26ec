"""Fluence smoothing and step-and-shoot leaf sequencing with monitor units.

Each beam's optimal fluence map (rows = MLC leaf pairs along z, columns = leaf travel along u) is
quantised to ``n_levels`` intensity levels and decomposed, row by row, with the unidirectional sweep
(Bortfeld et al., Med Phys 21:1994; Spirou & Chui, Med Phys 21:1994): with the level increments
``delta_x = I_x - I_(x-1)``, the left (trailing) leaf passes column x after ``L(x) = sum max(delta, 0)`` units
and the right (leading) leaf after ``R(x) = sum max(-delta, 0)`` units, so column x is open during units
``R(x) <= m < L(x)`` and receives exactly ``L(x) - R(x) = I_x``. At every unit ``m`` the open columns of a
row are contiguous (one leaf pair), so unit ``m`` is an MLC aperture; identical consecutive apertures merge
into one segment. The decomposition reproduces the quantised fluence exactly and uses the minimum MU for
unidirectional leaf motion.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .pencilbeam import DEFAULT_MACHINE, DoseInfluence, mu_per_unit_weight


def smooth_fluence(fmap: np.ndarray, sigma_bixels: float = 0.7) -> np.ndarray:
    """Gaussian smoothing of a fluence map (post-hoc; see also the smoothing term in the optimiser)."""
    return ndimage.gaussian_filter(np.asarray(fmap, float), sigma_bixels, mode="constant")


@dataclass
class Segment:
    aperture: np.ndarray  # bool (leaf pairs, columns)
    weight: float         # fluence units delivered through the aperture
    mu: float


@dataclass
class BeamSequence:
    gantry_deg: float
    segments: list = field(default_factory=list)
    quantum: float = 0.0
    fluence_in: np.ndarray | None = None
    fluence_out: np.ndarray | None = None

    @property
    def mu(self) -> float:
        return float(sum(s.mu for s in self.segments))


def sweep_units(levels: np.ndarray) -> np.ndarray:
    """Unit apertures (M, rows, cols) of the unidirectional sweep of an integer level map."""
    levels = np.asarray(levels, np.int64)
    nr, nc = levels.shape
    delta = np.diff(np.concatenate([np.zeros((nr, 1), np.int64), levels], axis=1), axis=1)
    L = np.cumsum(np.maximum(delta, 0), axis=1)
    R = np.cumsum(np.maximum(-delta, 0), axis=1)
    M = int(L[:, -1].max()) if nr and nc else 0
    m = np.arange(M)[:, None, None]
    return (R[None] <= m) & (m < L[None])


def sequence_map(fmap: np.ndarray, n_levels: int = 10, mu_per_unit: float = 1.0) -> tuple[list, float, np.ndarray]:
    """Segments of one fluence map: returns (segments, quantum, delivered fluence map)."""
    fmap = np.maximum(np.asarray(fmap, float), 0.0)
    top = float(fmap.max())
    if top <= 0:
        return [], 0.0, np.zeros_like(fmap)
    q = top / n_levels
    levels = np.rint(fmap / q).astype(np.int64)
    units = sweep_units(levels)
    segs = []
    if units.shape[0]:
        change = np.ones(units.shape[0], bool)
        change[1:] = np.any(units[1:] != units[:-1], axis=(1, 2))
        starts = np.flatnonzero(change)
        counts = np.diff(np.append(starts, units.shape[0]))
        for s, c in zip(starts, counts):
            if units[s].any():
                segs.append(Segment(units[s].copy(), float(c * q), float(c * q * mu_per_unit)))
    delivered = levels * q
    return segs, q, delivered


def sequence_plan(dij: DoseInfluence, weights: np.ndarray, n_levels: int = 10, machine=DEFAULT_MACHINE,
                  smooth_sigma: float = 0.0, n_fractions: int = 1) -> tuple[list[BeamSequence], np.ndarray]:
    """Sequence every beam; returns per-beam sequences (MU per fraction) and the deliverable weight vector."""
    out = []
    w_out = np.zeros_like(np.asarray(weights, float))
    col0 = 0
    for b in dij.beams:
        n = b.n_beamlets
        wb = np.asarray(weights[col0:col0 + n], float)
        fmap, a0, b0 = b.fluence_map(wb)
        if smooth_sigma > 0:
            fmap = smooth_fluence(fmap, smooth_sigma)
        mu_unit = mu_per_unit_weight(machine, b.bixel_mm) / max(n_fractions, 1)
        segs, q, delivered = sequence_map(fmap, n_levels, mu_unit)
        w_out[col0:col0 + n] = delivered[b.ib - b0, b.ia - a0]
        out.append(BeamSequence(b.gantry_deg, segs, q, fmap, delivered))
        col0 += n
    return out, w_out
