#!/usr/bin/env python
"""Commissioning reference data from matRad's "Generic" 6 MV machine -> tests/engine/data/matrad_generic_6mv.json.

    python benchmarks/matrad_reference.py            # writes the JSON (installs pyRadPlan into .bench/ if needed)
    python benchmarks/matrad_reference.py --mat FILE # from a given photons_Generic.mat

The machine file (``photons_Generic.mat``) ships in the pyRadPlan wheel (pip ``pyradplan==0.5.0``, the venv that
``benchmarks/planning.py`` creates under ``.bench/pyradplan-venv``); only the file is read, with
``scipy.io.loadmat``: pyRadPlan is not imported and is NOT a RadPath dependency. The tests read the JSON only.

matRad's / pyRadPlan's SVD photon pencil beam (``PhotonPencilBeamSVDEngine``; Bortfeld, Schlegel & Rhein, Med Phys
20:311, 1993), evaluated here for a water phantom at SSD = SAD = 100 cm, lateral coordinates projected to the
isocentre plane (``x_iso = x * SAD / (SSD + d)``)::

    D(x, d) = (SAD / r_geo)^2 * sum_c DD_c(d_rad) * K_c(x_iso)
    DD_c(d) = beta_c / (beta_c - m) * (exp(-m d) - exp(-beta_c d))
    K_c     = fluence (square field, pixels of 0.5 mm) * Gaussian (sigma = penumbraFWHMatIso / 2.355) * kernel_c(r)

with the machine's ``betas``, ``m``, ``penumbraFWHMatIso`` and the three SVD kernel components tabulated over radius
(``kernelPos``, 0-179.5 mm) at the SSD nearest 1000 mm; the convolutions on pyRadPlan's 0.5 mm grid (its default
``int_conv_resolution``; the kernel's r = 0 sample is a 0.5 mm pixel's delta peak, so the grid is part of the
model). Differences from pyRadPlan's own discretisation, on purpose: the fluence square is centred (pyRadPlan's
even pixel count puts it 0.25 mm off centre) and the kernel and Gaussian grids are symmetric; no primary-fluence
horn (pyRadPlan's default ``use_custom_primary_photon_fluence=False``).

Written: dose per unit fluence weight (matRad's absolute scale) on the central axis for 1x1 ... 20x20 cm^2 fields
at depths 0-300 mm; lateral profiles (physical mm at depth) of one 5 mm beamlet and of the 10x10 field; derived
figures (dmax, PDD, output factors at 10 cm relative to 10x10, 50 % widths, 80-20 % penumbrae, beamlet FWHM and
plane integral). ``planning.engine.commissioning`` compares RadPath's kernel to these numbers and fits it.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import scipy.io as sio
from scipy.signal import fftconvolve

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "engine" / "data" / "matrad_generic_6mv.json"
RES = 0.5                                     # pyRadPlan's int_conv_resolution, mm
SSD = 1000.0
FIELDS_MM = [10, 20, 30, 40, 50, 70, 100, 150, 200]
PDD_DEPTHS = [0, 2, 5, 8, 10, 12, 15, 18, 20, 25, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300]
BEAMLET_DEPTHS = [15, 50, 100, 150, 200]
FIELD_PROFILE_DEPTHS = [15, 50, 100, 200]


def find_machine_file() -> str:
    import importlib.util

    # benchmarks/planning.py (its venv), loaded under another name: "planning" is RadPath's package
    spec = importlib.util.spec_from_file_location("_planning_benchmark", ROOT / "benchmarks" / "planning.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    VENV, ensure_venv = bench.VENV, bench.ensure_venv

    hits = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "pyRadPlan" / "data" / "machines" /
                         "photons_Generic.mat"))
    if not hits:
        ensure_venv()
        hits = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "pyRadPlan" / "data" / "machines" /
                             "photons_Generic.mat"))
    if not hits:
        raise SystemExit("photons_Generic.mat not found in the pyRadPlan wheel")
    return hits[0]


class SVDMachine:
    """matRad's photon SVD pencil-beam machine data, read from the .mat."""

    def __init__(self, path: str, ssd: float = SSD):
        m = sio.loadmat(path, squeeze_me=True, struct_as_record=False)["machine"]
        d = m.data
        self.sad = float(m.meta.SAD)
        self.betas = np.asarray(d.betas, float)
        self.m = float(d.m)
        self.penumbra = float(d.penumbraFWHMatIso)
        self.pos = np.asarray(d.kernelPos, float)
        ks = np.atleast_1d(d.kernel)
        ssds = np.array([float(k.SSD) for k in ks])
        i = int(np.argmin(np.abs(ssds - ssd)))
        self.kernel_ssd = float(ssds[i])
        self.kernels = np.stack([np.asarray(getattr(ks[i], f"kernel{c + 1}"), float) for c in range(self.betas.size)])

    def depth_components(self, d):
        d = np.asarray(d, float)[None]
        b = self.betas[:, None]
        return b / (b - self.m) * (np.exp(-self.m * d) - np.exp(-b * d))

    def lateral(self, field_mm: float):
        """(x_iso axis, rows (n_components, n_x)): K_c along the central line z = 0 of a square field."""
        n = int(round(field_mm / RES))
        f = np.ones((n, n))
        xf0 = -(n - 1) / 2 * RES
        sig = self.penumbra / np.sqrt(8 * np.log(2))
        gl = int(np.ceil(5 * sig / RES))
        g = RES * np.arange(-gl, gl + 1)
        G = RES ** 2 / (2 * np.pi * sig ** 2) * np.exp(-(g[:, None] ** 2 + g[None, :] ** 2) / (2 * sig ** 2))
        fg = fftconvolve(f, G)
        kl = int(round(self.pos[-1] / RES))
        k = RES * np.arange(-kl, kl + 1)
        r = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
        rows = []
        for c in range(self.kernels.shape[0]):
            K = RES ** 2 * np.interp(r, self.pos, self.kernels[c], right=0.0)
            conv = fftconvolve(fg, K)
            x0 = xf0 - gl * RES - kl * RES
            x = x0 + RES * np.arange(conv.shape[0])
            # the line z = 0: on the grid when n is odd, else cubic interpolation of the 4 middle rows
            j = np.searchsorted(x, 0.0)
            if abs(x[j]) < 1e-9:
                rows.append(conv[j])
            else:
                rows.append((-conv[j - 2] + 9 * conv[j - 1] + 9 * conv[j] - conv[j + 1]) / 16)
        return x, np.stack(rows)

    def dose(self, field_mm, depth, x_phys):
        """Dose per unit weight at physical lateral offsets ``x_phys`` (on the line z = 0) at ``depth``."""
        xi, rows = self.lateral(field_mm)
        x_phys = np.asarray(x_phys, float)
        t = SSD + depth
        r_geo = np.sqrt(x_phys ** 2 + t ** 2)
        rd = depth * r_geo / t                     # path length in water along the ray
        dd = self.depth_components(rd)
        xiso = x_phys * self.sad / t
        k = np.stack([np.interp(np.abs(xiso), xi, rows[c], right=0.0) for c in range(rows.shape[0])])
        return (self.sad / r_geo) ** 2 * np.sum(dd * k, axis=0)

    def cax(self, field_mm, depths):
        xi, rows = self.lateral(field_mm)
        j = int(np.argmin(np.abs(xi)))
        d = np.asarray(depths, float)
        return (self.sad / (SSD + d)) ** 2 * np.sum(self.depth_components(d) * rows[:, j][:, None], axis=0)

    def kernel_integrals(self):
        """Plane integral of each kernel component (per unit fluence, iso-plane mm^2), summed on the 0.5 mm grid as
        the engine convolves it (the r = 0 sample is a pixel's delta peak, which a radial integral would miss)."""
        kl = int(round(self.pos[-1] / RES))
        k = RES * np.arange(-kl, kl + 1)
        r = np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
        return [float(RES ** 2 * np.interp(r, self.pos, kc, right=0.0).sum()) for kc in self.kernels]


def width_at(x, p, level):
    """Position where the (decreasing for x > 0) profile ``p`` crosses ``level``, linear interpolation."""
    right = x >= 0
    xs, ps = x[right], p[right]
    i = np.flatnonzero(ps < level)[0]
    return float(xs[i - 1] + (level - ps[i - 1]) * (xs[i] - xs[i - 1]) / (ps[i] - ps[i - 1]))


def build(path: str) -> dict:
    mc = SVDMachine(path)
    d_fine = np.arange(0.0, 60.0, 0.1)
    ref10 = float(mc.cax(100, [100.0])[0])
    out = {
        "source": "matRad 'Generic' 6 MV photon machine (photons_Generic.mat shipped in pyradplan==0.5.0), SVD pencil"
                  " beam evaluated by benchmarks/matrad_reference.py; water, SSD 100 cm, field sizes at the isocentre",
        "machine": {"betas": mc.betas.tolist(), "m_per_mm": mc.m, "penumbra_fwhm_iso_mm": mc.penumbra,
                    "kernel_ssd_mm": mc.kernel_ssd, "sad_mm": mc.sad,
                    "kernel_plane_integrals": mc.kernel_integrals()},
        "ssd_mm": SSD, "reference": "10x10 cm^2, depth 100 mm, central axis",
        "dose_10x10_d100_per_unit_weight": ref10,
        "fields_mm": FIELDS_MM, "pdd_depths_mm": PDD_DEPTHS,
    }
    cax, dmax, pdd10, of = {}, {}, {}, {}
    for f in FIELDS_MM:
        c = mc.cax(f, PDD_DEPTHS) / ref10
        cf = mc.cax(f, d_fine)
        dm = float(d_fine[np.argmax(cf)])
        cax[str(f)] = [round(float(v), 6) for v in c]
        dmax[str(f)] = dm
        dmax_dose = float(mc.cax(f, [dm])[0])
        pdd10[str(f)] = round(100 * float(mc.cax(f, [100.0])[0]) / dmax_dose, 3)
        of[str(f)] = round(float(mc.cax(f, [100.0])[0]) / ref10, 5)
    out.update({"cax_rel": cax, "dmax_mm": dmax, "pdd10_pct": pdd10, "output_factor_d100": of})
    # profiles
    xb = np.arange(0.0, 80.5, 0.5)
    beamlet = {}
    for d in BEAMLET_DEPTHS:
        p = mc.dose(5, float(d), xb)
        beamlet[str(d)] = {"fwhm_mm": round(2 * width_at(xb, p / p[0], 0.5), 4),
                           "cax_rel": round(float(p[0]) / ref10, 6),
                           "profile_rel": [round(float(v) / ref10, 8) for v in p]}
    out["beamlet_5mm"] = {"x_mm": xb.tolist(), "depths": beamlet}
    xf = np.arange(0.0, 120.5, 0.5)
    fieldp = {}
    for d in FIELD_PROFILE_DEPTHS:
        p = mc.dose(100, float(d), xf)
        q = p / p[0]
        fieldp[str(d)] = {"half_width_50_mm": round(width_at(xf, q, 0.5), 4),
                          "penumbra_80_20_mm": round(width_at(xf, q, 0.2) - width_at(xf, q, 0.8), 4),
                          "profile_rel": [round(float(v) / ref10, 7) for v in p]}
    out["field_10x10"] = {"x_mm": xf.tolist(), "depths": fieldp}
    # plane integral of one 5 mm beamlet at depth (iso-plane area, fluence 1 over 25 mm^2), relative to 10x10 d100
    integ = {}
    for d in BEAMLET_DEPTHS:
        dd = mc.depth_components(np.array([float(d)]))[:, 0]
        integ[str(d)] = round(float(25.0 * np.dot(dd, mc.kernel_integrals()) * (mc.sad / (SSD + d)) ** 2) / ref10, 5)
    out["beamlet_5mm_plane_integral_rel"] = integ
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mat", help="photons_Generic.mat (default: the one in the pyRadPlan wheel under .bench/)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    path = a.mat or find_machine_file()
    data = build(path)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(data, indent=1) + "\n")
    summary = {"dmax_10x10_mm": data["dmax_mm"]["100"], "pdd10_10x10": data["pdd10_pct"]["100"],
               "beamlet_fwhm_mm": {d: v["fwhm_mm"] for d, v in data["beamlet_5mm"]["depths"].items()},
               "penumbra_10x10_mm": {d: v["penumbra_80_20_mm"] for d, v in data["field_10x10"]["depths"].items()},
               "output_factors": data["output_factor_d100"]}
    print(f"wrote {a.out}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
