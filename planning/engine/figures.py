"""PNG figures (matplotlib, Agg backend): DVH curves and dose colour-wash slices with structure outlines."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from . import dvh as dvhmod  # noqa: E402
from .grid import Geometry  # noqa: E402

_COLOURS = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def dvh_figure(geo: Geometry, dose_cube: np.ndarray, path: str, title: str = "", include_body: bool = False) -> str:
    """Cumulative DVH of every structure (except the body unless asked) to ``path`` (PNG)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    vcc = geo.grid.voxel_volume_cc
    top = float(dose_cube.max()) * 1.05 + 1e-6
    for i, (name, s) in enumerate(geo.structures.items()):
        if s.kind == "body" and not include_body:
            continue
        h = dvhmod.cumulative_dvh(name, dose_cube[s.mask], vcc, bin_gy=max(top / 400, 0.01), max_gy=top)
        ls = "-" if s.kind == "target" else "--"
        ax.plot(h.dose_gy, h.volume_pct, ls, color=_COLOURS[i % len(_COLOURS)], label=name, lw=1.6)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_xlim(0, top)
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title or f"{geo.name}: cumulative DVH")
    fig.tight_layout()
    _ensure(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def dose_slices_figure(geo: Geometry, dose_cube: np.ndarray, path: str, point_mm=None, title: str = "",
                       rx: float | None = None) -> str:
    """Axial and sagittal dose colour-wash through ``point_mm`` (default: isocentre) with outlines."""
    point = geo.isocentre() if point_mm is None else np.asarray(point_mm, float)
    ijk = np.clip(np.round(geo.grid.to_index(point[None])[0]).astype(int), 0, np.asarray(geo.grid.shape) - 1)
    x, y, z = geo.grid.axes()
    vmax = float(dose_cube.max()) or 1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110,
                             gridspec_kw={"width_ratios": [np.ptp(x) + 1, np.ptp(y) + 1]})
    views = [
        ("axial z=%.0f mm" % z[ijk[2]], lambda a: a[:, :, ijk[2]].T, (x[0], x[-1], y[-1], y[0]), "x (mm)", "y (mm)",
         x, y),
        ("sagittal x=%.0f mm" % x[ijk[0]], lambda a: a[ijk[0], :, :].T, (y[0], y[-1], z[0], z[-1]), "y (mm)",
         "z (mm)", y, z),
    ]
    for ax, (name, cut, ext, xl, yl, xs, ys) in zip(axes, views):
        anat = cut(geo.density)
        ax.imshow(anat, cmap="gray", extent=ext, vmin=0, vmax=2,
                  origin="upper" if "axial" in name else "lower", interpolation="nearest")
        dose = np.ma.masked_less(cut(dose_cube), 0.1 * vmax)
        im = ax.imshow(dose, cmap="jet", alpha=0.45, extent=ext, vmin=0, vmax=vmax,
                       origin="upper" if "axial" in name else "lower", interpolation="bilinear")
        for i, (sname, s) in enumerate(geo.structures.items()):
            m = cut(s.mask.astype(float))
            if m.any():
                ax.contour(xs, ys, m, levels=[0.5], colors=[_COLOURS[i % len(_COLOURS)]], linewidths=1.0)
        if rx:
            ax.contour(xs, ys, cut(dose_cube), levels=[rx], colors="white", linewidths=1.2, linestyles="dotted")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
    fig.colorbar(im, ax=axes, label="Dose (Gy)", shrink=0.85)
    fig.suptitle(title or f"{geo.name}: dose" + (f" (white: {rx:g} Gy isodose)" if rx else ""))
    _ensure(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _ensure(path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
