#!/usr/bin/env python
"""Benchmark: RadPath's planning engine against pyRadPlan on the TG-119 C-shape (matRad's TG119.mat).

    python benchmarks/planning.py            # 9 equispaced beams, 5 mm beamlets, 5 mm dose grid
    python benchmarks/planning.py --quick    # 3 beams, 8 mm dose grid, 30 iterations (< 60 s on the shared
                                             # 2-core machine; a first run also installs pyRadPlan)

pyRadPlan (pip ``pyradplan==0.5.0``) is NOT a RadPath dependency: this script creates its own venv under
``.bench/pyradplan-venv`` on first use and runs pyRadPlan there in a subprocess (this same file in
``--worker`` mode, which imports nothing from RadPath). Both engines plan the identical voxels: the worker
reports pyRadPlan's dose grid, and RadPath reads the TG119.mat shipped in the pyRadPlan wheel with
``planning.engine.matrad`` and resamples it onto that grid (density trilinear, structures nearest
neighbour, density outside the structures ignored as matRad does). Identical beamlets: RadPath's beams are built
from pyRadPlan's beamlet list (same gantry angles, isocentre and source points, each ray on RadPath's BEV grid, the
same column order), same objectives (the ones stored in the file's cst: target squared deviation from 50 Gy x1000,
core squared overdose above 25 Gy x300, body squared overdose above 30 Gy x100).

Cross-engine check (issue #18): each plan's final fluence is recalculated in the other engine. The engines' weights
differ by a constant, each being calibrated its own way: a matRad weight delivers
``commissioning.matrad_weight_factor`` (1.14) times the 10x10 reference dose of a RadPath weight, derived from
matRad's machine data, so fluences move through that factor (as MU would between two calibrated systems). Both
plans' TG-119 metrics are printed in both engines (normalised to PTV D95 = 50 Gy in the engine that planned the
plan, the same MU in the other) with the gamma 3 %/3 mm pass rate (global, 10 % threshold) of each recalculation
against the planning engine's dose. pyRadPlan's accurate doses come from the worker after it has planned: with
``--quick`` one matrix at the widened cut-off, built while RadPath plans (the two processes then share the two
cores, so RadPath's quick timings are upper bounds), applied to both fluences; without ``--quick`` a forward
calculation per fluence after RadPath has planned and been timed (the untruncated matrix of the full case would
not fit in memory).

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
    g = dij.dose_grid
    D = dij.physical_dose.flat[0]
    try:
        iso = np.asarray(stf.beams[0].iso_center, float).tolist()
    except Exception:  # noqa: BLE001
        iso = None
    # the beamlet list, for RadPath to build identical beams (same source points, same BEV grid, same order as
    # the fluence vector: beams, rays)
    beam_list = [{"gantry": float(bm.gantry_angle), "couch": float(bm.couch_angle), "sad": float(bm.sad),
                  "bixel_mm": float(bm.bixel_width), "iso": np.asarray(bm.iso_center, float).tolist(),
                  "source_point": np.asarray(bm.source_point, float).tolist(),
                  "ray_pos": [np.asarray(r.ray_pos, float).tolist() for r in bm.rays]} for bm in stf.beams]
    meta = {
        "t_load_s": t_load - t0, "t_stf_s": t_stf - t_load, "t_dij_s": t_dij - t_stf, "t_opt_s": t_opt - t_dij,
        "cpu_stf_s": c_stf - c_load, "cpu_dij_s": c_dij - c_stf, "cpu_opt_s": c_opt - c_dij,
        "voxels_grid": int(D.shape[0]), "beamlets": int(D.shape[1]), "nnz": int(D.nnz),
        "format": D.format, "dtype": str(D.dtype), "iterations": info.get("num_iter"),
        "solver": str((info.get("result_info") or {}).get("solver", "")) or "default (scipy L-BFGS-B unless "
        "IPOPT is installed)", "peak_rss_mb": peak_rss_mb(), "iso": iso, "beams": beam_list,
    }
    np.savez(a.worker, dose=dose.astype(np.float32), x=np.asarray(g.x), y=np.asarray(g.y), z=np.asarray(g.z),
             fluence=np.asarray(fluence), meta=json.dumps(meta))
    print("RADPATH-READY", flush=True)

    # pyRadPlan's accurate dose (its own engine with the geometric lateral cut-off, 50 mm in its matrix, widened to
    # its kernel range, i.e. untruncated by its own model) of its own fluence and of RadPath's (sent on stdin, in
    # pyRadPlan weights). --quick: one matrix at that cut-off (built while RadPath plans) applied to both; else a
    # forward calculation per fluence (the full case's untruncated matrix would not fit in memory). On the dose
    # grid; not counted in pyRadPlan's planning time (an evaluation).
    t_acc0 = time.perf_counter()
    from pyRadPlan.dose import calc_dose_forward

    kernel_range = None
    try:
        from pyRadPlan.dose.engines import get_engine

        mach = get_engine(pln).load_machine("photons", "Generic")
        kernel_range = float(mach.get_kernel_by_energy(6.0).kernel_pos[-1])
    except Exception:  # noqa: BLE001 - only for the report; the cut-off below is wide enough regardless
        kernel_range = None
    cut = float(a.prp_accurate_cutoff or kernel_range or 200.0)
    pln_acc = PhotonPlan(machine="Generic")
    pln_acc.prop_stf = pln.prop_stf
    pln_acc.prop_dose_calc = {"dose_grid": {"resolution": {"x": a.res, "y": a.res, "z": a.res}},
                              "geometric_lateral_cutoff": cut}
    t_acc0 = time.perf_counter()
    if a.quick:  # built at once, while RadPath plans (--quick overlaps the two processes, see the module docstring)
        dij_acc = calc_dose_influence(ct, cst, stf, pln_acc)

        def accurate(w):
            img_w = dij_acc.compute_result_dose_grid(np.asarray(w, float))["physical_dose"]
            return sitk.GetArrayFromImage(img_w).transpose(2, 1, 0)
    else:
        def accurate(w):
            # pyRadPlan's forward calculation on its dose grid: what calc_dose_forward does (engine in direct mode,
            # the weights on the stf's beamlets) without its interpolation onto the CT grid, which would have to be
            # resampled back (two linear interpolations blur the gradients: RadPath's plan read 3.4 % lower in
            # PTV D95 that way)
            w = np.asarray(w, float)
            try:
                from pyRadPlan.dose.engines import get_engine as _ge

                eng = _ge(pln_acc)
                eng._calc_dose_direct = True
                k = 0
                for bm in stf.beams:
                    for ray in bm.rays:
                        for bx in ray.beamlets:
                            bx.weight = float(w[k])
                            k += 1
                dj = eng._calc_dose(ct, cst, stf)
                img_w = dj.compute_result_dose_grid(np.ones(dj.total_num_of_bixels, np.float32))["physical_dose"]
            except (AttributeError, TypeError):  # another pyRadPlan: the public forward calculation, resampled
                res_acc = calc_dose_forward(ct, cst, stf, pln_acc, w)
                img_w = sitk.Resample(res_acc["physical_dose"], img, sitk.Transform(), sitk.sitkLinear, 0.0)
            return sitk.GetArrayFromImage(img_w).transpose(2, 1, 0)

    line = None
    if not a.quick:  # wait until RadPath has planned and been timed
        line = sys.stdin.readline().strip()
        t_acc0 = time.perf_counter()
    dose_acc = accurate(fluence)
    t_acc = time.perf_counter() - t_acc0
    if line is None:
        line = sys.stdin.readline().strip()  # RadPath's fluence, in pyRadPlan weights
    t_x0 = time.perf_counter()
    other = accurate(np.load(line)) if line else np.zeros_like(dose_acc)
    t_x = time.perf_counter() - t_x0
    np.savez(a.worker + ".acc.npz", dose_accurate=dose_acc.astype(np.float32),
             dose_radpath_plan=other.astype(np.float32),
             meta=json.dumps({"t_accurate_eval_s": t_acc, "t_recalc_s": t_x, "accurate_cutoff_mm": cut,
                              "kernel_range_mm": kernel_range, "accurate_matrix": bool(a.quick),
                              "peak_rss_mb": peak_rss_mb()}))


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


class PyRadPlanWorker:
    """pyRadPlan in its venv: plans (stf, matrix, optimisation), reports, then evaluates its own fluence and one
    fluence sent to it (RadPath's) on its accurate dose."""

    def __init__(self, py: Path, a, out: Path):
        cmd = [str(py), str(Path(__file__).resolve()), "--worker", str(out), "--beams", str(a.beams),
               "--bixel", str(a.bixel), "--res", str(a.res), "--max-iter", str(a.max_iter),
               "--prp-accurate-cutoff", str(a.prp_accurate_cutoff or 0)] + (["--quick"] if a.quick else [])
        self.out = out
        self.err = open(str(out) + ".stderr", "w+")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     env={**os.environ, "TQDM_DISABLE": "1"})

    def _fail(self):
        self.proc.kill()
        self.err.seek(0)
        sys.stderr.write(self.err.read()[-4000:])
        raise SystemExit("pyRadPlan worker failed")

    def plan(self) -> dict:
        """Wait for pyRadPlan's plan (matrix dose, fluence, dose grid, beamlet list)."""
        import numpy as np

        while True:
            line = self.proc.stdout.readline()
            if not line:
                self._fail()
            if line.strip() == "RADPATH-READY":
                break
        z = np.load(self.out)
        meta = json.loads(str(z["meta"]))
        meta["wall_plan_s"] = time.perf_counter() - self.t0
        return {"meta": meta, "dose": z["dose"], "x": z["x"], "y": z["y"], "z": z["z"], "fluence": z["fluence"]}

    def send(self, fluence) -> None:
        """Send ``fluence`` (pyRadPlan weights): the worker now computes the accurate doses of both plans."""
        import numpy as np

        f = str(self.out) + ".radpath_fluence.npy"
        np.save(f, np.asarray(fluence, float))
        self.proc.stdin.write(f + "\n")
        self.proc.stdin.flush()
        self.proc.stdin.close()

    def finish(self) -> dict:
        """Wait for the accurate doses of pyRadPlan's plan and of the fluence sent."""
        import numpy as np

        if self.proc.wait() != 0:
            self._fail()
        z = np.load(str(self.out) + ".acc.npz")
        meta = json.loads(str(z["meta"]))
        meta["wall_s"] = time.perf_counter() - self.t0
        return {"meta": meta, "dose_accurate": z["dose_accurate"], "dose_radpath_plan": z["dose_radpath_plan"]}


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


def plan_scale(dose_cube, geo, target="OuterTarget", rx=50.0) -> float:
    """The factor that normalises a plan to PTV D95 = rx in the engine that planned it (applied, as MU, to its
    recalculation in the other engine too)."""
    from planning.engine import dvh

    return float(rx / dvh.d_pct(dose_cube[geo.structures[target].mask], 95))


def metrics(dose_cube, geo, target="OuterTarget", core="Core", rx=50.0, scale=None) -> dict:
    """TG-119 figures of a dose cube: ``raw``, and ``norm`` scaled by ``scale`` (default: PTV D95 = rx in this
    dose; for a recalculation the planning engine's scale, so both engines deliver the same MU)."""
    import numpy as np

    from planning.engine import dvh

    if scale is None:
        scale = plan_scale(dose_cube, geo, target, rx)
    out = {}
    for label, s in (("raw", 1.0), ("norm", scale)):
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


def beams_from_pyradplan(beam_list, geo) -> list:
    """RadPath beams with pyRadPlan's beamlets: same gantry angles, isocentre and source points (checked), each
    ray's centre projected to the isocentre plane gives its beamlet index on RadPath's BEV grid; the columns keep
    pyRadPlan's order (beams, rays), so the two engines' fluence vectors line up."""
    import numpy as np

    from planning.engine import beams as bm

    out = []
    for b in beam_list:
        if abs(b["couch"]) > 1e-9:
            raise SystemExit("couch rotations are not supported by the cross-engine comparison")
        beam = bm.Beam(b["gantry"], np.asarray(b["iso"], float), b["sad"], b["bixel_mm"])
        src = np.asarray(b["iso"], float) + np.asarray(b["source_point"], float)  # matRad: relative to the isocentre
        if np.linalg.norm(src - beam.source) > 1e-3 * b["sad"]:
            raise SystemExit(f"gantry {b['gantry']}: pyRadPlan's source {src} is not RadPath's {beam.source}")
        u, v, t = beam.project(np.asarray(b["iso"], float) + np.asarray(b["ray_pos"], float))
        if np.max(np.abs(t - b["sad"])) > 1e-6 * b["sad"]:
            raise SystemExit("pyRadPlan's ray positions are not in the isocentre plane")
        fu, fv = u / beam.bixel_mm, v / beam.bixel_mm
        off = (float(np.median(fu - np.round(fu))), float(np.median(fv - np.round(fv))))
        ia, ib = np.round(fu - off[0]).astype(int), np.round(fv - off[1]).astype(int)
        if max(np.abs(fu - ia - off[0]).max(), np.abs(fv - ib - off[1]).max()) > 1e-6:
            raise SystemExit("pyRadPlan's rays are not on one bixel grid")
        if len(set(zip(ia.tolist(), ib.tolist()))) != ia.size:
            raise SystemExit("two rays on the same bixel")
        beam.ia, beam.ib, beam.offset = ia, ib, off
        out.append(beam)
    return out


def run_radpath(a, mat_path: str, axes, iso, beam_list=None) -> dict:
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
    if beam_list:  # pyRadPlan's beamlets (the cross-engine comparison needs identical beamlets)
        bs = beams_from_pyradplan(beam_list, geo)
    else:
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
        "dij": dij, "prob": opt.PlanningProblem(dij, rows, objs), "weights": res.weights, "accurate": acc,
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
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the iteration timing (default 20, quick 4)")
    a = ap.parse_args(argv)
    a.beams = a.beams or (3 if a.quick else 9)
    a.max_iter = a.max_iter or (30 if a.quick else 300)
    a.res = a.res or (8.0 if a.quick else 5.0)
    a.rounds = a.rounds or (4 if a.quick else 20)
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
    wk = PyRadPlanWorker(py, a, out)
    prp = wk.plan()
    pm = prp["meta"]
    print("running RadPath (pyRadPlan's beamlets) ...", flush=True)
    t_rp = time.perf_counter()
    rp = run_radpath(a, mats[0], (prp["x"], prp["y"], prp["z"]), pm.get("iso"), pm.get("beams"))
    t_rp = time.perf_counter() - t_rp
    geo = rp["geo"]
    import numpy as np

    from planning.engine import commissioning as cmm, gamma as gm

    rss_radpath = peak_rss_mb()  # before the bandwidth probe allocates its buffers
    t_it = time.perf_counter()
    it = measure_iteration(rp["dij"], rp["prob"], rp["weights"], rounds=a.rounds)
    t_it = time.perf_counter() - t_it
    # cross-engine: each plan's fluence in the other engine. The engines' weights differ by a constant (each is
    # calibrated its own way): a matRad weight gives ``factor`` x the 10x10 reference dose of a RadPath weight
    # (commissioning.matrad_weight_factor, from matRad's machine data), so plans move between them in MU
    ref = cmm.load_reference(ROOT / "tests" / "engine" / "data" / "matrad_generic_6mv.json")
    factor = cmm.matrad_weight_factor(rp["accurate"].machine, ref)
    print("pyRadPlan: accurate doses of both plans; RadPath: pyRadPlan's plan ...", flush=True)
    t_x = time.perf_counter()
    wk.send(np.asarray(rp["weights"], float) / factor)  # RadPath's recalculation of pyRadPlan's plan meanwhile
    cube_prp_in_rp = np.zeros(int(np.prod(geo.grid.shape)), np.float32)
    cube_prp_in_rp[rp["dij"].voxels] = rp["accurate"].dose(np.asarray(prp["fluence"], float) * factor)
    cube_prp_in_rp = cube_prp_in_rp.reshape(geo.grid.shape)
    acc = wk.finish()
    t_x = time.perf_counter() - t_x
    pm.update(acc["meta"])
    prp["dose_accurate"] = acc["dose_accurate"]
    calc = np.zeros(geo.grid.shape, bool)
    for st in geo.structures.values():
        calc |= st.mask
    tmask = geo.structures["OuterTarget"].mask
    # both plans judged on an accurate dose of their final fluence (RadPath: its untruncated pencil beam;
    # pyRadPlan: its own engine with the lateral cut-off widened to the kernel range), normalised to PTV D95 =
    # 50 Gy in the engine that planned them, and with the same MU in the other engine; the matrices' own doses
    # are kept as the "*_matrix" figures
    d_rp_rp = rp["cube"]
    d_rp_prp = np.where(calc, acc["dose_radpath_plan"], 0.0).astype(np.float32)
    d_prp_prp = np.where(calc, prp["dose_accurate"], 0.0).astype(np.float32)
    d_prp_rp = cube_prp_in_rp
    s_rp, s_prp = plan_scale(d_rp_rp, geo), plan_scale(d_prp_prp, geo)
    m_rp = metrics(d_rp_rp, geo)
    m_prp = metrics(d_prp_prp, geo)
    m_rp_in_prp = metrics(d_rp_prp, geo, scale=s_rp)
    m_prp_in_rp = metrics(d_prp_rp, geo, scale=s_prp)
    m_rp_fast = metrics(rp["cube_fast"], geo)
    m_prp_fast = metrics(prp["dose"].astype("float32"), geo)
    t_g = time.perf_counter()
    sp_ = geo.grid.spacing
    g_rp = gm.gamma_index(s_rp * d_rp_rp, s_rp * d_rp_prp, sp_, dose_pct=3.0, dta_mm=3.0, threshold_pct=10.0)
    g_prp = gm.gamma_index(s_prp * d_prp_prp, s_prp * d_prp_rp, sp_, dose_pct=3.0, dta_mm=3.0, threshold_pct=10.0)
    t_g = time.perf_counter() - t_g

    def dropped(fast, acc_, mask):
        a_ = float(np.asarray(acc_, np.float64)[mask].sum())
        return round(1.0 - float(np.asarray(fast, np.float64)[mask].sum()) / a_, 5) if a_ > 0 else None

    prp_dropped_target = dropped(prp["dose"], prp["dose_accurate"], tmask)
    prp_dropped_body = dropped(prp["dose"], prp["dose_accurate"], calc)
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
        "radpath_plan_in_pyradplan_metrics": m_rp_in_prp, "pyradplan_plan_in_radpath_metrics": m_prp_in_rp,
        "gamma_3pct_3mm_radpath_plan_pct": round(g_rp.pass_rate_pct, 2),
        "gamma_3pct_3mm_pyradplan_plan_pct": round(g_prp.pass_rate_pct, 2),
        "gamma_radpath_plan": g_rp.summary(), "gamma_pyradplan_plan": g_prp.summary(),
        "radpath_per_matrad_weight": round(factor, 5), "same_beamlets": True,
        "wall_cross_engine_s": round(t_x, 1), "wall_gamma_s": round(t_g, 1),
        "pyradplan_recalc_s": round(pm.get("t_recalc_s", 0.0), 2),
        "pyradplan_accurate_matrix": pm.get("accurate_matrix"),
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
    print("TG-119 metrics on the accurate dose of each plan in both engines (normalised to PTV D95 = 50 Gy in the "
          f"engine that planned it, same MU in the other; identical beamlets, 1 pyRadPlan weight = {factor:.4f} "
          "RadPath weights):")
    print(f"  {'':12s}{'RadPath plan':>26s}{'pyRadPlan plan':>26s}")
    print(f"  {'':12s}{'in RadPath':>13s}{'in pyRadPlan':>13s}{'in pyRadPlan':>13s}{'in RadPath':>13s}")
    for k in ("PTV_D95", "PTV_D10", "PTV_HI", "CI", "Core_D10", "Core_Dmean", "Body_Dmean", "goals_passed",
              "hard_goal"):
        print(f"  {k:12s}{str(m_rp['norm'][k]):>13s}{str(m_rp_in_prp['norm'][k]):>13s}"
              f"{str(m_prp['norm'][k]):>13s}{str(m_prp_in_rp['norm'][k]):>13s}")
    print(f"gamma 3 %/3 mm (global, 10 % threshold), each plan's dose in the other engine against the planning "
          f"engine's: RadPath plan {g_rp.pass_rate_pct:.1f} %, pyRadPlan plan {g_prp.pass_rate_pct:.1f} % "
          f"({g_rp.n_evaluated} / {g_prp.n_evaluated} voxels; {t_g:.1f} s)")
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
