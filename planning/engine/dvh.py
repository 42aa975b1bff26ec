"""Dose-volume histograms and plan-quality indices.

Definitions (ICRU 83, 2010):

* ``Dx`` (``x`` in %): the minimum dose received by the hottest x % of the volume, i.e. the (100 - x)-th
  percentile of the voxel doses (linear interpolation between voxels);
* ``D<v>cc``: the same for an absolute volume (e.g. D0.03cc, the recommended "near-maximum" point dose);
* ``Vx`` (``x`` in Gy): percentage of the volume receiving at least x Gy;
* ``HI = (D2 - D98) / D50`` (ICRU 83 homogeneity index);
* Paddick conformity index ``CI = TV_PIV^2 / (TV * PIV)`` (Paddick, J Neurosurg 93:219, 2000), TV the target
  volume, PIV the volume (of the body) inside the prescription isodose, TV_PIV the target part of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def d_pct(dose: np.ndarray, x: float) -> float:
    """Dx %: minimum dose to the hottest ``x`` % of the voxels."""
    dose = np.asarray(dose, np.float64)
    if dose.size == 0:
        return float("nan")
    return float(np.quantile(dose, 1.0 - x / 100.0))


def d_cc(dose: np.ndarray, cc: float, voxel_cc: float) -> float:
    """Dose to the hottest ``cc`` cm^3 (at least one voxel: for voxels larger than ``cc`` this is Dmax)."""
    dose = np.asarray(dose, np.float64)
    if dose.size == 0:
        return float("nan")
    n = max(int(np.floor(cc / voxel_cc)), 1)
    n = min(n, dose.size)
    return float(np.partition(dose, dose.size - n)[dose.size - n])


def v_gy(dose: np.ndarray, x: float) -> float:
    """Vx Gy: % of the volume receiving >= x Gy."""
    dose = np.asarray(dose)
    return float(100.0 * np.mean(dose >= x)) if dose.size else float("nan")


def homogeneity_index(dose: np.ndarray) -> float:
    """ICRU 83 HI = (D2 - D98) / D50."""
    return (d_pct(dose, 2) - d_pct(dose, 98)) / d_pct(dose, 50)


def paddick_ci(dose_cube: np.ndarray, target: np.ndarray, body: np.ndarray, rx: float) -> float:
    """Paddick conformity index TV_PIV^2 / (TV * PIV)."""
    piv = (dose_cube >= rx) & body
    tv = int(target.sum())
    n_piv = int(piv.sum())
    tv_piv = int((piv & target).sum())
    return float(tv_piv**2 / (tv * n_piv)) if tv and n_piv else 0.0


@dataclass
class DVH:
    """Cumulative DVH of one structure: ``volume_pct[i]`` % of the volume receives >= ``dose_gy[i]``."""

    name: str
    dose_gy: np.ndarray
    volume_pct: np.ndarray
    volume_cc: float

    def differential(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin centres in Gy, % of volume per bin)."""
        c = 0.5 * (self.dose_gy[1:] + self.dose_gy[:-1])
        return c, -np.diff(self.volume_pct)


def cumulative_dvh(name: str, dose: np.ndarray, voxel_cc: float, bin_gy: float = 0.1,
                   max_gy: float | None = None) -> DVH:
    """Cumulative DVH with bins of ``bin_gy``: V(D) = % of voxels with dose >= D."""
    dose = np.asarray(dose, np.float64)
    top = float(dose.max()) if max_gy is None and dose.size else (max_gy or 1.0)
    edges = np.arange(0.0, top + 2 * bin_gy, bin_gy)
    if dose.size == 0:
        return DVH(name, edges, np.zeros_like(edges), 0.0)
    hist, _ = np.histogram(dose, bins=np.append(edges, np.inf))
    cum = hist[::-1].cumsum()[::-1] * 100.0 / dose.size
    return DVH(name, edges, cum, dose.size * voxel_cc)


def structure_stats(dose: np.ndarray, voxel_cc: float) -> dict:
    """Common metrics of one structure's voxel doses."""
    dose = np.asarray(dose, np.float64)
    if dose.size == 0:
        return {"volume_cc": 0.0}
    return {
        "volume_cc": dose.size * voxel_cc,
        "Dmin": float(dose.min()),
        "Dmean": float(dose.mean()),
        "Dmax": float(dose.max()),
        "D98": d_pct(dose, 98),
        "D95": d_pct(dose, 95),
        "D50": d_pct(dose, 50),
        "D2": d_pct(dose, 2),
        "D0.03cc": d_cc(dose, 0.03, voxel_cc),
    }
