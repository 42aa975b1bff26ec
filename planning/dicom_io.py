"""DICOM RT in and out (pydicom): CT series, RT Structure Set, RT Dose, RT Plan.

Conventions: DICOM patient coordinates (LPS, mm), axial head-first-supine CT (ImageOrientationPatient
1/0/0/0/1/0), which is also the planning engine's grid convention (``planning.engine.grid``: arrays
``[ix, iy, iz]``, ``origin`` the centre of voxel 0). A CT slice's pixel array is ``[row = y, column = x]``.

- Density <-> CT number: relative electron density ~ mass density = 1 + HU / 1000 (clipped at 0), i.e. water
  0 HU, air -1000 HU; export writes HU = 1000 (density - 1). (A clinic would use its scanner's HU-to-density
  curve; this linear one is exact for the phantoms' water / lung / bone / air.)
- Contours: every structure's mask is outlined per axial slice at the 0.5 level between voxel centres (marching
  squares, ``contourpy``), written as CLOSED_PLANAR polygons. Import voxelises polygons back with the even-odd
  rule (a polygon inside another is a hole), testing voxel centres, so export -> import gives back the same voxels.
- RT Dose: 32-bit unsigned integers times DoseGridScaling (Gy), frames along z (GridFrameOffsetVector). On import
  the dose is resampled trilinearly onto the CT grid (zero outside the dose grid).
- Import is all-or-nothing: files are parsed and cross-checked (modality, one CT series, one frame of reference,
  regular slice spacing, structure set referring to that frame, contours on CT slices, dose grid sanity, patient
  ID) before anything is written; any problem raises ``ValidationError({"files": reason})`` naming the file.
"""

import datetime as dt
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
KIND_TO_TYPE = {"target": "PTV", "oar": "ORGAN", "body": "EXTERNAL"}
TARGET_TYPES = {"PTV", "CTV", "GTV", "TREATED_VOLUME", "IRRAD_VOLUME"}


def _fail(msg):
    raise ValidationError({"files": msg})


# ============================================================================================================ export


def _base(sop_class, modality, patient, study_uid, frame_uid, series_uid, when):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = patient.get("name", "Anonymous")
    ds.PatientID = patient.get("id", "")
    ds.PatientBirthDate = patient.get("birth_date", "")
    ds.PatientSex = patient.get("sex", "")
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = when.strftime("%H%M%S")
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.Manufacturer = "RadPath"
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    return ds


def _bytes(ds):
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def mask_contours(mask2d, xs, ys):
    """Closed polygons (list of (n, 2) arrays of x, y mm) outlining a 2-D mask ``[ix, iy]`` at the 0.5 level."""
    import contourpy

    if not mask2d.any():
        return []
    m = np.pad(mask2d.astype(np.float64), 1)
    dx, dy = xs[1] - xs[0] if xs.size > 1 else 1.0, ys[1] - ys[0] if ys.size > 1 else 1.0
    px = np.concatenate([[xs[0] - dx], xs, [xs[-1] + dx]])
    py = np.concatenate([[ys[0] - dy], ys, [ys[-1] + dy]])
    gen = contourpy.contour_generator(x=px, y=py, z=m.T, line_type=contourpy.LineType.Separate, corner_mask=False)
    out = []
    for line in gen.lines(0.5):
        line = np.asarray(line)
        if len(line) >= 3:
            if np.allclose(line[0], line[-1]):
                line = line[:-1]
            out.append(line)
    return out


def write_ct_series(density, grid, ctx):
    """CT slices (HU = 1000 (density - 1)) for an engine grid; returns [(filename, bytes)]."""
    x, y, z = grid.axes()
    files = []
    hu = np.clip(np.rint((np.asarray(density, np.float64) - 1.0) * 1000.0), -1024, 3071).astype(np.int32)
    uids = []
    for k in range(grid.shape[2]):
        ds = _base(CT_IMAGE, "CT", ctx["patient"], ctx["study_uid"], ctx["frame_uid"], ctx["ct_series_uid"], ctx["when"])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(x[0]), float(y[0]), float(z[k])]
        ds.ImageOrientationPatient = AXIAL
        ds.PixelSpacing = [float(grid.spacing[1]), float(grid.spacing[0])]
        ds.SliceThickness = float(grid.spacing[2])
        ds.PatientPosition = "HFS"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(grid.shape[1]), int(grid.shape[0])
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PixelData = (hu[:, :, k].T + 1024).astype(np.uint16).tobytes()
        uids.append(ds.SOPInstanceUID)
        files.append((f"CT.{k + 1:04d}.dcm", _bytes(ds)))
    ctx["ct_uids"] = uids
    return files


def write_rtstruct(structures, grid, ctx):
    """RT Structure Set of ``structures`` = [(name, kind, mask)] on ``grid``; returns (filename, bytes)."""
    x, y, z = grid.axes()
    ds = _base(RT_STRUCT, "RTSTRUCT", ctx["patient"], ctx["study_uid"], ctx["frame_uid"], generate_uid(), ctx["when"])
    ds.StructureSetLabel = ctx.get("label", "RadPath")[:16]
    ds.StructureSetDate, ds.StructureSetTime = ds.ContentDate, ds.ContentTime
    ref_frame = Dataset()
    ref_frame.FrameOfReferenceUID = ctx["frame_uid"]
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = ctx["study_uid"]
    series = Dataset()
    series.SeriesInstanceUID = ctx["ct_series_uid"]
    images = []
    for uid in ctx.get("ct_uids", []):
        img = Dataset()
        img.ReferencedSOPClassUID = CT_IMAGE
        img.ReferencedSOPInstanceUID = uid
        images.append(img)
    series.ContourImageSequence = Sequence(images)
    study.RTReferencedSeriesSequence = Sequence([series])
    ref_frame.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([ref_frame])
    rois, contours, observations = [], [], []
    for i, (name, kind, mask) in enumerate(structures, start=1):
        roi = Dataset()
        roi.ROINumber = i
        roi.ReferencedFrameOfReferenceUID = ctx["frame_uid"]
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = i
        rc.ROIDisplayColor = [255, 0, 0] if kind == "target" else [0, 128, 255]
        seq = []
        for k in range(grid.shape[2]):
            for poly in mask_contours(mask[:, :, k], x, y):
                c = Dataset()
                c.ContourGeometricType = "CLOSED_PLANAR"
                c.NumberOfContourPoints = len(poly)
                pts = np.column_stack([poly, np.full(len(poly), z[k])])
                c.ContourData = [round(float(v), 3) for v in pts.ravel()]
                if ctx.get("ct_uids"):
                    ci = Dataset()
                    ci.ReferencedSOPClassUID = CT_IMAGE
                    ci.ReferencedSOPInstanceUID = ctx["ct_uids"][k]
                    c.ContourImageSequence = Sequence([ci])
                seq.append(c)
        rc.ContourSequence = Sequence(seq)
        contours.append(rc)
        ob = Dataset()
        ob.ObservationNumber = i
        ob.ReferencedROINumber = i
        ob.RTROIInterpretedType = KIND_TO_TYPE.get(kind, "ORGAN")
        ob.ROIInterpreter = ""
        observations.append(ob)
    ds.StructureSetROISequence = Sequence(rois)
    ds.ROIContourSequence = Sequence(contours)
    ds.RTROIObservationsSequence = Sequence(observations)
    ctx["rtstruct_uid"] = ds.SOPInstanceUID
    return "RS.dcm", _bytes(ds)


def write_rtdose(dose, grid, ctx):
    """RT Dose (physical, Gy, whole plan) of a dose cube on ``grid``; returns (filename, bytes)."""
    x, y, z = grid.axes()
    dose = np.asarray(dose, np.float64)
    ds = _base(RT_DOSE, "RTDOSE", ctx["patient"], ctx["study_uid"], ctx["frame_uid"], generate_uid(), ctx["when"])
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.ImagePositionPatient = [float(x[0]), float(y[0]), float(z[0])]
    ds.ImageOrientationPatient = AXIAL
    ds.PixelSpacing = [float(grid.spacing[1]), float(grid.spacing[0])]
    ds.SliceThickness = float(grid.spacing[2])
    ds.GridFrameOffsetVector = [float(v - z[0]) for v in z]
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x3004, 0x000C)
    ds.NumberOfFrames = int(grid.shape[2])
    ds.Rows, ds.Columns = int(grid.shape[1]), int(grid.shape[0])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    top = float(dose.max()) if dose.size else 0.0
    scale = top / 4.0e9 if top > 0 else 1.0
    ds.DoseGridScaling = f"{scale:.10e}"
    frames = np.rint(np.transpose(dose, (2, 1, 0)) / float(ds.DoseGridScaling)).astype(np.uint32)
    ds.PixelData = frames.tobytes()
    if ctx.get("rtplan_uid"):
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN
        ref.ReferencedSOPInstanceUID = ctx["rtplan_uid"]
        ds.ReferencedRTPlanSequence = Sequence([ref])
    return "RD.dcm", _bytes(ds)


def write_rtplan(beams, ctx, *, fractions, prescription_gy, label="RadPath"):
    """RT Plan with static coplanar beams (gantry, isocentre) and their MU per fraction; returns (filename, bytes)."""
    ds = _base(RT_PLAN, "RTPLAN", ctx["patient"], ctx["study_uid"], ctx["frame_uid"], generate_uid(), ctx["when"])
    ds.RTPlanLabel = label[:16]
    ds.RTPlanName = label[:64]
    ds.RTPlanDate, ds.RTPlanTime = ds.ContentDate, ds.ContentTime
    ds.RTPlanGeometry = "PATIENT"
    ds.ApprovalStatus = ctx.get("approval_status", "UNAPPROVED")
    dr = Dataset()
    dr.DoseReferenceNumber = 1
    dr.DoseReferenceStructureType = "SITE"
    dr.DoseReferenceType = "TARGET"
    dr.TargetPrescriptionDose = float(prescription_gy)
    ds.DoseReferenceSequence = Sequence([dr])
    if ctx.get("rtstruct_uid"):
        rs = Dataset()
        rs.ReferencedSOPClassUID = RT_STRUCT
        rs.ReferencedSOPInstanceUID = ctx["rtstruct_uid"]
        ds.ReferencedStructureSetSequence = Sequence([rs])
    fg = Dataset()
    fg.FractionGroupNumber = 1
    fg.NumberOfFractionsPlanned = int(fractions)
    fg.NumberOfBeams = len(beams)
    fg.NumberOfBrachyApplicationSetups = 0
    refs, seq = [], []
    for i, b in enumerate(beams, start=1):
        r = Dataset()
        r.ReferencedBeamNumber = i
        r.BeamMeterset = round(float(b.get("mu", 0.0)), 2)
        refs.append(r)
        beam = Dataset()
        beam.BeamNumber = i
        beam.BeamName = f"G{b['gantry_deg']:.0f}"
        beam.BeamType = "STATIC"
        beam.RadiationType = "PHOTON"
        beam.TreatmentDeliveryType = "TREATMENT"
        beam.PrimaryDosimeterUnit = "MU"
        beam.SourceAxisDistance = 1000.0
        beam.NumberOfWedges = beam.NumberOfCompensators = beam.NumberOfBoli = beam.NumberOfBlocks = 0
        beam.FinalCumulativeMetersetWeight = 1.0
        beam.NumberOfControlPoints = 2
        cps = []
        for j in range(2):
            cp = Dataset()
            cp.ControlPointIndex = j
            cp.CumulativeMetersetWeight = float(j)
            if j == 0:
                cp.NominalBeamEnergy = 6.0
                cp.GantryAngle = float(b["gantry_deg"])
                cp.GantryRotationDirection = "NONE"
                cp.BeamLimitingDeviceAngle = 0.0
                cp.PatientSupportAngle = 0.0
                cp.IsocenterPosition = [float(v) for v in b.get("isocentre_mm", [0.0, 0.0, 0.0])]
            cps.append(cp)
        beam.ControlPointSequence = Sequence(cps)
        seq.append(beam)
    fg.ReferencedBeamSequence = Sequence(refs)
    ds.FractionGroupSequence = Sequence([fg])
    ds.BeamSequence = Sequence(seq)
    ctx["rtplan_uid"] = ds.SOPInstanceUID
    return "RP.dcm", _bytes(ds)


def export_geometry_dose(geo, dose, *, patient, beams=None, fractions=1, prescription_gy=None, label="RadPath",
                         include_ct=True, approval_status="UNAPPROVED"):
    """[(filename, bytes)] for CT (optional) + RT Structure Set + RT Plan (if ``beams``) + RT Dose."""
    ctx = {"patient": patient, "study_uid": generate_uid(), "frame_uid": generate_uid(), "ct_series_uid": generate_uid(),
           "when": timezone.localtime() if timezone.is_aware(timezone.now()) else dt.datetime.now(), "label": label,
           "approval_status": approval_status}
    files = write_ct_series(geo.density, geo.grid, ctx) if include_ct else []
    structures = [(name, s.kind, s.mask) for name, s in geo.structures.items()]
    files.append(write_rtstruct(structures, geo.grid, ctx))
    if beams is not None:
        files.append(write_rtplan(beams, ctx, fractions=fractions, prescription_gy=prescription_gy or float(dose.max()), label=label))
    files.append(write_rtdose(dose, geo.grid, ctx))
    return files


def patient_info(patient):
    return {"name": f"{patient.family_name}^{patient.given_name}", "id": patient.mrn,
            "birth_date": patient.birth_date.strftime("%Y%m%d"), "sex": patient.sex if patient.sex in ("M", "F", "O") else ""}


def export_plan(plan):
    """A RadPath plan as DICOM RT: CT series of its geometry, RT Structure Set, RT Plan (beams, MU), RT Dose."""
    from workflow.errors import RuleViolation

    from . import services

    if not plan.result_file:
        raise RuleViolation("The plan has no result to export yet.", field="status")
    geo = services.load_geometry(plan)
    dose, _ = services.load_dose(plan)
    return export_geometry_dose(
        geo, dose, patient=patient_info(plan.course.patient), beams=plan.beam_summary or [], fractions=plan.fractions,
        prescription_gy=plan.prescription_gy, label=f"RadPath v{plan.version}",
        approval_status="APPROVED" if plan.status == "approved" else "UNAPPROVED",
    )


def export_plan_zip(plan):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in export_plan(plan):
            zf.writestr(name, data)
    return buf.getvalue()


# ============================================================================================================ import


def _read(name, data):
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        for _ in ds.iterall():  # decode every element now, so a truncated or corrupt file fails here
            pass
    except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OSError, IndexError) as exc:
        _fail(f"{name}: not a readable DICOM file ({exc}).")
    if "Modality" not in ds:
        _fail(f"{name}: DICOM file without a Modality.")
    return ds


def expand_zips(files):
    out = []
    for name, data in files:
        if data[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    for info in zf.infolist():
                        if not info.is_dir():
                            out.append((f"{name}/{info.filename}", zf.read(info)))
            except zipfile.BadZipFile as exc:
                _fail(f"{name}: broken zip archive ({exc}).")
        else:
            out.append((name, data))
    return out


def _floats(value, n, what, name):
    try:
        v = [float(x) for x in value]
    except (TypeError, ValueError):
        _fail(f"{name}: {what} is not numeric.")
    if len(v) != n or not np.all(np.isfinite(v)):
        _fail(f"{name}: {what} must have {n} finite numbers.")
    return v


def parse_ct(cts):
    """Engine Grid and density from CT slices [(name, ds)]; checks they form one regular axial series."""
    from .engine.grid import Grid

    series = {ds.get("SeriesInstanceUID") for _, ds in cts}
    if len(series) != 1:
        _fail(f"The CT images belong to {len(series)} series; import one CT series at a time.")
    frames = {ds.get("FrameOfReferenceUID") for _, ds in cts}
    if len(frames) != 1 or None in frames:
        _fail("The CT images do not share one FrameOfReferenceUID.")
    slices = []
    for name, ds in cts:
        for attr in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "PixelData"):
            if attr not in ds:
                _fail(f"{name}: CT image without {attr}.")
        iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", name)
        if not np.allclose(iop, AXIAL, atol=1e-3):
            _fail(f"{name}: only axial head-first CT (ImageOrientationPatient 1\\0\\0\\0\\1\\0) is supported.")
        pos = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", name)
        ps = _floats(ds.PixelSpacing, 2, "PixelSpacing", name)
        if min(ps) <= 0:
            _fail(f"{name}: PixelSpacing must be positive.")
        slices.append((pos, ps, int(ds.Rows), int(ds.Columns), name, ds))
    slices.sort(key=lambda s: s[0][2])
    pos0, ps0, rows, cols = slices[0][0], slices[0][1], slices[0][2], slices[0][3]
    for pos, ps, r, c, name, _ in slices:
        if (r, c) != (rows, cols) or not np.allclose(ps, ps0, atol=1e-4):
            _fail(f"{name}: image size or pixel spacing differs from the rest of the series.")
        if not np.allclose(pos[:2], pos0[:2], atol=1e-3):
            _fail(f"{name}: slice is shifted in x/y against the rest of the series.")
    zs = np.array([s[0][2] for s in slices])
    if len(zs) > 1:
        dz = np.diff(zs)
        if np.any(dz <= 1e-6):
            _fail("Two CT slices share the same position.")
        if not np.allclose(dz, dz[0], rtol=1e-3, atol=1e-3):
            _fail("The CT slices are not equally spaced (missing slice?).")
        sz = float(dz[0])
    else:
        sz = float(slices[0][5].get("SliceThickness", ps0[0]) or ps0[0])
    grid = Grid((cols, rows, len(zs)), (ps0[1], ps0[0], sz), (pos0[0], pos0[1], float(zs[0])))
    density = np.zeros(grid.shape, np.float32)
    for k, (_, _, _, _, name, ds) in enumerate(slices):
        try:
            px = ds.pixel_array.astype(np.float64)
        except Exception as exc:
            _fail(f"{name}: cannot decode the pixel data ({exc}).")
        if px.shape != (rows, cols):
            _fail(f"{name}: pixel data has shape {px.shape}, expected {(rows, cols)}.")
        hu = px * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
        density[:, :, k] = np.clip(1.0 + hu / 1000.0, 0.0, None).T
    meta = {"frame_uid": frames.pop(), "study_uid": str(slices[0][5].get("StudyInstanceUID", "")),
            "patient_id": str(slices[0][5].get("PatientID", ""))}
    return grid, density, meta


def voxelise(contours, grid, name):
    """Boolean mask on ``grid`` from CLOSED_PLANAR contours [(n, 3) mm], even-odd rule per slice."""
    from matplotlib.path import Path as MplPath

    x, y, z = grid.axes()
    mask = np.zeros(grid.shape, bool)
    tol = min(0.5, 0.25 * grid.spacing[2]) if grid.shape[2] > 1 else 1e6  # mm: contours lie on CT slices
    for pts in contours:
        k = int(np.argmin(np.abs(z - pts[0, 2])))
        if abs(z[k] - pts[0, 2]) > tol or (np.ptp(pts[:, 2]) > 1e-3 if len(pts) else False):
            _fail(f"Structure {name!r}: a contour at z = {pts[0, 2]:.2f} mm is not on a CT slice (or not planar).")
        poly = pts[:, :2]
        lo, hi = poly.min(axis=0), poly.max(axis=0)
        ix = np.flatnonzero((x >= lo[0]) & (x <= hi[0]))
        iy = np.flatnonzero((y >= lo[1]) & (y <= hi[1]))
        if ix.size == 0 or iy.size == 0:
            continue
        X, Y = np.meshgrid(x[ix], y[iy], indexing="ij")
        inside = MplPath(poly, closed=True).contains_points(np.column_stack([X.ravel(), Y.ravel()])).reshape(X.shape)
        sub = mask[ix[0]:ix[-1] + 1, iy[0]:iy[-1] + 1, k]
        sub ^= inside
    return mask


def parse_rtstruct(name, ds, grid, frame_uid):
    refs = [r.get("FrameOfReferenceUID") for r in ds.get("ReferencedFrameOfReferenceSequence", [])]
    if refs and frame_uid not in refs:
        _fail(f"{name}: the structure set refers to another frame of reference than the CT series.")
    if "StructureSetROISequence" not in ds or "ROIContourSequence" not in ds:
        _fail(f"{name}: RT Structure Set without ROIs or contours.")
    names = {}
    for roi in ds.StructureSetROISequence:
        if roi.get("ReferencedFrameOfReferenceUID") not in (None, "", frame_uid):
            _fail(f"{name}: ROI {roi.get('ROIName')!r} refers to another frame of reference.")
        names[int(roi.ROINumber)] = str(roi.get("ROIName", f"ROI {roi.ROINumber}")).strip() or f"ROI {roi.ROINumber}"
    types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "").upper()
             for o in ds.get("RTROIObservationsSequence", [])}
    structures = []
    for rc in ds.ROIContourSequence:
        number = int(rc.ReferencedROINumber)
        if number not in names:
            _fail(f"{name}: contours for an undeclared ROI number {number}.")
        roi_name = names[number]
        polys = []
        for c in rc.get("ContourSequence", []):
            gtype = str(c.get("ContourGeometricType", "CLOSED_PLANAR"))
            if gtype == "POINT":
                continue
            if gtype != "CLOSED_PLANAR":
                _fail(f"{name}: ROI {roi_name!r} has a {gtype} contour; only CLOSED_PLANAR is supported.")
            data = c.get("ContourData")
            if data is None or len(data) % 3 or len(data) < 9:
                _fail(f"{name}: ROI {roi_name!r} has a contour with a malformed point list.")
            pts = np.asarray([float(v) for v in data]).reshape(-1, 3)
            if not np.all(np.isfinite(pts)):
                _fail(f"{name}: ROI {roi_name!r} has non-finite contour points.")
            polys.append(pts)
        if not polys:
            continue
        mask = voxelise(polys, grid, roi_name)
        if not mask.any():
            continue
        t = types.get(number, "")
        kind = "body" if t == "EXTERNAL" else "target" if t in TARGET_TYPES else "oar"
        structures.append({"name": roi_name, "kind": kind, "mask": mask})
    if not structures:
        _fail(f"{name}: the structure set has no contour inside the CT volume.")
    seen = set()
    for s in structures:
        if s["name"] in seen:
            _fail(f"{name}: two ROIs are called {s['name']!r}.")
        seen.add(s["name"])
    bodies = [s for s in structures if s["kind"] == "body"]
    if len(bodies) > 1:
        for s in bodies[1:]:
            s["kind"] = "oar"
    return structures


def parse_rtdose(name, ds, grid, frame_uid):
    """RT Dose resampled onto ``grid`` (Gy)."""
    from scipy.interpolate import RegularGridInterpolator

    if ds.get("FrameOfReferenceUID") != frame_uid:
        _fail(f"{name}: the RT Dose has another frame of reference than the CT series.")
    for attr in ("ImagePositionPatient", "PixelSpacing", "DoseGridScaling", "PixelData", "Rows", "Columns"):
        if attr not in ds:
            _fail(f"{name}: RT Dose without {attr}.")
    if str(ds.get("DoseUnits", "GY")).upper() != "GY":
        _fail(f"{name}: only dose in GY is supported (found {ds.get('DoseUnits')}).")
    iop = _floats(ds.get("ImageOrientationPatient", AXIAL), 6, "ImageOrientationPatient", name)
    if not np.allclose(iop, AXIAL, atol=1e-3):
        _fail(f"{name}: only an axial dose grid is supported.")
    pos = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", name)
    ps = _floats(ds.PixelSpacing, 2, "PixelSpacing", name)
    try:
        scaling = float(ds.DoseGridScaling)
        with warnings.catch_warnings():  # a frame-count mismatch is reported below as our own error
            warnings.simplefilter("ignore")
            arr = ds.pixel_array.astype(np.float64) * scaling
    except Exception as exc:
        _fail(f"{name}: cannot decode the dose grid ({exc}).")
    if not np.isfinite(scaling) or scaling <= 0:
        _fail(f"{name}: DoseGridScaling must be positive.")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != (n, int(ds.Rows), int(ds.Columns)):
        _fail(f"{name}: the dose grid has shape {arr.shape}, the header says {(n, int(ds.Rows), int(ds.Columns))}.")
    offsets = [float(v) for v in ds.get("GridFrameOffsetVector", [0.0])] if n > 1 else [0.0]
    if len(offsets) != n:
        _fail(f"{name}: GridFrameOffsetVector has {len(offsets)} values for {n} frames.")
    zs = pos[2] + np.asarray(offsets) if offsets[0] == 0 else np.asarray(offsets)  # relative (usual) or absolute
    if n > 1 and np.any(np.diff(zs) <= 0):
        if np.all(np.diff(zs) < 0):
            arr, zs = arr[::-1], zs[::-1]
        else:
            _fail(f"{name}: dose frames are not ordered along z.")
    xs = pos[0] + ps[1] * np.arange(int(ds.Columns))
    ys = pos[1] + ps[0] * np.arange(int(ds.Rows))
    cube = np.transpose(arr, (2, 1, 0))  # -> [x, y, z]
    gx, gy, gz = grid.axes()
    if (cube.shape == tuple(grid.shape) and np.allclose(xs, gx, atol=1e-3) and np.allclose(ys, gy, atol=1e-3)
            and np.allclose(zs, gz, atol=1e-3)):
        return cube.astype(np.float32)
    axes = [xs, ys, zs]
    pts_axes = [gx, gy, gz]
    for i in range(3):  # a single-plane axis cannot be interpolated along: pad it to a thin slab
        if axes[i].size == 1:
            axes[i] = np.array([axes[i][0] - 1e-3, axes[i][0] + 1e-3])
            cube = np.concatenate([cube, cube], axis=i)
    interp = RegularGridInterpolator(axes, cube, bounds_error=False, fill_value=0.0)
    X, Y, Z = np.meshgrid(*pts_axes, indexing="ij")
    return interp(np.column_stack([X.ravel(), Y.ravel(), Z.ravel()])).reshape(grid.shape).astype(np.float32)


def parse_rtplan(name, ds):
    beams = []
    mu = {}
    fractions = None
    for fg in ds.get("FractionGroupSequence", []):
        fractions = int(fg.get("NumberOfFractionsPlanned", 0) or 0) or fractions
        for rb in fg.get("ReferencedBeamSequence", []):
            mu[int(rb.ReferencedBeamNumber)] = float(rb.get("BeamMeterset", 0) or 0)
    for b in ds.get("BeamSequence", []):
        cps = b.get("ControlPointSequence", [])
        if not cps or "GantryAngle" not in cps[0]:
            _fail(f"{name}: beam {b.get('BeamNumber')} has no gantry angle.")
        iso = [float(v) for v in cps[0].get("IsocenterPosition", [0, 0, 0])]
        beams.append({"gantry_deg": float(cps[0].GantryAngle), "mu": round(mu.get(int(b.BeamNumber), 0.0), 1),
                      "segments": max(len(cps) // 2, 1), "beamlets": 0, "isocentre_mm": iso, "name": str(b.get("BeamName", ""))})
    rx = None
    for dr in ds.get("DoseReferenceSequence", []):
        if "TargetPrescriptionDose" in dr:
            rx = float(dr.TargetPrescriptionDose)
    return {"beams": beams, "fractions": fractions, "prescription_gy": rx}


def parse_files(files):
    """Parse and cross-check DICOM files [(name, bytes)]; returns the engine Geometry, optional dose and plan info."""
    from .engine.grid import BODY, Geometry

    files = expand_zips(files)
    if not files:
        _fail("No files were given.")
    by = {"CT": [], "RTSTRUCT": [], "RTDOSE": [], "RTPLAN": []}
    for name, data in files:
        ds = _read(name, data)
        mod = str(ds.Modality).upper()
        if mod not in by:
            _fail(f"{name}: modality {mod} is not supported (CT, RTSTRUCT, RTDOSE, RTPLAN).")
        by[mod].append((name, ds))
    if not by["CT"]:
        _fail("No CT images: import the CT series together with its RT Structure Set.")
    if len(by["RTSTRUCT"]) != 1:
        _fail(f"Give exactly one RT Structure Set (found {len(by['RTSTRUCT'])}).")
    if len(by["RTDOSE"]) > 1 or len(by["RTPLAN"]) > 1:
        _fail("Give at most one RT Dose and one RT Plan.")
    stage = ["the CT series"]
    try:
        return _parse_checked(by, files, stage)
    except ValidationError:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        _fail(f"{stage[0]}: incomplete or malformed DICOM ({type(exc).__name__}: {exc}).")


def _parse_checked(by, files, stage):
    from .engine.grid import BODY, Geometry

    grid, density, meta = parse_ct(by["CT"])
    rs_name, rs = by["RTSTRUCT"][0]
    stage[0] = rs_name
    for name, ds in by["RTSTRUCT"] + by["RTDOSE"] + by["RTPLAN"]:
        pid = str(ds.get("PatientID", ""))
        if meta["patient_id"] and pid and pid != meta["patient_id"]:
            _fail(f"{name}: PatientID {pid} differs from the CT's ({meta['patient_id']}).")
    structures = parse_rtstruct(rs_name, rs, grid, meta["frame_uid"])
    geo = Geometry(grid, density, name="Imported CT")
    if not any(s["kind"] == "body" for s in structures):
        from scipy import ndimage

        body = ndimage.binary_fill_holes(density > 0.5)
        structures.insert(0, {"name": "BODY", "kind": "body", "mask": body})
    for s in structures:
        geo.add(s["name"], s["mask"], BODY if s["kind"] == "body" else s["kind"])
    stage[0] = by["RTDOSE"][0][0] if by["RTDOSE"] else ""
    dose = parse_rtdose(*by["RTDOSE"][0], grid, meta["frame_uid"]) if by["RTDOSE"] else None
    stage[0] = by["RTPLAN"][0][0] if by["RTPLAN"] else ""
    plan_info = parse_rtplan(*by["RTPLAN"][0]) if by["RTPLAN"] else None
    return {"geometry": geo, "structures": structures, "dose": dose, "plan": plan_info, "meta": meta,
            "names": [n for n, _ in files]}


def import_files(files, *, course, user, name="", attach_plan=True):
    """Import CT + RT Structure Set (+ RT Dose, RT Plan) for ``course``: all or nothing.

    Saves an ``ImportedGeometry`` (density and masks as .npz under MEDIA_ROOT/imports); with an RT Dose and
    ``attach_plan`` also an external ``Plan`` (status done, awaiting review) whose DVHs come from that dose."""
    from . import services
    from .models import GeometrySource, ImportedGeometry, Plan, PlanMethod, PlanStatus

    if user is not None and not user.has_perm("planning.import_dicom"):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("Your role does not allow DICOM import.")
    parsed = parse_files(files)
    meta = parsed["meta"]
    if meta["patient_id"] and meta["patient_id"] != course.patient.mrn:
        _fail(f"The files are for patient ID {meta['patient_id']}, not {course.patient.mrn}.")
    geo = parsed["geometry"]
    folder = Path(services.media_path("imports"))
    folder.mkdir(parents=True, exist_ok=True)
    rel = f"imports/geometry-{course.pk}-{timezone.now():%Y%m%d%H%M%S%f}.npz"
    arrays = {"density": geo.density}
    for i, s in enumerate(geo.structures.values()):
        arrays[f"mask_{i}"] = s.mask
    try:
        with transaction.atomic():
            with open(services.media_path(rel), "wb") as fh:
                np.savez_compressed(fh, **arrays)
            vcc = geo.grid.voxel_volume_cc
            imported = ImportedGeometry(
                patient=course.patient, course=course, name=name or f"Imported CT {timezone.localdate():%Y-%m-%d}", file=rel,
                grid={"shape": list(geo.grid.shape), "spacing": list(geo.grid.spacing), "origin": list(geo.grid.origin)},
                structures=[{"name": n, "kind": s.kind, "n_voxels": s.n_voxels, "volume_cc": round(s.n_voxels * vcc, 3)}
                            for n, s in geo.structures.items()],
                study_uid=meta["study_uid"][:64], frame_of_reference_uid=meta["frame_uid"][:64],
                source_files=parsed["names"][:500], created_by=user,
            )
            imported._history_user = user
            imported.save()
            plan = None
            if parsed["dose"] is not None and attach_plan:
                info = parsed["plan"] or {}
                site = course.diagnosis.site if course.diagnosis_id else "other"
                names = list(geo.structures)
                goals = services.validate_goals(services.default_goals(site, float(course.total_dose_gy), names), names)
                plan = Plan(
                    course=course, version=services._next_version(course), name=(name or "External plan")[:120],
                    method=PlanMethod.EXTERNAL, geometry_source=GeometrySource.IMPORTED, imported_geometry=imported,
                    grid_mm=float(min(geo.grid.spacing)), gantry_angles=[b["gantry_deg"] for b in info.get("beams", [])],
                    beamlet_mm=5.0, max_iterations=1, objectives=[], goals=goals,
                    prescription_gy=float(course.total_dose_gy), fractions=course.fractions_planned, created_by=user,
                    status=PlanStatus.DONE, progress_pct=100.0, progress_message="Imported from DICOM RT",
                )
                plan._history_user = user
                plan.save()
                services.store_result(plan, geo, parsed["dose"], beam_summary=info.get("beams") or [],
                                      extra_metrics={"source": "DICOM RT Dose", "dicom_fractions": info.get("fractions"),
                                                     "dicom_prescription_gy": info.get("prescription_gy")})
                plan.finished_at = timezone.now()
                plan.save()
    except Exception:
        services.media_path(rel).unlink(missing_ok=True)
        raise
    n = len(geo.structures)
    msg = f"Imported a {geo.grid.shape[0]}x{geo.grid.shape[1]}x{geo.grid.shape[2]} CT with {n} structures"
    msg += f" and an external plan (v{plan.version}) from the RT Dose." if plan else "."
    return {"geometry": imported, "plan": plan, "message": msg}
