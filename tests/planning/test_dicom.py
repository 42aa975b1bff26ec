"""DICOM RT: export -> import round trip with matching DVHs, DVH from an imported RT Dose against an analytic case,
planning on imported geometry, and refusal of garbage or inconsistent files (nothing saved)."""

import io
import zipfile

import numpy as np
import pydicom
import pytest
from django.core.exceptions import ValidationError

from planning import dicom_io, services
from planning.engine.grid import BODY, TARGET, Geometry, Grid
from planning.models import ImportedGeometry, Plan, PlanStatus

from .conftest import FAST


@pytest.fixture
def computed_plan(cshape_course, users, immediate_tasks):
    plan = services.start_plan(services.create_plan(cshape_course, user=users["physicist"], **FAST), user=users["physicist"])
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    return plan


def _files(plan):
    with zipfile.ZipFile(io.BytesIO(dicom_io.export_plan_zip(plan))) as zf:
        return [(n, zf.read(n)) for n in zf.namelist()]


def test_export_is_readable_dicom(computed_plan):
    files = dict(_files(computed_plan))
    assert {"RS.dcm", "RD.dcm", "RP.dcm"} <= set(files) and sum(n.startswith("CT.") for n in files) == 16
    rd = pydicom.dcmread(io.BytesIO(files["RD.dcm"]))
    dose, _ = services.load_dose(computed_plan)
    assert rd.Modality == "RTDOSE" and rd.DoseUnits == "GY"
    assert rd.pixel_array.shape == (16, 31, 41)
    assert np.allclose(np.transpose(rd.pixel_array * float(rd.DoseGridScaling), (2, 1, 0)), dose, atol=1e-5)
    rp = pydicom.dcmread(io.BytesIO(files["RP.dcm"]))
    assert [float(b.ControlPointSequence[0].GantryAngle) for b in rp.BeamSequence] == computed_plan.gantry_angles
    mus = [float(r.BeamMeterset) for r in rp.FractionGroupSequence[0].ReferencedBeamSequence]
    assert mus == pytest.approx([b["mu"] for b in computed_plan.beam_summary], abs=0.01)
    assert rp.FractionGroupSequence[0].NumberOfFractionsPlanned == 25
    rs = pydicom.dcmread(io.BytesIO(files["RS.dcm"]))
    assert [r.ROIName for r in rs.StructureSetROISequence] == ["BODY", "PTV", "Core"]
    assert rs.RTROIObservationsSequence[1].RTROIInterpretedType == "PTV"
    assert rs.PatientID == computed_plan.course.patient.mrn


def test_round_trip_same_dvh(computed_plan, users):
    result = dicom_io.import_files(_files(computed_plan), course=computed_plan.course, user=users["physicist"], name="Round trip")
    ext = result["plan"]
    assert ext.method == "external" and ext.status == PlanStatus.DONE and ext.version == 2
    assert ext.imported_geometry.structure_names == ["BODY", "PTV", "Core"]
    assert [b["mu"] for b in ext.beam_summary] == pytest.approx([b["mu"] for b in computed_plan.beam_summary], abs=0.01)
    for original in computed_plan.structure_doses.all():
        imported = ext.structure_doses.get(name=original.name)
        assert imported.volume_cc == pytest.approx(original.volume_cc, rel=0.01)
        for metric in ("Dmean", "D95", "D50", "D2", "Dmax"):
            assert imported.metrics[metric] == pytest.approx(original.metrics[metric], rel=0.01, abs=0.01), (original.name, metric)
        # the whole cumulative DVH agrees within 1 % volume
        v = np.interp(original.dvh_dose_gy, imported.dvh_dose_gy, imported.dvh_volume_pct)
        assert np.max(np.abs(v - np.asarray(original.dvh_volume_pct))) <= 1.0
    assert [g["passed"] for g in ext.goal_results] == [g["passed"] for g in computed_plan.goal_results]
    # the external plan can be reviewed and approved like any other
    services.approve_plan(ext, user=users["oncologist"])


def test_dvh_from_imported_rt_dose_matches_analytic_case(cshape_course, users):
    """A 41 x 41 x 5 mm box (1 mm voxels) in a dose rising linearly along x: D = 1.5 Gy/mm (x + 20 mm), on a
    coarser 4 mm dose grid. Trilinear resampling of a linear dose is exact, so the DVH is the analytic one:
    voxel doses are uniform on 0, 1.5, ..., 60 Gy: Dmean = 30 Gy, D50 = 30 Gy, V(>= 1.5 (k + 1/2) Gy) = (40 - k) / 41."""
    grid = Grid((61, 61, 5), (1.0, 1.0, 2.0), (-30.0, -30.0, -4.0))
    X, Y, Z = grid.mesh()
    geo = Geometry(grid, np.ones(grid.shape, np.float32), name="box")
    geo.add("BODY", np.ones(grid.shape, bool), BODY)
    geo.add("Box", (np.abs(X) <= 20) & (np.abs(Y) <= 20), TARGET)
    ctx = {"patient": dicom_io.patient_info(cshape_course.patient), "study_uid": pydicom.uid.generate_uid(),
           "frame_uid": pydicom.uid.generate_uid(), "ct_series_uid": pydicom.uid.generate_uid(),
           "when": __import__("datetime").datetime(2026, 11, 20, 10, 0)}
    files = dicom_io.write_ct_series(geo.density, grid, ctx)
    files.append(dicom_io.write_rtstruct([(n, s.kind, s.mask) for n, s in geo.structures.items()], grid, ctx))
    dgrid = Grid((17, 17, 5), (4.0, 4.0, 2.0), (-32.0, -32.0, -4.0))
    DX, _, _ = dgrid.mesh()
    files.append(dicom_io.write_rtdose(np.clip(1.5 * (DX + 20.0), 0, None), dgrid, ctx))
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"], grid_mm=0)["plan"]  # CT pixels
    box = ext.structure_doses.get(name="Box")
    assert box.volume_cc == pytest.approx(41 * 41 * 5 * 2 / 1000)
    assert box.metrics["Dmean"] == pytest.approx(30.0, rel=1e-4)
    assert box.metrics["D50"] == pytest.approx(30.0, rel=1e-4)
    assert box.metrics["Dmin"] == pytest.approx(0.0, abs=1e-4) and box.metrics["Dmax"] == pytest.approx(60.0, rel=1e-4)
    for k in (4, 9, 19, 29, 38):  # between voxel dose levels 1.5 k and 1.5 (k + 1): 40 - k of 41 columns get more
        d = 1.5 * (k + 0.5)
        measured = np.interp(d, box.dvh_dose_gy, box.dvh_volume_pct)
        assert measured == pytest.approx(100.0 * (40 - k) / 41, abs=0.05), d


def test_plan_on_imported_geometry(computed_plan, users, immediate_tasks):
    files = [(n, b) for n, b in _files(computed_plan) if n.startswith(("CT", "RS"))]
    result = dicom_io.import_files(files, course=computed_plan.course, user=users["physicist"], name="CT only")
    assert result["plan"] is None
    geom = result["geometry"]
    plan = services.create_plan(computed_plan.course, user=users["physicist"], geometry_source="imported",
                                imported_geometry=geom, beamlet_mm=10.0, max_iterations=30)
    assert {g["structure"] for g in plan.goals} == {"PTV", "Core"}
    plan = services.start_plan(plan, user=users["physicist"])
    assert plan.status == PlanStatus.DONE, plan.failure_reason
    assert plan.structure_doses.get(name="PTV").metrics["D95"] == pytest.approx(50.0, abs=0.05)


def _nothing_saved(before_files):
    assert ImportedGeometry.objects.count() == 0 and Plan.objects.filter(method="external").count() == 0
    return True


def _mutate(files, name, fn):
    out = []
    for n, b in files:
        if n == name:
            ds = pydicom.dcmread(io.BytesIO(b))
            fn(ds)
            buf = io.BytesIO()
            ds.save_as(buf)
            b = buf.getvalue()
        out.append((n, b))
    return out


def test_malformed_dicom_is_refused_and_nothing_changes(computed_plan, users, media_root):
    good = _files(computed_plan)
    course, user = computed_plan.course, users["physicist"]
    cases = {
        "garbage": ([("junk.dcm", b"this is not dicom at all")], "not a readable DICOM"),
        "truncated": ([(n, b[: len(b) // 3]) if n == "RS.dcm" else (n, b) for n, b in good], "RS.dcm"),
        "no structure set": ([(n, b) for n, b in good if n != "RS.dcm"], "exactly one RT Structure Set"),
        "no CT": ([(n, b) for n, b in good if not n.startswith("CT")], "No CT images"),
        "missing slice": ([(n, b) for n, b in good if n != "CT.0005.dcm"], "1 CT slice(s) missing: a gap of 16.00 mm"),
        "uneven slices": (_mutate(good, "CT.0016.dcm", lambda ds: setattr(ds, "ImagePositionPatient",
                                                                           [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + 3.0])),
                          "not equally spaced (spacing from 8.00 to 11.00 mm"),
        "one slice": ([(n, b) for n, b in good if not n.startswith("CT") or n == "CT.0008.dcm"], "only 1 slice"),
        "contour beyond the CT": (_mutate(good, "RS.dcm", lambda ds: setattr(
            ds.ROIContourSequence[1].ContourSequence[0], "ContourData",
            [v + 200.0 if i % 3 == 2 else v for i, v in enumerate(ds.ROIContourSequence[1].ContourSequence[0].ContourData)])),
            "lies outside the CT's slices"),
        "other frame": (_mutate(good, "RS.dcm", lambda ds: setattr(ds.ReferencedFrameOfReferenceSequence[0], "FrameOfReferenceUID", "1.2.3")),
                        "another frame of reference"),
        "dose frame": (_mutate(good, "RD.dcm", lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3")), "RT Dose has another frame"),
        "off-slice contour": (_mutate(good, "RS.dcm", lambda ds: setattr(
            ds.ROIContourSequence[1].ContourSequence[0], "ContourData",
            [v + 3.0 if i % 3 == 2 else v for i, v in enumerate(ds.ROIContourSequence[1].ContourSequence[0].ContourData)])),
            "not on a CT slice"),
        "bad points": (_mutate(good, "RS.dcm", lambda ds: setattr(ds.ROIContourSequence[1].ContourSequence[0], "ContourData", [1.0, 2.0, 3.0, 4.0])),
                       "malformed point list"),
        "dose shape": (_mutate(good, "RD.dcm", lambda ds: setattr(ds, "NumberOfFrames", 3)), "RD.dcm"),
        "other patient": (_mutate(good, "RP.dcm", lambda ds: setattr(ds, "PatientID", "SOMEONE-ELSE")), "differs from the CT"),
        "oblique CT": (_mutate(good, "CT.0003.dcm", lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.8, 0.6])), "axial"),
        "unsupported modality": (_mutate(good, "RP.dcm", lambda ds: setattr(ds, "Modality", "MR")), "not supported"),
    }
    for label, (files, expected) in cases.items():
        with pytest.raises(ValidationError) as e:
            try:
                dicom_io.import_files(files, course=course, user=user)
            except ValidationError:
                raise
            else:
                pytest.fail(f"{label}: accepted")
        assert expected in str(e.value), (label, str(e.value))
        assert "files" in e.value.error_dict
        _nothing_saved(None)
    imports = media_root / "imports"
    assert not imports.exists() or not any(imports.iterdir())
    # a wrong patient altogether (all files consistent, but not this course's patient)
    other = [(n, b) for n, b in good]
    for name, _ in good:
        other = _mutate(other, name, lambda ds: setattr(ds, "PatientID", "MRN9999"))
    with pytest.raises(ValidationError) as e:
        dicom_io.import_files(other, course=course, user=user)
    assert "not MRN0001" in str(e.value)
    assert ImportedGeometry.objects.count() == 0


def _ctx(course):
    return {"patient": dicom_io.patient_info(course.patient), "study_uid": pydicom.uid.generate_uid(),
            "frame_uid": pydicom.uid.generate_uid(), "ct_series_uid": pydicom.uid.generate_uid(),
            "when": __import__("datetime").datetime(2026, 11, 20, 10, 0)}


def _box_case(course, *, dose_fn, with_plan=None, extra_targets=()):
    """A water box (61 x 61 x 5 voxels of 1 x 1 x 2 mm) with a 41 x 41 mm PTV and optional other targets first."""
    grid = Grid((61, 61, 5), (1.0, 1.0, 2.0), (-30.0, -30.0, -4.0))
    X, Y, Z = grid.mesh()
    structures = [("BODY", BODY, np.ones(grid.shape, bool))]
    structures += [(n, TARGET, m(X, Y)) for n, m in extra_targets]
    structures.append(("PTV", TARGET, (np.abs(X) <= 20) & (np.abs(Y) <= 20)))
    ctx = _ctx(course)
    files = dicom_io.write_ct_series(np.ones(grid.shape, np.float32), grid, ctx)
    files.append(dicom_io.write_rtstruct(structures, grid, ctx))
    if with_plan:
        files.append(dicom_io.write_rtplan([{"gantry_deg": 0.0, "mu": 100.0}], ctx, **with_plan))
    files.append(dicom_io.write_rtdose(dose_fn(X, Y), grid, ctx))
    return files


def test_rt_plan_prescription_and_fractions_are_kept_and_indices_are_on_the_ptv(cshape_course, users):
    """The RT Plan prescribes 11.31 Gy in 7 fractions (the course 50 Gy in 25): the plan keeps 11.31 Gy / 7 fx and
    says so. The dose is exactly 11.31 Gy inside the 41 x 41 mm PTV and 0 outside, so on the PTV the Paddick CI is
    1 and HI 0; a CTV listed first (a 10 x 10 mm square, also uniform) must not be taken as the target."""
    files = _box_case(cshape_course, dose_fn=lambda X, Y: np.where((np.abs(X) <= 20) & (np.abs(Y) <= 20), 11.31, 0.0),
                      with_plan={"fractions": 7, "prescription_gy": 11.31},
                      extra_targets=[("CTV", lambda X, Y: (np.abs(X) <= 5) & (np.abs(Y) <= 5))])
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    assert ext.prescription_gy == pytest.approx(11.31) and ext.fractions == 7
    assert ext.metrics["target"] == "PTV"
    assert ext.metrics["CI"] == pytest.approx(1.0) and ext.metrics["HI"] == pytest.approx(0.0, abs=1e-4)
    note = ext.metrics["prescription_note"]
    assert "11.31 Gy in 7 fractions" in note and "50 Gy in 25 fractions" in note
    assert cshape_course.fractions_planned == 25  # the course itself is unchanged


def test_target_without_dose_has_undefined_hi_not_a_500(cshape_course, users, media_root):
    """The dose (a ramp 1 Gy/mm for x > 25 mm) misses the PTV (|x| <= 20 mm): D50 = 0 so the ICRU HI is not
    defined, and no voxel reaches the course's 50 Gy, so the Paddick CI is not defined either; both say why."""
    files = _box_case(cshape_course, dose_fn=lambda X, Y: np.clip(X - 25.0, 0, None))
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    assert ext.metrics["HI"] is None and "D50 is 0 Gy" in ext.metrics["HI_reason"]
    assert ext.metrics["CI"] is None and "no voxel receives the prescription dose 50 Gy" in ext.metrics["CI_reason"]
    assert ext.structure_doses.get(name="PTV").metrics["Dmax"] == 0.0


def test_failure_after_the_dose_is_written_leaves_no_file(cshape_course, users, media_root, monkeypatch):
    files = _box_case(cshape_course, dose_fn=lambda X, Y: np.full(X.shape, 2.0))
    real = services.store_result

    def store_then_fail(plan, *args, **kwargs):
        real(plan, *args, **kwargs)
        assert (media_root / plan.result_file).exists()
        raise OSError("disk full")

    monkeypatch.setattr(services, "store_result", store_then_fail)
    with pytest.raises(OSError):
        dicom_io.import_files(files, course=cshape_course, user=users["physicist"])
    assert ImportedGeometry.objects.count() == 0 and Plan.objects.count() == 0
    assert [p for p in media_root.rglob("*") if p.is_file()] == []


def test_patient_mismatch_is_found_from_the_headers_before_any_pixel(cshape_course, users, monkeypatch):
    files = _box_case(cshape_course, dose_fn=lambda X, Y: np.full(X.shape, 2.0))
    other = []
    for n, b in files:
        ds = pydicom.dcmread(io.BytesIO(b))
        ds.PatientID = "MRN9999"
        buf = io.BytesIO()
        ds.save_as(buf)
        other.append((n, buf.getvalue()))
    decoded = []
    monkeypatch.setattr(dicom_io, "read_ct_density", lambda *a, **k: decoded.append(1))
    with pytest.raises(ValidationError, match="patient ID MRN9999, not MRN0001"):
        dicom_io.import_files(other, course=cshape_course, user=users["physicist"])
    assert decoded == []


def test_fill_polygons_matches_matplotlib_even_odd():
    """The scanline fill agrees voxel for voxel with matplotlib's point-in-polygon on a concave polygon with a
    hole (a polygon inside another) on an anisotropic grid."""
    from matplotlib.path import Path as MplPath

    xs, ys = np.arange(-40.0, 40.0, 0.97), np.arange(-30.0, 30.0, 1.3)
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    star = np.column_stack([(25 + 8 * np.cos(5 * t)) * np.cos(t), (20 + 6 * np.cos(5 * t)) * np.sin(t)])
    hole = np.column_stack([5 * np.cos(t) + 3.3, 4 * np.sin(t) - 1.1])
    got = dicom_io.fill_polygons([star, hole], xs, ys)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    pts = np.column_stack([X.ravel(), Y.ravel()])
    want = MplPath(star).contains_points(pts) ^ MplPath(hole).contains_points(pts)
    assert got.sum() > 1000 and np.array_equal(got, want.reshape(X.shape))


def _tall_series(course, n_slices):
    """A small CT of ``n_slices`` 12 x 10 slices (2.5 mm apart) + a structure set + a uniform 2 Gy dose."""
    grid = Grid((12, 10, n_slices), (2.0, 2.0, 2.5), (-11.0, -9.0, 0.0))
    X, Y, Z = grid.mesh()
    ctx = _ctx(course)
    files = dicom_io.write_ct_series(np.ones(grid.shape, np.float32), grid, ctx)
    ptv = (np.abs(X) <= 5) & (np.abs(Y) <= 5) & (Z >= 10) & (Z <= 2.5 * n_slices - 10)
    files.append(dicom_io.write_rtstruct([("BODY", BODY, np.ones(grid.shape, bool)), ("PTV", TARGET, ptv)], grid, ctx))
    files.append(dicom_io.write_rtdose(np.full(grid.shape, 2.0), grid, ctx))
    return files, grid, int(ptv.sum())


@pytest.mark.urls("tests.planning.urls")
def test_api_takes_a_series_of_many_separate_files_and_refuses_too_many_as_json(client, cshape_course, users, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import PASSWORD

    files, grid, n_ptv = _tall_series(cshape_course, 160)  # 162 files: more than Django's default limit of 100
    client.login(username=users["physicist"].username, password=PASSWORD)
    uploads = [SimpleUploadedFile(n, b, "application/dicom") for n, b in files]
    r = client.post("/api/planning/dicom-imports/", {"course": cshape_course.pk, "files": uploads})
    assert r.status_code == 201, r.content
    geom = ImportedGeometry.objects.get()
    assert geom.grid["shape"] == [12, 10, 160]
    assert {s["name"]: s["n_voxels"] for s in geom.structures}["PTV"] == n_ptv
    settings.RADPATH_DICOM_MAX_FILES = 50
    r = client.post("/api/planning/dicom-imports/", {"course": cshape_course.pk,
                                                      "files": [SimpleUploadedFile(n, b) for n, b in files]})
    assert r.status_code == 400 and r["Content-Type"].startswith("application/json")
    assert "More than 50 files" in r.json()["files"][0]
    assert ImportedGeometry.objects.count() == 1
    # the page answers the same limit with its form message, not an HTML 400
    r = client.post(f"/planning/courses/{cshape_course.pk}/import/", {"files": [SimpleUploadedFile(n, b) for n, b in files]})
    assert r.status_code == 200 and b"More than 50 files" in r.content


@pytest.mark.urls("tests.planning.urls")
def test_api_imports_a_server_folder_inside_the_configured_root_only(client, cshape_course, users, settings, tmp_path):
    from tests.conftest import PASSWORD

    root = tmp_path / "dicom-drop"
    series = root / "MRN0001" / "CT1"
    series.mkdir(parents=True)
    files, grid, n_ptv = _tall_series(cshape_course, 12)
    for n, b in files:
        (series / n).write_bytes(b)
    client.login(username=users["physicist"].username, password=PASSWORD)
    body = {"course": cshape_course.pk, "folder": "MRN0001/CT1"}
    r = client.post("/api/planning/dicom-imports/", body, content_type="application/json")
    assert r.status_code == 400 and "not enabled" in r.json()["folder"][0]
    settings.RADPATH_DICOM_IMPORT_ROOT = str(root)
    for bad in ("../", "/etc", "MRN0001/../../"):
        r = client.post("/api/planning/dicom-imports/", {**body, "folder": bad}, content_type="application/json")
        assert r.status_code == 400 and "must be inside" in r.json()["folder"][0], bad
    r = client.post("/api/planning/dicom-imports/", body, content_type="application/json")
    assert r.status_code == 201, r.content
    assert r.json()["geometry"]["grid"]["shape"] == [12, 10, 12] and r.json()["plan"]["status"] == "done"


ORIENTATIONS = {  # PatientPosition: (ImageOrientationPatient, flip rows (y), flip columns (x))
    "HFS": ([1, 0, 0, 0, 1, 0], False, False),
    "FFS": ([-1, 0, 0, 0, 1, 0], False, True),
    "HFP": ([-1, 0, 0, 0, -1, 0], True, True),
    "FFP": ([1, 0, 0, 0, -1, 0], True, False),
}


def _reorient(b, position, x_max, y_max):
    """Rewrite an HFS CT slice or RT Dose as a scanner writes it in ``position``: the same patient voxels, rows and
    columns running along the position's ImageOrientationPatient, ImagePositionPatient at the first stored pixel."""
    ds = pydicom.dcmread(io.BytesIO(b))
    iop, flip_rows, flip_cols = ORIENTATIONS[position]
    arr = ds.pixel_array
    if flip_rows:
        arr = arr[..., ::-1, :]
    if flip_cols:
        arr = arr[..., :, ::-1]
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [x_max if flip_cols else pos[0], y_max if flip_rows else pos[1], pos[2]]
    ds.ImageOrientationPatient = iop
    if ds.Modality == "CT":
        ds.PatientPosition = position
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.mark.parametrize("position", ["FFS", "HFP", "FFP"])
def test_feet_first_and_prone_cts_import_to_the_same_patient_voxels(cshape_course, users, position):
    """One asymmetric patient (density and dose ramps along x, y and z; an off-centre box) written as HFS and as
    ``position``: both imports give identical density, masks and DVHs on the same ascending-coordinate grid."""
    grid = Grid((12, 10, 6), (2.0, 2.0, 3.0), (-11.0, -9.0, -7.5))
    X, Y, Z = grid.mesh()
    density = (1.0 + 0.004 * X + 0.002 * Y + 0.001 * Z).astype(np.float32)
    box = (X >= 1) & (X <= 9) & (Y >= -7) & (Y <= 1) & (Z >= -4.5) & (Z <= 4.5)
    ctx = _ctx(cshape_course)
    files = dicom_io.write_ct_series(density, grid, ctx)
    files.append(dicom_io.write_rtstruct([("BODY", BODY, np.ones(grid.shape, bool)), ("PTV", TARGET, box)], grid, ctx))
    files.append(dicom_io.write_rtdose(2.0 + 0.1 * (X + 11) + 0.05 * (Y + 9) + 0.02 * (Z + 7.5), grid, ctx))
    x_max, y_max = float(X.max()), float(Y.max())
    turned = [(n, _reorient(b, position, x_max, y_max) if n.startswith(("CT", "RD")) else b) for n, b in files]
    assert pydicom.dcmread(io.BytesIO(turned[0][1])).ImageOrientationPatient != [1, 0, 0, 0, 1, 0]
    ref = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])
    got = dicom_io.import_files(turned, course=cshape_course, user=users["physicist"])
    assert got["geometry"].grid["shape"] == [12, 10, 6] and got["geometry"].grid["origin"] == ref["geometry"].grid["origin"]
    assert got["geometry"].grid["patient_position"] == position
    g_ref, g_got = services.load_geometry(ref["plan"]), services.load_geometry(got["plan"])
    assert np.allclose(g_got.density, density, atol=1e-3) and np.array_equal(g_got.density, g_ref.density)
    assert np.array_equal(g_got.structures["PTV"].mask, box)
    d_ref, _ = services.load_dose(ref["plan"])
    d_got, _ = services.load_dose(got["plan"])
    assert np.allclose(d_got, d_ref, atol=1e-4)
    assert got["plan"].structure_doses.get(name="PTV").metrics == ref["plan"].structure_doses.get(name="PTV").metrics


def test_fine_ct_pixels_are_binned_to_the_import_grid(cshape_course, users, settings):
    """A CT of 1 mm pixels imported at RADPATH_DICOM_GRID_MM = 2: 2 x 2 blocks, density their mean, a 30 mm disc
    (analytic 7.07 cm^2 per slice) within 2 % of its area."""
    settings.RADPATH_DICOM_GRID_MM = 2.0
    grid = Grid((60, 60, 4), (1.0, 1.0, 2.0), (-29.5, -29.5, -3.0))
    X, Y, Z = grid.mesh()
    density = np.where(X > 0, 1.04, 0.96).astype(np.float32)
    disc = X ** 2 + Y ** 2 <= 15.0 ** 2
    ctx = _ctx(cshape_course)
    files = dicom_io.write_ct_series(density, grid, ctx)
    files.append(dicom_io.write_rtstruct([("BODY", BODY, np.ones(grid.shape, bool)), ("Disc", TARGET, disc)], grid, ctx))
    geom = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["geometry"]
    assert geom.grid["shape"] == [30, 30, 4] and geom.grid["spacing"] == [2.0, 2.0, 2.0] and geom.grid["binning"] == 2
    assert geom.grid["origin"][:2] == [-29.0, -29.0]
    area = {s["name"]: s["volume_cc"] for s in geom.structures}["Disc"] / 4 / 0.2  # cc over 4 slices of 2 mm -> cm^2
    assert area == pytest.approx(np.pi * 1.5 ** 2, rel=0.02)
    geo = services.load_geometry("imported", imported=geom)
    assert np.allclose(geo.density[:14], 0.96, atol=1e-3) and np.allclose(geo.density[16:], 1.04, atol=1e-3)


@pytest.mark.urls("tests.planning.urls")
def test_scanner_density_table_from_the_api_is_used_by_the_import(client, cshape_course, users):
    """A physicist enters a calibration for the CT's scanner (Manufacturer "RadPath", StationName "CT-SIM-1"):
    0 HU -> 1.0 and 1000 HU -> 1.5. A slice of 1000 HU (generic curve: 1.60) then imports as 1.5, and -500 HU
    (both tables linear there) as 0.5; another station keeps the generic curve. Bad points are a 400 naming them."""
    from tests.conftest import PASSWORD

    client.login(username=users["physicist"].username, password=PASSWORD)
    r = client.post("/api/planning/ct-density-tables/", {"name": "CT-SIM-1 2026", "manufacturer": "RadPath",
                                                         "station": "CT-SIM-1", "points": [[-1000, 0], [0, 1], [1000, 1.5]]},
                    content_type="application/json")
    assert r.status_code == 201, r.content
    r = client.post("/api/planning/ct-density-tables/", {"name": "bad", "points": [[0, 1], [-10, 2]]}, content_type="application/json")
    assert r.status_code == 400 and "strictly increasing" in r.json()["points"][0]
    assert client.login(username=users["oncologist"].username, password=PASSWORD)
    assert client.post("/api/planning/ct-density-tables/", {"name": "x", "points": [[0, 1], [1, 1]]},
                       content_type="application/json").status_code == 403

    grid = Grid((8, 8, 3), (4.0, 4.0, 4.0), (-14.0, -14.0, -4.0))
    X, Y, Z = grid.mesh()
    density = np.where(X > 0, 1.6, 0.5).astype(np.float32)  # written with the generic curve: 1000 HU and -500 HU

    def files(station):
        ctx = _ctx(cshape_course)
        out = dicom_io.write_ct_series(density, grid, ctx)
        out = [(n, _with(b, StationName=station)) for n, b in out]
        out.append(dicom_io.write_rtstruct([("BODY", BODY, np.ones(grid.shape, bool))], grid, ctx))
        return out

    geo = services.load_geometry("imported", imported=dicom_io.import_files(
        files("CT-SIM-1"), course=cshape_course, user=users["physicist"])["geometry"])
    assert np.allclose(geo.density[X > 0], 1.5, atol=1e-3) and np.allclose(geo.density[X < 0], 0.5, atol=1e-3)
    other = dicom_io.import_files(files("CT-2"), course=cshape_course, user=users["physicist"])["geometry"]
    assert other.grid["density_table"].startswith("Generic")
    assert np.allclose(services.load_geometry("imported", imported=other).density[X > 0], 1.6, atol=1e-3)


def _with(b, **attrs):
    ds = pydicom.dcmread(io.BytesIO(b))
    for k, v in attrs.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()
