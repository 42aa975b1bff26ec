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


def voxel_doses(dose_cube: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``dose_cube[mask]`` (the doses of a structure's voxels, in no particular order), fast for any memory layout:
    when both are Fortran-ordered (the volumes of an imported CT) the selection runs on their flat memory instead
    of numpy's slow strided boolean indexing."""
    if (dose_cube.shape == mask.shape and not dose_cube.flags.c_contiguous and dose_cube.flags.f_contiguous
            and mask.flags.f_contiguous):
        return dose_cube.ravel(order="F")[mask.ravel(order="F")]
    return dose_cube[mask]


def d_pct(dose: np.ndarray, x: float) -> float:
    """Dx %: minimum dose to the hottest ``x`` % of the voxels."""
    dose = np.asarray(dose, np.float64)
    if dose.size == 0:
        return float("nan")
    return float(np.quantile(dose, 1.0 - x / 100.0))


def d_cc(dose: np.ndarray, cc: float, voxel_cc: float) -> float:
    """Dose to the hottest ``cc`` cm^3 (at least one voxel: for voxels larger than ``cc`` this is Dmax)."""
    dose = np.asarray(dose)
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
    """ICRU 83 HI = (D2 - D98) / D50; NaN (not defined) for an empty target or one whose median dose is 0."""
    d50 = d_pct(dose, 50)
    if not np.isfinite(d50) or d50 <= 0.0:
        return float("nan")
    return (d_pct(dose, 2) - d_pct(dose, 98)) / d50


def homogeneity_reason(dose: np.ndarray) -> str:
    """Why the HI of these voxel doses is not defined ("" when it is)."""
    dose = np.asarray(dose)
    if dose.size == 0:
        return "the target has no voxel"
    if d_pct(dose, 50) <= 0.0:
        return "the target's median dose D50 is 0 Gy (the dose does not reach it)"
    return ""


def paddick_ci(dose_cube: np.ndarray, target: np.ndarray, body: np.ndarray | None, rx: float) -> float:
    """Paddick conformity index TV_PIV^2 / (TV * PIV) with PIV the body volume receiving >= ``rx``.

    NaN (not defined) for an empty target, a missing or non-positive ``rx`` or when no voxel receives ``rx``
    (0 / 0); 0 when the prescription isodose misses the target entirely."""
    if rx is None or not np.isfinite(rx) or rx <= 0:
        return float("nan")
    piv = dose_cube >= rx
    if body is not None:
        piv &= body
    tv = int(np.count_nonzero(target))
    n_piv = int(np.count_nonzero(piv))
    if not tv or not n_piv:
        return float("nan")
    tv_piv = int(np.count_nonzero(piv & target))
    return float(tv_piv) ** 2 / (float(tv) * float(n_piv))


def paddick_reason(dose_cube: np.ndarray, target: np.ndarray, body: np.ndarray | None, rx: float) -> str:
    """Why the Paddick CI is not defined ("" when it is)."""
    if rx is None or not np.isfinite(rx) or rx <= 0:
        return "no prescription dose"
    if not np.count_nonzero(target):
        return "the target has no voxel"
    if not np.count_nonzero(dose_cube >= rx):
        return f"no voxel receives the prescription dose {rx:g} Gy"
    return ""


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
    dose = np.asarray(dose)
    if dose.size == 0:
        return {"volume_cc": 0.0}
    if dose.dtype != np.float32:
        dose = dose.astype(np.float64)
    # one selection for the four Dx (as d_pct, in float64 between the two voxels either side)
    d98, d95, d50, d2 = (float(v) for v in np.quantile(dose, [0.02, 0.05, 0.50, 0.98]).astype(np.float64))
    return {
        "volume_cc": dose.size * voxel_cc,
        "Dmin": float(dose.min()),
        "Dmean": float(dose.mean(dtype=np.float64)),
        "Dmax": float(dose.max()),
        "D98": d98,
        "D95": d95,
        "D50": d50,
        "D2": d2,
        "D0.03cc": d_cc(dose, 0.03, voxel_cc),
    }
