"""Fractionation and normal-tissue complication models (linear-quadratic, Lyman-Kutcher-Burman).

* BED = n d (1 + d / (alpha/beta)); EQD2 = D (d + alpha/beta) / (2 + alpha/beta) (Fowler, BJR 62:679, 1989);
  alpha/beta ~ 10 Gy for tumour / early effects, 3 Gy late effects, 2 Gy spinal cord.
* LKB NTCP = Phi((gEUD - TD50) / (m TD50)), gEUD = (sum v_i D_i^(1/n))^n (Lyman 1985, Kutcher & Burman
  1989); QUANTEC radiation pneumonitis with the mean lung dose: TD50 30.8 Gy, m 0.37, n 1 (Marks et al.,
  IJROBP 76:S70, 2010).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm


def bed(total_gy, dose_per_fraction_gy, alpha_beta_gy):
    """Biologically effective dose (Gy)."""
    return np.asarray(total_gy) * (1.0 + np.asarray(dose_per_fraction_gy) / alpha_beta_gy)


def eqd2(total_gy, dose_per_fraction_gy, alpha_beta_gy):
    """Equivalent dose in 2 Gy fractions (Gy)."""
    return np.asarray(total_gy) * (np.asarray(dose_per_fraction_gy) + alpha_beta_gy) / (2.0 + alpha_beta_gy)


def eqd2_voxelwise(dose_gy, n_fractions: int, alpha_beta_gy: float):
    """EQD2 of a dose distribution delivered in ``n_fractions`` equal fractions (per voxel)."""
    d = np.asarray(dose_gy, float)
    return eqd2(d, d / n_fractions, alpha_beta_gy)


def geud(dose_gy, n: float, volumes=None) -> float:
    """Generalised EUD with volume parameter n (a = 1/n): (sum v_i D_i^(1/n))^n, v normalised."""
    d = np.maximum(np.asarray(dose_gy, float), 0.0)
    v = np.ones_like(d) if volumes is None else np.asarray(volumes, float)
    v = v / v.sum()
    a = 1.0 / n
    return float(np.sum(v * d**a) ** (1.0 / a))


def lkb_ntcp(dose_gy, td50: float, m: float, n: float, volumes=None) -> float:
    """Lyman-Kutcher-Burman NTCP of a (differential) DVH or voxel doses."""
    e = geud(dose_gy, n, volumes)
    return float(norm.cdf((e - td50) / (m * td50)))


def pneumonitis_ntcp(lung_dose_gy) -> float:
    """QUANTEC mean-lung-dose pneumonitis model (TD50 30.8 Gy, m 0.37, n 1)."""
    return lkb_ntcp(lung_dose_gy, 30.8, 0.37, 1.0)
