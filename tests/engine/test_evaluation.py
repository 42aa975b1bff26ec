"""DVH metrics on analytic dose distributions, clinical goals, radiobiology, leaf sequencing, phantoms."""
import numpy as np
import pytest

from planning.engine import dvh, goals, phantoms, radiobiology as rb, sequencing


def test_dvh_metrics_on_uniform_ramp():
    d = np.linspace(0.0, 100.0, 100001)  # uniformly distributed dose 0..100 Gy
    assert dvh.d_pct(d, 20) == pytest.approx(80.0, abs=1e-3)
    assert dvh.d_pct(d, 95) == pytest.approx(5.0, abs=1e-3)
    assert dvh.v_gy(d, 30) == pytest.approx(70.0, abs=1e-2)
    assert dvh.homogeneity_index(d) == pytest.approx((98.0 - 2.0) / 50.0, rel=1e-4)
    s = dvh.structure_stats(d, 0.001)
    assert s["Dmean"] == pytest.approx(50.0) and s["Dmax"] == 100.0 and s["D2"] == pytest.approx(98.0, abs=1e-3)
    # hottest 0.03 cc of 1e-3 cc voxels = hottest 30 voxels
    assert dvh.d_cc(d, 0.03, 0.001) == pytest.approx(d[-30])
    # voxels larger than the volume: Dmax
    assert dvh.d_cc(d, 0.03, 0.125) == 100.0


def test_cumulative_and_differential_dvh():
    d = np.array([10.0] * 50 + [20.0] * 50)
    h = dvh.cumulative_dvh("S", d, voxel_cc=0.1, bin_gy=1.0)
    assert h.volume_pct[0] == 100.0 and np.all(np.diff(h.volume_pct) <= 0)
    assert np.interp(15.0, h.dose_gy, h.volume_pct) == pytest.approx(50.0)
    assert h.volume_pct[-1] == 0.0 and h.volume_cc == pytest.approx(10.0)
    c, dv = h.differential()
    assert dv.sum() == pytest.approx(100.0)
    assert c[np.argmax(dv)] == pytest.approx(10.5) or c[np.argmax(dv)] == pytest.approx(20.5)


def test_paddick_ci():
    cube = np.zeros((10, 10, 10))
    tgt = np.zeros(cube.shape, bool)
    tgt[2:6, 2:6, 2:6] = True
    body = np.ones(cube.shape, bool)
    cube[tgt] = 60.0
    assert dvh.paddick_ci(cube, tgt, body, 50.0) == pytest.approx(1.0)
    cube[6:10, 2:6, 2:6] = 60.0  # prescription isodose twice the target
    assert dvh.paddick_ci(cube, tgt, body, 50.0) == pytest.approx(0.5)
    cube[2:4] = 0.0  # half the target under-dosed as well
    assert dvh.paddick_ci(cube, tgt, body, 50.0) == pytest.approx(32**2 / (64 * 96))


def test_goals_from_data_and_evaluation():
    cube = np.zeros((4, 4, 4))
    ptv = np.zeros(cube.shape, bool)
    ptv[1:3, 1:3, 1:3] = True
    cord = np.zeros(cube.shape, bool)
    cord[0, 0, :] = True
    cube[ptv] = 50.0
    cube[cord] = [10.0, 20.0, 30.0, 45.0]
    masks = {"PTV": ptv, "Cord": cord, "BODY": np.ones(cube.shape, bool)}
    gs = [goals.Goal.from_dict(d) for d in [
        {"structure": "PTV", "metric": "D95", "comparison": ">=", "value": 50},
        {"structure": "Cord", "metric": "Dmax", "comparison": "<=", "value": 40, "priority": 1},
        {"structure": "Cord", "metric": "V20Gy", "comparison": "<", "value": 80},
        {"structure": "Cord", "metric": "Dmean", "comparison": "<=", "value": 30},
        {"structure": "PTV", "metric": "CI", "comparison": ">=", "value": 0.9},
        {"structure": "PTV", "metric": "HI", "comparison": "<=", "value": 0.1},
        {"structure": "Cord", "metric": "D0.03cc", "comparison": "<=", "value": 50},
    ]]
    rows = goals.evaluate(gs, cube, masks, voxel_cc=1.0, rx=50.0)
    got = {(r["structure"], r["metric"]): (r["value"], r["passed"]) for r in rows}
    assert got[("PTV", "D95")] == (50.0, True)
    assert got[("Cord", "Dmax")] == (45.0, False)
    assert got[("Cord", "V20Gy")] == (75.0, True)
    assert got[("Cord", "Dmean")] == (26.25, True)
    assert got[("PTV", "CI")] == (1.0, True)
    assert got[("PTV", "HI")] == (0.0, True)
    assert got[("Cord", "D0.03cc")] == (45.0, True)
    assert gs[0].to_dict()["metric"] == "D95" and "Gy" in gs[0].describe() and gs[2].unit == "%"
    with pytest.raises(ValueError):
        goals.metric_value("Q7", np.ones(3), 1.0)


def test_radiobiology():
    assert rb.bed(60.0, 2.0, 10.0) == pytest.approx(72.0)
    assert rb.eqd2(60.0, 2.0, 3.0) == pytest.approx(60.0)
    assert rb.eqd2(24.0, 8.0, 2.0) == pytest.approx(60.0)  # 3 x 8 Gy to the cord
    assert np.allclose(rb.eqd2_voxelwise([30.0, 60.0], 30, 3.0), [30 * 4 / 5, 60.0])
    assert rb.lkb_ntcp(np.full(100, 30.8), 30.8, 0.37, 1.0) == pytest.approx(0.5)
    assert rb.pneumonitis_ntcp(np.full(10, 5.0)) < 0.05 < 0.95 < rb.pneumonitis_ntcp(np.full(10, 60.0))
    # n = 1: gEUD is the mean dose
    assert rb.geud([10.0, 30.0], 1.0) == pytest.approx(20.0)
    assert rb.geud([10.0, 30.0], 0.05) == pytest.approx(30.0, rel=0.05)  # small n -> max


def test_leaf_sequencing_reproduces_fluence():
    rng = np.random.default_rng(3)
    from scipy import ndimage
    fmap = np.clip(ndimage.gaussian_filter(rng.random((12, 17)), 1.5) - 0.3, 0, None)
    fmap[:, :2] = 0
    segs, q, delivered = sequencing.sequence_map(fmap, n_levels=10, mu_per_unit=80.0)
    levels = np.rint(fmap / q)
    recon = sum(s.aperture * s.weight for s in segs)
    assert np.allclose(recon, levels * q) and np.allclose(delivered, recon)
    assert np.abs(recon - fmap).max() <= q / 2 + 1e-12
    for s in segs:  # one leaf pair per row: open columns are contiguous
        for row in s.aperture:
            idx = np.flatnonzero(row)
            assert idx.size == 0 or idx[-1] - idx[0] + 1 == idx.size
        assert s.mu == pytest.approx(s.weight * 80.0) and s.mu > 0
    # unidirectional sweep uses the minimum MU: max over rows of the sum of positive level increments
    inc = np.diff(np.concatenate([np.zeros((levels.shape[0], 1)), levels], axis=1), axis=1)
    assert sum(s.weight for s in segs) == pytest.approx(q * np.maximum(inc, 0).sum(axis=1).max())
    assert sequencing.sequence_map(np.zeros((3, 3)))[0] == []
    sm = sequencing.smooth_fluence(fmap, 1.0)
    assert sm.shape == fmap.shape and np.abs(np.diff(sm, axis=1)).max() < np.abs(np.diff(fmap, axis=1)).max()


@pytest.mark.parametrize("key", list(phantoms.BUILDERS))
def test_phantoms(key):
    geo = phantoms.BUILDERS[key](spacing=8.0)
    assert geo.body.n_voxels > 0 and geo.targets
    for s in geo.structures.values():
        assert s.n_voxels > 0, s.name
        assert not (s.mask & ~geo.body.mask).any()
    for t in geo.targets:
        assert t.prescription_gy > 0
    assert set(np.unique(geo.density[~geo.body.mask])) <= {0.0}
    if key in ("mesothelioma", "spine"):
        assert np.isclose(geo.density, 0.25).any() and np.isclose(geo.density, 1.8).any()
    iso = geo.isocentre()
    assert np.all(np.isfinite(iso))


def test_mesothelioma_anatomy():
    geo = phantoms.mesothelioma(spacing=6.0)
    X, Y, Z = geo.grid.mesh()
    ptv = geo.structures["PTV"].mask
    assert X[ptv].mean() < -30  # right hemithorax (patient right = -x)
    assert not (ptv & geo.structures["Lung L (contralateral)"].mask).any()
    assert not (ptv & geo.structures["Cord"].mask).any()
    lung = geo.structures["Lung R (ipsilateral)"].mask
    assert np.allclose(geo.density[lung], 0.25)
