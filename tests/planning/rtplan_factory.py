"""RT Plans as another planning system writes them (pydicom, independent of RadPath's own writer).

``rtplan(ctx, beams, fractions=...)`` -> (filename, bytes). Each beam is a dict: ``gantry``, ``mu`` (per fraction),
``segments`` ([(x jaws, y jaws, leaves (2N) or None, MU)], step and shoot) or ``sweep`` ((start leaves, end leaves,
jaws), a sliding window), ``bounds`` (MLCX leaf boundaries), and knobs for what RadPath must refuse: ``energy``,
``wedge`` (a WedgeType), ``couch``, ``arc_to`` (gantry at the last control point), ``collimator``. Like Eclipse,
only the first control point carries energy, angles, isocentre and jaws; later ones only what changes.
"""

import io

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"


def _positions(kind, values):
    d = Dataset()
    d.RTBeamLimitingDeviceType = kind
    d.LeafJawPositions = [f"{float(v):.6g}" for v in values]
    return d


def _cp(index, weight, **attrs):
    cp = Dataset()
    cp.ControlPointIndex = index
    cp.CumulativeMetersetWeight = f"{weight:.8g}"
    for k, v in attrs.items():
        setattr(cp, k, v)
    return cp


def rtplan(ctx, beams, *, fractions, prescription_gy=2.0, position="HFS", label="Other TPS"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_PLAN
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = RT_PLAN, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTPLAN"
    p = ctx["patient"]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = p["name"], p["id"], p["birth_date"], p["sex"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ctx["study_uid"], generate_uid()
    ds.FrameOfReferenceUID = ctx["frame_uid"]
    ds.Manufacturer = "Other TPS"
    ds.RTPlanLabel = label
    ds.RTPlanGeometry = "PATIENT"
    if ctx.get("rtstruct_uid"):
        rs = Dataset()
        rs.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
        rs.ReferencedSOPInstanceUID = ctx["rtstruct_uid"]
        ds.ReferencedStructureSetSequence = Sequence([rs])
    dr = Dataset()
    dr.DoseReferenceNumber, dr.DoseReferenceStructureType, dr.DoseReferenceType = 1, "SITE", "TARGET"
    dr.TargetPrescriptionDose = prescription_gy
    ds.DoseReferenceSequence = Sequence([dr])
    setup = Dataset()
    setup.PatientSetupNumber, setup.PatientPosition = 1, position
    ds.PatientSetupSequence = Sequence([setup])
    fg = Dataset()
    fg.FractionGroupNumber, fg.NumberOfFractionsPlanned, fg.NumberOfBeams = 1, fractions, len(beams)
    refs, seq = [], []
    for n, b in enumerate(beams, start=1):
        r = Dataset()
        r.ReferencedBeamNumber, r.BeamMeterset = n, f"{b['mu']:.6g}"
        refs.append(r)
        beam = Dataset()
        beam.BeamNumber, beam.BeamName = n, b.get("name", f"F{n}")
        beam.BeamType = "DYNAMIC"
        beam.RadiationType = b.get("radiation", "PHOTON")
        beam.TreatmentDeliveryType = "TREATMENT"
        beam.SourceAxisDistance = "1000"
        beam.PatientSetupNumber = 1
        beam.NumberOfWedges = 1 if b.get("wedge") else 0
        if b.get("wedge"):
            w = Dataset()
            w.WedgeNumber, w.WedgeType, w.WedgeAngle, w.WedgeOrientation = 1, b["wedge"], 60, 90
            beam.WedgeSequence = Sequence([w])
        beam.NumberOfCompensators = beam.NumberOfBoli = beam.NumberOfBlocks = 0
        bounds = b.get("bounds")
        devices = []
        for kind in ("ASYMX", "ASYMY"):
            d = Dataset()
            d.RTBeamLimitingDeviceType, d.NumberOfLeafJawPairs = kind, 1
            devices.append(d)
        if bounds is not None:
            d = Dataset()
            d.RTBeamLimitingDeviceType, d.NumberOfLeafJawPairs = "MLCX", len(bounds) - 1
            d.LeafPositionBoundaries = [f"{v:g}" for v in bounds]
            devices.append(d)
        beam.BeamLimitingDeviceSequence = Sequence(devices)
        first = dict(NominalBeamEnergy=b.get("energy", 6), GantryAngle=b["gantry"], GantryRotationDirection="NONE",
                     BeamLimitingDeviceAngle=b.get("collimator", 0.0), PatientSupportAngle=b.get("couch", 0.0),
                     IsocenterPosition=list(b["iso"]))
        cps = []
        if "sweep" in b:
            start, end, (jx, jy) = b["sweep"]
            cps.append(_cp(0, 0.0, BeamLimitingDevicePositionSequence=Sequence(
                [_positions("ASYMX", jx), _positions("ASYMY", jy), _positions("MLCX", start)]), **first))
            cps.append(_cp(1, 1.0, BeamLimitingDevicePositionSequence=Sequence([_positions("MLCX", end)])))
        else:
            total = sum(s[3] for s in b["segments"])
            cum = 0.0
            for jx, jy, leaves, mu in b["segments"]:
                pos = [_positions("ASYMX", jx), _positions("ASYMY", jy)]
                if leaves is not None:
                    pos.append(_positions("MLCX", leaves))
                cps.append(_cp(len(cps), cum / total, BeamLimitingDevicePositionSequence=Sequence(pos),
                               **(first if not cps else {})))
                cum += mu
                cps.append(_cp(len(cps), cum / total))
        if "arc_to" in b:
            cps[-1].GantryAngle = b["arc_to"]
        beam.FinalCumulativeMetersetWeight = "1"
        beam.NumberOfControlPoints = len(cps)
        beam.ControlPointSequence = Sequence(cps)
        seq.append(beam)
    fg.ReferencedBeamSequence = Sequence(refs)
    ds.FractionGroupSequence = Sequence([fg])
    ds.BeamSequence = Sequence(seq)
    ctx["rtplan_uid"] = ds.SOPInstanceUID
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return "RP.dcm", buf.getvalue()
