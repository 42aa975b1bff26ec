"""DICOM RT in and out (pydicom): CT series, RT Structure Set, RT Dose, RT Plan.

Conventions: DICOM patient coordinates (LPS, mm), axial head-first-supine CT (ImageOrientationPatient
1/0/0/0/1/0), which is also the planning engine's grid convention (``planning.engine.grid``: arrays
``[ix, iy, iz]``, ``origin`` the centre of voxel 0). A CT slice's pixel array is ``[row = y, column = x]``.

- Density <-> CT number: the engine's density is the relative electron density (RED). Import maps HU to RED
  by the CT scanner's piecewise-linear table (``planning.ct_density``, a ``CTDensityTable`` chosen by the CT's
  Manufacturer / ManufacturerModelName / StationName, else the built-in generic bilinear curve); export writes
  the inverse of the generic curve, so a RadPath CT reads back to the same densities.
- Orientation: axial CTs in any patient position (HFS, FFS, HFP, FFP: ImageOrientationPatient rows and columns
  along +-x / +-y) are re-ordered onto the engine grid (ascending x, y, z); oblique images are refused.
- Contours: every structure's mask is outlined per axial slice at the 0.5 level between voxel centres (marching
  squares, ``contourpy``), written as CLOSED_PLANAR polygons. Import voxelises polygons back with the even-odd
  rule (a polygon inside another is a hole), testing voxel centres, so export -> import gives back the same voxels.
- RT Dose: 32-bit unsigned integers times DoseGridScaling (Gy), frames along z (GridFrameOffsetVector). On import
  the dose is resampled trilinearly onto the CT grid (zero outside the dose grid).
- Import is all-or-nothing and two-pass (see the import section): headers first (identity, geometry, contours),
  pixels after; any problem raises ``ValidationError({"files": reason})`` naming the file, and no file is left
  behind.
"""

import datetime as dt
import io
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
from django.conf import settings
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
    """CT slices (HU by the inverse of the generic HU -> density table) for an engine grid; [(filename, bytes)]."""
    from .ct_density import GENERIC, density_to_hu

    x, y, z = grid.axes()
    files = []
    hu = np.clip(np.rint(density_to_hu(np.asarray(density, np.float64), GENERIC["points"])), -1024, 3071).astype(np.int32)
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


def _bld_positions(kind, values):
    item = Dataset()
    item.RTBeamLimitingDeviceType = kind
    item.LeafJawPositions = [round(float(v), 3) for v in values]
    return item


def write_rtplan(beams, ctx, *, fractions, prescription_gy, label="RadPath"):
    """RT Plan with coplanar beams (gantry, isocentre), their MU per fraction and, for beams with ``control_segments``,
    step-and-shoot control points: per segment jaws (ASYMX, ASYMY) and MLCX leaves (``leaf_bounds``: one leaf pair
    per beamlet row of RadPath's virtual MLC) at two control points, the second adding the segment's share of the
    cumulative meterset weight. ``control_segments``: [(x jaws, y jaws, leaf positions (2N), MU)]
    (``planning.engine.mlc.segments_to_control_points``). Returns (filename, bytes)."""
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
    setup = Dataset()
    setup.PatientPosition = "HFS"
    setup.PatientSetupNumber = 1
    ds.PatientSetupSequence = Sequence([setup])
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
        segments = b.get("control_segments") or []
        mu = float(sum(s[3] for s in segments)) if segments else float(b.get("mu", 0.0))
        r = Dataset()
        r.ReferencedBeamNumber = i
        r.BeamMeterset = round(mu, 2)
        refs.append(r)
        beam = Dataset()
        beam.BeamNumber = i
        beam.BeamName = f"G{b['gantry_deg']:.0f}"
        beam.BeamType = "DYNAMIC" if len(segments) > 1 else "STATIC"
        beam.RadiationType = "PHOTON"
        beam.TreatmentDeliveryType = "TREATMENT"
        beam.TreatmentMachineName = "RadPath 6 MV"
        beam.PrimaryDosimeterUnit = "MU"
        beam.SourceAxisDistance = 1000.0
        beam.PatientSetupNumber = 1
        beam.NumberOfWedges = beam.NumberOfCompensators = beam.NumberOfBoli = beam.NumberOfBlocks = 0
        beam.FinalCumulativeMetersetWeight = 1.0
        first = {"NominalBeamEnergy": 6.0, "GantryAngle": float(b["gantry_deg"]), "GantryRotationDirection": "NONE",
                 "BeamLimitingDeviceAngle": 0.0, "BeamLimitingDeviceRotationDirection": "NONE",
                 "PatientSupportAngle": 0.0, "PatientSupportRotationDirection": "NONE",
                 "IsocenterPosition": [float(v) for v in b.get("isocentre_mm", [0.0, 0.0, 0.0])]}
        cps = []
        if segments:
            bounds = [round(float(v), 3) for v in b["leaf_bounds"]]
            devices = []
            for kind, n, extra in (("ASYMX", 1, None), ("ASYMY", 1, None), ("MLCX", len(bounds) - 1, bounds)):
                d = Dataset()
                d.RTBeamLimitingDeviceType = kind
                d.NumberOfLeafJawPairs = n
                if extra:
                    d.LeafPositionBoundaries = extra
                devices.append(d)
            beam.BeamLimitingDeviceSequence = Sequence(devices)
            cum = 0.0
            for jx, jy, leaves, seg_mu in segments:
                for j in range(2):
                    cp = Dataset()
                    cp.ControlPointIndex = len(cps)
                    cp.CumulativeMetersetWeight = float(min(cum / mu, 1.0)) if mu > 0 else float(j)
                    if not cps:
                        for k, v in first.items():
                            setattr(cp, k, v)
                    if j == 0:
                        cp.BeamLimitingDevicePositionSequence = Sequence(
                            [_bld_positions("ASYMX", jx), _bld_positions("ASYMY", jy), _bld_positions("MLCX", leaves)])
                    else:
                        cum += float(seg_mu)
                        cp.CumulativeMetersetWeight = float(min(cum / mu, 1.0)) if mu > 0 else 1.0
                    cps.append(cp)
            cps[-1].CumulativeMetersetWeight = 1.0
        else:
            for j in range(2):
                cp = Dataset()
                cp.ControlPointIndex = j
                cp.CumulativeMetersetWeight = float(j)
                if j == 0:
                    for k, v in first.items():
                        setattr(cp, k, v)
                cps.append(cp)
        beam.NumberOfControlPoints = len(cps)
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
            "birth_date": patient.birth_date.strftime("%Y%m%d") if patient.birth_date else "", "sex": patient.sex if patient.sex in ("M", "F", "O") else ""}


def export_plan(plan):
    """A RadPath plan as DICOM RT: CT series of its geometry, RT Structure Set, RT Plan (beams, MU), RT Dose."""
    from workflow.errors import RuleViolation

    from . import services

    if not plan.result_file:
        raise RuleViolation("The plan has no result to export yet.", field="status")
    geo = services.load_geometry(plan)
    dose, _ = services.load_dose(plan)
    return export_geometry_dose(
        geo, dose, patient=patient_info(plan.course.patient), beams=plan_beam_segments(plan), fractions=plan.fractions,
        prescription_gy=plan.prescription_gy, label=f"RadPath v{plan.version}",
        approval_status="APPROVED" if plan.status == "approved" else "UNAPPROVED",
    )


def plan_beam_segments(plan):
    """The plan's beams for the RT Plan: its beam summary plus, for a computed plan, every beam's segments as
    control points (jaws, MLCX, MU per fraction) on RadPath's virtual MLC (one leaf pair per beamlet row).

    The segments are those stored with the result (apertures and MU of the deliverable plan); a result stored
    without them (older plans) is decomposed exactly from its deliverable fluence (``mlc.sweep_segments``), MU
    from the calibration. An imported plan keeps its beam summary only (its own RT Plan is stored verbatim)."""
    from .engine import mlc
    from .engine.pencilbeam import mu_per_unit_weight

    from . import services

    beams = [dict(b) for b in (plan.beam_summary or [])]
    if not plan.result_file or plan.method == "external":
        return beams
    data = np.load(services.media_path(plan.result_file))
    if "weights" not in data or "ia" not in data:
        return beams
    w, ia, ib, beam_of = data["weights"], data["ia"], data["ib"], data["beam_of"]
    mu_unit = mu_per_unit_weight() / max(int(plan.fractions), 1)
    for i, b in enumerate(beams):
        sel = np.flatnonzero(beam_of == i)
        if sel.size == 0:
            continue
        a0, b0 = int(ia[sel].min()), int(ib[sel].min())
        shape = (int(ib[sel].max()) - b0 + 1, int(ia[sel].max()) - a0 + 1)
        if "seg_open" in data:
            rows = np.flatnonzero(data["seg_beam"] == i)
            apertures, mus = [], []
            for k in rows:
                ap = np.zeros(shape, bool)
                ap[ib[sel] - b0, ia[sel] - a0] = data["seg_open"][k, sel]
                apertures.append(ap)
                mus.append(float(data["seg_mu"][k]))
        else:
            fmap = np.zeros(shape)
            fmap[ib[sel] - b0, ia[sel] - a0] = w[sel]
            parts = mlc.sweep_segments(fmap)
            apertures, mus = [a for a, _ in parts], [f * mu_unit for _, f in parts]
        bounds, segments = mlc.segments_to_control_points(apertures, mus, float(plan.beamlet_mm), a0, b0)
        if segments:
            b["control_segments"], b["leaf_bounds"] = segments, bounds
    return beams


def export_plan_zip(plan):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in export_plan(plan):
            zf.writestr(name, data)
    return buf.getvalue()


# ============================================================================================================ import
#
# Import runs in two passes so that it is bounded in memory and refuses early:
#   1. headers: every file is read without its pixel data (``stop_before_pixels``); modality, identity (one
#      patient, the course's patient, one frame of reference, the structure set / plan / dose referring to each
#      other), the CT geometry (axial, regular, no missing slice, at least 2 slices), the structure set's contour
#      planes and the RT Dose grid are all checked here, and the contours are voxelised (per slice, scanline);
#   2. pixels: only then are the CT slices decoded one at a time into one float32 density volume (HU -> relative
#      electron density by the scanner's table) and the RT Dose resampled slice by slice onto the CT grid.


class Source:
    """One input file: ``name`` and ``open()`` returning a fresh binary file object (bytes, upload, path, zip member)."""

    def __init__(self, name, opener, size=None):
        self.name, self._opener, self.size = name, opener, size

    def open(self):
        return self._opener()


def _as_sources(files, max_files=None):
    """Sources from [(name, bytes | file object | Path)]; zip archives (by content) are expanded member by member."""
    max_files = max_files or getattr(settings, "RADPATH_DICOM_MAX_FILES", 5000)
    out = []
    for name, data in files:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data)
            opener = (lambda d=data: io.BytesIO(d))
        elif isinstance(data, (str, Path)):
            opener = (lambda p=Path(data): open(p, "rb"))
        else:  # an uploaded file (in memory or a temporary file)
            opener = (lambda f=data: (f.seek(0), _Unclosable(f))[1])
        with opener() as fh:
            magic = fh.read(4)
        if magic == b"PK\x03\x04":
            out.extend(_zip_sources(name, opener, max_files))
        else:
            out.append(Source(name, opener))
        if len(out) > max_files:
            _fail(f"More than {max_files} files: import one patient's CT series and RT objects at a time.")
    return out


class _Unclosable(io.RawIOBase):
    """A view of an uploaded file that ``with`` blocks may close without closing the upload itself."""

    def __init__(self, f):
        self._f = f

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        data = self._f.read(len(b))
        b[:len(data)] = data
        return len(data)

    def read(self, n=-1):
        return self._f.read() if n is None or n < 0 else self._f.read(n)

    def seek(self, pos, whence=0):
        return self._f.seek(pos, whence)

    def tell(self):
        return self._f.tell()


def _zip_sources(name, opener, max_files):
    limit = int(getattr(settings, "RADPATH_DICOM_MAX_UNZIPPED_BYTES", 8 * 1024**3))
    try:
        with opener() as fh, zipfile.ZipFile(fh) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except zipfile.BadZipFile as exc:
        _fail(f"{name}: broken zip archive ({exc}).")
    if len(infos) > max_files:
        _fail(f"{name}: the archive holds {len(infos)} files, more than the {max_files} allowed.")
    if sum(i.file_size for i in infos) > limit:
        _fail(f"{name}: the archive unpacks to more than {limit / 1024**3:.0f} GB.")

    def member(info):
        def open_member():
            with opener() as fh, zipfile.ZipFile(fh) as zf:
                return io.BytesIO(zf.read(info))
        return open_member

    return [Source(f"{name}/{i.filename}", member(i), i.file_size) for i in infos
            if not i.filename.rsplit("/", 1)[-1].startswith(".")]


def folder_sources(path):
    """Sources for every file under a server-side folder, which must lie inside ``RADPATH_DICOM_IMPORT_ROOT``.

    Physicists give a folder the scanner or PACS exported to; paths outside that root (or through a symlink
    leaving it) are refused, so the route cannot read arbitrary server files."""
    root = getattr(settings, "RADPATH_DICOM_IMPORT_ROOT", "")
    if not root:
        raise ValidationError({"folder": ["Server-side folder import is not enabled (RADPATH_DICOM_IMPORT_ROOT)."]})
    root = Path(root).resolve()
    folder = (root / str(path)).resolve()
    if folder != root and root not in folder.parents:
        raise ValidationError({"folder": [f"The folder must be inside {root}."]})
    if not folder.is_dir():
        raise ValidationError({"folder": [f"No folder {path!r} under {root}."]})
    max_files = int(getattr(settings, "RADPATH_DICOM_MAX_FILES", 5000))
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            rp = p.resolve()
            if root not in rp.parents:
                raise ValidationError({"folder": [f"{p.relative_to(folder)} points outside {root}."]})
            found.append((str(p.relative_to(folder)), rp))
            if len(found) > max_files:
                raise ValidationError({"folder": [f"More than {max_files} files in {path!r}."]})
    if not found:
        raise ValidationError({"folder": [f"The folder {path!r} holds no file."]})
    return found


DICOMDIR = "1.2.840.10008.1.3.10"
_READ_ERRORS = (InvalidDicomError, EOFError, ValueError, TypeError, KeyError, AttributeError, OSError, IndexError,
                struct.error, NotImplementedError)


def _read(src, *, pixels):
    """Dataset of one source; without ``pixels`` stops before the pixel data (headers only)."""
    try:
        with src.open() as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=not pixels)
            if not pixels and str(ds.get("Modality", "")).upper() != "RTSTRUCT":
                for _ in ds.iterall():  # decode every element now, so a truncated or corrupt file fails here
                    pass  # (a structure set's contour points are decoded by contour_points, much faster)
    except _READ_ERRORS as exc:
        _fail(f"{src.name}: not a readable DICOM file ({exc}).")
    return ds


def _floats(value, n, what, name):
    try:
        v = [float(x) for x in value]
    except (TypeError, ValueError):
        _fail(f"{name}: {what} is not numeric.")
    if len(v) != n or not np.all(np.isfinite(v)):
        _fail(f"{name}: {what} must have {n} finite numbers.")
    return v


def _orientation(iop, name, what):
    """Plane orientation of an axial image: (row-direction axis, sign, column-direction axis, sign).

    The image's rows run along ``iop[:3]`` (patient x or y, either sign) and its columns along ``iop[3:]``: this
    covers head-first and feet-first, supine and prone (and images stored mirrored or transposed); anything
    oblique, sagittal or coronal is refused."""
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    axes = []
    for v in (r, c):
        a = int(np.argmax(np.abs(v)))
        if a == 2 or abs(abs(v[a]) - 1.0) > 1e-3 or np.sum(np.abs(v)) - abs(v[a]) > 3e-3:
            _fail(f"{name}: only axial {what} is supported: ImageOrientationPatient "
                  f"{'/'.join(f'{x:g}' for x in iop)} is oblique, sagittal or coronal.")
        axes.append((a, 1.0 if v[a] > 0 else -1.0))
    if axes[0][0] == axes[1][0]:
        _fail(f"{name}: ImageOrientationPatient {iop} has parallel row and column directions.")
    return axes[0][0], axes[0][1], axes[1][0], axes[1][1]


def _plane_axes(orient, pos, ps, rows, cols):
    """(xs, ys) voxel-centre coordinates (ascending) and a function turning a pixel array ``[row, col]`` into
    ``[ix, iy]`` (ascending x and y) for an image of orientation ``orient`` at ``pos``."""
    ra, rs, ca, cs = orient
    along = {ra: (pos[ra], rs * ps[1], cols), ca: (pos[ca], cs * ps[0], rows)}  # column index steps along ra
    coords = []
    for a in (0, 1):
        start, step, n = along[a]
        v = start + step * np.arange(n)
        coords.append(v[::-1] if step < 0 else v)
    transpose = ra == 0  # rows along x -> pixel[row, col] has col along x: transpose to [x, y]

    def to_xy(px):
        a = px.T if transpose else px
        if (rs if ra == 0 else cs) < 0:
            a = a[::-1, :]
        if (cs if ca == 1 else rs) < 0:
            a = a[:, ::-1]
        return a

    return coords[0], coords[1], to_xy


def _check_regular(values, what, name):
    """Spacing of ascending positions; refuses duplicates, missing entries and non-uniform spacing."""
    d = np.diff(values)
    if np.any(d <= 1e-3):
        k = int(np.argmax(d <= 1e-3))
        _fail(f"{name}: two {what}s share the position {values[k]:.2f} mm.")
    step = float(np.min(d))
    if np.allclose(d, step, rtol=1e-3, atol=1e-2):
        return float(np.mean(d))
    ratio = d / step
    k = int(np.argmax(np.abs(d - step) > max(1e-2, 1e-3 * step)))
    if np.allclose(ratio, np.rint(ratio), atol=2e-2):
        missing = int(np.sum(np.rint(ratio) - 1))
        _fail(f"{name}: {missing} {what}(s) missing: a gap of {d[k]:.2f} mm between z = {values[k]:.2f} and "
              f"{values[k + 1]:.2f} mm where the spacing is {step:.2f} mm. Import the complete series.")
    _fail(f"{name}: the {what}s are not equally spaced (spacing from {d.min():.2f} to {d.max():.2f} mm, first "
          f"irregular between z = {values[k]:.2f} and {values[k + 1]:.2f} mm); RadPath needs a regular grid.")


def ct_geometry(cts, bin_mm=0.0):
    """Engine Grid and the per-slice plan of a CT series from its headers [(source, ds)]: one series, one frame of
    reference, axial, the same size, spacing and in-plane position, equally spaced, at least two slices.

    ``bin_mm``: CT pixels finer than this are binned in-plane by the integer factor ``f = floor(bin_mm / pixel)``
    (the grid's voxels are the centres of f x f pixel blocks, their density the blocks' mean; a remainder of
    pixels at the high-x / high-y edge, outside the body on any clinical CT, is dropped). 0 keeps the pixels."""
    from .engine.grid import Grid

    series = {ds.get("SeriesInstanceUID") for _, ds in cts}
    if len(series) != 1:
        _fail(f"The CT images belong to {len(series)} series; import one CT series at a time.")
    frames = {ds.get("FrameOfReferenceUID") for _, ds in cts}
    if len(frames) != 1 or None in frames:
        _fail("The CT images do not share one FrameOfReferenceUID.")
    if len(cts) < 2:
        _fail(f"The CT series has only {len(cts)} slice: a volume needs the whole series (at least 2 equally spaced "
              "slices covering the structures).")
    slices = []
    for src, ds in cts:
        for attr in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if attr not in ds:
                _fail(f"{src.name}: CT image without {attr}.")
        iop = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient", src.name)
        orient = _orientation(iop, src.name, "CT")
        pos = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", src.name)
        ps = _floats(ds.PixelSpacing, 2, "PixelSpacing", src.name)
        if min(ps) <= 0:
            _fail(f"{src.name}: PixelSpacing must be positive.")
        slices.append((pos, ps, int(ds.Rows), int(ds.Columns), orient, src, ds))
    slices.sort(key=lambda s: s[0][2])
    pos0, ps0, rows, cols, orient0 = slices[0][:5]
    for pos, ps, r, c, orient, src, _ in slices:
        if (r, c) != (rows, cols) or not np.allclose(ps, ps0, atol=1e-4):
            _fail(f"{src.name}: image size or pixel spacing differs from the rest of the series.")
        if orient != orient0:
            _fail(f"{src.name}: ImageOrientationPatient differs from the rest of the series.")
        if not np.allclose(pos[:2], pos0[:2], atol=1e-2):
            _fail(f"{src.name}: slice is shifted in x/y against the rest of the series.")
    zs = np.array([s[0][2] for s in slices])
    sz = _check_regular(zs, "CT slice", "The CT series")
    xs, ys, to_xy = _plane_axes(orient0, pos0, ps0, rows, cols)
    f = max(1, int(bin_mm / min(ps0) + 1e-6)) if bin_mm else 1
    f = min(f, len(xs), len(ys))
    if f > 1:
        nbx, nby = len(xs) // f, len(ys) // f
        xs = xs[:nbx * f].reshape(nbx, f).mean(axis=1)
        ys = ys[:nby * f].reshape(nby, f).mean(axis=1)
        pixel_to_xy = to_xy

        def to_xy(px, f=f, nbx=nbx, nby=nby):
            a = pixel_to_xy(px)[:nbx * f, :nby * f]
            return a.reshape(nbx, f, nby, f).mean(axis=(1, 3), dtype=np.float32)
    grid = Grid((len(xs), len(ys), len(zs)), (float(abs(xs[1] - xs[0])), float(abs(ys[1] - ys[0])), sz),
                (float(xs[0]), float(ys[0]), float(zs[0])))
    first = slices[0][6]
    meta = {"frame_uid": frames.pop(), "study_uid": str(first.get("StudyInstanceUID", "")),
            "patient_id": str(first.get("PatientID", "")),
            "patient_position": str(first.get("PatientPosition", "") or "").upper(),
            "scanner": {"manufacturer": str(first.get("Manufacturer", "") or ""),
                        "model": str(first.get("ManufacturerModelName", "") or ""),
                        "station": str(first.get("StationName", "") or "")},
            "ct_uids": {str(s[6].get("SOPInstanceUID", "")): k for k, s in enumerate(slices)},
            "ct_pixel_mm": [float(ps0[1]), float(ps0[0])], "ct_matrix": [cols, rows], "binning": f}
    return grid, [(s[5], (rows, cols)) for s in slices], to_xy, meta


def read_ct_density(grid, plan, to_xy, table):
    """Decode the CT slices one at a time into a float32 relative-electron-density volume ``[ix, iy, iz]``."""
    from .ct_density import hu_to_density

    nx, ny, nz = grid.shape
    vol = np.empty((nz, ny, nx), np.float32)  # slice-major: each slice is one contiguous write
    for k, (src, shape) in enumerate(plan):
        ds = _read(src, pixels=True)
        try:
            px = ds.pixel_array
        except Exception as exc:  # any decoder failure (truncated, compressed without a plugin) is the file's fault
            _fail(f"{src.name}: cannot decode the pixel data ({exc}).")
        if px.shape != shape:
            _fail(f"{src.name}: pixel data has shape {px.shape}, expected {shape}.")
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        if px.dtype.kind in "iu":  # stored values are integers: one table lookup per distinct value
            lo, hi = int(px.min()), int(px.max())
            lut = hu_to_density(np.arange(lo, hi + 1, dtype=np.float64) * slope + intercept, table)
            rho = lut[px.astype(np.int64) - lo] if lo else lut[px]
        else:
            rho = hu_to_density(px.astype(np.float64) * slope + intercept, table)
        vol[k] = to_xy(rho).T
        del ds, px, rho
    return vol.transpose(2, 1, 0)  # [ix, iy, iz] view (Fortran-ordered)


def fill_polygons(polys, xs, ys):
    """Even-odd fill of closed polygons [(n, 2) mm] on voxel centres ``xs`` x ``ys``: boolean ``[ix, iy]``.

    A scanline rule, vectorised over every edge of every polygon of the slice: for each voxel row ``y_j`` the
    crossings of the edges with ``y0 <= y_j < y1`` (half-open, so a vertex on the row counts once) toggle the
    voxels to their left; a voxel is inside when it is toggled an odd number of times. Several polygons on one
    slice combine by the same parity, so a polygon inside another is a hole."""
    return _fill_rows(polys, xs, ys).T


def _fill_rows(polys, xs, ys):
    """:func:`fill_polygons` as ``[iy, ix]``."""
    nx, ny = len(xs), len(ys)
    x0, dx, y0, dy = float(xs[0]), float(xs[1] - xs[0]) if nx > 1 else 1.0, float(ys[0]), float(ys[1] - ys[0]) if ny > 1 else 1.0
    a = np.concatenate(polys)
    b = np.concatenate([np.roll(p, -1, axis=0) for p in polys])
    ya, yb = a[:, 1], b[:, 1]
    keep = ya != yb
    a, b, ya, yb = a[keep], b[keep], ya[keep], yb[keep]
    lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
    jlo = np.clip(np.ceil((lo - y0) / dy), 0, ny).astype(np.int64)
    jhi = np.clip(np.ceil((hi - y0) / dy), 0, ny).astype(np.int64)  # rows jlo .. jhi - 1
    cnt = jhi - jlo
    sel = cnt > 0
    if not sel.any():
        return np.zeros((ny, nx), bool)
    a, b, jlo, cnt = a[sel], b[sel], jlo[sel], cnt[sel]
    edge = np.repeat(np.arange(len(cnt)), cnt)
    rows = jlo[edge] + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
    yc = y0 + rows * dy
    t = (yc - a[edge, 1]) / (b[edge, 1] - a[edge, 1])
    xc = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
    col = np.clip(np.ceil((xc - x0) / dx), 0, nx).astype(np.int64)  # voxels with x < xc: 0 .. col - 1
    w = nx + 1
    toggles = (np.bincount(rows * w, minlength=ny * w) - np.bincount(rows * w + col, minlength=ny * w)).reshape(ny, w)
    return (np.cumsum(toggles[:, :nx], axis=1) & 1).astype(bool)


def voxelise(contours, grid, name):
    """Boolean mask on ``grid`` from CLOSED_PLANAR contours [(n, 3) mm]: even-odd rule per CT slice.

    Every contour must lie on one of the CT's slices (within a quarter of the slice spacing, at most 0.5 mm); a
    contour between slices or beyond the first or last slice cannot be represented and is refused."""
    x, y, z = grid.axes()
    mask = np.zeros(grid.shape[::-1], bool)  # [iz, iy, ix]: slice-major, returned as an [ix, iy, iz] view
    tol = min(0.5, 0.25 * grid.spacing[2])
    by_slice = {}
    for pts in contours:
        zc = float(pts[0, 2])
        if np.ptp(pts[:, 2]) > 1e-2:
            _fail(f"Structure {name!r}: a contour near z = {zc:.2f} mm is not planar (not on one CT slice).")
        k = int(np.rint((zc - z[0]) / grid.spacing[2]))
        if k < 0 or k >= len(z):
            _fail(f"Structure {name!r}: a contour at z = {zc:.2f} mm lies outside the CT's slices (z = {z[0]:.2f} to "
                  f"{z[-1]:.2f} mm); import the CT series that covers the whole structure set.")
        if abs(z[k] - zc) > tol:
            _fail(f"Structure {name!r}: a contour at z = {zc:.2f} mm is not on a CT slice (nearest {z[k]:.2f} mm).")
        by_slice.setdefault(k, []).append(pts[:, :2])
    for k, polys in by_slice.items():
        mask[k] = _fill_rows(polys, x, y)
    return mask.transpose(2, 1, 0)


CONTOUR_DATA = 0x30060050


def contour_points(item):
    """ContourData of a contour item as float64, parsed from the raw DS text when pydicom has not converted it
    yet (pydicom's per-value DSfloat objects cost ~20 us each: seconds for a clinical structure set)."""
    from pydicom.dataelem import RawDataElement

    if CONTOUR_DATA not in item:
        return None
    elem = item.get_item(CONTOUR_DATA)
    if isinstance(elem, RawDataElement) and isinstance(elem.value, bytes) and elem.VR in (None, "DS"):
        raw = elem.value.strip(b" \x00")
        if not raw:
            return None
        try:
            return np.array(raw.split(b"\\"), dtype=np.float64)
        except ValueError:
            return None
    value = item.ContourData
    try:
        return np.asarray([float(v) for v in (value if isinstance(value, (list, tuple)) or hasattr(value, "__len__")
                                              and not isinstance(value, str) else [value])], dtype=np.float64)
    except (TypeError, ValueError):
        return None


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
            data = contour_points(c)
            if data is None or len(data) % 3 or len(data) < 9:
                _fail(f"{name}: ROI {roi_name!r} has a contour with a malformed point list.")
            pts = data.reshape(-1, 3)
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
        structures.append({"name": roi_name, "kind": kind, "mask": mask, "number": number, "type": t})
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


def dose_geometry(name, ds, frame_uid):
    """Header checks of an RT Dose; returns its axes (ascending x, y, z), the pixel re-orientation and frame order."""
    if ds.get("FrameOfReferenceUID") != frame_uid:
        _fail(f"{name}: the RT Dose has another frame of reference than the CT series.")
    for attr in ("ImagePositionPatient", "PixelSpacing", "DoseGridScaling", "Rows", "Columns"):
        if attr not in ds:
            _fail(f"{name}: RT Dose without {attr}.")
    if str(ds.get("DoseUnits", "GY")).upper() != "GY":
        _fail(f"{name}: only dose in GY is supported (found {ds.get('DoseUnits')}).")
    if str(ds.get("DoseSummationType", "PLAN") or "PLAN").upper() not in ("PLAN", "MULTI_PLAN", "RECORD"):
        _fail(f"{name}: the RT Dose sums {ds.DoseSummationType}; import the whole plan's dose (DoseSummationType PLAN).")
    iop = _floats(ds.get("ImageOrientationPatient", AXIAL), 6, "ImageOrientationPatient", name)
    orient = _orientation(iop, name, "dose grid")
    pos = _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient", name)
    ps = _floats(ds.PixelSpacing, 2, "PixelSpacing", name)
    if min(ps) <= 0:
        _fail(f"{name}: PixelSpacing must be positive.")
    try:
        scaling = float(ds.DoseGridScaling)
    except (TypeError, ValueError):
        _fail(f"{name}: DoseGridScaling is not numeric.")
    if not np.isfinite(scaling) or scaling <= 0:
        _fail(f"{name}: DoseGridScaling must be positive.")
    n = int(ds.get("NumberOfFrames", 1) or 1)
    offsets = [float(v) for v in ds.get("GridFrameOffsetVector", [0.0])] if n > 1 else [0.0]
    if len(offsets) != n:
        _fail(f"{name}: GridFrameOffsetVector has {len(offsets)} values for {n} frames.")
    zs = pos[2] + np.asarray(offsets) if offsets[0] == 0 else np.asarray(offsets)  # relative (usual) or absolute
    order = np.argsort(zs, kind="stable")
    zs = zs[order]
    if n > 1:
        _check_regular(zs, "dose frame", name)
    xs, ys, to_xy = _plane_axes(orient, pos, ps, int(ds.Rows), int(ds.Columns))
    return {"axes": (xs, ys, zs), "to_xy": to_xy, "order": order, "n": n, "scaling": scaling,
            "shape": (n, int(ds.Rows), int(ds.Columns))}


def _interp_taps(src, dst):
    """Two-tap linear interpolation from ascending ``src`` to ``dst`` positions: (i0, i1, w0, w1) with
    ``value(dst) = w0 f[i0] + w1 f[i1]``; both weights are zero outside ``src`` (and a 1-point ``src`` is hit
    only within 1 um)."""
    n = len(src)
    if n == 1:
        hit = (np.abs(dst - src[0]) <= 1e-3).astype(np.float64)
        zero = np.zeros(len(dst), np.int64)
        return zero, zero, hit, np.zeros(len(dst))
    i0 = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, n - 2)
    t = np.clip((dst - src[i0]) / (src[i0 + 1] - src[i0]), 0.0, 1.0)
    inside = (dst >= src[0] - 1e-6) & (dst <= src[-1] + 1e-6)
    return i0, i0 + 1, np.where(inside, 1.0 - t, 0.0), np.where(inside, t, 0.0)


def read_dose(src, info, grid):
    """RT Dose (Gy) resampled trilinearly onto ``grid`` slice by slice (zero outside the dose grid), float32.

    Trilinear interpolation on a regular grid is separable: per CT slice the two nearest dose frames are mixed
    along z, then the plane is interpolated along x and y with two-tap gathers (no whole-volume coordinate
    arrays)."""
    ds = _read(src, pixels=True)
    try:
        with warnings.catch_warnings():  # a frame-count mismatch is reported below as our own error
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as exc:
        _fail(f"{src.name}: cannot decode the dose grid ({exc}).")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.shape != info["shape"]:
        _fail(f"{src.name}: the dose grid has shape {arr.shape}, the header says {info['shape']}.")
    del ds
    xs, ys, zs = info["axes"]
    gx, gy, gz = grid.axes()
    frames = [info["to_xy"](arr[j]) for j in info["order"]]  # [x, y] ascending, raw integers
    x0, x1, wx0, wx1 = _interp_taps(xs, gx)
    y0, y1, wy0, wy1 = _interp_taps(ys, gy)
    z0, z1, wz0, wz1 = _interp_taps(zs, gz)
    scale = info["scaling"]
    out = np.zeros(grid.shape[::-1], np.float32)  # slice-major, returned as an [ix, iy, iz] view
    for k in range(len(gz)):
        if wz0[k] == 0 and wz1[k] == 0:
            continue
        plane = wz0[k] * frames[z0[k]].astype(np.float64)
        if wz1[k]:
            plane += wz1[k] * frames[z1[k]]
        px = wx0[:, None] * plane[x0] + wx1[:, None] * plane[x1]  # (ngx, nsy)
        out[k] = ((px[:, y0] * wy0 + px[:, y1] * wy1) * scale).T
    return out.transpose(2, 1, 0)


def parse_rtplan(name, ds):
    """Beams (gantry, MU, control points), fraction count and prescription of an RT Plan.

    The prescription is the largest TargetPrescriptionDose of its target dose references (Gy, the whole plan),
    ``prescription_roi`` the ROI it refers to (if any)."""
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
        if str(b.get("TreatmentDeliveryType", "TREATMENT")).upper() != "TREATMENT":
            continue  # setup fields deliver no dose
        iso = [float(v) for v in cps[0].get("IsocenterPosition", [0, 0, 0])]
        n_seg = sum(1 for i in range(1, len(cps)) if float(cps[i].get("CumulativeMetersetWeight", 0) or 0)
                    > float(cps[i - 1].get("CumulativeMetersetWeight", 0) or 0))
        beams.append({"gantry_deg": float(cps[0].GantryAngle), "mu": round(mu.get(int(b.BeamNumber), 0.0), 2),
                      "segments": max(n_seg, 1), "beamlets": 0, "isocentre_mm": iso, "name": str(b.get("BeamName", ""))})
    rx, rx_roi = None, None
    for dr in ds.get("DoseReferenceSequence", []):
        if "TargetPrescriptionDose" in dr and dr.TargetPrescriptionDose not in (None, ""):
            v = float(dr.TargetPrescriptionDose)
            if rx is None or v > rx:
                rx = v
                rx_roi = int(dr.ReferencedROINumber) if dr.get("ReferencedROINumber") not in (None, "") else None
    rs = [r.get("ReferencedSOPInstanceUID") for r in ds.get("ReferencedStructureSetSequence", [])]
    return {"beams": beams, "fractions": fractions, "prescription_gy": rx, "prescription_roi": rx_roi,
            "label": str(ds.get("RTPlanLabel", "") or ""), "structure_set_uid": rs[0] if rs else None,
            "sop_uid": str(ds.get("SOPInstanceUID", ""))}


def _opt_float(value):
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def rtplan_beams(ds):
    """The treatment beams of an RT Plan as plain data for ``planning.engine.mlc.delivery`` (the engine reads no
    DICOM): per beam its number, name, radiation type, energy, modifiers (wedges, blocks, compensators, boli), SAD,
    BeamMeterset (MU per fraction, first fraction group), beam limiting devices with their MLC leaf boundaries and
    every control point (cumulative meterset weight, angles, isocentre, the device positions it gives). Also the
    fraction count and the patient positions of the setups. Malformed values raise ``ValidationError`` on
    ``files``."""
    name = "RT Plan"
    meterset, fractions = {}, None
    groups = list(ds.get("FractionGroupSequence", []))
    if groups:
        fg = groups[0]
        fractions = int(fg.get("NumberOfFractionsPlanned", 0) or 0) or None
        for rb in fg.get("ReferencedBeamSequence", []):
            meterset[int(rb.ReferencedBeamNumber)] = _opt_float(rb.get("BeamMeterset"))
    setups = {int(s.get("PatientSetupNumber", 0) or 0): str(s.get("PatientPosition", "") or "").upper()
              for s in ds.get("PatientSetupSequence", [])}
    out = []
    try:
        for b in ds.get("BeamSequence", []):
            if str(b.get("TreatmentDeliveryType", "TREATMENT")).upper() != "TREATMENT":
                continue
            number = int(b.BeamNumber)
            devices = {}
            for d in b.get("BeamLimitingDeviceSequence", []):
                kind = str(d.RTBeamLimitingDeviceType).upper()
                devices[kind] = [float(v) for v in d.LeafPositionBoundaries] if "LeafPositionBoundaries" in d else None
            wedge_types = {str(w.get("WedgeType", "") or "").upper() for w in b.get("WedgeSequence", [])}
            cps = []
            energy = None
            for cp in b.get("ControlPointSequence", []):
                energy = _opt_float(cp.get("NominalBeamEnergy")) if energy is None else energy
                cps.append({
                    "weight": _opt_float(cp.get("CumulativeMetersetWeight")),
                    "gantry": _opt_float(cp.get("GantryAngle")),
                    "collimator": _opt_float(cp.get("BeamLimitingDeviceAngle")),
                    "couch": _opt_float(cp.get("PatientSupportAngle")),
                    "isocentre": [float(v) for v in cp.IsocenterPosition] if "IsocenterPosition" in cp else None,
                    "positions": {str(p.RTBeamLimitingDeviceType).upper(): [float(v) for v in p.LeafJawPositions]
                                  for p in cp.get("BeamLimitingDevicePositionSequence", [])},
                })
            out.append({
                "number": number, "name": str(b.get("BeamName", "") or ""),
                "radiation": str(b.get("RadiationType", "PHOTON") or "PHOTON").upper(), "energy": energy,
                "type": str(b.get("BeamType", "") or "").upper(),
                "wedges": int(b.get("NumberOfWedges", 0) or 0) or len(b.get("WedgeSequence", [])),
                "wedge_type": ", ".join(sorted(t for t in wedge_types if t)) or None,
                "blocks": int(b.get("NumberOfBlocks", 0) or 0), "compensators": int(b.get("NumberOfCompensators", 0) or 0),
                "boli": int(b.get("NumberOfBoli", 0) or 0), "sad": _opt_float(b.get("SourceAxisDistance")),
                "meterset": meterset.get(number), "final_weight": _opt_float(b.get("FinalCumulativeMetersetWeight")),
                "devices": devices, "control_points": cps,
                "patient_position": setups.get(int(b.get("PatientSetupNumber", 0) or 0), ""),
            })
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        _fail(f"{name}: malformed beam data ({type(exc).__name__}: {exc}).")
    return {"beams": out, "fractions": fractions, "patient_positions": sorted({p for p in setups.values() if p})}


def prescription_target(structures, plan_info, dose=None):
    """The structure the prescription is to (HI and CI are reported on it): the ROI the RT Plan's dose reference
    names; else a PTV (a name "PTV..." first, then RTROIInterpretedType PTV) before any CTV/GTV; among several,
    the one whose median dose is nearest the prescription (with a dose and a prescription), else the largest."""
    rx = (plan_info or {}).get("prescription_gy")
    roi = (plan_info or {}).get("prescription_roi")
    for s in structures:
        if roi is not None and s.get("number") == roi:
            return s
    targets = [s for s in structures if s["kind"] == "target"]
    if not targets:
        return None
    def rank(s):
        return (s.get("type") == "PTV") + 2 * s["name"].upper().startswith("PTV")

    best = max(rank(s) for s in targets)
    pool = [s for s in targets if rank(s) == best]
    if len(pool) > 1 and dose is not None and rx:
        return min(pool, key=lambda s: (round(abs(float(np.median(dose[s["mask"]])) - rx), 3),
                                        -int(np.count_nonzero(s["mask"]))))
    return max(pool, key=lambda s: int(np.count_nonzero(s["mask"])))


def _headers(sources):
    by = {"CT": [], "RTSTRUCT": [], "RTDOSE": [], "RTPLAN": []}
    for src in sources:
        ds = _read(src, pixels=False)
        sop = str(ds.get("SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if sop == DICOMDIR:
            continue  # a media directory, not an object
        if "Modality" not in ds:
            _fail(f"{src.name}: DICOM file without a Modality.")
        mod = str(ds.Modality).upper()
        if mod not in by:
            _fail(f"{src.name}: modality {mod} is not supported (CT, RTSTRUCT, RTDOSE, RTPLAN).")
        by[mod].append((src, ds))
    return by


def _check_identity(by, meta, patient_id):
    """One patient (the course's) and one frame of reference; the RT objects refer to each other."""
    ct_pid = meta["patient_id"]
    for src, ds in by["RTSTRUCT"] + by["RTDOSE"] + by["RTPLAN"]:
        pid = str(ds.get("PatientID", ""))
        if ct_pid and pid and pid != ct_pid:
            _fail(f"{src.name}: PatientID {pid} differs from the CT's ({ct_pid}).")
    if patient_id is not None and ct_pid and ct_pid != patient_id:
        _fail(f"The files are for patient ID {ct_pid}, not {patient_id}.")
    ids = {str(ds.get("PatientID", "")) for _, ds in by["CT"]}
    if len(ids) > 1:
        _fail(f"The CT images belong to {len(ids)} patient IDs ({', '.join(sorted(ids))}).")
    rs = by["RTSTRUCT"][0][1]
    for src, ds in by["RTPLAN"]:
        if ds.get("FrameOfReferenceUID") not in (None, "", meta["frame_uid"]):
            _fail(f"{src.name}: the RT Plan has another frame of reference than the CT series.")
        refs = [r.get("ReferencedSOPInstanceUID") for r in ds.get("ReferencedStructureSetSequence", [])]
        if refs and rs.get("SOPInstanceUID") not in refs:
            _fail(f"{src.name}: the RT Plan was made on another structure set than {by['RTSTRUCT'][0][0].name}.")
    for src, ds in by["RTDOSE"]:
        refs = [r.get("ReferencedSOPInstanceUID") for r in ds.get("ReferencedRTPlanSequence", [])]
        if refs and by["RTPLAN"] and by["RTPLAN"][0][1].get("SOPInstanceUID") not in refs:
            _fail(f"{src.name}: the RT Dose belongs to another RT Plan than {by['RTPLAN'][0][0].name}.")


def import_grid_mm():
    """In-plane resolution the import bins fine CT pixels to (``RADPATH_DICOM_GRID_MM``, default 2 mm: a clinical
    512 x 512 CT of 0.98 mm pixels becomes 256 x 256 voxels of 1.95 mm, the resolution of a TPS dose grid)."""
    return float(getattr(settings, "RADPATH_DICOM_GRID_MM", 2.0) or 0.0)


def parse_files(files, *, patient_id=None, density_table=None, grid_mm=None):
    """Parse and cross-check DICOM files [(name, bytes | upload | path)]: the engine Geometry, optional dose and
    plan info. ``patient_id``: the expected PatientID (checked from the headers, before any pixel is decoded);
    ``grid_mm``: in-plane binning (:func:`ct_geometry`; default :func:`import_grid_mm`, 0 keeps CT pixels)."""
    sources = _as_sources(files)
    if not sources:
        _fail("No files were given.")
    by = _headers(sources)
    if not by["CT"]:
        _fail("No CT images: import the CT series together with its RT Structure Set.")
    if len(by["RTSTRUCT"]) != 1:
        _fail(f"Give exactly one RT Structure Set (found {len(by['RTSTRUCT'])}).")
    if len(by["RTDOSE"]) > 1 or len(by["RTPLAN"]) > 1:
        _fail("Give at most one RT Dose and one RT Plan.")
    stage = ["the CT series"]
    try:
        return _parse_checked(by, sources, stage, patient_id, density_table,
                              import_grid_mm() if grid_mm is None else float(grid_mm))
    except ValidationError:
        raise
    except (AttributeError, KeyError, ValueError, TypeError, IndexError) as exc:
        _fail(f"{stage[0]}: incomplete or malformed DICOM ({type(exc).__name__}: {exc}).")


def _parse_checked(by, sources, stage, patient_id, density_table, grid_mm):
    from . import ct_density
    from .engine.grid import BODY, Geometry

    grid, ct_plan, to_xy, meta = ct_geometry(by["CT"], grid_mm)
    _check_identity(by, meta, patient_id)
    rs_src, rs = by["RTSTRUCT"][0]
    stage[0] = rs_src.name
    structures = parse_rtstruct(rs_src.name, rs, grid, meta["frame_uid"])
    dose_info = None
    if by["RTDOSE"]:
        stage[0] = by["RTDOSE"][0][0].name
        dose_info = dose_geometry(stage[0], by["RTDOSE"][0][1], meta["frame_uid"])
        dose_info["src"] = by["RTDOSE"][0][0]
    stage[0] = by["RTPLAN"][0][0].name if by["RTPLAN"] else ""
    plan_info = parse_rtplan(stage[0], by["RTPLAN"][0][1]) if by["RTPLAN"] else None
    rtplan_ds = by["RTPLAN"][0][1] if by["RTPLAN"] else None
    rtplan_src = by["RTPLAN"][0][0] if by["RTPLAN"] else None
    by.clear()  # headers done: drop the datasets before decoding pixels
    # ---- pass 2: pixels
    stage[0] = "the CT series"
    table = density_table or ct_density.table_for(meta["scanner"])
    density = read_ct_density(grid, ct_plan, to_xy, table["points"])
    meta["density_table"] = table.get("name", "")
    dose = None
    if dose_info is not None:
        stage[0] = dose_info["src"].name
        dose = read_dose(dose_info["src"], dose_info, grid)
    geo = Geometry(grid, density, name="Imported CT")
    if not any(s["kind"] == "body" for s in structures):
        from scipy import ndimage

        body = ndimage.binary_fill_holes(density > 0.5)
        structures.insert(0, {"name": "BODY", "kind": "body", "mask": body, "number": None, "type": "EXTERNAL"})
    target = prescription_target(structures, plan_info, dose)
    for s in structures:
        rx = None
        if target is not None and s is target:
            rx = (plan_info or {}).get("prescription_gy") or 1.0  # marks the prescription target (primary)
        geo.add(s["name"], s["mask"], BODY if s["kind"] == "body" else s["kind"], rx)
    return {"geometry": geo, "structures": structures, "dose": dose, "plan": plan_info, "meta": meta,
            "names": [s.name for s in sources], "target": target["name"] if target else None, "rtplan": rtplan_ds,
            "rtplan_src": rtplan_src}


def prescription_note(info, course):
    """Sentence naming where the imported plan's prescription came from, and any difference from the course's."""
    rx, fx = info.get("prescription_gy"), info.get("fractions")
    c_rx, c_fx = float(course.total_dose_gy), int(course.fractions_planned)
    if rx is None and fx is None:
        return f"The RT Plan gives no prescription: the course's {c_rx:g} Gy in {c_fx} fractions is used."
    rx, fx = rx if rx is not None else c_rx, fx or c_fx
    if abs(rx - c_rx) > 1e-3 or fx != c_fx:
        return (f"The RT Plan prescribes {rx:g} Gy in {fx} fractions ({rx / fx:.3g} Gy per fraction); the course "
                f"prescribes {c_rx:g} Gy in {c_fx} fractions. The imported plan keeps the RT Plan's prescription.")
    return ""


def import_files(files, *, course, user, name="", attach_plan=True, density_table=None, grid_mm=None):
    """Import CT + RT Structure Set (+ RT Dose, RT Plan) for ``course``: all or nothing, no file left behind.

    ``files``: [(name, bytes | uploaded file | path)], zip archives expanded. Saves an ``ImportedGeometry``
    (density and masks as .npz under MEDIA_ROOT/imports); with an RT Dose and ``attach_plan`` also an external
    ``Plan`` (status done, awaiting review) whose DVHs come from that dose. The plan's prescription and fraction
    count are the RT Plan's own (the course's only when the RT Plan gives none); ``metrics.prescription_note``
    says when they differ from the course. HI and CI are reported on the prescription target
    (:func:`prescription_target`)."""
    from . import services
    from .models import GeometrySource, ImportedGeometry, Plan, PlanMethod, PlanStatus

    if user is not None and not user.has_perm("planning.import_dicom"):
        from django.core.exceptions import PermissionDenied

        raise PermissionDenied("Your role does not allow DICOM import.")
    parsed = parse_files(files, patient_id=course.patient.mrn, density_table=density_table, grid_mm=grid_mm)
    meta = parsed["meta"]
    geo = parsed["geometry"]
    folder = Path(services.media_path("imports"))
    folder.mkdir(parents=True, exist_ok=True)
    rel = f"imports/geometry-{course.pk}-{timezone.now():%Y%m%d%H%M%S%f}.npz"
    written = [services.media_path(rel)]
    arrays = {"density": geo.density}
    for i, s in enumerate(geo.structures.values()):
        arrays[f"mask_{i}"] = s.mask
    info = parsed["plan"] or {}
    rx = float(info["prescription_gy"]) if info.get("prescription_gy") else float(course.total_dose_gy)
    fractions = int(info["fractions"]) if info.get("fractions") else int(course.fractions_planned)
    note = prescription_note(info, course) if parsed["plan"] is not None else ""
    plan = None
    try:
        with transaction.atomic():
            services.save_npz(written[0], arrays)
            vcc = geo.grid.voxel_volume_cc
            rows = []
            for n, s in geo.structures.items():
                row = {"name": n, "kind": s.kind, "n_voxels": s.n_voxels, "volume_cc": round(s.n_voxels * vcc, 3)}
                if n == parsed["target"]:
                    row["prescription_gy"] = rx
                rows.append(row)
            imported = ImportedGeometry(
                patient=course.patient, course=course, name=name or f"Imported CT {timezone.localdate():%Y-%m-%d}", file=rel,
                grid={"shape": list(geo.grid.shape), "spacing": list(geo.grid.spacing), "origin": list(geo.grid.origin),
                      "patient_position": meta["patient_position"], "density_table": meta.get("density_table", ""),
                      "ct_pixel_mm": meta["ct_pixel_mm"], "ct_matrix": meta["ct_matrix"], "binning": meta["binning"]},
                structures=rows, study_uid=meta["study_uid"][:64], frame_of_reference_uid=meta["frame_uid"][:64],
                source_files=parsed["names"][:500], created_by=user,
            )
            imported._history_user = user
            imported.save()
            if parsed["dose"] is not None and attach_plan:
                if parsed["target"]:
                    geo.structures[parsed["target"]].prescription_gy = rx
                site = course.diagnosis.site if course.diagnosis_id else "other"
                names = list(geo.structures)
                goals = services.validate_goals(services.default_goals(site, rx, names), names)
                plan = Plan(
                    course=course, version=services.next_version(course), name=(name or "External plan")[:120],
                    method=PlanMethod.EXTERNAL, geometry_source=GeometrySource.IMPORTED, imported_geometry=imported,
                    grid_mm=float(min(geo.grid.spacing)), gantry_angles=[b["gantry_deg"] for b in info.get("beams", [])],
                    beamlet_mm=5.0, max_iterations=1, objectives=[], goals=goals,
                    prescription_gy=rx, fractions=fractions, created_by=user,
                    status=PlanStatus.DONE, progress_pct=100.0, progress_message="Imported from DICOM RT",
                )
                plan._history_user = user
                plan.save()
                extra = {"source": "DICOM RT Dose", "dicom_fractions": info.get("fractions"),
                         "dicom_prescription_gy": info.get("prescription_gy"),
                         "course_prescription_gy": float(course.total_dose_gy),
                         "course_fractions": int(course.fractions_planned), "density_table": meta.get("density_table", "")}
                if note:
                    extra["prescription_note"] = note
                if parsed.get("rtplan_src") is not None:  # kept verbatim: the dose check recalculates from it
                    with parsed["rtplan_src"].open() as fh:
                        rtplan_bytes = fh.read()
                    stored = {"rtplan_dicom": np.frombuffer(rtplan_bytes, np.uint8)}
                else:
                    stored = None
                services.store_result(plan, geo, parsed["dose"], beam_summary=info.get("beams") or [], extra_metrics=extra,
                                      extra_arrays=stored)
                if plan.result_file:
                    written.append(services.media_path(plan.result_file))
                plan.finished_at = timezone.now()
                plan.save()
    except BaseException:
        if plan is not None and plan.result_file:
            written.append(services.media_path(plan.result_file))
        for p in written:
            Path(p).unlink(missing_ok=True)
        raise
    n = len(geo.structures)
    msg = f"Imported a {geo.grid.shape[0]}x{geo.grid.shape[1]}x{geo.grid.shape[2]} CT with {n} structures"
    msg += f" and an external plan (v{plan.version}) from the RT Dose." if plan else "."
    if plan and note:
        msg += " " + note
    return {"geometry": imported, "plan": plan, "message": msg, "note": note}
