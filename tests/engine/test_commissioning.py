"""Commissioning of RadPath's 6 MV pencil-beam kernel against matRad's "Generic" 6 MV photon machine.

Reference: ``tests/engine/data/matrad_generic_6mv.json``, written by ``python benchmarks/matrad_reference.py``
from matRad's ``photons_Generic.mat`` (shipped in the pyradplan==0.5.0 wheel; only the file is read, with
scipy): matRad's SVD pencil beam (three kernel components, betas, attenuation, 5 mm penumbra) in water at
SSD 100 cm. Everything relative to each model's own 10x10 cm^2 field at 10 cm depth on the axis (the absolute
dose per unit weight is each engine's calibration; MU calibration: 1 MU = 1 cGy at dmax for 10x10 at SSD 100).

Tolerances (the commissioning criteria of issue #18, "2 % / 1 mm"): doses 2 % of the local reference value,
widths 1 mm; the FWHM of a single 5 mm beamlet, which the previous kernel got 0.6-1.9 mm too wide, 0.1 mm.
"""
from pathlib import Path

import numpy as np
import pytest

from planning.engine import beams, commissioning as cm, pencilbeam as pb

REF = cm.load_reference(Path(__file__).parent / "data" / "matrad_generic_6mv.json")
M = pb.DEFAULT_MACHINE


@pytest.fixture(scope="module")
def fig():
    return cm.figures(M, REF)


@pytest.mark.parametrize("depth", ["15", "50", "100", "150"])
def test_single_5mm_beamlet_fwhm_and_output(fig, depth):
    """A single 5 mm beamlet: FWHM at 1.5, 5, 10, 15 cm (matRad 6.58, 6.82, 7.18, 7.53 mm: nearly the beamlet plus
    the 5 mm penumbra, growing with the divergence) within 0.1 mm, its on-axis dose (share of the 10x10 dose at
    10 cm) within 2 %, its plane integral (the scatter tail) within 2 %."""
    ref = REF["beamlet_5mm"]["depths"][depth]
    got = fig["beamlet_5mm"][depth]
    assert got["fwhm_mm"] == pytest.approx(ref["fwhm_mm"], abs=0.1)
    assert 6.4 < got["fwhm_mm"] < 7.7
    assert got["cax_rel"] == pytest.approx(ref["cax_rel"], rel=0.02)
    assert fig["beamlet_5mm_plane_integral_rel"][depth] == pytest.approx(
        REF["beamlet_5mm_plane_integral_rel"][depth], rel=0.02)


def test_beamlet_profile_within_2_percent_of_its_peak(fig):
    """The whole lateral profile of the 5 mm beamlet (0-80 mm) at every reference depth, within 2 % of its peak."""
    for depth, ref in REF["beamlet_5mm"]["depths"].items():
        pf = np.asarray(ref["profile_rel"])
        pr = fig["beamlet_5mm"][depth]["profile_rel"]
        assert np.max(np.abs(pr - pf)) <= 0.02 * pf[0], depth


@pytest.mark.parametrize("field_mm", [10, 20, 30, 40, 50, 70, 100, 150, 200])
def test_output_factors_1x1_to_20x20(fig, field_mm):
    """Output factors at 10 cm depth relative to 10x10 (matRad 0.653 for 1x1 ... 1.096 for 20x20) within 2 %."""
    k = str(field_mm)
    assert fig["output_factor_d100"][k] == pytest.approx(REF["output_factor_d100"][k], rel=0.02)


@pytest.mark.parametrize("field_mm", [10, 20, 30, 50, 100, 200])
def test_depth_doses(fig, field_mm):
    """Central-axis depth dose from 10 to 250 mm (past the build-up), normalised at 100 mm, within 2 %; dmax
    within 1 mm; for 10x10 PDD(10 cm) within 2 % of matRad's 65.3 %."""
    k = str(field_mm)
    d = np.asarray(REF["pdd_depths_mm"], float)
    sel = (d >= 10) & (d <= 250)
    rp, rf = np.asarray(fig["cax_rel"][k]), np.asarray(REF["cax_rel"][k])
    i100 = int(np.flatnonzero(d == 100)[0])
    assert np.max(np.abs((rp / rp[i100])[sel] / (rf / rf[i100])[sel] - 1)) <= 0.02
    assert fig["dmax_mm"][k] == pytest.approx(REF["dmax_mm"][k], abs=1.0)
    assert fig["pdd10_pct"][k] == pytest.approx(REF["pdd10_pct"][k], rel=0.02)


@pytest.mark.parametrize("depth", ["15", "50", "100", "200"])
def test_10x10_penumbra_and_width(fig, depth):
    """10x10 profiles: 80-20 % penumbra (matRad 5.0 / 5.7 / 6.8 / 9.3 mm at 1.5 / 5 / 10 / 20 cm) and 50 % half
    width within 1 mm; the profile within 2 % of the central dose everywhere (0-120 mm)."""
    ref = REF["field_10x10"]["depths"][depth]
    got = fig["field_10x10"][depth]
    assert got["penumbra_80_20_mm"] == pytest.approx(ref["penumbra_80_20_mm"], abs=1.0)
    assert got["half_width_50_mm"] == pytest.approx(ref["half_width_50_mm"], abs=1.0)
    pf = np.asarray(ref["profile_rel"])
    assert np.max(np.abs(got["profile_rel"] - pf)) <= 0.02 * pf[0]


def test_engine_beamlet_matches_the_commissioned_model():
    """The dose-influence path (ray tracing, BEV projection, threshold 1e-7) gives the commissioned beamlet: a
    single 5 mm beamlet in a water slab at SSD 100 cm, on-axis dose at 50 and 100 mm depth and FWHM at 100 mm as
    ``commissioning.figures`` computes them analytically (1 %: the radiological depth is ray traced through 2 mm
    voxels)."""
    from planning.engine.grid import Geometry, Grid

    grid = Grid.covering((-40, -1, -40), (40, 151, 40), (1.0, 2.0, 1.0))
    X, Y, Z = grid.mesh()
    surface = grid.origin[1] - 0.5 * grid.spacing[1]
    geo = Geometry(grid, np.ones(grid.shape, np.float32))
    geo.add("BODY", np.ones(grid.shape, bool), "body")
    b = beams.square_field_beam((0.0, surface, 0.0), 0.0, 5.0)   # one beamlet, SSD = SAD
    calc = np.abs(Z) <= 0.5
    acc = pb.AccurateDose(geo, [b], voxels=np.flatnonzero(calc.ravel()))
    cube = np.zeros(grid.shape, np.float32).ravel()
    cube[acc.voxels] = acc.dose(np.ones(1))
    cube = cube.reshape(grid.shape)
    x, y, z = grid.axes()
    iz, ix = int(np.argmin(np.abs(z))), int(np.argmin(np.abs(x)))
    r10 = cm.reference_dose(M)
    for depth in (50.0, 100.0):
        iy = int(np.argmin(np.abs(y - surface - depth)))
        d = y[iy] - surface
        expected = float(pb.field_dose(M, d, M.sad + d, 0.0, 0.0, 5.0, 5.0))
        assert cube[ix, iy, iz] == pytest.approx(expected, rel=1e-2)  # voxel ray-traced depth: ~0.5 %
        prof = cube[ix:, iy, iz]
        assert cm.fwhm(x[ix:], prof) == pytest.approx(cm.fwhm(x[ix:], pb.field_dose(M, d, M.sad + d, x[ix:], 0.0,
                                                                                       5.0, 5.0)), abs=0.05)
    # and it is matRad's beamlet: on-axis share of the 10x10 dose at 100 mm within 2 %
    iy = int(np.argmin(np.abs(y - surface - 100.0)))
    assert cube[ix, iy, iz] / r10 == pytest.approx(REF["beamlet_5mm"]["depths"]["100"]["cax_rel"], rel=0.02)


def test_mu_calibration_unchanged_by_the_refit():
    """The refit changes the kernel, not the calibration convention: 1 MU = 1 cGy at dmax on the axis of a 10x10
    field at SSD 100 cm, so MU per unit weight is the 10x10 dmax dose of a unit-weight field in cGy."""
    dm = M.dmax_mm
    d_ref = float(pb.field_dose(M, dm, M.sad + dm, 0.0, 0.0, 100.0, 100.0))
    assert pb.mu_per_unit_weight() == pytest.approx(100.0 * d_ref)
    assert 85.0 < pb.mu_per_unit_weight() < 100.0          # 93.0 (10x10 output 0.93 of the infinite field)
    # a matRad weight delivers 1.14 x the 10x10 reference dose of a RadPath weight: plans move between the
    # engines through this factor (both calibrated on the same field), not as raw weights
    assert cm.matrad_weight_factor(M, REF) == pytest.approx(1.14, abs=0.01)


def test_fit_recovers_the_primary_width_from_beamlet_data():
    """The fit (``commissioning.fit``, which produced DEFAULT_MACHINE) started from a primary sigma of 3.5 mm
    (beamlets ~1 mm too wide, as the old kernel) finds the commissioned 2.13 mm again from the reference alone."""
    from dataclasses import replace

    wide = replace(M, sigma_p0=3.5, sigma_p1=0.008)
    before = cm.compare(wide, REF)["beamlet_fwhm_mm"]["100"]
    fitted, res = cm.fit(REF, wide, fields=("sigma_p0", "sigma_p1"), max_nfev=60)
    assert before > 0.8
    assert fitted.sigma_p0 == pytest.approx(M.sigma_p0, abs=0.05)
    assert max(abs(v) for v in res["beamlet_fwhm_mm"].values()) < 0.05
