"""Reader for matRad phantoms / patients (``ct`` + ``cst`` in a MATLAB .mat file, e.g. matRad's and
pyRadPlan's ``TG119.mat``) into a RadPath :class:`~planning.engine.grid.Geometry`.

matRad conventions (matRad wiki, "The matRad data structures"): ``ct.cube`` is a cell of 3-D arrays
indexed (y, x, z) (MATLAB row = y) holding relative electron density, with ``ct.resolution.x/y/z`` in mm
and optional world axes ``ct.x/y/z``; ``cst`` is an N x 6 cell: index, name, type (``TARGET``/``OAR``),
voxel indices (1-based, column-major over the cube), properties, objectives. RadPath arrays are indexed
(x, y, z), so the cube is transposed and the linear indices are unravelled in Fortran order.
"""
from __future__ import annotations

import numpy as np
import scipy.io as sio
from scipy import ndimage

from .grid import BODY, OAR, TARGET, Geometry, Grid


def _field(obj, name, default=None):
    return getattr(obj, name, default) if not isinstance(obj, dict) else obj.get(name, default)


def load_matrad(path: str, prescription_gy: float | None = None, body_names=("BODY", "EXTERNAL", "Body")) -> Geometry:
    """Load a matRad ``.mat`` file (ct + cst). Targets get ``prescription_gy`` or, if not given, the dose
    parameter of their first objective (matRad TG119: squared deviation from 50 Gy)."""
    m = sio.loadmat(path, squeeze_me=True, struct_as_record=False)
    ct, cst = m["ct"], np.atleast_2d(m["cst"])
    cube = ct.cube
    if isinstance(cube, np.ndarray) and cube.dtype == object:
        cube = cube.flat[0]
    cube = np.asarray(cube, np.float32)  # (ny, nx, nz)
    ny, nx, nz = cube.shape
    res = ct.resolution
    sp = (float(_field(res, "x")), float(_field(res, "y")), float(_field(res, "z")))
    xs = _field(ct, "x")
    ys = _field(ct, "y")
    zs = _field(ct, "z")
    if xs is None or np.size(xs) != nx:
        # matRad default world coordinates: voxel (1,1,1) centre at the resolution
        xs, ys, zs = (sp[0] * np.arange(1, nx + 1), sp[1] * np.arange(1, ny + 1), sp[2] * np.arange(1, nz + 1))
    origin = (float(np.ravel(xs)[0]), float(np.ravel(ys)[0]), float(np.ravel(zs)[0]))
    grid = Grid((nx, ny, nz), sp, origin)
    geo = Geometry(grid, np.ascontiguousarray(cube.transpose(1, 0, 2)), name=str(path).rsplit("/", 1)[-1])
    for row in cst:
        name = str(row[1])
        kind = str(row[2]).upper()
        idx = np.asarray(row[3]).ravel()
        if idx.dtype == object:  # one cell per scenario
            idx = np.asarray(idx[0]).ravel()
        iy, ix, iz = np.unravel_index(idx.astype(np.int64) - 1, (ny, nx, nz), order="F")
        mask = np.zeros(grid.shape, bool)
        mask[ix, iy, iz] = True
        rx = None
        if name in body_names:
            k = BODY
        elif kind == "TARGET":
            k = TARGET
            rx = prescription_gy
            if rx is None:
                objs = np.atleast_1d(row[5]) if len(row) > 5 else []
                for o in objs:
                    p = _field(o, "parameters")
                    if p is not None and np.size(p):
                        rx = float(np.ravel(p)[0])
                        break
            rx = 50.0 if rx is None else rx
        else:
            k = OAR
        geo.add(name, mask, k, rx)
    if not any(s.kind == BODY for s in geo.structures.values()):
        geo.add("BODY", geo.density > 0.05, BODY)
    return geo


def resample(geo: Geometry, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Geometry:
    """Geometry on a new regular grid given by its voxel-centre axes (mm): density trilinear, structures
    nearest neighbour (as matRad does when it moves the cst to the dose grid)."""
    x, y, z = (np.asarray(a, float) for a in (x, y, z))
    sp = tuple(float(a[1] - a[0]) if a.size > 1 else geo.grid.spacing[i] for i, a in enumerate((x, y, z)))
    grid = Grid((x.size, y.size, z.size), sp, (float(x[0]), float(y[0]), float(z[0])))
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    idx = geo.grid.to_index(np.stack([X.ravel(), Y.ravel(), Z.ravel()], axis=1)).T
    dens = ndimage.map_coordinates(geo.density, idx, order=1, mode="nearest").reshape(grid.shape)
    out = Geometry(grid, dens.astype(np.float32), name=geo.name, n_fractions=geo.n_fractions)
    nidx = np.rint(idx).astype(np.int64)
    inside = np.all((nidx >= 0) & (nidx < np.asarray(geo.grid.shape)[:, None]), axis=0)
    nidx = np.clip(nidx, 0, np.asarray(geo.grid.shape)[:, None] - 1)
    for name, s in geo.structures.items():
        m = (s.mask[nidx[0], nidx[1], nidx[2]] & inside).reshape(grid.shape)
        out.add(name, m, s.kind, s.prescription_gy)
    return out
