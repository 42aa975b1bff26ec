"""Voxel grid and patient geometry: plain arrays, no physics.

Conventions (DICOM patient coordinates, "LPS"):

* arrays are indexed ``[ix, iy, iz]``;
* ``x`` increases towards the patient's left, ``y`` towards posterior, ``z`` towards superior;
* ``origin`` is the centre of voxel ``[0, 0, 0]`` in mm, ``spacing`` the voxel size in mm;
* the coplanar gantry rotates in the x-y (axial) plane about the z axis.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TARGET = "target"
OAR = "oar"
BODY = "body"


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid: ``shape`` (nx, ny, nz), ``spacing`` mm, ``origin`` mm (centre of voxel 0)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def covering(cls, lo, hi, spacing) -> "Grid":
        """Smallest grid with voxel size ``spacing`` whose voxel centres cover the box [lo, hi] (mm)."""
        sp = np.broadcast_to(np.asarray(spacing, float), (3,))
        lo = np.asarray(lo, float)
        hi = np.asarray(hi, float)
        n = np.maximum(np.ceil((hi - lo) / sp).astype(int) + 1, 1)
        centre = 0.5 * (lo + hi)
        origin = centre - 0.5 * (n - 1) * sp
        return cls(tuple(int(v) for v in n), tuple(float(v) for v in sp), tuple(float(v) for v in origin))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def voxel_volume_cc(self) -> float:
        """Voxel volume in cm^3."""
        return float(np.prod(self.spacing)) / 1000.0

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1-D coordinates (mm) of voxel centres along x, y, z."""
        return tuple(
            (self.origin[i] + self.spacing[i] * np.arange(self.shape[i])).astype(np.float64) for i in range(3)
        )

    def mesh(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense coordinate arrays X, Y, Z of shape ``self.shape`` (mm)."""
        return np.meshgrid(*self.axes(), indexing="ij")

    def points(self, flat_index: np.ndarray) -> np.ndarray:
        """World coordinates (n, 3) in mm of voxels given by flat (C-order) indices."""
        ijk = np.stack(np.unravel_index(np.asarray(flat_index), self.shape), axis=-1)
        return np.asarray(self.origin) + ijk * np.asarray(self.spacing)

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous voxel-index coordinates (n, 3) of world points (mm)."""
        return (np.asarray(points, float) - np.asarray(self.origin)) / np.asarray(self.spacing)


@dataclass
class Structure:
    """A named region of interest: boolean ``mask`` on the grid, ``kind`` target/oar/body.

    ``prescription_gy`` is set for targets (total dose, Gy).
    """

    name: str
    mask: np.ndarray
    kind: str = OAR
    prescription_gy: float | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())


@dataclass
class Geometry:
    """CT-like phantom: ``density`` (g/cm^3, relative electron density ~ mass density) and structures.

    ``structures`` maps name -> :class:`Structure`; exactly one has kind ``body``.
    """

    grid: Grid
    density: np.ndarray
    structures: dict[str, Structure] = field(default_factory=dict)
    name: str = "phantom"
    n_fractions: int | None = None

    def add(self, name: str, mask: np.ndarray, kind: str = OAR, prescription_gy: float | None = None) -> Structure:
        mask = np.asarray(mask, bool)
        if mask.shape != tuple(self.grid.shape):
            raise ValueError(f"mask {name} has shape {mask.shape}, grid is {self.grid.shape}")
        s = Structure(name, mask, kind, prescription_gy)
        self.structures[name] = s
        return s

    @property
    def masks(self) -> dict[str, np.ndarray]:
        return {k: s.mask for k, s in self.structures.items()}

    @property
    def body(self) -> Structure:
        for s in self.structures.values():
            if s.kind == BODY:
                return s
        raise KeyError("geometry has no body structure")

    @property
    def targets(self) -> list[Structure]:
        """Targets, highest prescription first."""
        t = [s for s in self.structures.values() if s.kind == TARGET]
        return sorted(t, key=lambda s: -(s.prescription_gy or 0.0))

    @property
    def primary_target(self) -> Structure:
        return self.targets[0]

    @property
    def oars(self) -> list[Structure]:
        return [s for s in self.structures.values() if s.kind == OAR]

    def target_union(self) -> np.ndarray:
        m = np.zeros(self.grid.shape, bool)
        for t in self.targets:
            m |= t.mask
        return m

    def isocentre(self) -> np.ndarray:
        """Centre of mass (mm) of the union of all targets: the default beam isocentre."""
        idx = np.flatnonzero(self.target_union())
        return self.grid.points(idx).mean(axis=0)
