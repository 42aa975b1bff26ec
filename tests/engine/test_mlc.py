"""RT Plan control points -> fluence -> dose (planning.engine.mlc): MU calibration, IEC orientation of jaws and
leaves, sliding window against its analytic fluence, collimator rotation, RadPath segments round trip, refusals."""
import numpy as np
import pytest

from planning.engine import beams, mlc, pencilbeam as pb
from planning.engine.grid import Geometry, Grid


def water(width=160.0, depth=120.0, spacing=2.5):
    """Water box whose surface (y = -depth / 2) is the isocentre plane of a gantry-0 beam: SSD = SAD = 100 cm."""
    grid = Grid.covering((-width / 2, -depth / 2 + spacing / 2, -width / 2),
                         (width / 2, depth / 2 - spacing / 2, width / 2), spacing)
    geo = Geometry(grid, np.ones(grid.shape, np.float32))
    geo.add("BODY", np.ones(grid.shape, bool), "body")
    surface = grid.origin[1] - 0.5 * grid.spacing[1]
    return geo, surface


def beam_dict(positions_list, weights=None, *, gantry=0.0, collimator=0.0, iso=(0.0, 0.0, 0.0), mu=100.0,
              bounds=None, energy=6.0, **extra):
    """A parsed RT Plan beam (what dicom_io.rtplan_beams gives) with the given control-point positions."""
    weights = weights if weights is not None else list(np.linspace(0, 1, len(positions_list)))
    cps = []
    for i, (p, w) in enumerate(zip(positions_list, weights)):
        cp = {"weight": w, "positions": p}
        if i == 0:
            cp.update(gantry=gantry, collimator=collimator, couch=0.0, isocentre=list(iso))
        cps.append(cp)
    devices = {k: None for k in positions_list[0]}
    if bounds is not None:
        devices["MLCX"] = list(bounds)
    b = {"number": 1, "name": "T1", "radiation": "PHOTON", "energy": energy, "sad": 1000.0, "meterset": mu,
         "final_weight": 1.0, "devices": devices, "control_points": cps}
    b.update(extra)
    return b


def plane_dose(geo, d, fractions=1, bixel_mm=2.5):
    beam, w = mlc.beam_and_weights(mlc.delivery(d), fractions, bixel_mm=bixel_mm)
    X, Y, Z = geo.grid.mesh()
    calc = np.abs(Z) <= 1.3
    return pb.accurate_dose(geo, [beam], w, calc_mask=calc)[:, :, int(np.argmin(np.abs(geo.grid.axes()[2])))]


def test_100_mu_of_a_10x10_field_give_1_gy_at_dmax_at_ssd_100():
    """RadPath's calibration (1 MU = 1 cGy at dmax on the axis of a 10 x 10 cm field at SSD 100 cm): 100 MU in
    one fraction through the jaws, and the same field as an MLC aperture, give 1.00 Gy at 15 mm depth."""
    geo, surface = water()
    x, y, _ = geo.grid.axes()
    jaws = {"ASYMX": [-50.0, 50.0], "ASYMY": [-50.0, 50.0]}
    bounds = np.arange(-100.0, 100.1, 10.0)
    leaves = np.concatenate([np.full(20, -50.0), np.full(20, 50.0)])
    for positions in (jaws, {"ASYMX": [-80.0, 80.0], "ASYMY": [-50.0, 50.0], "MLCX": list(leaves)}):
        d = beam_dict([positions, positions], iso=(0.0, surface, 0.0), bounds=bounds if "MLCX" in positions else None)
        plane = plane_dose(geo, d)
        ix = int(np.argmin(np.abs(x)))
        depth = y - surface
        cax = plane[ix]
        assert float(np.interp(15.0, depth, cax)) == pytest.approx(1.00, abs=0.01)
        # 4 fractions of the same MU: the course dose is 4 times that
        assert float(plane_dose(geo, d, fractions=4)[ix].max()) == pytest.approx(4 * float(cax.max()), rel=1e-6)


def test_jaws_and_leaves_open_where_iec_says():
    """Gantry 0, HFS: X_b is the patient's left (+x), Y_b superior (+z). ASYMX [10, 50] opens x = 10..50 mm at
    the isocentre plane (50 % points at the field edges); a leaf pair's bank 1 is its -X side. At gantry 90 X_b
    points posterior (+y)."""
    geo, surface = water()
    x, y, _ = geo.grid.axes()
    iy = int(np.argmin(np.abs(y - (surface + 2.0))))  # 2 mm deep: close to the isocentre plane
    d = beam_dict([{"ASYMX": [10.0, 50.0], "ASYMY": [-40.0, 40.0]}] * 2, iso=(0.0, surface, 0.0))
    prof = plane_dose(geo, d)[:, iy]
    half = 0.5 * prof.max()
    inside = x[prof >= half]
    assert inside.min() == pytest.approx(10.0, abs=2.6) and inside.max() == pytest.approx(50.0, abs=2.6)
    # the same opening made by leaves: bank 1 at +10 mm, bank 2 at +50 mm, jaws wide open
    bounds = np.arange(-100.0, 100.1, 10.0)
    leaves = np.concatenate([np.full(20, 10.0), np.full(20, 50.0)])
    d2 = beam_dict([{"ASYMX": [-90.0, 90.0], "ASYMY": [-40.0, 40.0], "MLCX": list(leaves)}] * 2,
                   iso=(0.0, surface, 0.0), bounds=bounds)
    assert np.allclose(plane_dose(geo, d2)[:, iy], prof, atol=1e-6)
    # gantry 90: the beam axis is along -x, X_b along +y
    b = mlc.delivery(beam_dict([{"ASYMX": [10.0, 50.0], "ASYMY": [-40.0, 40.0]}] * 2, gantry=90.0))
    beam, _ = mlc.beam_and_weights(b, 1)
    assert np.allclose(beam.u_axis, [0, 1, 0], atol=1e-12) and np.allclose(beam.direction, [-1, 0, 0], atol=1e-12)


def test_sliding_window_gives_its_analytic_fluence():
    """A sliding window: every leaf pair's gap of g = 20 mm moves from u = -60..-40 to 40..60 mm in 100 MU. A point
    with -40 <= u <= 40 sees the gap for g / D of the meterset (D = 100 mm of travel): 20 MU, uniformly; the
    entry and exit ramps fall linearly to 0 at u = -60 and 60."""
    bounds = np.arange(-50.0, 50.1, 10.0)
    start = np.concatenate([np.full(10, -60.0), np.full(10, -40.0)])
    end = np.concatenate([np.full(10, 40.0), np.full(10, 60.0)])
    cps = [{"ASYMX": [-60.0, 60.0], "ASYMY": [-50.0, 50.0], "MLCX": list(start)}, {"MLCX": list(end)}]
    d = mlc.delivery(beam_dict(cps, bounds=bounds))
    assert d.dynamic and d.n_segments == 1
    F, a0, b0 = mlc.fluence_map(d, bixel_mm=2.5, step_mm=0.5)
    u = (a0 + np.arange(F.shape[1]) + 0.5) * 2.5
    row = F[F.shape[0] // 2]
    assert np.allclose(row[np.abs(u) <= 38.75], 20.0, rtol=1e-3)
    ramp = (u > -60) & (u < -40)
    assert np.allclose(row[ramp], 20.0 * (u[ramp] + 60.0) / 20.0, atol=0.05)
    assert np.all(row[np.abs(u) >= 60.0] == 0.0)
    # MU through the field: 100 MU x gap area / bixel area, summed
    assert F.sum() * 2.5 ** 2 == pytest.approx(100.0 * 20.0 * 100.0, rel=1e-9)


def test_collimator_90_turns_the_field_with_it():
    """IEC collimator rotation is counter-clockwise seen from the source: at collimator 90 X_b lies along +v (the
    gantry-0 frame's Y_g) and Y_b along -u. A field ASYMX [10, 50] x ASYMY [-30, -10] there is the collimator-0 field
    ASYMX [10, 30] x ASYMY [10, 50]; the doses agree."""
    geo, surface = water(width=140.0, depth=80.0)
    X, Y, Z = geo.grid.mesh()
    calc = (Y - surface) <= 40.0
    iso = (0.0, surface, 0.0)
    doses = []
    for coll, jaws in ((90.0, {"ASYMX": [10.0, 50.0], "ASYMY": [-30.0, -10.0]}),
                       (0.0, {"ASYMX": [10.0, 30.0], "ASYMY": [10.0, 50.0]})):
        beam, w = mlc.beam_and_weights(mlc.delivery(beam_dict([jaws, jaws], collimator=coll, iso=iso)), 1)
        doses.append(pb.accurate_dose(geo, [beam], w, calc_mask=calc))
    assert float(doses[1].max()) > 0.5
    assert np.max(np.abs(doses[0] - doses[1])) <= 2e-3 * float(doses[1].max())


def test_radpath_segments_round_trip_through_control_points():
    """RadPath segments (bool apertures on 5 mm beamlets, a row with two runs) become step-and-shoot control points
    and come back as exactly the fluence sum_k MU_k aperture_k on the same beamlet lattice."""
    rng = np.random.default_rng(7)
    aps = [rng.random((6, 9)) < 0.6 for _ in range(4)]
    aps.append(np.zeros((6, 9), bool))
    aps[-1][2, [1, 2, 6]] = True  # two runs in one row
    mus = [12.0, 7.5, 3.25, 20.0, 5.0]
    bounds, segs = mlc.segments_to_control_points(aps, mus, 5.0, ia_min=-4, ib_min=-3)
    cps = []
    cum = 0.0
    total = sum(s[3] for s in segs)
    for jx, jy, leaves, mu in segs:
        p = {"ASYMX": list(jx), "ASYMY": list(jy), "MLCX": list(leaves)}
        cps.append((p, cum / total))
        cum += mu
        cps.append((p, cum / total))
    d = mlc.delivery(beam_dict([c[0] for c in cps], [c[1] for c in cps], mu=total, bounds=bounds))
    assert not d.dynamic
    F, a0, b0 = mlc.fluence_map(d, bixel_mm=5.0)
    want = sum(m * a for m, a in zip(mus, aps))
    # the lattice of fluence_map has edges on multiples of 5 mm; RadPath's beamlets (offset 0) on odd multiples of
    # 2.5 mm, so compare on 2.5 mm bixels, each RadPath beamlet = 2 x 2 of them
    F, a0, b0 = mlc.fluence_map(d, bixel_mm=2.5)
    full = np.kron(want, np.ones((2, 2)))
    i0, j0 = (-4 * 2 - 1) - a0, (-3 * 2 - 1) - b0
    assert np.allclose(F[j0:j0 + full.shape[0], i0:i0 + full.shape[1]], full, atol=1e-9)
    assert F.sum() == pytest.approx(full.sum(), rel=1e-12)


def test_sweep_segments_reproduce_a_real_valued_map():
    f = np.array([[0.0, 1.3, 2.7, 0.4], [2.0, 0.0, 1.1, 1.1], [0.5, 0.5, 0.5, 3.0]])
    segs = mlc.sweep_segments(f)
    assert np.allclose(sum(w * a for a, w in segs), f, atol=1e-12)
    for a, _ in segs:  # every row of every segment is one leaf opening
        for r in a:
            assert np.count_nonzero(np.diff(np.concatenate([[0], r.astype(int), [0]])) == 1) <= 1


@pytest.mark.parametrize("change,message", [
    (dict(energy=10.0), "beam 1 'T1': 10 MV photons; RadPath's machine model is 6 MV only"),
    (dict(radiation="ELECTRON"), "beam 1 'T1': electron beams cannot be recalculated"),
    (dict(wedges=1, wedge_type="DYNAMIC"), "beam 1 'T1': has a dynamic wedge"),
    (dict(boli=1), "has a bolus"),
    (dict(sad=800.0), "source-axis distance 800 mm"),
    (dict(meterset=0), "no BeamMeterset"),
])
def test_unsupported_beams_are_refused_by_name(change, message):
    d = beam_dict([{"ASYMX": [-50.0, 50.0], "ASYMY": [-50.0, 50.0]}] * 2, **change)
    with pytest.raises(mlc.UnsupportedBeam, match=message):
        mlc.delivery(d)


def test_arcs_couch_rotation_and_mlcy_are_refused():
    jaws = {"ASYMX": [-50.0, 50.0], "ASYMY": [-50.0, 50.0]}
    arc = beam_dict([jaws, jaws])
    arc["control_points"][1]["gantry"] = 30.0
    with pytest.raises(mlc.UnsupportedBeam, match="gantry turns from 0 to 30 deg"):
        mlc.delivery(arc)
    couch = beam_dict([jaws, jaws])
    couch["control_points"][0]["couch"] = 350.0
    with pytest.raises(mlc.UnsupportedBeam, match="couch angle -10 deg"):
        mlc.delivery(couch)
    y = beam_dict([{**jaws, "MLCY": [0.0] * 4}, jaws])
    y["devices"]["MLCY"] = [-10.0, 0.0, 10.0]
    with pytest.raises(mlc.UnsupportedBeam, match="MLCY"):
        mlc.delivery(y)


def test_malformed_control_points_are_refused_with_the_control_point_named():
    bounds = np.arange(-100.0, 100.1, 10.0)
    short = beam_dict([{"ASYMX": [-50.0, 50.0], "ASYMY": [-50.0, 50.0], "MLCX": [0.0] * 38}] * 2, bounds=bounds)
    with pytest.raises(mlc.UnsupportedBeam, match="control point 0: 38 MLCX positions for 20 leaf pairs"):
        mlc.delivery(short)
    crossed = beam_dict([{"ASYMX": [-50.0, 50.0], "ASYMY": [-50.0, 50.0],
                          "MLCX": [5.0] * 20 + [-5.0] * 20}] * 2, bounds=bounds)
    with pytest.raises(mlc.UnsupportedBeam, match="leaf pair 1 overlaps"):
        mlc.delivery(crossed)
    back = beam_dict([{"ASYMX": [-50.0, 50.0], "ASYMY": [-50.0, 50.0]}] * 3, weights=[0.0, 0.7, 0.5])
    with pytest.raises(mlc.UnsupportedBeam, match="decreases at control point 2"):
        mlc.delivery(back)
