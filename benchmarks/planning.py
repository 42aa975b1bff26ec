#!/usr/bin/env python
"""Benchmark: RadPath's planning engine against pyRadPlan on the TG-119 C-shape (matRad's TG119.mat).

    python benchmarks/planning.py            # 9 equispaced beams, 5 mm beamlets, 5 mm dose grid
    python benchmarks/planning.py --quick    # 3 beams, 8 mm dose grid, 30 iterations (~30-45 s on the shared
                                             # 2-core machine; a first run also installs pyRadPlan)

pyRadPlan (pip ``pyradplan==0.5.0``) is NOT a RadPath dependency: this script creates its own venv under
``.bench/pyradplan-venv`` on first use and runs pyRadPlan there in a subprocess (this same file in
``--worker`` mode, which imports nothing from RadPath). Both engines plan the identical voxels: the worker
reports pyRadPlan's dose grid, and RadPath reads the TG119.mat shipped in the pyRadPlan wheel with
``planning.engine.matrad`` and resamples it onto that grid (density trilinear, structures nearest
neighbour, density outside the structures ignored as matRad does). Same gantry angles, same 5 mm
beamlets, same isocentre, same objectives (the ones stored in the file's cst: target squared deviation
from 50 Gy x1000, core squared overdose above 25 Gy x300, body squared overdose above 30 Gy x100).

RadPath plans as the clinic does (optimise fast, report accurately: the fast matrix corrected to the untruncated
dose in ``--correction-rounds`` rounds, the plan's dose the untruncated dose of its final fluence; all of that is
in its optimisation time). Both plans are judged on an accurate dose of their final fluence: RadPath's untruncated
pencil beam, and pyRadPlan's own engine in a forward calculation with its geometric lateral cut-off (50 mm in its
matrix) widened to its kernel range (``--prp-accurate-cutoff``), resampled from the CT grid onto the dose grid; that
evaluation is not counted in pyRadPlan's time. Each matrix's accuracy is the fraction of the dose its own product
drops against that accurate dose (target and all calculation voxels; pyRadPlan's includes the CT-to-dose-grid
resampling).

Reported: sizes (voxels, beamlets, nonzeros), dose-influence and optimisation times and their ratios,
both plans' TG-119 metrics on the accurate dose (each normalised so PTV D95 = 50 Gy, and raw; the matrices' own
figures as ``*_metrics_matrix``), peak memory of each process,
and the memory-bandwidth bound of one optimisation iteration: the bytes the two sparse products need (values,
column indices and row pointers of ``D`` and of its CSR transpose ``DT``, input and output vectors, float32 /
int32; the optimiser's extra sub-row pointers and partial sums are not counted) divided by the bandwidth of a
large numpy copy (bytes read + written; the better of a 1-thread and an all-threads copy, so threaded products
are not flattered). The products are timed as the optimiser runs them (``DoseInfluence.matvec`` /
``rmatvec``, threaded) and, for reference, as plain scipy ``D @ w`` and ``DT @ g``; best of interleaved rounds
(the bandwidth probe in the same rounds), as the machine is shared. The last line of output is one JSON object
with every figure.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench" / "pyradplan-venv"
PIP_SPEC = ["pyradplan==0.5.0", "pydantic==2.11.*"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- pyRadPlan side (subprocess)
def worker(a) -> None:
    import logging

    import numpy as np

    logging.disable(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from pyRadPlan import PhotonPlan, calc_dose_influence, fluence_optimization, generate_stf, load_tg119
    import SimpleITK as sitk

    t0 = time.perf_counter()
    ct, cst = load_tg119()
    t_load = time.perf_counter()
    c_load = time.process_time()
    angles = np.linspace(0, 360, a.beams, endpoint=False)
    pln = PhotonPlan(machine="Generic")
    pln.prop_stf = {"gantry_angles": angles, "couch_angles": np.zeros(a.beams), "bixel_width": a.bixel}
    pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": a.res, "y": a.res, "z": a.res}}}
    pln.prop_opt = {"max_iter": a.max_iter, "display": False}
    stf = generate_stf(ct, cst, pln)
    t_stf = time.perf_counter()
    c_stf = time.process_time()
    dij = calc_dose_influence(ct, cst, stf, pln)
    t_dij = time.perf_counter()
    c_dij = time.process_time()
    info: dict = {}
    fluence = fluence_optimization(ct, cst, stf, dij, pln, opt_info=info)
    t_opt = time.perf_counter()
    c_opt = time.process_time()
    img = dij.compute_result_dose_grid(fluence)["physical_dose"]
    dose = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    # pyRadPlan's plan on ITS accurate dose: a forward calculation of the same fluence with the geometric lateral
    # cut-off (default 50 mm, its matrix's truncation) widened to the whole kernel range, i.e. untruncated by its
    # own model; resampled onto the dose grid. Not counted in its planning time (an evaluation).
    t_acc0 = time.perf_counter()
    from pyRadPlan import PhotonPlan as _PP
    from pyRadPlan.dose import calc_dose_forward
    import copy as _copy

    kernel_range = None
    try:
        from pyRadPlan.dose.engines import get_engine

        mach = get_engine(pln).load_machine("photons", "Generic")
        kernel_range = float(mach.get_kernel_by_energy(6.0).kernel_pos[-1])
    except Exception:  # noqa: BLE001 - only for the report; the cut-off below is wide enough regardless
        kernel_range = None
    cut = float(a.prp_accurate_cutoff or kernel_range or 200.0)
    pln_acc = _PP(machine="Generic")
    pln_acc.prop_stf = pln.prop_stf
    pln_acc.prop_dose_calc = {"dose_grid": {"resolution": {"x": a.res, "y": a.res, "z": a.res}},
                              "geometric_lateral_cutoff": cut}
    res_acc = calc_dose_forward(ct, cst, stf, pln_acc, np.asarray(fluence))
    img_acc = sitk.Resample(res_acc["physical_dose"], img, sitk.Transform(), sitk.sitkLinear, 0.0)
    dose_acc = sitk.GetArrayFromImage(img_acc).transpose(2, 1, 0)
    t_acc = time.perf_counter() - t_acc0
    g = dij.dose_grid
    D = dij.physical_dose.flat[0]
    try:
        iso = np.asarray(stf.beams[0].iso_center, float).tolist()
    except Exception:  # noqa: BLE001
        iso = None
    meta = {
        "t_load_s": t_load - t0, "t_stf_s": t_stf - t_load, "t_dij_s": t_dij - t_stf, "t_opt_s": t_opt - t_dij,
        "cpu_stf_s": c_stf - c_load, "cpu_dij_s": c_dij - c_stf, "cpu_opt_s": c_opt - c_dij,
        "voxels_grid": int(D.shape[0]), "beamlets": int(D.shape[1]), "nnz": int(D.nnz),
        "format": D.format, "dtype": str(D.dtype), "iterations": info.get("num_iter"),
        "solver": str((info.get("result_info") or {}).get("solver", "")) or "default (scipy L-BFGS-B unless "
        "IPOPT is installed)", "peak_rss_mb": peak_rss_mb(), "iso": iso,
        "t_accurate_eval_s": t_acc, "accurate_cutoff_mm": cut, "kernel_range_mm": kernel_range,
    }
    np.savez(a.worker, dose=dose.astype(np.float32), dose_accurate=dose_acc.astype(np.float32), x=np.asarray(g.x), y=np.asarray(g.y), z=np.asarray(g.z),
             fluence=np.asarray(fluence), meta=json.dumps(meta))


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    # find the package without importing it: importing pyRadPlan takes ~8-13 s here, and the worker does it anyway
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('pyRadPlan') is None)"
    ok = py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0
    if not ok:
        print(f"installing pyRadPlan into {VENV} ...", flush=True)
        VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PIP_SPEC], check=True)
    return py


def run_pyradplan(py: Path, a, out: Path) -> dict:
    cmd = [str(py), str(Path(__file__).resolve()), "--worker", str(out), "--beams", str(a.beams),
           "--bixel", str(a.bixel), "--res", str(a.res), "--max-iter", str(a.max_iter),
           "--prp-accurate-cutoff", str(a.prp_accurate_cutoff or 0)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-4000:])
        raise SystemExit("pyRadPlan worker failed")
    import numpy as np

    z = np.load(out)
    meta = json.loads(str(z["meta"]))
    meta["wall_s"] = wall
    return {"meta": meta, "dose": z["dose"], "dose_accurate": z["dose_accurate"], "x": z["x"], "y": z["y"],
            "z": z["z"]}


# --------------------------------------------------------------------------- RadPath side
class BandwidthProbe:
    """Bandwidth of a large numpy copy (bytes read + written per second) between two buffers of ``n_bytes``
    allocated once (fresh pages would be timed as page faults); ``threads`` > 1 copies that many slices at once
    (numpy releases the GIL)."""

    def __init__(self, n_bytes: int = 256 * 2**20):
        import numpy as np

        self.src = np.ones(n_bytes // 4, np.float32)
        self.dst = np.zeros_like(self.src)
        self.pool = None

    def gbs(self, threads: int = 1, repeats: int = 1) -> float:
        import numpy as np

        src, dst = self.src, self.dst
        parts = [slice(i * src.size // threads, (i + 1) * src.size // threads) for i in range(threads)]
        if threads > 1 and self.pool is None:
            self.pool = ThreadPoolExecutor(threads)
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            if threads == 1:
                np.copyto(dst, src)
            else:
                list(self.pool.map(lambda sl: np.copyto(dst[sl], src[sl]), parts))
            best = min(best, time.perf_counter() - t)
        return 2 * src.nbytes / best / 1e9

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()
        self.src = self.dst = None


def memory_bandwidth_gbs(n_bytes: int = 256 * 2**20, threads: int = 1, repeats: int = 5) -> float:
    """Bandwidth of a large numpy copy (bytes read + written per second), best of ``repeats``."""
    probe = BandwidthProbe(n_bytes)
    try:
        return probe.gbs(threads, repeats)
    finally:
        probe.close()


def measure_iteration(dij, prob, weights, rounds: int) -> dict:
    """Best-of-``rounds`` wall times (s) of one iteration's two products as the optimiser runs them (``dij.matvec``
    and ``dij.rmatvec``: threaded, ``DT``'s rows cut), of the same two products with plain scipy
    (``D @ w``, ``DT @ g``), of the full objective + gradient, and the memory bandwidth (single and threaded
    copy). The rounds interleave all of them, so a busy machine slows them alike; CPU time (process, all
    threads) of the products is the mean."""
    import numpy as np

    w32 = np.asarray(weights, np.float32)
    g32 = np.ones(dij.n_voxels, np.float32)
    threads = dij.products.threads
    best = {"fast": np.inf, "scipy": np.inf, "eval": np.inf}
    bw1 = bwt = 0.0
    cpu = 0.0
    fns = {"fast": lambda: (dij.matvec(w32), dij.rmatvec(g32)), "scipy": lambda: (dij.D @ w32, dij.DT @ g32),
           "eval": lambda: prob.value_and_grad(weights)}
    for f in fns.values():  # warm up
        f()
    probe = BandwidthProbe()
    probe.gbs()
    for _ in range(rounds):
        bw1 = max(bw1, probe.gbs())
        if threads > 1:
            bwt = max(bwt, probe.gbs(threads))
        for k, f in fns.items():
            for _ in range(3):
                t, c = time.perf_counter(), time.process_time()
                f()
                best[k] = min(best[k], time.perf_counter() - t)
                if k == "fast":
                    cpu += (time.process_time() - c) / (3 * rounds)
    probe.close()
    return {"t_products_s": best["fast"], "t_products_scipy_s": best["scipy"], "t_eval_s": best["eval"],
            "c_products_s": cpu, "bw_1_gbs": bw1, "bw_threads_gbs": bwt, "threads": threads}


def product_bytes(M) -> int:
    """Bytes one CSR mat-vec touches: values, column indices, row pointers, input and output vectors."""
    return int(M.data.nbytes + M.indices.nbytes + M.indptr.nbytes + 4 * M.shape[0] + 4 * M.shape[1])


def metrics(dose_cube, geo, target="OuterTarget", core="Core", rx=50.0) -> dict:
    import numpy as np

    from planning.engine import dvh

    t = dose_cube[geo.structures[target].mask]
    out = {}
    for label, s in (("raw", 1.0), ("norm", rx / dvh.d_pct(t, 95))):
        c = dose_cube * s
        tt, cc = c[geo.structures[target].mask], c[geo.structures[core].mask]
        out[label] = {
            "PTV_D95": round(dvh.d_pct(tt, 95), 2), "PTV_D10": round(dvh.d_pct(tt, 10), 2),
            "PTV_HI": round(dvh.homogeneity_index(tt), 3),
            "CI": round(dvh.paddick_ci(c, geo.structures[target].mask, geo.body.mask, rx), 3),
            "Core_D10": round(dvh.d_pct(cc, 10), 2), "Core_Dmean": round(float(np.mean(cc)), 2),
            "Body_Dmean": round(float(np.mean(c[geo.body.mask])), 2),
        }
        n = out[label]
        n["goals_passed"] = int(n["PTV_D95"] >= 50 - 1e-6) + int(n["PTV_D10"] <= 55) + int(n["Core_D10"] <= 25)
        n["hard_goal"] = bool(n["Core_D10"] <= 10 and n["PTV_D95"] >= 50 - 1e-6 and n["PTV_D10"] <= 55)
    return out


def run_radpath(a, mat_path: str, axes, iso) -> dict:
    import numpy as np

    from planning.engine import accurate as accm, beams as bm, matrad, objectives as ob, optimize as opt
    from planning.engine import pencilbeam as pb

    t0 = time.perf_counter()
    ct_geo = matrad.load_matrad(mat_path)
    geo = matrad.resample(ct_geo, *axes)
    inside = np.zeros(geo.grid.shape, bool)
    for s in geo.structures.values():
        inside |= s.mask
    geo.density[~inside] = 0.0  # matRad/pyRadPlan ignore densities outside the structures
    t_load = time.perf_counter()
    c_load = time.process_time()
    iso = ct_geo.isocentre() if iso is None else np.asarray(iso, float)
    angles = np.linspace(0, 360, a.beams, endpoint=False)
    bs = bm.make_beams(geo, angles, bixel_mm=a.bixel, isocentre=iso,
                       target_mask=geo.structures["OuterTarget"].mask)
    t_stf = time.perf_counter()
    c_stf = time.process_time()
    calc = inside  # dose on the voxels of the structures (as pyRadPlan)
    dij = pb.dose_influence(geo, bs, calc_mask=calc)
    t_dij = time.perf_counter()
    c_dij = time.process_time()
    rows = {k: dij.row_index(m) for k, m in geo.masks.items()}
    objs = [ob.SquaredDeviation("OuterTarget", 50.0, 1000.0), ob.SquaredOverdose("Core", 25.0, 300.0),
            ob.SquaredOverdose("BODY", 30.0, 100.0)]
    # optimise fast, report accurately: the fast matrix corrected to the accurate dose in correction rounds, the
    # plan judged on the accurate (untruncated) dose of its final fluence; all of it counts as optimisation time
    acc = pb.AccurateDose.for_influence(geo, dij)
    accurate = acc.dose  # acc.seconds: the time spent in it

    res = accm.optimise_accurately(dij, rows, objs, accurate, target="OuterTarget", rx=50.0, normalise_to=None,
                                   max_iter=a.max_iter, correction_rounds=a.correction_rounds, tol=1e-7)
    d_acc = accurate(res.weights)
    t_opt = time.perf_counter()
    c_opt = time.process_time()
    cube = np.zeros(int(np.prod(geo.grid.shape)), np.float32)
    cube[dij.voxels] = d_acc
    cube = cube.reshape(geo.grid.shape)
    fast = dij.dose(res.weights)
    t_rows = rows["OuterTarget"]
    return {
        "dij": dij, "prob": opt.PlanningProblem(dij, rows, objs), "weights": res.weights,
        "geo": geo, "cube": cube, "cube_fast": dij.dose_cube(res.weights), "t_accurate_s": acc.seconds,
        "dropped_target": pb.dropped_fraction(fast, d_acc, t_rows), "dropped_body": pb.dropped_fraction(fast, d_acc), "t_load_s": t_load - t0, "t_stf_s": t_stf - t_load, "t_dij_s": t_dij - t_stf,
        "t_opt_s": t_opt - t_dij, "iterations": res.iterations, "voxels_grid": int(np.prod(geo.grid.shape)),
        "voxels_calc": int(dij.n_voxels), "beamlets": int(dij.n_beamlets), "nnz": int(dij.nnz),
        "iter_bytes": product_bytes(dij.D) + product_bytes(dij.DT),
        "cpu_stf_s": c_stf - c_load, "cpu_dij_s": c_dij - c_stf, "cpu_opt_s": c_opt - c_dij,
        "t_opt_per_iter_s": (t_opt - t_dij) / max(res.iterations, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 beams, 8 mm dose grid, 30 iterations (well under a minute"
                    " on the 2-core machine, even when shared)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--beams", type=int, default=None)
    ap.add_argument("--bixel", type=float, default=5.0)
    ap.add_argument("--res", type=float, default=None, help="dose grid resolution, mm (default 5, quick 8)")
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--prp-accurate-cutoff", type=float, default=0.0,
                    help="pyRadPlan's accurate evaluation: geometric lateral cut-off in mm (0: its kernel range)")
    ap.add_argument("--correction-rounds", type=int, default=2,
                    help="RadPath: rounds of optimisation on the fast matrix corrected to the accurate dose")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the iteration timing (default 20, quick 8)")
    a = ap.parse_args(argv)
    a.beams = a.beams or (3 if a.quick else 9)
    a.max_iter = a.max_iter or (30 if a.quick else 300)
    a.res = a.res or (8.0 if a.quick else 5.0)
    a.rounds = a.rounds or (8 if a.quick else 20)
    if a.worker:
        worker(a)
        return 0

    sys.path.insert(0, str(ROOT))
    py = ensure_venv()
    mats = glob.glob(str(VENV / "lib" / "python*" / "site-packages" / "pyRadPlan" / "data" / "phantoms" /
                          "TG119.mat"))
    if not mats:
        raise SystemExit("TG119.mat not found in the pyRadPlan wheel")
    out = ROOT / ".bench" / "pyradplan_result.npz"
    print(f"TG-119 C-shape (matRad TG119.mat), {a.beams} beams, {a.bixel:g} mm beamlets, {a.res:g} mm dose grid,"
          f" max {a.max_iter} iterations", flush=True)
    print("running pyRadPlan in its venv ...", flush=True)
    t_script = time.perf_counter()
    prp = run_pyradplan(py, a, out)
    pm = prp["meta"]
    print("running RadPath ...", flush=True)
    t_rp = time.perf_counter()
    rp = run_radpath(a, mats[0], (prp["x"], prp["y"], prp["z"]), pm.get("iso"))
    t_rp = time.perf_counter() - t_rp
    geo = rp["geo"]
    # both plans judged on an accurate dose of their final fluence (RadPath: its untruncated pencil beam;
    # pyRadPlan: its own engine with the lateral cut-off widened to the kernel range); the matrices' own doses
    # are kept as the "*_matrix" figures
    m_rp = metrics(rp["cube"], geo)
    m_prp = metrics(prp["dose_accurate"].astype("float32"), geo)
    m_rp_fast = metrics(rp["cube_fast"], geo)
    m_prp_fast = metrics(prp["dose"].astype("float32"), geo)
    import numpy as np

    calc = np.zeros(geo.grid.shape, bool)
    for st in geo.structures.values():
        calc |= st.mask
    tmask = geo.structures["OuterTarget"].mask

    def dropped(fast, acc, mask):
        a_ = float(np.asarray(acc, np.float64)[mask].sum())
        return round(1.0 - float(np.asarray(fast, np.float64)[mask].sum()) / a_, 5) if a_ > 0 else None

    prp_dropped_target = dropped(prp["dose"], prp["dose_accurate"], tmask)
    prp_dropped_body = dropped(prp["dose"], prp["dose_accurate"], calc)
    rss_radpath = peak_rss_mb()  # before the bandwidth probe allocates its buffers
    t_it = time.perf_counter()
    it = measure_iteration(rp["dij"], rp["prob"], rp["weights"], rounds=a.rounds)
    t_it = time.perf_counter() - t_it
    rp.update(it)
    bw = max(it["bw_1_gbs"], it["bw_threads_gbs"])  # the larger: a bound must not assume less than is there
    bound = rp["iter_bytes"] / (bw * 1e9)
    rp_total = rp["t_stf_s"] + rp["t_dij_s"] + rp["t_opt_s"]
    prp_total = pm["t_stf_s"] + pm["t_dij_s"] + pm["t_opt_s"]
    fig = {
        "beams": a.beams, "bixel_mm": a.bixel, "dose_grid_mm": a.res,
        "grid_voxels": rp["voxels_grid"], "radpath_calc_voxels": rp["voxels_calc"],
        "radpath_beamlets": rp["beamlets"], "pyradplan_beamlets": pm["beamlets"],
        "radpath_nnz": rp["nnz"], "pyradplan_nnz": pm["nnz"],
        "radpath_dij_s": round(rp["t_dij_s"], 2), "pyradplan_dij_s": round(pm["t_dij_s"], 2),
        "radpath_opt_s": round(rp["t_opt_s"], 2), "pyradplan_opt_s": round(pm["t_opt_s"], 2),
        "radpath_iterations": rp["iterations"], "pyradplan_iterations": pm["iterations"],
        "radpath_total_s": round(rp_total, 2), "pyradplan_total_s": round(prp_total, 2),
        "speedup_dij": round(pm["t_dij_s"] / rp["t_dij_s"], 2),
        "speedup_opt": round(pm["t_opt_s"] / rp["t_opt_s"], 2),
        "speedup_total": round(prp_total / rp_total, 2),
        "radpath_cpu_total_s": round(rp["cpu_stf_s"] + rp["cpu_dij_s"] + rp["cpu_opt_s"], 2),
        "pyradplan_cpu_total_s": round(pm["cpu_stf_s"] + pm["cpu_dij_s"] + pm["cpu_opt_s"], 2),
        "speedup_total_cpu": round((pm["cpu_stf_s"] + pm["cpu_dij_s"] + pm["cpu_opt_s"])
                                   / max(rp["cpu_stf_s"] + rp["cpu_dij_s"] + rp["cpu_opt_s"], 1e-9), 2),
        "radpath_cpu_dij_s": round(rp["cpu_dij_s"], 2), "pyradplan_cpu_dij_s": round(pm["cpu_dij_s"], 2),
        "radpath_cpu_opt_s": round(rp["cpu_opt_s"], 2), "pyradplan_cpu_opt_s": round(pm["cpu_opt_s"], 2),
        "radpath_peak_rss_mb": round(rss_radpath, 1), "pyradplan_peak_rss_mb": round(pm["peak_rss_mb"], 1),
        "mem_bandwidth_gbs": round(bw, 2), "iter_bytes_mb": round(rp["iter_bytes"] / 1e6, 1),
        "mem_bandwidth_1thread_gbs": round(rp["bw_1_gbs"], 2),
        "mem_bandwidth_threads_gbs": round(rp["bw_threads_gbs"], 2), "product_threads": rp["threads"],
        "iter_bound_ms": round(1e3 * bound, 2), "iter_products_ms": round(1e3 * rp["t_products_s"], 2),
        "iter_products_scipy_ms": round(1e3 * rp["t_products_scipy_s"], 2),
        "iter_scipy_vs_bound": round(rp["t_products_scipy_s"] / bound, 2),
        "iter_eval_ms": round(1e3 * rp["t_eval_s"], 2),
        "iter_opt_ms": round(1e3 * rp["t_opt_per_iter_s"], 2),
        "iter_vs_bound": round(rp["t_products_s"] / bound, 2),
        "iter_products_cpu_ms": round(1e3 * rp["c_products_s"], 2),
        "iter_vs_bound_cpu": round(rp["c_products_s"] / bound, 2),
        "eval_vs_bound": round(rp["t_eval_s"] / bound, 2),
        "radpath_metrics": m_rp, "pyradplan_metrics": m_prp,
        "radpath_metrics_matrix": m_rp_fast, "pyradplan_metrics_matrix": m_prp_fast,
        "radpath_matrix_dropped_target": round(rp["dropped_target"], 5),
        "radpath_matrix_dropped_body": round(rp["dropped_body"], 5),
        "pyradplan_matrix_dropped_target": prp_dropped_target, "pyradplan_matrix_dropped_body": prp_dropped_body,
        "radpath_reported_dose_dropped": 0.0,
        "radpath_accurate_s": round(rp["t_accurate_s"], 2), "radpath_correction_rounds": a.correction_rounds,
        "pyradplan_accurate_eval_s": round(pm["t_accurate_eval_s"], 2),
        "pyradplan_accurate_cutoff_mm": pm["accurate_cutoff_mm"], "pyradplan_kernel_range_mm": pm["kernel_range_mm"],
        "load_cpu": round(os.getloadavg()[0], 2),
        "wall_pyradplan_process_s": round(pm["wall_s"], 1), "wall_radpath_s": round(t_rp, 1),
        "wall_iteration_timing_s": round(t_it, 1),
    }
    print(f"\nsizes: grid {fig['grid_voxels']:,} voxels (RadPath calc {fig['radpath_calc_voxels']:,}); beamlets "
          f"RadPath {fig['radpath_beamlets']} / pyRadPlan {fig['pyradplan_beamlets']}; nonzeros RadPath "
          f"{fig['radpath_nnz']:,} / pyRadPlan {fig['pyradplan_nnz']:,}")
    print(f"{'':22s}{'RadPath':>10s}{'pyRadPlan':>11s}{'ratio':>8s}")
    for k, lab in (("dij", "dose influence (s)"), ("opt", "optimisation (s)"), ("total", "end to end (s)")):
        print(f"{lab:22s}{fig['radpath_' + k + '_s']:10.2f}{fig['pyradplan_' + k + '_s']:11.2f}"
              f"{fig['speedup_' + k]:7.1f}x")
    print(f"{'CPU time total (s)':22s}{fig['radpath_cpu_total_s']:10.2f}{fig['pyradplan_cpu_total_s']:11.2f}"
          f"{fig['pyradplan_cpu_total_s'] / max(fig['radpath_cpu_total_s'], 1e-9):7.1f}x")
    print(f"{'peak memory (MB)':22s}{fig['radpath_peak_rss_mb']:10.0f}{fig['pyradplan_peak_rss_mb']:11.0f}")
    print(f"iterations: RadPath {fig['radpath_iterations']}, pyRadPlan {fig['pyradplan_iterations']}")
    print(f"matrix accuracy (dose dropped against an untruncated calculation of the final fluence): RadPath "
          f"{100 * rp['dropped_target']:.1f} % in the target, {100 * rp['dropped_body']:.1f} % overall (its plan is "
          f"corrected to and reported on the untruncated dose: {a.correction_rounds} correction rounds, accurate dose "
          f"{rp['t_accurate_s']:.1f} s, included above); pyRadPlan "
          f"{100 * (prp_dropped_target or 0):.1f} % / {100 * (prp_dropped_body or 0):.1f} % (50 mm cut-off vs "
          f"{pm['accurate_cutoff_mm']:g} mm; its accurate evaluation {pm['t_accurate_eval_s']:.1f} s, not counted)")
    print("TG-119 metrics on the accurate dose (normalised to PTV D95 = 50 Gy):")
    for k in ("PTV_D95", "PTV_D10", "PTV_HI", "CI", "Core_D10", "Core_Dmean", "Body_Dmean", "goals_passed",
              "hard_goal"):
        print(f"  {k:12s}{str(m_rp['norm'][k]):>10s}{str(m_prp['norm'][k]):>11s}")
    print(f"memory bandwidth {bw:.1f} GB/s (numpy copy, best of 1 thread {rp['bw_1_gbs']:.1f} and "
          f"{rp['threads']} threads {rp['bw_threads_gbs']:.1f}); one iteration's products touch "
          f"{fig['iter_bytes_mb']} MB -> bound {fig['iter_bound_ms']} ms; measured D@w + D^T@g "
          f"{fig['iter_products_ms']} ms ({fig['iter_vs_bound']}x bound, {rp['threads']} threads; plain scipy "
          f"{fig['iter_products_scipy_ms']} ms, {fig['iter_scipy_vs_bound']}x; mean CPU time "
          f"{fig['iter_products_cpu_ms']} ms), full objective+gradient {fig['iter_eval_ms']} ms "
          f"({fig['eval_vs_bound']}x)")
    print(f"(load average during the run: {fig['load_cpu']} on {os.cpu_count()} cores; wall: pyRadPlan process "
          f"{fig['wall_pyradplan_process_s']} s with its imports, RadPath {fig['wall_radpath_s']} s with loading and "
          f"resampling, iteration timing {fig['wall_iteration_timing_s']} s; script so far "
          f"{time.perf_counter() - t_script:.1f} s)")
    print(json.dumps(fig))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
