"""6 MV photon finite-size pencil-beam model and sparse dose-influence matrix.

Dose to a voxel at radiological depth ``d`` (mm), source distance ``t`` (mm), from a square beamlet of side
``w`` at the isocentre (SAD) with unit fluence weight::

    D = N * (SAD / t)^2 * T(d) * sum_k c_k(d) * P(x; W, s_k(d)) * P(y; W, s_k(d))

* ``(SAD/t)^2``: inverse square;
* ``T(d) = (1 - (1 - s0) exp(-d / lam)) exp(-mu d)``: broad-beam depth dose with build-up (surface fraction
  ``s0``, build-up length ``lam``) and effective attenuation ``mu``;
* lateral kernel: a sum of four 2-D Gaussians: a narrow "primary" one (sigma 2.1 mm, nearly constant with depth:
  source size and electron transport) and three scatter ones (near, mid, far: sigma 5-7, 18-27, 43-92 mm over
  0-200 mm depth) whose weights and widths change with depth; each is integrated analytically over the beamlet
  (error functions, as in matRad's finite-size pencil beam), ``W = w t / SAD`` being the beamlet width at the
  voxel and ``x, y`` the voxel's physical offsets from the beamlet axis;
* ``N`` is chosen so that a weight of 1 on every beamlet of an infinite field gives 1 Gy at dmax
  at the isocentre distance (``MU_PER_UNIT`` converts to monitor units, see :func:`mu_per_unit_weight`).

Commissioning (:mod:`planning.engine.commissioning`): the 18 kernel and depth-dose parameters of
``DEFAULT_MACHINE`` are a least-squares fit to matRad's "Generic" 6 MV photon machine (its SVD pencil-beam kernels,
betas and attenuation from ``photons_Generic.mat``, evaluated in water at SSD 100 cm by
``benchmarks/matrad_reference.py`` into ``tests/engine/data/matrad_generic_6mv.json``): depth doses of 1x1 to
20x20 cm^2 fields, single 5 mm beamlet profiles at 15-200 mm depth (near the axis and the tail to 80 mm, FWHM,
plane integral) and 10x10 profiles, all relative to each model's 10x10 field at 10 cm depth. Residuals: 5 mm
beamlet FWHM 6.57 / 6.81 / 7.17 / 7.52 / 7.87 mm at 15 / 50 / 100 / 150 / 200 mm depth (matRad 6.58 / 6.82 / 7.18 /
7.53 / 7.87: within 0.01 mm), beamlet on-axis dose within 0.13 %, its plane integral within 1.9 % to 150 mm
(+2.8 % at 200 mm); output factors at 10 cm of 1x1 ... 20x20 within 0.4 %; depth doses (10-250 mm, normalised at
100 mm) within 0.9 % for 1x1 ... 15x15 and 1.4 % for 20x20 (2.4 % at 300 mm); dmax 13.6 mm (matRad 13.1);
10x10 80-20 % penumbra 5.01 / 5.70 / 6.75 / 9.31 mm at 15 / 50 / 100 / 200 mm (within 0.03 mm), 50 % width within
0.01 mm. Broad-field water data (BJR Supplement 25 type: 10x10 PDD(10 cm) 67 %, dmax 15 mm) are met within
2 % / 1.5 mm: PDD(10) 65.0 % (matRad 65.3 %). Not fitted: the first 5 mm of the build-up (surface dose 6-8 %
above matRad's at 2 mm). The absolute scale is RadPath's own calibration (``N`` above; 1 MU = 1 cGy at dmax for
10x10 at SSD 100: 93.0 MU per unit weight); a matRad fluence weight gives 1.14 x the dose of a RadPath weight
(:func:`commissioning.matrad_weight_factor`, on the 10x10 reference), so plans are transferred between the two
engines in MU, not in raw weights. Heterogeneities are handled by the radiological depth only (no lateral
electron-transport scaling in lung): the classic pencil-beam limitation, as in matRad.

Three Gaussians (no far-scatter term) left the beamlet plane integral 3-5 % low and the 20x20 depth dose 6 % off at
30 cm: matRad's scatter kernel reaches 180 mm. The fourth costs :class:`AccurateDose` one more erf pair per beamlet
edge (about 2x the time of the previous two-Gaussian kernel). The previous kernel (fitted to broad-field depth
doses only) had 5 mm beamlets 7.2-9.4 mm wide
(FWHM) whose on-axis dose relative to the 10x10 field was 12-22 % low at 6-10 cm: the beamlets summed to the
right open field, but an optimiser exploited a kernel that was too wide (issue #18).

The sparse matrix is truncated: entries below ``rel_threshold`` (default 1e-3) of a beamlet's nominal peak and
beyond ``cutoff_mm`` (default 30 mm) laterally are dropped. The mid and far scatter Gaussians of one 5 mm beamlet
peak at about 2e-3 and 3e-4 of the nominal peak, so the threshold sets how much of the scatter is kept: on the
C-shape the default drops 12.5 % of the integral dose (6.1 % in the PTV, 15.2 % beyond 2 cm);
``rel_threshold=5e-4, cutoff_mm=40`` 7.5 % for 2.0x the nonzeros, ``rel_threshold=2e-4, cutoff_mm=50`` 3.6 % (PTV
0.5 %, beyond 2 cm 5.0 %) for 3.7x (see :func:`dose_influence`). :class:`AccurateDose` (and :func:`accurate_dose`)
evaluate the same model without any truncation for given weights: the dose RadPath reports.
"""
from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import time

import numpy as np
import scipy.sparse as sp
from scipy.special import erf

try:  # the C++ CSR mat-vec behind ``csr_matrix @ x``: accumulates into a given output, releases the GIL
    from scipy.sparse._sparsetools import csr_matvec as _csr_matvec
except ImportError:  # pragma: no cover - other scipy layouts: the public product (same result, one more copy)
    _csr_matvec = None

from .beams import Beam
from .grid import Geometry
from .raytrace import radiological_depth

_SQRT2 = np.sqrt(2.0)


@dataclass(frozen=True)
class Machine:
    """Pencil-beam machine data (lengths in mm). See the module docstring for the model, the fit and its source."""

    name: str = "Generic 6 MV (RadPath fit to matRad Generic)"
    mu: float = 0.002349         # effective attenuation, 1/mm
    lam: float = 3.471           # build-up length, mm
    s0: float = 0.1278           # surface dose fraction of T
    sigma_p0: float = 2.130      # primary sigma at the surface, mm (source size + electron transport)
    sigma_p1: float = 0.002308   # primary sigma growth, mm per mm depth
    c_s0: float = 0.1824         # near-scatter weight at the surface
    c_s1: float = -0.000212      # near-scatter weight change per mm depth
    c_s_max: float = 0.4
    sigma_s0: float = 5.144      # near-scatter sigma at the surface, mm
    sigma_s1: float = 0.008252   # near-scatter sigma growth, mm per mm depth
    c_t0: float = 0.05089        # mid-scatter weight at the surface
    c_t1: float = 0.001544       # mid-scatter weight growth per mm depth (initial slope)
    c_t_max: float = 0.5
    c_t_len: float = 94.17       # > 0: the mid-scatter weight saturates, c_t0 + c_t1 L (1 - exp(-d / L)); 0: linear
    sigma_t0: float = 17.68      # mid-scatter sigma at the surface, mm
    sigma_t1: float = 0.04790    # mid-scatter sigma growth, mm per mm depth
    c_u0: float = 0.06474        # far-scatter tail weight at the surface
    c_u1: float = 0.001008       # far-scatter weight growth per mm depth
    c_u_max: float = 0.5
    sigma_u0: float = 42.66      # far-scatter sigma at the surface, mm
    sigma_u1: float = 0.2467     # far-scatter sigma growth, mm per mm depth
    sad: float = 1000.0

    def depth_dose(self, d):
        """Broad-beam depth dose T(d) (unnormalised, ~1 at dmax)."""
        d = np.asarray(d, dtype=np.float64)
        return (1.0 - (1.0 - self.s0) * np.exp(-d / self.lam)) * np.exp(-self.mu * d)

    def kernel(self, d):
        """(weights, sigmas) of the lateral Gaussian components at depth d: arrays of shape (4, *d.shape)
        (primary, near, mid and far scatter; the weights sum to 1)."""
        d = np.asarray(d, dtype=np.float64)
        cs = np.clip(self.c_s0 + self.c_s1 * d, 0.0, self.c_s_max)
        grow = d if self.c_t_len <= 0 else self.c_t_len * -np.expm1(-d / self.c_t_len)
        ct = np.clip(self.c_t0 + self.c_t1 * grow, 0.0, self.c_t_max)
        cu = np.clip(self.c_u0 + self.c_u1 * d, 0.0, self.c_u_max)
        w = np.stack([1.0 - cs - ct - cu, cs, ct, cu])
        s = np.stack([self.sigma_p0 + self.sigma_p1 * d, self.sigma_s0 + self.sigma_s1 * d,
                      self.sigma_t0 + self.sigma_t1 * d, self.sigma_u0 + self.sigma_u1 * d])
        return w, s

    @property
    def dmax_mm(self) -> float:
        d = np.arange(0.0, 60.0, 0.05)
        return float(d[np.argmax(self.depth_dose(d))])

    @property
    def norm(self) -> float:
        """N: 1 Gy at dmax for unit weight on an infinite field at the isocentre distance."""
        return float(1.0 / self.depth_dose(self.dmax_mm))


DEFAULT_MACHINE = Machine()


def edge_profile(x, width, sigma):
    """Gaussian-blurred rectangle of ``width`` centred at 0: 0.5 [erf((x+W/2)/(sqrt2 s)) - erf((x-W/2)/(sqrt2 s))]."""
    return 0.5 * (erf((x + 0.5 * width) / (_SQRT2 * sigma)) - erf((x - 0.5 * width) / (_SQRT2 * sigma)))


def field_dose(machine: Machine, depth, t, x, y, field_u, field_v):
    """Dose (Gy per unit weight) from an open rectangular field (size at isocentre) at physical offsets x, y.

    Analytic; equals the sum of the beamlets tiling the field (erf telescoping)."""
    depth = np.asarray(depth, float)
    t = np.asarray(t, float)
    w, s = machine.kernel(depth)
    k = sum(w[i] * edge_profile(x, field_u * t / machine.sad, s[i]) * edge_profile(y, field_v * t / machine.sad, s[i])
            for i in range(w.shape[0]))
    return machine.norm * (machine.sad / t) ** 2 * machine.depth_dose(depth) * k


def mu_per_unit_weight(machine: Machine = DEFAULT_MACHINE, bixel_mm: float = 5.0) -> float:
    """Monitor units per unit beamlet weight.

    Calibration convention: 1 MU gives 1 cGy at dmax on the axis of a 10x10 cm^2 field at SSD 100 cm.
    A unit weight on every beamlet of that field gives ``D_ref`` Gy there, so MU = weight * D_ref / 0.01 Gy."""
    dm = machine.dmax_mm
    t = machine.sad + dm
    d_ref = float(field_dose(machine, dm, t, 0.0, 0.0, 100.0, 100.0))
    return d_ref / 0.01


# --------------------------------------------------------------------------- fast sparse products
# One optimisation iteration is one ``D @ w`` and one ``D^T @ g`` (float32 values, int32 indices). scipy's CSR
# mat-vec accumulates each row in one register, so within a row every nonzero waits for the previous add: a long
# row is a serial chain. Two measures (numpy + scipy only, no compiled code of our own):
#
# * long rows (``D^T`` has one row per beamlet, ~1,600 nonzeros each on the TG-119 benchmark) are cut into
#   sub-rows of at most ``max_row`` (32) nonzeros, whose partial sums are independent chains, added up by
#   ``np.add.reduceat``; values and column indices are shared with the matrix (only a finer row-pointer array
#   is new). Measured on the benchmark matrix (4.1 M nonzeros, best CPU time of 200 single-thread runs):
#   D^T g 4.7 ms -> 3.5 ms (max_row 16 / 32 / 64 / 128: 3.9 / 3.5 / 3.6 / 3.9 ms). Cutting ``D``'s rows (a voxel's
#   row has ~60 nonzeros) gains nothing and the reduction then costs ~1 ms, so ``D`` keeps its rows;
# * the rows are split into blocks of about equal nonzeros, run on ``threads`` threads (scipy's C++ loop
#   releases the GIL), each writing its own slice of the output; blocks are handed out dynamically, so a thread
#   that the OS deschedules on a busy machine does not hold the others up.
#
# ``threads`` defaults to the CPUs this process may use (``RADPATH_ENGINE_THREADS`` overrides; 1 = no threads).
# Measured and not adopted: scipy's CSC view ``D.T @ g`` (a scatter; as fast as the CSR transpose at best, up to
# 1.5x slower), BSR blocks (scipy's generic block kernel is 3-6x slower), a numpy
# ``np.add.reduceat(data * x[indices])`` path (4x slower: the gather alone costs 3x the whole product).

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_PID = 0
_POOL_LOCK = threading.Lock()


def engine_threads() -> int:
    """Threads the sparse products use: ``RADPATH_ENGINE_THREADS`` or the CPUs available to this process."""
    env = os.environ.get("RADPATH_ENGINE_THREADS", "").strip()
    if env:
        return max(1, int(env))
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(os.cpu_count() or 1, 8))


def _pool(n_workers: int) -> ThreadPoolExecutor:
    """The shared worker pool (a new one after a fork: the parent's threads do not exist in the child)."""
    global _POOL, _POOL_SIZE, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE < n_workers or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="radpath-spmv")
            _POOL_SIZE, _POOL_PID = n_workers, os.getpid()
        return _POOL


def split_rows(indptr: np.ndarray, max_row: int) -> tuple[np.ndarray, np.ndarray]:
    """Row pointers of the sub-rows of at most ``max_row`` entries each (every row keeps at least one, possibly
    empty, sub-row) and the index of each row's first sub-row (for ``np.add.reduceat``)."""
    ip = np.asarray(indptr, np.int64)
    cnt = np.diff(ip)
    n_sub = np.maximum(-(-cnt // max_row), 1)
    first = np.zeros(cnt.size, np.int64)
    np.cumsum(n_sub[:-1], out=first[1:])
    owner = np.repeat(np.arange(cnt.size), n_sub)
    k = np.arange(int(n_sub.sum())) - first[owner]
    starts = np.minimum(ip[owner] + k * max_row, ip[owner + 1])
    return np.append(starts, ip[-1]).astype(indptr.dtype), first


class CSRProduct:
    """``y = M @ x`` for a fixed CSR float32 matrix ``M``: long rows cut into sub-rows (``max_row``, None = keep
    rows), rows in blocks of about equal nonzeros (at least ``min_block_nnz``, up to 4 per thread) run on up to
    ``threads`` threads; a matrix under ``2 * min_block_nnz`` nonzeros runs in the calling thread (handing a
    sub-millisecond product to another thread costs more than it saves on a busy machine). The result equals
    ``M @ x`` up to float32 rounding (the sums run in a different order). ``bytes_per_product`` is the memory
    one product has to move: values, column indices, (sub-)row pointers, the input vector, the output (and the
    partial sums, written and read back, when rows are cut)."""

    def __init__(self, M: sp.csr_matrix, *, max_row: int | None = None, threads: int | None = None,
                 min_block_nnz: int = 500_000):
        M = M if M.format == "csr" else M.tocsr()
        if M.dtype != np.float32:
            M = M.astype(np.float32)
        self.M = M
        self.shape = M.shape
        self.threads = engine_threads() if threads is None else max(1, int(threads))
        self.max_row = max_row
        n = M.shape[0]
        if max_row is not None and n and np.diff(M.indptr).max(initial=0) > max_row:
            indptr, self.first = split_rows(M.indptr, max_row)
        else:
            indptr, self.first = M.indptr, None
        self.n_sub = indptr.size - 1
        nnz = int(M.nnz)
        n_blocks = 1
        if self.threads > 1 and nnz >= 2 * min_block_nnz and _csr_matvec is not None:
            n_blocks = int(min(4 * self.threads, nnz // min_block_nnz))
        cuts = np.searchsorted(indptr, np.linspace(0, nnz, n_blocks + 1)).astype(np.int64)
        cuts[0], cuts[-1] = 0, self.n_sub
        cuts = np.unique(cuts)
        self.blocks = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            p0, p1 = int(indptr[a]), int(indptr[b])
            self.blocks.append((int(a), int(b), np.ascontiguousarray(indptr[a:b + 1] - indptr[a]),
                                M.indices[p0:p1], M.data[p0:p1]))
        sub_bytes = 0 if self.first is None else 2 * 4 * self.n_sub + self.first.nbytes
        self.bytes_per_product = int(M.data.nbytes + M.indices.nbytes + indptr.nbytes + 4 * M.shape[1]
                                     + 4 * M.shape[0] + sub_bytes)

    def _run(self, x: np.ndarray, out: np.ndarray) -> None:
        ncol = self.shape[1]
        if _csr_matvec is None:  # pragma: no cover
            for a, b, ip, ind, dat in self.blocks:
                out[a:b] = sp.csr_matrix((dat, ind, ip), shape=(b - a, ncol)) @ x
            return
        if len(self.blocks) == 1 or self.threads == 1:
            for a, b, ip, ind, dat in self.blocks:
                _csr_matvec(b - a, ncol, ip, ind, dat, x, out[a:b])
            return
        nxt = itertools.count()  # shared work queue: next() is atomic under the GIL
        blocks = self.blocks

        def runner():
            while True:
                i = next(nxt)
                if i >= len(blocks):
                    return
                a, b, ip, ind, dat = blocks[i]
                _csr_matvec(b - a, ncol, ip, ind, dat, x, out[a:b])

        futures = [_pool(self.threads - 1).submit(runner) for _ in range(self.threads - 1)]
        runner()
        for f in futures:
            f.result()

    def __call__(self, x) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape != (self.shape[1],):
            raise ValueError(f"vector of length {self.shape[1]} expected, got shape {x.shape}")
        out = np.zeros(self.n_sub, np.float32)
        self._run(x, out)
        if self.first is None:
            return out
        return np.add.reduceat(out, self.first)


class SparseProducts:
    """The two products of an optimisation iteration for a dose-influence matrix: ``matvec(w) = D @ w`` (rows
    kept whole: a voxel's row is short) and ``rmatvec(g) = D^T @ g`` on the stored CSR transpose ``DT``, its
    beamlet rows cut into sub-rows of ``max_row`` nonzeros. Works for any object with CSR ``D`` and ``DT``."""

    def __init__(self, D: sp.spmatrix, DT: sp.spmatrix | None = None, *, threads: int | None = None,
                 max_row: int = 32):
        self.D = D
        self.DT = DT
        self._src = (getattr(D, "data", None), getattr(DT, "data", None))
        self._mv = CSRProduct(D, threads=threads)
        self._rmv = CSRProduct(DT if DT is not None else D.T.tocsr(), threads=threads, max_row=max_row)

    @property
    def threads(self) -> int:
        return self._mv.threads

    def matvec(self, w) -> np.ndarray:
        """``D @ w`` (float32); a 2-D ``w`` (several fluences as columns) goes to scipy as before."""
        if np.ndim(w) != 1:
            return self.D @ np.asarray(w, np.float32)
        return self._mv(w)

    def rmatvec(self, g) -> np.ndarray:
        """``D^T @ g`` (float32); a 2-D ``g`` goes to scipy."""
        if np.ndim(g) != 1:
            return self._rmv.M @ np.asarray(g, np.float32)
        return self._rmv(g)

    def current(self, D, DT) -> bool:
        """Built from these very matrices (and their arrays have not been replaced)?"""
        return (self.D is D and self.DT is DT and self._src[0] is getattr(D, "data", None)
                and self._src[1] is getattr(DT, "data", None))

    @property
    def bytes_per_iteration(self) -> int:
        """Memory one ``matvec`` plus one ``rmatvec`` must move (see :class:`CSRProduct`)."""
        return self._mv.bytes_per_product + self._rmv.bytes_per_product


def products(dij) -> SparseProducts:
    """The :class:`SparseProducts` of ``dij`` (anything with CSR ``D`` and ``DT``); a :class:`DoseInfluence`
    caches them (rebuilt if its ``D`` or ``DT`` is replaced)."""
    c = getattr(dij, "_sparse_products", None)
    if c is None or not c.current(dij.D, getattr(dij, "DT", None)):
        c = SparseProducts(dij.D, getattr(dij, "DT", None))
        if isinstance(dij, DoseInfluence):
            object.__setattr__(dij, "_sparse_products", c)
    return c


class InfluenceShape:
    """Sizes of an influence matrix ``D`` (voxels x columns), shared by beamlet and segment matrices."""

    @property
    def n_voxels(self) -> int:
        return self.D.shape[0]

    @property
    def n_beamlets(self) -> int:
        return self.D.shape[1]

    @property
    def nnz(self) -> int:
        return int(self.D.nnz)


@dataclass
class DoseInfluence(InfluenceShape):
    """Sparse dose-influence matrix ``D`` (n_voxels x n_beamlets, float32, Gy per unit weight).

    Rows are the voxels ``voxels`` (flat grid indices, ascending) of the calculation region; columns are the
    beamlets of ``beams`` in order (``beam_of`` gives each column's beam). ``D`` is CSR (fast ``D @ w``) and
    ``DT`` its transpose, also CSR (fast ``D.T @ g``: a gather per row, where the CSC view ``D.T`` scatters and
    measured up to 1.5x slower, never faster); both are kept because one optimisation iteration does one of
    each. ``matvec`` and ``rmatvec`` do them the fast way (:class:`SparseProducts`: threaded row blocks,
    ``DT``'s long rows cut).
    """

    D: sp.csr_matrix
    DT: sp.csr_matrix
    voxels: np.ndarray
    beams: list
    beam_of: np.ndarray
    grid_shape: tuple
    rel_threshold: float
    cutoff_mm: float

    def __getstate__(self):  # pickles without the cached products (views of D and DT, rebuilt on use)
        state = dict(self.__dict__)
        state.pop("_sparse_products", None)
        return state

    @property
    def products(self) -> SparseProducts:
        """The iteration's fast products (built on first use, cached)."""
        return products(self)

    def matvec(self, w: np.ndarray) -> np.ndarray:
        """``D @ w`` (float32): the dose on the calculation voxels."""
        return products(self).matvec(w)

    def rmatvec(self, g: np.ndarray) -> np.ndarray:
        """``D^T @ g`` (float32): a dose-space gradient taken back to beamlet space."""
        return products(self).rmatvec(g)

    def dose(self, w: np.ndarray) -> np.ndarray:
        """Dose on the calculation voxels for beamlet weights ``w``."""
        return self.matvec(w)

    def dose_cube(self, w: np.ndarray) -> np.ndarray:
        """Dose as a full grid array (zero outside the calculation region)."""
        out = np.zeros(int(np.prod(self.grid_shape)), np.float32)
        out[self.voxels] = self.dose(w)
        return out.reshape(self.grid_shape)

    def row_index(self, mask: np.ndarray) -> np.ndarray:
        """Row numbers of the voxels of a grid mask (voxels outside the calculation region are dropped)."""
        flat = np.flatnonzero(np.asarray(mask).ravel())
        pos = np.searchsorted(self.voxels, flat)
        pos = np.clip(pos, 0, max(self.voxels.size - 1, 0))
        return pos[self.voxels[pos] == flat]


def beam_dose_entries(geo: Geometry, beam: Beam, voxels: np.ndarray, machine: Machine = DEFAULT_MACHINE,
                      cutoff_mm: float = 30.0, rel_threshold: float = 1e-3, chunk: int = 8000):
    """(row, col, value) triplets of one beam's dose-influence entries. Vectorised over voxels x window.

    For every voxel only the beamlets within ``cutoff_mm`` (lateral, at the voxel's depth) can contribute:
    a fixed window of beamlet indices around the voxel's projection is evaluated at once, entries below
    ``rel_threshold`` times the beamlet's nominal peak (on axis, at dmax, at the isocentre distance) are
    dropped (the integral dose this drops is measured in :func:`dose_influence`'s docstring).
    """
    w = beam.bixel_mm
    pts = geo.grid.points(voxels)
    u, v, t = beam.project(pts)
    ca, cb = beam.beamlet_centres()
    umin, umax, vmin, vmax = ca.min(), ca.max(), cb.min(), cb.max()
    reach = cutoff_mm * beam.sad / t + 0.5 * w
    near = (u >= umin - reach) & (u <= umax + reach) & (v >= vmin - reach) & (v <= vmax + reach) & (t > 0)
    rows = np.flatnonzero(near)
    if rows.size == 0 or beam.n_beamlets == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    u, v, t = u[rows], v[rows], t[rows]
    depth = radiological_depth(geo.density, geo.grid, beam, pts[rows], uvt=(u, v, t)).astype(np.float64)
    # look-up table (grid index -> column)
    a0, b0 = beam.ia.min(), beam.ib.min()
    lut = -np.ones((beam.ia.max() - a0 + 1, beam.ib.max() - b0 + 1), np.int64)
    lut[beam.ia - a0, beam.ib - b0] = np.arange(beam.n_beamlets)
    half = int(np.ceil((cutoff_mm * beam.sad / t.min() + 0.5 * w) / w))
    off = np.arange(-half, half + 1)
    dm = machine.dmax_mm
    kw, ks = machine.kernel(np.array(dm))
    peak = machine.norm * machine.depth_dose(dm) * sum(
        kw[i] * edge_profile(0.0, w * (1 + dm / machine.sad), ks[i]) ** 2 for i in range(kw.shape[0]))
    thr = rel_threshold * float(peak)
    out_r, out_c, out_v = [], [], []
    ox, oy = beam.offset
    for s0 in range(0, rows.size, chunk):
        sl = slice(s0, s0 + chunk)
        uu, vv, tt, dd = u[sl], v[sl], t[sl], depth[sl]
        ia_c = np.round(uu / w - ox).astype(np.int64)
        ib_c = np.round(vv / w - oy).astype(np.int64)
        IA = ia_c[:, None] + off[None, :]
        IB = ib_c[:, None] + off[None, :]
        mag = (tt / beam.sad)[:, None]
        xa = (uu[:, None] - (IA + ox) * w) * mag          # physical offsets at the voxel
        xb = (vv[:, None] - (IB + oy) * w) * mag
        W = w * mag
        cw, cs = machine.kernel(dd)
        fac = machine.norm * (beam.sad / tt) ** 2 * machine.depth_dose(dd)
        val = np.zeros((uu.size, off.size, off.size), np.float64)
        for k in range(cw.shape[0]):
            pa = edge_profile(xa, W, cs[k][:, None])
            pb = edge_profile(xb, W, cs[k][:, None])
            val += (cw[k] * fac)[:, None, None] * pa[:, :, None] * pb[:, None, :]
        ja = IA - a0
        jb = IB - b0
        oka = (ja >= 0) & (ja < lut.shape[0])
        okb = (jb >= 0) & (jb < lut.shape[1])
        ok = oka[:, :, None] & okb[:, None, :] & (val >= thr)
        iv, i1, i2 = np.nonzero(ok)
        col = lut[ja[iv, i1], jb[iv, i2]]
        keep = col >= 0
        out_r.append(rows[s0 + iv[keep]])
        out_c.append(col[keep])
        out_v.append(val[iv[keep], i1[keep], i2[keep]].astype(np.float32))
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v)


def dose_influence(geo: Geometry, beams: list[Beam], machine: Machine = DEFAULT_MACHINE,
                   calc_mask: np.ndarray | None = None, cutoff_mm: float = 30.0,
                   rel_threshold: float = 1e-3, progress=None) -> DoseInfluence:
    """Assemble the dose-influence matrix of all ``beams`` on ``calc_mask`` (default: the body).

    ``cutoff_mm``: lateral kernel cut-off; ``rel_threshold``: entries below this fraction of a beamlet's
    nominal peak dose (on axis, at dmax, at the isocentre distance) are dropped (default 1e-3, i.e. 0.1 %).
    ``progress(i_beam, n_beams)`` is called per beam.

    Truncation drops the scatter tail (the mid-scatter Gaussian of each 5 mm beamlet peaks at about 2e-3 of the
    nominal peak, the far-scatter one at about 3e-4: a threshold of 1e-3 keeps the mid scatter near the axis
    only and drops the far scatter). The threshold is
    the same absolute dose for every beamlet of a machine, i.e. it keeps the largest entries: for a given number of
    nonzeros no other selection drops less integral dose; the cut-off only bounds the window evaluated per voxel.
    Measured on the C-shape (``phantoms.c_shape``, 8 mm voxels, 9 equispaced beams, 5 mm beamlets, unit weight on
    every beamlet, against the untruncated :class:`AccurateDose`; nonzeros relative to the default 1e-3 / 30 mm,
    4.33 M there):

    ========================  ======  =====  ===========  ========
    rel_threshold / cut-off   body    PTV    > 2 cm away  nonzeros
    ========================  ======  =====  ===========  ========
    1e-3 / 30 mm (default)    12.5 %  6.1 %  15.2 %        1.0 x
    7e-4 / 40 mm               9.5 %  4.0 %  12.0 %        1.5 x
    5e-4 / 40 mm               7.5 %  2.6 %   9.6 %        2.0 x
    4e-4 / 40 mm               6.4 %  1.9 %   8.3 %        2.3 x
    3e-4 / 40 mm               5.4 %  1.4 %   7.1 %        2.7 x
    2e-4 / 40 mm               4.8 %  1.2 %   6.4 %        3.0 x
    2e-4 / 50 mm               3.6 %  0.5 %   5.0 %        3.7 x
    1e-4 / 50 mm               2.9 %  0.3 %   4.1 %        4.3 x
    1e-7 / 90 mm               0.2 %  0.0 %   0.3 %        7.8 x
    ========================  ======  =====  ===========  ========

    (the far-scatter tail, sigma 43-92 mm, reaches beyond any practical cut-off.) Cost on the pyRadPlan benchmark
    (``benchmarks/planning.py``, TG119.mat, 5 mm grid, 9 beams, pyRadPlan's 2,851 beamlets; pyRadPlan keeps 37.6 M
    nonzeros): the default keeps 15.1 M (the previous two-Gaussian kernel, with too little near scatter, 4.1 M);
    ``rel_threshold=2e-3`` would be back at the old size (C-shape above: 1.62 M, 0.37x) but drops 12.5 % of the
    PTV dose.
    This matrix is the optimiser's working model only: RadPath stores, shows and exports the untruncated dose of
    the final fluence (:class:`AccurateDose`), and optimises on this matrix corrected to it
    (:mod:`planning.engine.accurate`), which keeps the default's speed without its 5-10 % dose error.
    """
    mask = geo.body.mask if calc_mask is None else calc_mask
    voxels = np.flatnonzero(mask.ravel())
    rs, cs, vs, beam_of = [], [], [], []
    col0 = 0
    for i, b in enumerate(beams):
        r, c, v = beam_dose_entries(geo, b, voxels, machine, cutoff_mm, rel_threshold)
        rs.append(r)
        cs.append(c + col0)
        vs.append(v)
        beam_of.append(np.full(b.n_beamlets, i))
        col0 += b.n_beamlets
        if progress is not None:
            progress(i + 1, len(beams))
    r = np.concatenate(rs)
    c = np.concatenate(cs)
    v = np.concatenate(vs)
    D = sp.csr_matrix((v, (r, c)), shape=(voxels.size, col0), dtype=np.float32)
    D.sum_duplicates()
    DT = D.T.tocsr()
    return DoseInfluence(D, DT, voxels, list(beams), np.concatenate(beam_of) if beam_of else np.zeros(0, int),
                         tuple(geo.grid.shape), rel_threshold, cutoff_mm)


# --------------------------------------------------------------------------- accurate (untruncated) dose
class AccurateDose:
    """The pencil-beam dose of beamlet fluences *without truncation*: the model of :func:`dose_influence` with
    no ``rel_threshold`` and no lateral ``cutoff_mm``, evaluated for given weights instead of stored as a matrix.

    This is the dose RadPath stores, shows, exports and judges plans by (the fast, truncated matrix is only the
    optimiser's working model). Every beamlet of a beam contributes to every calculation voxel downstream of the
    source: the lateral kernel is separable (each Gaussian component is a product of an ``x`` and a ``y`` edge
    profile), so for one beam with fluence map ``F`` (leaf pairs ``b`` x columns ``a``) the dose at a voxel is::

        fac(d, t) * sum_k c_k(d) * px_k^T F py_k

    with ``px_k[a]``, ``py_k[b]`` the edge profiles of every column / row of the map at the voxel (two small
    matrix products per chunk of voxels; nothing is dropped, so the result equals ``dose_influence(...,
    rel_threshold=0, cutoff_mm=inf) @ w`` up to float rounding). The per-voxel geometry (BEV coordinates,
    radiological depth, kernel, depth dose) is computed once at construction; a call costs the erf profiles and
    the products (about the time one truncated matrix takes to build). Linear in the weights.

    ``voxels``: flat grid indices of the calculation voxels (default: the body), e.g. a
    :class:`DoseInfluence`'s ``voxels`` (then the result lines up with its rows, see :meth:`for_influence`)."""

    def __init__(self, geo: Geometry, beams: list[Beam], machine: Machine = DEFAULT_MACHINE,
                 voxels: np.ndarray | None = None, chunk: int = 4096):
        self.machine = machine
        self.beams = list(beams)
        self.grid_shape = tuple(geo.grid.shape)
        self.voxels = np.flatnonzero(geo.body.mask.ravel()) if voxels is None else np.asarray(voxels)
        self.chunk = int(chunk)
        self.n_beamlets = int(sum(b.n_beamlets for b in self.beams))
        self.seconds = 0.0  # wall time spent in dose() so far (what a plan or benchmark reports as accurate-dose time)
        pts = geo.grid.points(self.voxels)
        self._beam = []
        for b in self.beams:
            if b.n_beamlets == 0:
                self._beam.append(None)
                continue
            u, v, t = b.project(pts)
            rows = np.flatnonzero(t > 0)
            u, v, t = u[rows], v[rows], t[rows]
            depth = radiological_depth(geo.density, geo.grid, b, pts[rows], uvt=(u, v, t)).astype(np.float64)
            cw, cs = machine.kernel(depth)
            fac = machine.norm * (b.sad / t) ** 2 * machine.depth_dose(depth)
            self._beam.append((rows, u, v, t / b.sad, cw * fac, cs))

    @classmethod
    def for_influence(cls, geo: Geometry, dij: "DoseInfluence", machine: Machine = DEFAULT_MACHINE):
        """The accurate calculation on the rows (voxels) and columns (beamlets) of ``dij``."""
        return cls(geo, dij.beams, machine, voxels=dij.voxels)

    @property
    def n_voxels(self) -> int:
        return int(self.voxels.size)

    def dose(self, weights) -> np.ndarray:
        """Dose (Gy, float32) on the calculation voxels for beamlet weights ``weights`` (columns in beam order).

        Beams run on the engine's threads (numpy's erf and matrix products release the GIL), each into its own
        sum; OpenBLAS is held at one thread meanwhile (its own threads busy-wait against ours: 6x slower on the
        shared 2-core machine)."""
        from .optimize import single_threaded_blas  # (optimize imports this module)

        t0 = time.perf_counter()
        weights = np.asarray(weights, np.float64)
        if weights.shape != (self.n_beamlets,):
            raise ValueError(f"{self.n_beamlets} beamlet weights expected, got shape {weights.shape}")
        starts = np.concatenate([[0], np.cumsum([b.n_beamlets for b in self.beams])]).astype(int)
        jobs = [i for i, b in enumerate(self.beams)
                if self._beam[i] is not None and np.any(weights[starts[i]:starts[i + 1]])]
        threads = min(engine_threads(), len(jobs))
        with single_threaded_blas():
            if threads <= 1:
                parts = [self._beam_dose(i, weights[starts[i]:starts[i + 1]]) for i in jobs]
            else:
                pool = _pool(threads)
                parts = list(pool.map(lambda i: self._beam_dose(i, weights[starts[i]:starts[i + 1]]), jobs))
        out = np.zeros(self.n_voxels, np.float64)
        for i, (rows, d) in zip(jobs, parts):
            out[rows] += d
        out = out.astype(np.float32)
        self.seconds += time.perf_counter() - t0
        return out

    def _beam_dose(self, i: int, wb: np.ndarray):
        """(rows, dose) of beam ``i`` with weights ``wb``: see the class docstring."""
        b = self.beams[i]
        rows, u, v, mag, cfac, cs = self._beam[i]
        fmap, a0, b0 = b.fluence_map(wb)           # rows = ib - b0, columns = ia - a0
        # keep the map's non-empty extent only (rows/columns of zero weight contribute nothing)
        ra = np.flatnonzero(fmap.any(axis=0))
        rb = np.flatnonzero(fmap.any(axis=1))
        fT = np.ascontiguousarray(fmap[rb[0]:rb[-1] + 1, ra[0]:ra[-1] + 1].T)
        # beamlet edges at the isocentre: column a spans ea[a]..ea[a+1], row b eb[b]..eb[b+1]; neighbouring
        # beamlets share an edge, so one erf per edge (the profile is the difference of two)
        ea = (np.arange(ra[0], ra[-1] + 2) + a0 + b.offset[0] - 0.5) * b.bixel_mm
        eb = (np.arange(rb[0], rb[-1] + 2) + b0 + b.offset[1] - 0.5) * b.bixel_mm
        out = np.zeros(rows.size, np.float64)
        for s0 in range(0, rows.size, self.chunk):
            sl = slice(s0, s0 + self.chunk)
            du = u[sl][:, None] - ea[None, :]
            dv = v[sl][:, None] - eb[None, :]
            acc = out[sl]
            for k in range(cs.shape[0]):
                inv = (mag[sl] / (_SQRT2 * cs[k][sl]))[:, None]
                Ea = erf(du * inv)
                Eb = erf(dv * inv)
                pa = Ea[:, :-1] - Ea[:, 1:]      # (chunk, columns): twice the edge profiles
                pb = Eb[:, :-1] - Eb[:, 1:]      # (chunk, rows)
                acc += (0.25 * cfac[k][sl]) * np.einsum("ib,ib->i", pa @ fT, pb)
        return rows, out

    __call__ = dose

    def dose_cube(self, weights) -> np.ndarray:
        """The accurate dose as a full grid array (zero outside the calculation voxels)."""
        out = np.zeros(int(np.prod(self.grid_shape)), np.float32)
        out[self.voxels] = self.dose(weights)
        return out.reshape(self.grid_shape)


def accurate_dose(geo: Geometry, beams: list[Beam], weights, machine: Machine = DEFAULT_MACHINE,
                  calc_mask: np.ndarray | None = None) -> np.ndarray:
    """The accurate (untruncated) pencil-beam dose cube of beamlet ``weights`` on ``calc_mask`` (default: the
    body). The public entry point for recalculating a plan (stored, exported or imported fluence): see
    :class:`AccurateDose`."""
    voxels = None if calc_mask is None else np.flatnonzero(np.asarray(calc_mask).ravel())
    return AccurateDose(geo, beams, machine, voxels=voxels).dose_cube(weights)


def dropped_fraction(fast: np.ndarray, accurate: np.ndarray, rows: np.ndarray | None = None) -> float:
    """Fraction of the dose a truncated calculation drops against the accurate one, ``1 - sum(fast) /
    sum(accurate)`` over ``rows`` (all voxels when None): the truncation figure RadPath reports."""
    f = np.asarray(fast, np.float64)
    a = np.asarray(accurate, np.float64)
    if rows is not None:
        f, a = f[rows], a[rows]
    s = float(a.sum())
    return float(1.0 - f.sum() / s) if s > 0 else 0.0
