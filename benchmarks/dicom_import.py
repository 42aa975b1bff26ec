"""DICOM RT import benchmark: a clinical-size CT + RT Structure Set + RT Plan + RT Dose through ``import_files``.

    .venv/bin/python benchmarks/dicom_import.py            # 200 slices of 512 x 512 (0.98 mm, 2.5 mm apart)
    .venv/bin/python benchmarks/dicom_import.py --quick    # 60 slices of 256 x 256 (under a minute)

It writes the series with pydicom into a temporary folder (an elliptical thorax with two lungs, a spine, a
spinal cord and a spherical PTV; analytic polygons as contours; a 2.5 mm RT Dose peaking in the PTV; an RT Plan
prescribing 60 Gy in 30 fractions), then measures, each in a fresh child process so peak memory is the import's:

- ``radpath``: ``planning.dicom_io.import_files`` from the folder (as the server-folder route does) into a
  fresh database: header pass, CT decoding into the density volume, contour voxelisation, dose resampling onto
  the CT grid, the stored geometry and dose files, DVHs, goals and plan rows;
- ``peer``: what any importer must at least do: plain ``pydicom.dcmread`` of every file and the CT pixels
  stacked into one int16 numpy volume (no checks, no voxelisation, no resampling, nothing stored).

Figures: wall seconds and peak RSS (MiB, the child's ``ru_maxrss``, and above the child's baseline after its
imports), the ratio RadPath / peer, and the structure volumes found. The last line is one JSON object.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, emit_json  # noqa: E402

TARGET_S, TARGET_MB = 10.0, 1024.0


def peak_rss_mb():
    """This process's peak RSS (VmHWM, MiB): unlike ru_maxrss it is not inherited from the parent across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="60 slices of 256 x 256")
    p.add_argument("--slices", type=int, default=None)
    p.add_argument("--matrix", type=int, default=None)
    p.add_argument("--child", choices=["radpath", "peer"], help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------ the series


def _ellipse(cx, cy, a, b, n=180):
    import numpy as np

    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + a * np.cos(t), cy + b * np.sin(t)])


def generate(folder, n_slices, matrix):
    """Write CT slices, RS, RP and RD into ``folder``; returns the analytic structure volumes (cc)."""
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from planning import dicom_io
    from planning.engine.grid import Grid

    ps = 500.0 / matrix  # 500 mm field of view
    dz = 2.5
    x = -250.0 + ps / 2 + ps * np.arange(matrix)
    y = x.copy()
    z = dz * np.arange(n_slices) - dz * (n_slices - 1) / 2
    grid = Grid((matrix, matrix, n_slices), (ps, ps, dz), (float(x[0]), float(y[0]), float(z[0])))
    X, Y = np.meshgrid(x, y, indexing="ij")
    zc, r_ptv = 0.0, min(35.0, 0.3 * dz * n_slices)
    ctx = {"patient": {"name": "Bench^Thorax", "id": "BENCH0001", "birth_date": "19500101", "sex": "F"},
           "study_uid": generate_uid(), "frame_uid": generate_uid(), "ct_series_uid": generate_uid(),
           "when": __import__("datetime").datetime(2026, 12, 1, 9, 0), "label": "Bench"}
    body = ((X / 175.0) ** 2 + (Y / 125.0) ** 2) <= 1
    lungs = [((X - s * 80.0) / 55.0) ** 2 + ((Y + 10.0) / 70.0) ** 2 <= 1 for s in (-1, 1)]
    spine = ((X / 18.0) ** 2 + ((Y - 90.0) / 18.0) ** 2) <= 1
    cord = (X ** 2 + (Y - 95.0) ** 2) <= 7.0 ** 2
    uids = []
    for k in range(n_slices):  # one slice at a time: the generator itself stays small
        hu = np.full((matrix, matrix), -1000.0)
        hu[body] = 20.0
        lung_slice = abs(z[k]) <= 0.4 * dz * n_slices
        if lung_slice:
            for m in lungs:
                hu[m] = -750.0
        hu[spine & ~cord] = 700.0
        ds = dicom_io._base(dicom_io.CT_IMAGE, "CT", ctx["patient"], ctx["study_uid"], ctx["frame_uid"],
                            ctx["ct_series_uid"], ctx["when"])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(x[0]), float(y[0]), float(z[k])]
        ds.ImageOrientationPatient = dicom_io.AXIAL
        ds.PixelSpacing = [ps, ps]
        ds.SliceThickness = dz
        ds.PatientPosition = "HFS"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = matrix
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = (np.rint(hu.T) + 1024).astype(np.uint16).tobytes()
        uids.append(ds.SOPInstanceUID)
        ds.save_as(folder / f"CT.{k + 1:04d}.dcm", enforce_file_format=True)
    ctx["ct_uids"] = uids
    # structure set from analytic polygons (what a TPS writes), not from masks
    contours = {"BODY": [], "Lung_L": [], "Lung_R": [], "SpinalCord": [], "PTV": []}
    for k, zk in enumerate(z):
        contours["BODY"].append((k, _ellipse(0, 0, 175.0, 125.0, 360)))
        if abs(zk) <= 0.4 * dz * n_slices:
            contours["Lung_R"].append((k, _ellipse(-80.0, -10.0, 55.0, 70.0)))
            contours["Lung_L"].append((k, _ellipse(80.0, -10.0, 55.0, 70.0)))
        contours["SpinalCord"].append((k, _ellipse(0.0, 95.0, 7.0, 7.0, 40)))
        if abs(zk - zc) < r_ptv:
            rk = np.sqrt(r_ptv ** 2 - (zk - zc) ** 2)
            contours["PTV"].append((k, _ellipse(40.0, -20.0, rk, rk, 90)))
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    rs_name, rs_bytes = dicom_io.write_rtstruct([], grid, ctx)
    rs = pydicom.dcmread(__import__("io").BytesIO(rs_bytes))
    types = {"BODY": "EXTERNAL", "PTV": "PTV"}
    rois, rcs, obs = [], [], []
    for i, (name, polys) in enumerate(contours.items(), start=1):
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = i, ctx["frame_uid"], name
        roi.ROIGenerationAlgorithm = "MANUAL"
        rois.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber, rc.ROIDisplayColor = i, [255, 0, 0]
        seq = []
        for k, poly in polys:
            c = Dataset()
            c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(poly)
            c.ContourData = [round(float(v), 3) for v in np.column_stack([poly, np.full(len(poly), z[k])]).ravel()]
            seq.append(c)
        rc.ContourSequence = Sequence(seq)
        rcs.append(rc)
        ob = Dataset()
        ob.ObservationNumber, ob.ReferencedROINumber = i, i
        ob.RTROIInterpretedType, ob.ROIInterpreter = types.get(name, "ORGAN"), ""
        obs.append(ob)
    rs.StructureSetROISequence, rs.ROIContourSequence, rs.RTROIObservationsSequence = Sequence(rois), Sequence(rcs), Sequence(obs)
    rs.save_as(folder / rs_name, enforce_file_format=True)
    ctx["rtstruct_uid"] = rs.SOPInstanceUID
    name, data = dicom_io.write_rtplan([{"gantry_deg": g, "mu": 200.0} for g in (0, 72, 144, 216, 288)], ctx,
                                       fractions=30, prescription_gy=60.0, label="Bench")
    (folder / name).write_bytes(data)
    dgrid = Grid((int(360 / 2.5), int(260 / 2.5), n_slices), (2.5, 2.5, dz), (-178.75, -128.75, float(z[0])))
    DX, DY, DZ = dgrid.mesh()
    r2 = (DX - 40.0) ** 2 + (DY + 20.0) ** 2 + (DZ - zc) ** 2
    dose = 62.0 / (1.0 + (r2 / (r_ptv + 5.0) ** 2) ** 3) + 5.0 * np.exp(-r2 / 100.0 ** 2)
    dose *= ((DX / 175.0) ** 2 + (DY / 125.0) ** 2) <= 1.05
    name, data = dicom_io.write_rtdose(dose.astype(np.float32), dgrid, ctx)
    (folder / name).write_bytes(data)
    area = {"BODY": np.pi * 175 * 125, "Lung_L": np.pi * 55 * 70, "SpinalCord": np.pi * 49}
    return {k: round(v * dz * len(contours[k]) / 1000.0, 1) for k, v in area.items()}


# ------------------------------------------------------------------------------------------------ the children


def child_radpath(folder):
    import os

    from _common import fresh_database

    db = fresh_database(None, label="dicom")
    try:
        import datetime as dt
        from decimal import Decimal

        from planning import dicom_io
        from workflow.models import Course, Diagnosis, Patient

        patient = Patient.objects.create(mrn="BENCH0001", given_name="Thorax", family_name="Bench",
                                         birth_date=dt.date(1950, 1, 1), sex="F")
        dx = Diagnosis.objects.create(patient=patient, site="other", diagnosed_on=dt.date(2026, 11, 1))
        course = Course(patient=patient, diagnosis=dx, intent="curative", technique="IMRT", treated_site="Thorax",
                        total_dose_gy=Decimal("60.00"), fractions_planned=30, dose_per_fraction_gy=Decimal("2.00"))
        course.full_clean()
        course.save()
        files = [(p.name, p) for p in sorted(Path(folder).iterdir())]
        base = peak_rss_mb()
        t0 = time.perf_counter()
        if os.environ.get("BENCH_PROFILE"):
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
        result = dicom_io.import_files(files, course=course, user=None, name="Bench")
        if os.environ.get("BENCH_PROFILE"):
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        seconds = time.perf_counter() - t0
        geom, plan = result["geometry"], result["plan"]
        return {"seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": base,
                "grid": geom.grid["shape"], "volumes_cc": {s["name"]: s["volume_cc"] for s in geom.structures},
                "ptv_d95_gy": plan.structure_doses.get(name="PTV").metrics["D95"], "target": plan.metrics["target"],
                "CI": plan.metrics["CI"], "HI": plan.metrics["HI"], "n_files": len(files)}
    finally:
        db.drop()


def child_peer(folder):
    import numpy as np
    import pydicom

    base = peak_rss_mb()
    t0 = time.perf_counter()
    cts, others = [], []
    for p in sorted(Path(folder).iterdir()):
        ds = pydicom.dcmread(p)
        (cts if ds.Modality == "CT" else others).append(ds)
    cts.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.empty((len(cts), cts[0].Rows, cts[0].Columns), np.int16)
    for k, ds in enumerate(cts):
        vol[k] = ds.pixel_array.astype(np.int16) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    for ds in others:
        if ds.Modality == "RTDOSE":
            _ = ds.pixel_array
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": base}


def run_child(kind, folder):
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--folder", str(folder)], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"{kind} child failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(child_radpath(args.folder) if args.child == "radpath" else child_peer(args.folder)))
        return
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    n_slices = args.slices or (60 if args.quick else 200)
    matrix = args.matrix or (256 if args.quick else 512)
    with tempfile.TemporaryDirectory(prefix="radpath-dicom-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        analytic = generate(folder, n_slices, matrix)
        gen_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1024 ** 2
        print(f"series: {n_slices} slices of {matrix} x {matrix} + RS + RP + RD, {size_mb:.0f} MB, written in {gen_s:.1f} s")
        peer = run_child("peer", folder)
        print(f"peer (pydicom dcmread of every file + int16 volume): {peer['seconds']} s, peak RSS {peer['peak_rss_mb']} MiB")
        rad = run_child("radpath", folder)
        print(f"RadPath import_files: {rad['seconds']} s, peak RSS {rad['peak_rss_mb']} MiB "
              f"(+{rad['peak_rss_mb'] - rad['baseline_rss_mb']:.0f} over the process baseline)")
        print(f"  volumes cc {rad['volumes_cc']} (analytic {analytic}); PTV D95 {rad['ptv_d95_gy']} Gy; "
              f"HI {rad['HI']} CI {rad['CI']} on {rad['target']}")
    ratio = rad["seconds"] / peer["seconds"] if peer["seconds"] else None
    figures = {"slices": n_slices, "matrix": matrix, "series_mb": round(size_mb, 1),
               "radpath_s": rad["seconds"], "radpath_peak_rss_mb": rad["peak_rss_mb"],
               "radpath_rss_above_baseline_mb": round(rad["peak_rss_mb"] - rad["baseline_rss_mb"], 1),
               "peer_s": peer["seconds"], "peer_peak_rss_mb": peer["peak_rss_mb"],
               "time_ratio_radpath_over_peer": round(ratio, 2) if ratio else None,
               "target_s": TARGET_S, "target_mb": TARGET_MB,
               "meets_targets": rad["seconds"] < TARGET_S and rad["peak_rss_mb"] < TARGET_MB,
               "volumes_cc": rad["volumes_cc"], "analytic_volumes_cc": analytic, "ptv_d95_gy": rad["ptv_d95_gy"],
               "quick": bool(args.quick)}
    emit_json(figures)


if __name__ == "__main__":
    main()
