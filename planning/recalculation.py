"""Independent dose check: recalculate an imported plan's RT Plan with RadPath's engine and compare with its RT Dose.

An external plan imported with its RT Plan keeps that RT Plan verbatim in its result file. The check
(``start_dose_check`` -> background job ``planning.tasks.run_dose_check_task`` -> ``execute_dose_check``):

1. reads the RT Plan's beams (``dicom_io.rtplan_beams``) and turns each into control-point apertures and a beamlet
   fluence (``planning.engine.mlc``), refusing, with the beam named, anything the 6 MV coplanar pencil-beam model
   cannot represent (other energies, wedges, arcs, couch rotation, ...), and a CT or RT Plan not head-first supine;
2. computes the accurate (untruncated) pencil-beam dose of all beams on the imported CT, on a calculation grid of
   CT voxels combined by integer factors towards ``RADPATH_DOSE_CHECK_GRID_MM`` (default 4 mm; density and the
   imported dose averaged over each block, structures by majority), for the RT Plan's fraction count;
3. compares it with the imported RT Dose on that grid: global gamma (default 3 % / 3 mm, 10 % threshold, Low et al.
   1998, ``planning.engine.gamma``) and per structure Dmean, D95, D2 and D0.03cc, recalculated minus imported, in
   Gy and in % of the imported value.

MU are read in RadPath's calibration (1 MU = 1 cGy at dmax for 10 x 10 cm at SSD 100 cm), not the other system's:
a different calibration geometry (e.g. SAD 100 cm: (101.5 / 100)^2 = 3 % more dose per MU) shows as a uniform
offset. Leaf transmission, leaf ends and tongue and groove are not modelled. The plan itself is never changed.
"""

import io
import logging
import os
import socket
import threading
import time
import traceback

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from workflow.errors import ConflictError, RuleViolation

from .models import DoseCheck, DoseCheckStatus, PlanMethod

log = logging.getLogger(__name__)

BIXEL_MM = 2.5
STEP_MM = 1.0
METRICS = ("Dmean", "D95", "D2", "D0.03cc")
ACTIVE = (DoseCheckStatus.QUEUED, DoseCheckStatus.RUNNING)
HEAD_FIRST_SUPINE = ("", "HFS")


def _require(user, perm):
    if user is not None and not user.has_perm(perm):
        raise PermissionDenied("Your role does not allow this.")


def _criterion(value, field, lo, hi):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError({field: f"{value!r} is not a number."})
    if not np.isfinite(v) or not lo <= v <= hi:
        raise ValidationError({field: f"{v:g} is outside {lo:g}..{hi:g}."})
    return v


def stored_rtplan(plan):
    """The RT Plan dataset kept with an imported plan's result, or None."""
    import pydicom

    from . import services

    if not plan.result_file:
        return None
    data = np.load(services.media_path(plan.result_file))
    if "rtplan_dicom" not in data:
        return None
    return pydicom.dcmread(io.BytesIO(data["rtplan_dicom"].tobytes()))


def has_rtplan(plan):
    """Whether the plan's result keeps an imported RT Plan (reads the file's directory only)."""
    from . import services

    if not plan.result_file:
        return False
    with np.load(services.media_path(plan.result_file)) as data:
        return "rtplan_dicom" in data.files


def start_dose_check(plan, *, user, dose_pct=3.0, dta_mm=3.0, threshold_pct=10.0):
    """Queue an independent dose check of an imported external plan (``planning.run_plan``)."""
    _require(user, "planning.run_plan")
    dose_pct = _criterion(dose_pct, "dose_pct", 0.5, 10.0)
    dta_mm = _criterion(dta_mm, "dta_mm", 0.5, 10.0)
    threshold_pct = _criterion(threshold_pct, "threshold_pct", 0.0, 50.0)
    if plan.voided_at:
        raise RuleViolation("The plan is voided.", field="plan")
    if plan.method != PlanMethod.EXTERNAL or not plan.result_file:
        raise RuleViolation("Only an imported plan with its RT Dose can be checked: RadPath's own plans are already "
                            "RadPath's dose.", field="plan")
    if not has_rtplan(plan):
        raise RuleViolation("The plan's RT Plan was not kept (imported without one, or before RadPath kept RT Plans): "
                            "import the RT Plan with the RT Dose to recalculate it.", field="plan")
    with transaction.atomic():
        if DoseCheck.objects.select_for_update().filter(plan=plan, status__in=ACTIVE).exists():
            raise ConflictError("A dose check of this plan is already queued or running.", field="status")
        check = DoseCheck(plan=plan, requested_by=user, dose_pct=dose_pct, dta_mm=dta_mm, threshold_pct=threshold_pct,
                          progress_message="Waiting for a worker")
        check._history_user = user
        check.save()
    from . import tasks

    try:
        result = tasks.run_dose_check_task.enqueue(check.pk)
    except Exception as exc:  # the queue is unreachable: say so
        log.exception("could not enqueue dose check %s", check.pk)
        DoseCheck.objects.filter(pk=check.pk, status=DoseCheckStatus.QUEUED).update(
            status=DoseCheckStatus.FAILED, failure_reason=f"Could not queue the job: {exc}", finished_at=timezone.now())
    else:
        DoseCheck.objects.filter(pk=check.pk).update(task_id=str(result.id))
    check.refresh_from_db()
    return check


def reap_stale_checks(now=None):
    """Fail running checks whose worker stopped beating (same limit as plan jobs)."""
    from .services import stale_after_seconds

    now = now or timezone.now()
    cutoff = now - timezone.timedelta(seconds=stale_after_seconds())
    return DoseCheck.objects.filter(status=DoseCheckStatus.RUNNING, heartbeat_at__lt=cutoff).update(
        status=DoseCheckStatus.FAILED, finished_at=now, progress_message="Worker lost",
        failure_reason="Worker lost: the dose check's worker stopped responding; start the check again.")


def _beat(check_id, message):
    DoseCheck.objects.filter(pk=check_id, status=DoseCheckStatus.RUNNING).update(
        heartbeat_at=timezone.now(), progress_message=message[:200])


def execute_dose_check(check_id):
    """The background job: recalculate and compare; the check ends done with results or failed with a reason."""
    if not connection.in_atomic_block:
        close_old_connections()
    with transaction.atomic():
        check = DoseCheck.objects.select_for_update().select_related("plan").filter(pk=check_id).first()
        if check is None or check.status != DoseCheckStatus.QUEUED:
            return {"check": check_id, "skipped": True}
        check.status = DoseCheckStatus.RUNNING
        check.started_at = check.heartbeat_at = timezone.now()
        check.progress_message = f"Started on {socket.gethostname()}:{os.getpid()}"
        check.save()
    stop = threading.Event()
    beater = None
    if not connection.in_atomic_block:  # (an inline job inside a test's transaction beats at each stage only)
        def loop():
            from .services import heartbeat_seconds

            try:
                while not stop.wait(heartbeat_seconds()):
                    try:
                        DoseCheck.objects.filter(pk=check_id, status=DoseCheckStatus.RUNNING).update(heartbeat_at=timezone.now())
                    except Exception:  # a locked database for a moment must not kill the heartbeat
                        log.warning("heartbeat of dose check %s failed", check_id, exc_info=True)
            finally:
                connection.close()

        beater = threading.Thread(target=loop, name=f"dose-check-{check_id}-heartbeat", daemon=True)
        beater.start()
    try:
        result = recalculate(check.plan, dose_pct=check.dose_pct, dta_mm=check.dta_mm,
                             threshold_pct=check.threshold_pct, progress=lambda m: _beat(check_id, m))
    except (ValidationError, RuleViolation, ValueError) as exc:
        stop.set()
        reason = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        _finish(check_id, status=DoseCheckStatus.FAILED, failure_reason=reason[:2000], progress_message="Refused")
        return {"check": check_id, "status": "failed", "error": reason}
    except Exception as exc:
        stop.set()
        log.error("dose check %s failed: %s", check_id, traceback.format_exc())
        _finish(check_id, status=DoseCheckStatus.FAILED, failure_reason=f"{type(exc).__name__}: {exc}"[:2000],
                progress_message="Failed")
        return {"check": check_id, "status": "failed", "error": str(exc)}
    stop.set()
    if beater is not None:
        beater.join(timeout=10)
    _finish(check_id, status=DoseCheckStatus.DONE, progress_message="Done", **result)
    return {"check": check_id, "status": "done", "pass_rate_pct": result["gamma"].get("pass_rate_pct")}


def _finish(check_id, **fields):
    with transaction.atomic():
        check = DoseCheck.objects.select_for_update().filter(pk=check_id, status=DoseCheckStatus.RUNNING).first()
        if check is None:
            return
        for k, v in fields.items():
            setattr(check, k, v)
        check.finished_at = timezone.now()
        check.save()


# ------------------------------------------------------------------------------------------------ the calculation


def calculation_factors(spacing, target_mm=None):
    """Integer block factors per axis that bring CT voxels towards ``target_mm`` (never below the CT spacing)."""
    target = float(getattr(settings, "RADPATH_DOSE_CHECK_GRID_MM", 4.0) if target_mm is None else target_mm)
    if target <= 0:
        return (1, 1, 1)
    return tuple(max(1, int(round(target / float(s)))) for s in spacing)


def _blocks(a, f, reduce="mean"):
    """Block-reduce an ``[ix, iy, iz]`` array by factors ``f`` (a remainder at the high edges is dropped)."""
    n = [s // k for s, k in zip(a.shape, f)]
    b = np.asarray(a)[:n[0] * f[0], :n[1] * f[1], :n[2] * f[2]].reshape(n[0], f[0], n[1], f[1], n[2], f[2])
    m = b.mean(axis=(1, 3, 5), dtype=np.float64)
    return m >= 0.5 if reduce == "majority" else m.astype(np.float32)


def coarse_geometry(geo, dose, factors):
    """(geometry, reference dose) on the calculation grid: block means of density and dose, majority masks."""
    from .engine.grid import Geometry, Grid

    if factors == (1, 1, 1):
        return geo, np.asarray(dose, np.float32)
    g = geo.grid
    n = tuple(s // k for s, k in zip(g.shape, factors))
    if min(n) < 2 and any(s >= 2 for s in g.shape):
        factors = tuple(1 if nn < 2 else k for nn, k in zip(n, factors))
        n = tuple(s // k for s, k in zip(g.shape, factors))
    spacing = tuple(float(s * k) for s, k in zip(g.spacing, factors))
    origin = tuple(float(o + 0.5 * (k - 1) * s) for o, s, k in zip(g.origin, g.spacing, factors))
    out = Geometry(Grid(n, spacing, origin), _blocks(geo.density, factors), name=geo.name)
    for name, s in geo.structures.items():
        out.add(name, _blocks(s.mask, factors, "majority"), s.kind, s.prescription_gy)
    return out, _blocks(dose, factors)


def deliveries(beams):
    """Checked deliveries of every beam; refuses with all unsupported beams named at once."""
    from .engine import mlc

    out, problems = [], []
    for b in beams:
        try:
            out.append(mlc.delivery(b))
        except mlc.UnsupportedBeam as exc:
            problems.append(str(exc))
    if problems:
        raise ValidationError({"plan": f"RadPath cannot recalculate this RT Plan: {' '.join(problems)}"})
    if not out:
        raise ValidationError({"plan": "The RT Plan has no treatment beam to recalculate."})
    return out


def _metrics(dose, mask, vcc):
    from .engine import dvh as edvh

    stats = edvh.structure_stats(edvh.voxel_doses(dose, mask), vcc)
    return {m: float(stats[m]) for m in METRICS if m in stats}


def recalculate(plan, *, dose_pct=3.0, dta_mm=3.0, threshold_pct=10.0, target_mm=None, progress=None):
    """Recalculate ``plan``'s stored RT Plan on its imported CT; returns the DoseCheck result fields."""
    from . import dicom_io, services
    from .engine import gamma as egamma
    from .engine import mlc
    from .engine import pencilbeam as pb

    t0 = time.perf_counter()
    say = progress or (lambda m: None)
    ds = stored_rtplan(plan)
    if ds is None:
        raise ValidationError({"plan": "The plan has no stored RT Plan."})
    info = dicom_io.rtplan_beams(ds)
    position = str((plan.imported_geometry.grid or {}).get("patient_position", "") if plan.imported_geometry else "")
    bad = [p for p in [position] + info["patient_positions"] if p not in HEAD_FIRST_SUPINE]
    if bad:
        raise ValidationError({"plan": f"Patient position {bad[0]}: RadPath's beam geometry is head-first supine "
                                       "(HFS) only, so this plan cannot be recalculated."})
    deliv = deliveries(info["beams"])
    fractions = int(info["fractions"] or plan.fractions)
    say("Loading the CT and the imported dose")
    geo = services.load_geometry(plan)
    ref, _ = services.load_dose(plan)
    factors = calculation_factors(geo.grid.spacing, target_mm)
    cgeo, cref = coarse_geometry(geo, ref, factors)
    del geo, ref
    beams, weights, beam_rows = [], [], []
    for d in deliv:
        b, w = mlc.beam_and_weights(d, fractions, bixel_mm=BIXEL_MM, step_mm=STEP_MM)
        beams.append(b)
        weights.append(w)
        beam_rows.append({"name": d.label, "gantry_deg": round(d.gantry_deg, 2), "collimator_deg": round(d.collimator_deg, 2),
                          "mu": round(d.mu, 2), "control_points": len(d.apertures), "segments": d.n_segments,
                          "delivery": "sliding window (leaves move with the beam on)" if d.dynamic else "step and shoot"})
    say(f"Ray tracing {len(beams)} beams on {cgeo.grid.shape[0]}x{cgeo.grid.shape[1]}x{cgeo.grid.shape[2]} voxels")
    acc = pb.AccurateDose(cgeo, beams)
    say("Dose calculation")
    dose = acc.dose_cube(np.concatenate(weights))
    say("Gamma index")
    norm = float(cref.max())
    if not np.isfinite(norm) or norm <= 0:
        raise ValidationError({"plan": "The imported RT Dose is zero everywhere: nothing to compare with."})
    g = egamma.gamma_index(cref, dose, cgeo.grid.spacing, dose_pct=dose_pct, dta_mm=dta_mm, threshold_pct=threshold_pct)
    vcc = cgeo.grid.voxel_volume_cc
    rows = []
    for name, s in cgeo.structures.items():
        if not s.mask.any():
            continue
        imp, rec = _metrics(cref, s.mask, vcc), _metrics(dose, s.mask, vcc)
        diff = {m: round(rec[m] - imp[m], 4) for m in imp}
        pct = {m: (round(100.0 * (rec[m] - imp[m]) / imp[m], 2) if imp[m] > 0.01 * norm else None) for m in imp}
        rows.append({"name": name, "kind": s.kind, "volume_cc": round(float(s.mask.sum()) * vcc, 2),
                     "imported": {m: round(v, 4) for m, v in imp.items()},
                     "recalculated": {m: round(v, 4) for m, v in rec.items()},
                     "difference_gy": diff, "difference_pct": pct})
    target = next((r for r in rows if r["name"] == (plan.metrics or {}).get("target")), None)
    summary = {
        "dose_model": "RadPath 6 MV finite-size pencil beam, accurate (untruncated), radiological depth",
        "calibration": "1 MU = 1 cGy at dmax, 10 x 10 cm, SSD 100 cm (RadPath's machine model)",
        "not_modelled": "MLC and jaw transmission, rounded leaf ends, tongue and groove",
        "fractions": fractions, "bixel_mm": BIXEL_MM, "grid_mm": [round(v, 3) for v in cgeo.grid.spacing],
        "grid_shape": list(cgeo.grid.shape), "block_factors": list(factors),
        "reference_max_gy": round(norm, 4), "recalculated_max_gy": round(float(dose.max()), 4),
        "target": target["name"] if target else None,
        "target_dmean_difference_pct": target["difference_pct"]["Dmean"] if target else None,
        "seconds": round(time.perf_counter() - t0, 2), "dose_seconds": round(acc.seconds, 2),
    }
    return {"gamma": g.summary(), "structures": rows, "beams": beam_rows, "summary": summary}


def latest_check(plan):
    reap_stale_checks()
    return DoseCheck.objects.filter(plan=plan, voided_at__isnull=True).order_by("-created_at", "-pk").first()


def table_rows(check):
    """The per-structure results as table rows: name, volume and one cell per metric of ``METRICS``."""
    return [{"name": r["name"], "volume_cc": r["volume_cc"],
             "cells": [{"imported": r["imported"].get(m), "recalculated": r["recalculated"].get(m),
                        "gy": r["difference_gy"].get(m), "pct": r["difference_pct"].get(m)} for m in METRICS]}
            for r in (check.structures if check else [])]
