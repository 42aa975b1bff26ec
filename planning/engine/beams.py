"""Coplanar photon beams, beam's-eye-view (BEV) projection and beamlet (bixel) grids.

Gantry convention (IEC 61217 for a head-first-supine patient in DICOM LPS coordinates): at gantry 0 the
source is anterior (-y); the gantry turns clockwise seen from the foot end, so at 90 deg the source is on the
patient's left (+x). A point p has beam coordinates

* ``t``: distance from the source along the central axis (mm), ``SAD`` at the isocentre plane,
* ``u``, ``v``: lateral offsets projected to the isocentre plane (mm): ``u`` in the gantry plane, ``v`` = z.

A collimator angle ``collimator_deg`` (IEC 61217: the beam-limiting-device system turns about the beam axis,
positive counter-clockwise seen from the source) turns ``u`` and ``v`` with it, so ``u`` stays the MLC leaves'
direction of travel (IEC X_b) and ``v`` the leaf-pair axis (Y_b); 0 (the default) is the frame above.

Beamlets are squares of ``bixel_mm`` at the isocentre on a grid aligned with the isocentre, kept where their
centre lies within the target's BEV projection enlarged by ``margin_mm`` (matRad/pyRadPlan do the same in
their steering-file generation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .grid import Geometry

SAD_MM = 1000.0


@dataclass
class Beam:
    gantry_deg: float
    isocentre: np.ndarray
    sad: float = SAD_MM
    bixel_mm: float = 5.0
    # beamlet grid: integer indices (ia, ib) of active beamlets, centres at (ia*bixel, ib*bixel) at iso
    ia: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    ib: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    # sub-bixel shift of the beamlet grid (in bixel units), e.g. 0.5 for an even-sized open field
    offset: tuple[float, float] = (0.0, 0.0)
    collimator_deg: float = 0.0

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the source to the isocentre."""
        g = np.deg2rad(self.gantry_deg)
        return np.array([-np.sin(g), np.cos(g), 0.0])

    def _gantry_axes(self):
        g = np.deg2rad(self.gantry_deg)
        return np.array([np.cos(g), np.sin(g), 0.0]), np.array([0.0, 0.0, 1.0])

    @property
    def u_axis(self) -> np.ndarray:
        xg, yg = self._gantry_axes()
        if not self.collimator_deg:
            return xg
        c = np.deg2rad(self.collimator_deg)
        return np.cos(c) * xg + np.sin(c) * yg

    @property
    def v_axis(self) -> np.ndarray:
        xg, yg = self._gantry_axes()
        if not self.collimator_deg:
            return yg
        c = np.deg2rad(self.collimator_deg)
        return -np.sin(c) * xg + np.cos(c) * yg

    @property
    def source(self) -> np.ndarray:
        return np.asarray(self.isocentre, float) - self.sad * self.direction

    @property
    def n_beamlets(self) -> int:
        return int(self.ia.size)

    def project(self, points: np.ndarray):
        """BEV coordinates of world points (n, 3): returns (u_iso, v_iso, t) in mm."""
        rel = np.asarray(points, float) - self.source
        t = rel @ self.direction
        scale = self.sad / t
        return (rel @ self.u_axis) * scale, (rel @ self.v_axis) * scale, t

    def beamlet_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Beamlet centres (u, v) at the isocentre plane, mm."""
        return (self.ia + self.offset[0]) * self.bixel_mm, (self.ib + self.offset[1]) * self.bixel_mm

    def fluence_map(self, weights: np.ndarray) -> tuple[np.ndarray, int, int]:
        """2-D fluence map (rows = v / leaf pairs, columns = u / leaf travel) and the (ia, ib) offsets."""
        a0, b0 = self.ia.min(), self.ib.min()
        m = np.zeros((self.ib.max() - b0 + 1, self.ia.max() - a0 + 1))
        m[self.ib - b0, self.ia - a0] = weights
        return m, int(a0), int(b0)


def equispaced_gantries(n: int, start: float = 0.0) -> list[float]:
    """``n`` coplanar gantry angles equally spaced over 360 deg (TG-119 IMRT: 9 beams, 40 deg apart)."""
    return [float((start + i * 360.0 / n) % 360.0) for i in range(n)]


def target_bixels(beam: Beam, geo: Geometry, target_mask: np.ndarray,
                  margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(ia, ib) of bixels whose centre falls inside the target BEV projection dilated by ``margin_mm``.

    Target voxels are projected with half-voxel jitter (corners) so coarse voxels leave no holes."""
    pts = geo.grid.points(np.flatnonzero(target_mask))
    h = 0.5 * np.asarray(geo.grid.spacing)
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * h
    allp = (pts[:, None, :] + corners[None]).reshape(-1, 3)
    u, v, _ = beam.project(allp)
    w = beam.bixel_mm
    # fine BEV raster at w/4 resolution, then dilate and sample at bixel centres
    f = w / 4.0
    iu = np.round(u / f).astype(int)
    iv = np.round(v / f).astype(int)
    pad = int(np.ceil(margin_mm / f)) + 4 * 2
    u0, v0 = iu.min() - pad, iv.min() - pad
    img = np.zeros((iu.max() - u0 + pad + 1, iv.max() - v0 + pad + 1), bool)
    img[iu - u0, iv - v0] = True
    img = ndimage.binary_closing(img, iterations=2)
    img = ndimage.binary_fill_holes(img)
    if margin_mm > 0:
        r = int(np.ceil(margin_mm / f))
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        img = ndimage.binary_dilation(img, structure=(xx**2 + yy**2) <= (margin_mm / f) ** 2 + 1e-9)
    ia_rng = np.arange(int(np.floor(u0 * f / w)) - 1, int(np.ceil((u0 + img.shape[0]) * f / w)) + 2)
    ib_rng = np.arange(int(np.floor(v0 * f / w)) - 1, int(np.ceil((v0 + img.shape[1]) * f / w)) + 2)
    A, B = np.meshgrid(ia_rng, ib_rng, indexing="ij")
    pu = np.round(A * w / f).astype(int) - u0
    pv = np.round(B * w / f).astype(int) - v0
    ok = (pu >= 0) & (pu < img.shape[0]) & (pv >= 0) & (pv < img.shape[1])
    sel = np.zeros(A.shape, bool)
    sel[ok] = img[pu[ok], pv[ok]]
    return A[sel].astype(int), B[sel].astype(int)


def make_beams(geo: Geometry, gantry_deg, bixel_mm: float = 5.0, margin_mm: float = 5.0,
               isocentre=None, target_mask=None, sad: float = SAD_MM) -> list[Beam]:
    """Beams at ``gantry_deg`` with beamlets covering the target projection plus ``margin_mm``."""
    iso = geo.isocentre() if isocentre is None else np.asarray(isocentre, float)
    tm = geo.target_union() if target_mask is None else target_mask
    beams = []
    for g in gantry_deg:
        b = Beam(float(g), iso, sad, bixel_mm)
        b.ia, b.ib = target_bixels(b, geo, tm, margin_mm)
        beams.append(b)
    return beams


def square_field_beam(isocentre, gantry_deg: float, field_mm: float, bixel_mm: float = 5.0,
                      sad: float = SAD_MM) -> Beam:
    """An open square field (side ``field_mm`` at the isocentre) tiled by beamlets (for physics checks)."""
    n = int(round(field_mm / bixel_mm))
    if abs(n * bixel_mm - field_mm) > 1e-6:
        raise ValueError("field size must be a multiple of the bixel size")
    idx = np.arange(n) - n // 2  # beamlet centres symmetric about the axis (grid shifted for even n)
    off = 0.5 if n % 2 == 0 else 0.0
    b = Beam(float(gantry_deg), np.asarray(isocentre, float), sad, bixel_mm, offset=(off, off))
    A, B = np.meshgrid(idx, idx, indexing="ij")
    b.ia, b.ib = A.ravel().astype(int), B.ravel().astype(int)
    return b
