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
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
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
        "missing slice": ([(n, b) for n, b in good if n != "CT.0005.dcm"], "not equally spaced"),
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
