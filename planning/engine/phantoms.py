"""Analytic phantoms: the four AAPM TG-119 test geometries plus a pleural mesothelioma and a spine case.

TG-119 (Ezzell et al., Med Phys 36:5359, 2009) distributes its structures as contours on a CT; here they are
rebuilt analytically from the report's description (dimensions in mm, isocentre at the origin), which is
close enough for commissioning-style goal checks but is not the report's exact voxel set (for that, load
the matRad/pyRadPlan ``TG119.mat`` with :mod:`planning.engine.matrad`).

Densities (g/cm^3): water/soft tissue 1.0, lung 0.25, bone 1.8, air outside the body 0.0.
Every builder takes ``spacing`` (mm, scalar or 3-tuple) so tests can use coarse grids.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .grid import BODY, OAR, TARGET, Geometry, Grid

WATER, LUNG, BONE = 1.0, 0.25, 1.8


def _cyl(X, Y, cx, cy, rx, ry=None):
    ry = rx if ry is None else ry
    return ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2 <= 1.0


def _ell(X, Y, Z, c, r):
    return ((X - c[0]) / r[0]) ** 2 + ((Y - c[1]) / r[1]) ** 2 + ((Z - c[2]) / r[2]) ** 2 <= 1.0


def _zr(Z, lo, hi):
    return (Z >= lo) & (Z <= hi)


def _ball(radius_mm: float, spacing) -> np.ndarray:
    sp = np.asarray(spacing, float)
    n = np.ceil(radius_mm / sp).astype(int)
    g = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(n, sp)], indexing="ij")
    return (g[0] ** 2 + g[1] ** 2 + g[2] ** 2) <= radius_mm**2 + 1e-9


def expand(mask: np.ndarray, margin_mm: float, spacing) -> np.ndarray:
    """Isotropic margin (e.g. CTV -> PTV) by binary dilation with a ball of ``margin_mm``."""
    if margin_mm <= 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, structure=_ball(margin_mm, spacing))


def _new(name, half_extent, spacing, body_fn, n_fractions):
    grid = Grid.covering(-np.asarray(half_extent, float), np.asarray(half_extent, float), spacing)
    X, Y, Z = grid.mesh()
    body = body_fn(X, Y, Z)
    density = np.where(body, WATER, 0.0).astype(np.float32)
    geo = Geometry(grid, density, name=name, n_fractions=n_fractions)
    geo.add("BODY", body, BODY)
    return geo, X, Y, Z


def c_shape(spacing=3.0, z_half=60.0) -> Geometry:
    """TG-119 C-shape: a C-shaped PTV (radii 15-37 mm, 80 mm long) around a 10 mm radius core (100 mm long).

    The PTV is the annulus 15 mm <= r <= 37 mm minus an anterior 20 mm wide slot, so it wraps the core
    on three sides with a 5 mm gap (TG-119: "like a vertebral target around the cord"). Rx 50 Gy / 25 fx.
    """
    geo, X, Y, Z = _new("C-shape", (160, 120, z_half), spacing,
                        lambda X, Y, Z: _cyl(X, Y, 0, 0, 150, 110), 25)
    r = np.hypot(X, Y)
    core = (r <= 10.0) & _zr(Z, -50, 50)
    ptv = (r >= 15.0) & (r <= 37.0) & _zr(Z, -40, 40) & ~((np.abs(X) < 10.0) & (Y < 0))
    body = geo.body.mask
    geo.add("PTV", ptv & body, TARGET, 50.0)
    geo.add("Core", core & body, OAR)
    return geo


def prostate(spacing=3.0, z_half=70.0) -> Geometry:
    """TG-119 prostate: ellipsoidal prostate CTV (40 x 30 x 40 mm), PTV = CTV + 6 mm, cylindrical rectum
    (15 mm diameter) posterior that overlaps the PTV, ellipsoidal bladder superior-anterior. Rx 75.6 Gy / 42 fx.
    Femoral heads (bone) lateral."""
    geo, X, Y, Z = _new("Prostate", (180, 120, z_half), spacing,
                        lambda X, Y, Z: _cyl(X, Y, 0, 0, 170, 110), 42)
    sp = geo.grid.spacing
    ctv = _ell(X, Y, Z, (0, 0, 0), (20, 15, 20))
    ptv = expand(ctv, 6.0, sp)
    rectum = _cyl(X, Y, 0, 23, 8.0) & _zr(Z, -35, 35)
    bladder = _ell(X, Y, Z, (0, -12, 34), (28, 22, 20))
    femurs = (_cyl(X, Y, -95, 5, 22) | _cyl(X, Y, 95, 5, 22)) & _zr(Z, -60, 10)
    body = geo.body.mask
    geo.density[femurs & body] = BONE
    geo.add("PTV", ptv & body, TARGET, 75.6)
    geo.add("Rectum", rectum & body, OAR)
    geo.add("Bladder", bladder & body, OAR)
    geo.add("Femoral heads", femurs & body, OAR)
    return geo


def head_and_neck(spacing=3.0, z_half=70.0) -> Geometry:
    """TG-119 head and neck: PTV spanning the anterior neck and the posterior nodal regions, kept 15 mm from
    the spinal cord; the parotids partly overlap the PTV superiorly. Rx 50 Gy / 25 fx."""
    geo, X, Y, Z = _new("Head and neck", (90, 80, z_half), spacing,
                        lambda X, Y, Z: _cyl(X, Y, 0, 0, 80, 70), 25)
    sp = geo.grid.spacing
    body = geo.body.mask
    cord = _cyl(X, Y, 0, 35, 6.0) & _zr(Z, -z_half, z_half)
    vertebra = _cyl(X, Y, 0, 22, 14.0) & _zr(Z, -z_half, z_half) & ~cord
    inner = _cyl(X, Y, 0, 0, 72, 62)
    parotid_l = _ell(X, Y, Z, (40, 8, 40), (14, 18, 18))
    parotid_r = _ell(X, Y, Z, (-40, 8, 40), (14, 18, 18))
    cord_avoid = expand(cord, 15.0, sp)
    ptv = inner & _zr(Z, -40, 40) & ((Y < 12) | (np.abs(X) > 30)) & ~cord_avoid
    ptv &= ~(expand(parotid_l | parotid_r, 3.0, sp) & (Z > 25))
    geo.density[vertebra & body] = BONE
    geo.add("PTV", ptv & body, TARGET, 50.0)
    geo.add("Cord", cord & body, OAR)
    geo.add("Parotid L", parotid_l & body, OAR)
    geo.add("Parotid R", parotid_r & body, OAR)
    return geo


def multitarget(spacing=3.0, z_half=90.0) -> Geometry:
    """TG-119 multitarget: three cylinders (radius 20 mm, 40 mm long) stacked along the rotation axis with
    5 mm gaps: central (Rx 50 Gy), superior (25 Gy) and inferior (12.5 Gy)."""
    geo, X, Y, Z = _new("Multitarget", (160, 120, z_half), spacing,
                        lambda X, Y, Z: _cyl(X, Y, 0, 0, 150, 110), 25)
    body = geo.body.mask
    cyl = _cyl(X, Y, 0, 0, 20.0)
    geo.add("Central", cyl & _zr(Z, -20, 20) & body, TARGET, 50.0)
    geo.add("Superior", cyl & _zr(Z, 25, 65) & body, TARGET, 25.0)
    geo.add("Inferior", cyl & _zr(Z, -65, -25) & body, TARGET, 12.5)
    return geo


def mesothelioma(spacing=4.0, z_half=100.0) -> Geometry:
    """Right pleural mesothelioma (hemithoracic IMRT): a 10 mm target shell lining the right hemithorax
    around the right lung (chest wall, mediastinal pleura, diaphragm dome over the liver). OARs: spinal cord,
    heart, left (contralateral) lung, right lung, liver, both kidneys. Lung 0.25 g/cm^3, vertebra 1.8.
    Rx 54 Gy / 30 fx."""
    geo, X, Y, Z = _new("Mesothelioma", (180, 125, z_half), spacing,
                        lambda X, Y, Z: _cyl(X, Y, 0, 0, 170, 115), 30)
    sp = geo.grid.spacing
    body = geo.body.mask
    cord = _cyl(X, Y, 0, 75, 6.0)
    vertebra = _cyl(X, Y, 0, 58, 16.0) & ~cord
    lung_r = _ell(X, Y, Z, (-78, 5, 25), (58, 75, 70)) & (Z > -25)
    lung_l = _ell(X, Y, Z, (78, 5, 25), (58, 75, 70)) & (Z > -20)
    heart = _ell(X, Y, Z, (18, -35, 5), (45, 40, 45)) & ~lung_l & ~lung_r
    liver = _ell(X, Y, Z, (-45, 0, -65), (90, 75, 55)) & ~lung_r & ~heart
    kid_r = _ell(X, Y, Z, (-55, 65, -85), (25, 25, 45))
    kid_l = _ell(X, Y, Z, (55, 65, -80), (25, 25, 45))
    inner = _cyl(X, Y, 0, 0, 163, 108)
    shell = expand(lung_r, 10.0, sp) & ~lung_r & inner & (X < 5)
    shell &= ~expand(cord | vertebra, 4.0, sp) & ~heart
    geo.density[(lung_r | lung_l) & body] = LUNG
    geo.density[vertebra & body] = BONE
    geo.add("PTV", shell & body, TARGET, 54.0)
    geo.add("Cord", cord & body, OAR)
    geo.add("Heart", heart & body, OAR)
    geo.add("Lung L (contralateral)", lung_l & body, OAR)
    geo.add("Lung R (ipsilateral)", lung_r & body & ~shell, OAR)
    geo.add("Liver", liver & body & ~shell, OAR)
    geo.add("Kidney L", kid_l & body, OAR)
    geo.add("Kidney R", kid_r & body, OAR)
    return geo


def spine(spacing=3.0, z_half=60.0) -> Geometry:
    """Thoracic spine: a vertebral-body target (body plus pedicles/posterior elements) wrapping the spinal
    cord with a 2 mm gap (a real-anatomy C-shape), bone 1.8 g/cm^3, lungs 0.25 g/cm^3 on both sides,
    oesophagus anterior. Rx 60 Gy / 30 fx."""
    geo, X, Y, Z = _new("Spine", (170, 120, z_half), spacing,
                        lambda X, Y, Z: _cyl(X, Y, 0, 0, 160, 110), 30)
    body = geo.body.mask
    cc = (0.0, 60.0)
    cord = _cyl(X, Y, *cc, 6.0)
    rc = np.hypot(X - cc[0], Y - cc[1])
    vb = _cyl(X, Y, 0, 30, 20, 16)
    posterior = (rc >= 8.0) & (rc <= 20.0) & ~((np.abs(X) < 4) & (Y < cc[1]))
    ptv = (vb | posterior) & _zr(Z, -25, 25) & ~cord
    bone = (vb | ((rc >= 8) & (rc <= 22))) & _zr(Z, -z_half, z_half) & ~cord
    lung_r = _ell(X, Y, Z, (-75, 5, 0), (58, 70, 200))
    lung_l = _ell(X, Y, Z, (75, 5, 0), (58, 70, 200))
    eso = _cyl(X, Y, 0, 0, 7)
    geo.density[bone & body] = BONE
    geo.density[(lung_l | lung_r) & body] = LUNG
    geo.add("PTV", ptv & body, TARGET, 60.0)
    geo.add("Cord", cord & body, OAR)
    geo.add("Esophagus", eso & body, OAR)
    geo.add("Lungs", (lung_l | lung_r) & body, OAR)
    return geo


def water_box(size_mm=(300, 300, 300), spacing=2.5, density: float = 1.0) -> Geometry:
    """A homogeneous box (for depth-dose and profile checks), centred on the origin."""
    half = np.asarray(size_mm, float) / 2
    geo, X, Y, Z = _new("Water box", half, spacing, lambda X, Y, Z: np.ones(X.shape, bool), None)
    geo.density[:] = density
    return geo


BUILDERS = {
    "cshape": c_shape,
    "prostate": prostate,
    "headneck": head_and_neck,
    "multitarget": multitarget,
    "mesothelioma": mesothelioma,
    "spine": spine,
}
