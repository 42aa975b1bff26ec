"""Gamma index against analytic cases: identical, globally scaled, shifted linear ramp, shifted steep edge."""
import numpy as np
import pytest

from planning.engine.gamma import gamma_index


def _ramp(shift_mm=0.0, g=1.0, n=(41, 5, 1), spacing=(1.0, 2.0, 2.0)):
    x = (np.arange(n[0]) - n[0] // 2) * spacing[0]
    d = 50.0 + g * (x - shift_mm)
    return np.broadcast_to(d[:, None, None], n).copy(), spacing


def test_identical_doses_have_gamma_zero():
    ref, sp = _ramp()
    res = gamma_index(ref, ref, sp)
    assert res.pass_rate_pct == 100.0 and np.nanmax(res.gamma) == 0.0 and res.n_evaluated == ref.size


@pytest.mark.parametrize("scale, expected", [(1.02, 2.0 / 3.0), (1.04, 4.0 / 3.0)])
def test_globally_scaled_uniform_dose(scale, expected):
    """A uniform 10 Gy field evaluated at 10 x scale: every voxel's best match is itself (no gradient), so gamma
    = (scale - 1) x 10 / (3 % of 10) everywhere: 0.667 passes, 1.333 fails."""
    ref = np.full((7, 7, 5), 10.0)
    res = gamma_index(ref, ref * scale, (2.0, 2.0, 2.0), step_mm=0.5)
    core = res.gamma
    assert np.allclose(core, expected, atol=1e-6)
    assert res.pass_rate_pct == (100.0 if expected < 1 else 0.0)


@pytest.mark.parametrize("shift", [1.0, 2.5, 4.0])
def test_shifted_linear_ramp_matches_the_closed_form(shift):
    """D_eval(x) = D_ref(x - s) on a ramp of gradient g: gamma^2 = min_u (g (u - s) / DD)^2 + (u / DTA)^2
    = s^2 / (DTA^2 + (DD / g)^2). With g = 1 Gy/mm, DD = 3 % of 100 Gy = 3 Gy, DTA = 3 mm: gamma = s / sqrt(18)."""
    ref, sp = _ramp()
    ev, _ = _ramp(shift)
    res = gamma_index(ref, ev, sp, norm_gy=100.0, threshold_pct=0.0, step_mm=0.1)
    expected = shift / np.sqrt(18.0)
    inner = res.gamma[10:-10, 2, 0]  # away from the edges, where the search would leave the grid
    assert np.allclose(inner, expected, rtol=5e-3)


def test_shifted_steep_edge_is_a_distance_to_agreement():
    """A sharp field edge (50 Gy/mm) shifted by 2 mm: the dose difference at the edge is huge, but the same dose
    lies 2 mm away, so gamma = 2 / 3 there; a 4 mm shift fails (4 / 3)."""
    x = np.arange(-20.0, 20.5, 0.5)
    prof = 100.0 / (1.0 + np.exp(-x / 0.02 * 0.5))  # ~0 -> 100 Gy within a fraction of a mm at x = 0

    def cube(s):
        p = 100.0 / (1.0 + np.exp(-(x - s) / 0.02 * 0.5))
        return p[:, None, None].copy()

    ref = cube(0.0)
    for s, want, passed in ((2.0, 2.0 / 3.0, True), (4.0, 4.0 / 3.0, False)):
        res = gamma_index(ref, cube(s), (0.5, 1.0, 1.0), threshold_pct=0.0, step_mm=0.01)
        edge = res.gamma[np.argmin(np.abs(x - 0.25)), 0, 0]  # a reference voxel on the step
        assert edge == pytest.approx(want, abs=0.02)
        assert (edge <= 1.0) == passed
    assert prof.max() > 99.0


def test_low_dose_threshold_excludes_voxels():
    ref, sp = _ramp(g=2.0)  # 10 .. 90 Gy along x
    res = gamma_index(ref, ref, sp, threshold_pct=50.0)  # below 45 Gy (50 % of the 90 Gy maximum) not evaluated
    assert res.n_evaluated == int((ref >= 45.0).sum()) and np.isnan(res.gamma[0, 0, 0])
