"""Independent dose check: an imported RT Plan recalculated with RadPath's engine on the imported CT and compared
with the imported RT Dose (gamma, DVH differences), through the service, the background job and the API."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from django.core.exceptions import ValidationError

from planning import dicom_io, recalculation, services
from planning.engine import mlc
from planning.engine import pencilbeam as pb
from planning.engine.grid import BODY, OAR, TARGET, Geometry, Grid
from planning.models import DoseCheck, PlanStatus

from .conftest import FAST
from .rtplan_factory import rtplan

DICOMPYLER = Path(__file__).resolve().parents[1] / "data" / "dicompyler"


@pytest.fixture
def computed_plan(cshape_course, users, immediate_tasks):
    plan = services.start_plan(services.create_plan(cshape_course, user=users["physicist"], **FAST), user=users["physicist"])
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    return plan


def _files(plan):
    with zipfile.ZipFile(io.BytesIO(dicom_io.export_plan_zip(plan))) as zf:
        return [(n, zf.read(n)) for n in zf.namelist()]


def test_radpath_plan_exported_and_reimported_recalculates_to_its_own_dose(computed_plan, users):
    """RadPath's RT Plan carries every deliverable segment as control points (jaws + MLCX + cumulative meterset);
    re-imported as an external plan and recalculated from those control points alone, it gives back the dose
    RadPath stored: gamma 3 %/3 mm passes >= 99 % and the PTV's Dmean, D95 and D2 agree within 1 %."""
    files = dict(_files(computed_plan))
    rp = pydicom.dcmread(io.BytesIO(files["RP.dcm"]))
    for beam, summary in zip(rp.BeamSequence, computed_plan.beam_summary):
        kinds = [d.RTBeamLimitingDeviceType for d in beam.BeamLimitingDeviceSequence]
        assert kinds == ["ASYMX", "ASYMY", "MLCX"]
        cps = beam.ControlPointSequence
        assert len(cps) >= 2 * summary["segments"] and float(cps[-1].CumulativeMetersetWeight) == 1.0
        assert [p.RTBeamLimitingDeviceType for p in cps[0].BeamLimitingDevicePositionSequence] == ["ASYMX", "ASYMY", "MLCX"]
    mus = [float(r.BeamMeterset) for r in rp.FractionGroupSequence[0].ReferencedBeamSequence]
    assert mus == pytest.approx([b["mu"] for b in computed_plan.beam_summary], abs=0.01)

    ext = dicom_io.import_files(list(files.items()), course=computed_plan.course, user=users["physicist"])["plan"]
    check = recalculation.start_dose_check(ext, user=users["physicist"])
    assert check.status == "done", check.failure_reason
    assert check.gamma["pass_rate_pct"] >= 99.0
    ptv = next(r for r in check.structures if r["name"] == "PTV")
    original = computed_plan.structure_doses.get(name="PTV").metrics
    for m in ("Dmean", "D95", "D2"):
        assert abs(ptv["difference_pct"][m]) <= 1.0, (m, ptv)
        assert ptv["recalculated"][m] == pytest.approx(original[m], rel=0.01)
    assert check.summary["target"] == "PTV" and abs(check.summary["target_dmean_difference_pct"]) <= 1.0
    assert [b["mu"] for b in check.beams] == pytest.approx(mus, abs=0.01)
    assert {b["delivery"] for b in check.beams} == {"step and shoot"}
    ext.refresh_from_db()
    assert ext.status == PlanStatus.DONE  # the check never changes the plan


def test_a_plan_stored_without_its_segments_exports_an_exact_decomposition(computed_plan, users):
    """A result saved before RadPath kept the segments (no seg_* arrays) is exported by decomposing each beam's
    deliverable fluence exactly (continuous unidirectional sweep): recalculated from those control points it is
    still the stored dose (gamma 3 %/3 mm >= 99 %, PTV Dmean within 1 %)."""
    path = services.media_path(computed_plan.result_file)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if not k.startswith("seg_")}
    services.save_npz(path, arrays)
    files = _files(computed_plan)
    rp = pydicom.dcmread(io.BytesIO(dict(files)["RP.dcm"]))
    assert all(b.BeamLimitingDeviceSequence[2].RTBeamLimitingDeviceType == "MLCX" for b in rp.BeamSequence)
    ext = dicom_io.import_files(files, course=computed_plan.course, user=users["physicist"])["plan"]
    check = recalculation.start_dose_check(ext, user=users["physicist"])
    assert check.status == "done", check.failure_reason
    assert check.gamma["pass_rate_pct"] >= 99.0
    assert abs(next(r for r in check.structures if r["name"] == "PTV")["difference_pct"]["Dmean"]) <= 1.0


def _ctx(course):
    return {"patient": dicom_io.patient_info(course.patient), "study_uid": pydicom.uid.generate_uid(),
            "frame_uid": pydicom.uid.generate_uid(), "ct_series_uid": pydicom.uid.generate_uid(),
            "when": __import__("datetime").datetime(2026, 11, 20, 10, 0)}


def water_box():
    """A 160 x 160 x 80 mm water box on 4 mm voxels, a 40 x 40 x 40 mm PTV at its centre and a 'Cord' beside it."""
    grid = Grid.covering((-80.0, -80.0, -40.0), (80.0, 80.0, 40.0), 4.0)
    X, Y, Z = grid.mesh()
    geo = Geometry(grid, np.ones(grid.shape, np.float32), name="water")
    geo.add("BODY", np.ones(grid.shape, bool), BODY)
    geo.add("PTV", (np.abs(X) <= 20) & (np.abs(Y) <= 20) & (np.abs(Z) <= 20), TARGET, 4.0)
    geo.add("Cord", (np.abs(X - 40) <= 8) & (np.abs(Y - 40) <= 8) & (np.abs(Z) <= 30), OAR)
    return geo


BOUNDS = list(np.arange(-100.0, 100.1, 10.0))  # 20 leaf pairs of 10 mm


def _leaves(lo, hi):
    return [lo] * 20 + [hi] * 20


OTHER_BEAMS = [
    # gantry 0: two step-and-shoot segments (an open 60 x 60 field and a 20 mm boost strip)
    {"name": "AP", "gantry": 0.0, "mu": 90.0, "bounds": BOUNDS,
     "segments": [((-30.0, 30.0), (-30.0, 30.0), _leaves(-30.0, 30.0), 60.0),
                  ((-30.0, 30.0), (-10.0, 10.0), _leaves(-10.0, 10.0), 30.0)]},
    # gantry 90: a sliding window, a 20 mm gap sweeping from -40..-20 to 20..40 mm (20 / 60 of 120 MU everywhere
    # in |u| <= 20 mm); later control points give only the leaves
    {"name": "LAT", "gantry": 90.0, "mu": 120.0, "bounds": BOUNDS,
     "sweep": (_leaves(-40.0, -20.0), _leaves(20.0, 40.0), ((-40.0, 40.0), (-30.0, 30.0)))},
]


def _external_case(course, beams, *, offset=1.0, fractions=2):
    """CT + RS + another system's RT Plan + an RT Dose that is RadPath's own dose of that plan times ``offset``."""
    geo = water_box()
    ctx = _ctx(course)
    files = dicom_io.write_ct_series(geo.density, geo.grid, ctx)
    files.append(dicom_io.write_rtstruct([(n, s.kind, s.mask) for n, s in geo.structures.items()], geo.grid, ctx))
    iso = [0.0, 0.0, 0.0]
    beams = [dict(b, iso=iso) for b in beams]
    name, data = rtplan(ctx, beams, fractions=fractions, prescription_gy=4.0)
    files.append((name, data))
    info = dicom_io.rtplan_beams(pydicom.dcmread(io.BytesIO(data)))
    try:
        deliv = [mlc.delivery(b) for b in info["beams"]]
        bw = [mlc.beam_and_weights(d, fractions) for d in deliv]
        dose = pb.accurate_dose(geo, [b for b, _ in bw], np.concatenate([w for _, w in bw])) * offset
    except mlc.UnsupportedBeam:
        dose = np.full(geo.grid.shape, 2.0)
    files.append(dicom_io.write_rtdose(dose, geo.grid, ctx))
    return files, dose


def test_another_systems_plan_is_checked_and_a_3_percent_difference_is_reported(cshape_course, users, immediate_tasks):
    """The other system's RT Dose is 3 % above what its plan delivers in RadPath's model (e.g. another MU
    calibration): every structure's Dmean is reported 1 / 1.03 - 1 = -2.91 % off, D95 and D2 too, and gamma
    3 %/3 mm still passes (a 3 % global difference is at most 1 gamma) while 1 %/1 mm fails wherever the local
    difference 0.03 D / 1.03 exceeds 1 % of the maximum and no voxel within 1 mm makes up for it (D above about a
    third of the maximum outside steep gradients: the target, most of the fields)."""
    files, dose = _external_case(cshape_course, OTHER_BEAMS, offset=1.03)
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    check = recalculation.start_dose_check(ext, user=users["physicist"])
    assert check.status == "done", check.failure_reason
    assert [r["name"] for r in check.structures] == ["BODY", "PTV", "Cord"]
    for row in check.structures:
        for m in ("Dmean", "D95", "D2"):
            if row["difference_pct"][m] is None:  # below 1 % of the maximum: no percentage
                assert (row["name"], m) == ("BODY", "D95") and row["imported"][m] < 0.01 * float(dose.max())
                continue
            assert row["difference_pct"][m] == pytest.approx(100 * (1 / 1.03 - 1), abs=0.05), (row["name"], m)
    assert check.gamma["pass_rate_pct"] >= 99.0
    assert check.summary["fractions"] == 2 and check.summary["reference_max_gy"] == pytest.approx(float(dose.max()), rel=1e-3)
    assert [b["delivery"] for b in check.beams] == ["step and shoot", "sliding window (leaves move with the beam on)"]
    assert [b["segments"] for b in check.beams] == [2, 1]
    strict = recalculation.start_dose_check(ext, user=users["physicist"], dose_pct=1.0, dta_mm=1.0)
    assert strict.gamma["pass_rate_pct"] < 80.0 and strict.gamma["criteria"].startswith("1 % / 1 mm")


def test_unrepresentable_beams_are_refused_by_name_and_nothing_changes(cshape_course, users, immediate_tasks, media_root):
    beams = [
        dict(OTHER_BEAMS[0], name="HIGH", energy=15),
        dict(OTHER_BEAMS[0], name="WEDGED", wedge="STANDARD"),
        dict(OTHER_BEAMS[0], name="ARC", arc_to=180.0),
        dict(OTHER_BEAMS[0], name="COUCH", couch=270.0),
        dict(OTHER_BEAMS[0], name="FINE"),
    ]
    files, _ = _external_case(cshape_course, beams)
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    before = sorted(p for p in media_root.rglob("*") if p.is_file())
    metrics = dict(ext.metrics)
    check = recalculation.start_dose_check(ext, user=users["physicist"])
    assert check.status == "failed" and check.gamma == {} and check.structures == []
    reason = check.failure_reason
    assert "beam 1 'HIGH': 15 MV photons; RadPath's machine model is 6 MV only." in reason
    assert "beam 2 'WEDGED': has a standard wedge" in reason
    assert "beam 3 'ARC': the gantry turns from 0 to 180 deg" in reason
    assert "beam 4 'COUCH': couch angle -90 deg (non-coplanar)" in reason
    assert "FINE" not in reason
    ext.refresh_from_db()
    assert ext.metrics == metrics and ext.status == PlanStatus.DONE
    assert sorted(p for p in media_root.rglob("*") if p.is_file()) == before


def test_feet_first_plans_are_refused(cshape_course, users, immediate_tasks):
    files, _ = _external_case(cshape_course, OTHER_BEAMS[:1])
    files = [(n, b) if n != "RP.dcm" else (n, _with_position(b, "FFS")) for n, b in files]
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    check = recalculation.start_dose_check(ext, user=users["physicist"])
    assert check.status == "failed" and "Patient position FFS" in check.failure_reason


def _with_position(data, position):
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.PatientSetupSequence[0].PatientPosition = position
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_only_imported_plans_with_an_rt_plan_can_be_checked(client, computed_plan, cshape_course, users):
    with pytest.raises(Exception, match="Only an imported plan"):
        recalculation.start_dose_check(computed_plan, user=users["physicist"])
    client.force_login(users["physicist"])
    r = client.post(f"/api/planning/plans/{computed_plan.pk}/dose-check/", {}, content_type="application/json")
    assert r.status_code == 400 and "Only an imported plan" in r.json()["plan"][0]
    files = [(n, b) for n, b in _files(computed_plan) if n != "RP.dcm"]
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    with pytest.raises(Exception, match="imported without one"):
        recalculation.start_dose_check(ext, user=users["physicist"])
    with pytest.raises(ValidationError, match="dose_pct"):
        recalculation.start_dose_check(ext, user=users["physicist"], dose_pct=-3)
    assert DoseCheck.objects.count() == 0


def test_api_starts_and_reads_the_dose_check(client, cshape_course, users, immediate_tasks):
    files, _ = _external_case(cshape_course, OTHER_BEAMS, offset=1.0)
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    url = f"/api/planning/plans/{ext.pk}/dose-check/"
    client.force_login(users["physicist"])
    assert client.get(url).status_code == 404
    bad = client.post(url, {"dose_pct": "lots"}, content_type="application/json")
    assert bad.status_code == 400 and "dose_pct" in bad.json()
    bad = client.post(url, {"dta_mm": 50}, content_type="application/json")
    assert bad.status_code == 400 and "dta_mm" in bad.json()
    r = client.post(url, {}, content_type="application/json")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["status"] == "done" and body["gamma"]["pass_rate_pct"] >= 99.0
    assert client.get(url).json()["id"] == body["id"]
    ptv = next(s for s in body["structures"] if s["name"] == "PTV")
    assert abs(ptv["difference_pct"]["Dmean"]) <= 0.5
    client.force_login(users["oncologist"])  # may read, may not start
    assert client.get(url).status_code == 200
    assert client.post(url, {}, content_type="application/json").status_code == 403
    assert DoseCheck.objects.count() == 1


def test_dicompylers_breast_plan_is_refused_for_its_10_mv_beams():
    """dicompyler-core's example RT Plan (a breast case, 7 fractions, four sliding-window IMRT beams): RAO and LPO are
    10 MV, which RadPath's 6 MV model cannot compute, so the check is refused naming them; AP and LAO are 6 MV
    sliding windows that parse into deliveries with their MU and control points."""
    ds = pydicom.dcmread(DICOMPYLER / "rtplan.dcm")
    info = dicom_io.rtplan_beams(ds)
    assert info["fractions"] == 7 and info["patient_positions"] == ["HFS"]
    assert [(b["name"], b["energy"], b["meterset"]) for b in info["beams"]] == [
        ("3 RAO", 10.0, 97.0), ("4 AP", 6.0, 87.0), ("5 LAO", 6.0, 89.0), ("6 LPO", 10.0, 94.0)]
    with pytest.raises(ValidationError) as exc:
        recalculation.deliveries(info["beams"])
    msg = " ".join(exc.value.messages)
    assert "beam 1 '3 RAO': 10 MV photons" in msg and "beam 4 '6 LPO': 10 MV photons" in msg
    assert "AP" not in msg and "LAO" not in msg
    for b, n_cp in zip(info["beams"][1:3], (94, 103)):
        d = mlc.delivery(b)
        assert d.dynamic and len(d.apertures) == n_cp
        F, a0, b0 = mlc.fluence_map(d, bixel_mm=2.5)
        # no point can receive more than the beam's MU; the fluence stays inside the jaws' union
        assert 0.2 * d.mu < F.max() <= d.mu + 1e-9
        u = (a0 + np.arange(F.shape[1]) + 0.5) * 2.5
        jx = [a.jaw_x for a in d.apertures if a.jaw_x]
        outside = (u < min(j[0] for j in jx) - 1.25) | (u > max(j[1] for j in jx) + 1.25)
        assert np.all(F[:, outside] == 0)


def test_plan_page_starts_the_check_and_shows_gamma_and_dvh_table(client, cshape_course, users, immediate_tasks):
    files, _ = _external_case(cshape_course, OTHER_BEAMS, offset=1.03)
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    page = f"/planning/plans/{ext.pk}/"
    client.force_login(users["oncologist"])
    html = client.get(page).content.decode()
    assert "Independent dose check" in html and 'id="start-dose-check"' not in html
    client.force_login(users["physicist"])
    assert 'id="start-dose-check"' in client.get(page).content.decode()
    r = client.post(f"{page}dose-check/", {"dose_pct": "three", "dta_mm": "3", "threshold_pct": "10"}, follow=True)
    assert "dose_pct: &#x27;three&#x27; is not a number." in r.content.decode() and DoseCheck.objects.count() == 0
    r = client.post(f"{page}dose-check/", {"dose_pct": "3", "dta_mm": "3", "threshold_pct": "10"}, follow=True)
    html = r.content.decode()
    check = DoseCheck.objects.get()
    assert check.status == "done"
    assert 'id="dose-check-gamma"' in html and f"{check.gamma['pass_rate_pct']:.1f} % of" in html
    ptv = next(row for row in check.structures if row["name"] == "PTV")
    assert f"{ptv['imported']['Dmean']:.2f} / {ptv['recalculated']['Dmean']:.2f}" in html
    assert ptv["difference_pct"]["Dmean"] == pytest.approx(-2.91, abs=0.05) and "(-2.9 %)" in html
    assert client.get(f"{page}dose-check.json").json() == {"id": check.pk, "status": "done", "message": "Done",
                                                           "finished": True}


def test_a_check_whose_worker_died_is_failed_with_a_reason(cshape_course, users, immediate_tasks, settings):
    """A running check without a heartbeat for longer than RADPATH_PLAN_STALE_SECONDS (60 s) is failed when read."""
    from django.utils import timezone

    files, _ = _external_case(cshape_course, OTHER_BEAMS[:1])
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    settings.PLANNING_STALE_SECONDS = 60
    old = timezone.now() - timezone.timedelta(seconds=61)
    lost = DoseCheck.objects.create(plan=ext, status="running", started_at=old, heartbeat_at=old)
    alive = DoseCheck.objects.create(plan=ext, status="running", started_at=old,
                                     heartbeat_at=timezone.now() - timezone.timedelta(seconds=30))
    assert recalculation.latest_check(ext) == alive
    lost.refresh_from_db()
    alive.refresh_from_db()
    assert lost.status == "failed" and lost.failure_reason.startswith("Worker lost") and alive.status == "running"
