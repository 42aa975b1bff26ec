"""Planning pages: a course's plans (new plan, planned vs delivered dose, re-irradiation EQD2), the plan review page
(progress bar, DVH, dose colour-wash slices with contours, goals, beams/MU, approve/reject), DICOM RT import/export.

Views are thin: every state change calls ``planning.services``; figures are rendered server-side as PNG.
"""

import io
import json
from functools import lru_cache

import numpy as np
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from workflow.pathway import gates
from workflow.errors import RuleViolation
from workflow.models import Course

from . import services
from .models import GeometrySource, ImportedGeometry, Phantom, Plan, PlanMethod, PlanStatus

VIEW = "planning.view_plan"


def _errors(exc):
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            return "; ".join(f"{k}: {' '.join(m for e in v for m in e.messages)}" for k, v in exc.error_dict.items())
        return " ".join(exc.messages)
    return str(exc) or "Not allowed."


def _floats(text):
    return [float(x) for x in str(text).replace(";", ",").split(",") if x.strip()]


@permission_required(VIEW, raise_exception=True)
def course_plans(request, course_id):
    course = get_object_or_404(Course.objects.select_related("patient", "diagnosis"), pk=course_id)
    plans = list(course.plans.filter(voided_at__isnull=True).select_related("approved_by", "imported_geometry").order_by("-version"))
    for p in plans:
        p.goals_passed = sum(1 for g in p.goal_results if g.get("passed"))
    site = course.diagnosis.site if course.diagnosis_id else "other"
    phantom = services.site_protocol(site)["phantom"]
    form = {"method": "inverse", "phantom": phantom, "gantry_angles": ", ".join(f"{a:g}" for a in services.DEFAULT_GANTRIES),
            "beamlet_mm": 10, "grid_mm": 6, "max_iterations": 120, "goals": "", "objectives": "", "geometry_source": "phantom",
            "imported_geometry": ""}
    if request.method == "POST":
        if not request.user.has_perm("planning.run_plan"):
            raise PermissionDenied
        form.update({k: request.POST.get(k, form[k]) for k in form})
        try:
            kwargs = dict(
                method=form["method"], geometry_source=form["geometry_source"], phantom=form["phantom"],
                gantry_angles=_floats(form["gantry_angles"]), beamlet_mm=form["beamlet_mm"], grid_mm=form["grid_mm"],
                max_iterations=form["max_iterations"], name=request.POST.get("name", ""),
            )
            if form["geometry_source"] == GeometrySource.IMPORTED:
                kwargs["imported_geometry"] = get_object_or_404(ImportedGeometry, pk=form["imported_geometry"] or 0, patient=course.patient)
            for key in ("goals", "objectives"):
                if form[key].strip():
                    try:
                        kwargs[key] = json.loads(form[key])
                    except json.JSONDecodeError as exc:
                        raise ValidationError({key: f"Not valid JSON: {exc}"})
            plan = services.create_plan(course, user=request.user, **kwargs)
            if request.POST.get("start"):
                plan = services.start_plan(plan, user=request.user)
            messages.success(request, f"Plan v{plan.version} created{' and queued' if plan.status != 'draft' else ''}.")
            return redirect("planning:plan-review", plan.pk)
        except (ValidationError, RuleViolation, ValueError) as exc:
            messages.error(request, f"Plan not created: {_errors(exc)}")
    defaults_goals = services.default_goals(site, float(course.total_dose_gy))
    dose = services.course_dose(course)
    return render(request, "planning/course_plans.html", {
        "course": course, "patient": course.patient, "plans": plans, "form": form, "phantoms": Phantom.choices,
        "methods": [(PlanMethod.INVERSE, PlanMethod.INVERSE.label), (PlanMethod.FORWARD, PlanMethod.FORWARD.label)],
        "default_goals_json": json.dumps(defaults_goals, indent=1), "dose": dose,
        "imported": ImportedGeometry.objects.filter(patient=course.patient, voided_at__isnull=True),
        "is_open": course.status not in ("completed", "stopped"),
    })


@permission_required(VIEW, raise_exception=True)
def plan_review(request, pk):
    plan = get_object_or_404(Plan.objects.select_related("course__patient", "approved_by", "reviewed_by", "created_by"), pk=pk)
    services.reap_stale_plans()
    plan.refresh_from_db()
    ctx = {"plan": plan, "course": plan.course, "patient": plan.course.patient, "structures": [], "reirr": None, "slices": None}
    if plan.result_file:
        ctx["structures"] = list(plan.structure_doses.all())
        shape = _geometry_shape(plan)
        ctx["slices"] = [
            {"plane": p, "label": label, "max": shape[i] - 1, "index": shape[i] // 2}
            for i, (p, label) in enumerate((("sagittal", "Sagittal (x)"), ("coronal", "Coronal (y)"), ("axial", "Axial (z)")))
        ]
        ctx["slices"] = [ctx["slices"][2], ctx["slices"][1], ctx["slices"][0]]
        ctx["reirr"] = services.reirradiation_summary(plan)
        ctx["ntcp"] = _plan_ntcp(plan, ctx["structures"])
        ctx["dose_model"] = services.dose_model_statement(plan)
    if plan.method == PlanMethod.EXTERNAL and plan.result_file:
        from . import recalculation

        ctx["dose_check"] = check = recalculation.latest_check(plan)
        ctx["has_rtplan"] = recalculation.has_rtplan(plan)
        ctx["dose_check_metrics"] = recalculation.METRICS
        ctx["dose_check_rows"] = recalculation.table_rows(check)
    ctx["versions"] = plan.course.plans.filter(voided_at__isnull=True).order_by("-version")
    ctx["can_run"] = request.user.has_perm("planning.run_plan")
    ctx["can_approve"] = request.user.has_perm("planning.approve_plan")
    ctx["progress_text"] = services.progress_text(plan)
    ctx["approval_blockers"] = gates.approval_blockers(plan.course) if plan.status == PlanStatus.DONE else []
    return render(request, "planning/plan_review.html", ctx)


def _plan_ntcp(plan, structures):
    """Predicted NTCP per organ and endpoint from the plan's stored DVHs (``outcomes.ntcp_services``)."""
    from outcomes import ntcp_services

    return ntcp_services.plan_ntcp(plan, structures)


def _action(request, pk, func, ok, **extra):
    plan = get_object_or_404(Plan, pk=pk)
    try:
        func(plan, user=request.user, **extra)
        messages.success(request, ok)
    except (ValidationError, RuleViolation, PermissionDenied) as exc:
        messages.error(request, _errors(exc))
    return redirect("planning:plan-review", pk)


@require_POST
def plan_start(request, pk):
    return _action(request, pk, services.start_plan, "Plan queued.")


@require_POST
def plan_cancel(request, pk):
    return _action(request, pk, services.cancel_plan, "Cancellation requested.")


@require_POST
def plan_retry(request, pk):
    return _action(request, pk, services.retry_plan, "Plan queued again.")


@require_POST
def plan_approve(request, pk):
    return _action(request, pk, services.approve_plan, "Plan approved: the course is cleared for treatment.",
                   comment=request.POST.get("comment", ""))


@require_POST
def plan_reject(request, pk):
    return _action(request, pk, services.reject_plan, "Plan rejected.", comment=request.POST.get("comment", ""))


@require_POST
def plan_dose_check(request, pk):
    from . import recalculation

    return _action(request, pk, recalculation.start_dose_check, "Dose check queued: RadPath recalculates the RT Plan.",
                   **{k: request.POST[k] for k in ("dose_pct", "dta_mm", "threshold_pct") if request.POST.get(k, "").strip()})


@permission_required(VIEW, raise_exception=True)
def plan_dose_check_status(request, pk):
    from . import recalculation

    check = recalculation.latest_check(get_object_or_404(Plan, pk=pk))
    if check is None:
        return JsonResponse({"status": None, "finished": True})
    return JsonResponse({"id": check.pk, "status": check.status, "message": check.progress_message,
                         "finished": check.status not in recalculation.ACTIVE})


@require_POST
def plan_new_version(request, pk):
    plan = get_object_or_404(Plan, pk=pk)
    try:
        new = services.new_version(plan, user=request.user)
        messages.success(request, f"Version {new.version} created from version {plan.version}.")
        return redirect("planning:plan-review", new.pk)
    except (ValidationError, RuleViolation, PermissionDenied) as exc:
        messages.error(request, _errors(exc))
        return redirect("planning:plan-review", pk)


@permission_required(VIEW, raise_exception=True)
def plan_status(request, pk):
    return JsonResponse(services.plan_status(get_object_or_404(Plan, pk=pk)))


# ----------------------------------------------------------------------------------------------------------- figures

@lru_cache(maxsize=16)
def _cached(plan_pk, path, mtime):
    plan = Plan.objects.get(pk=plan_pk)
    return services.load_geometry(plan), services.load_dose(plan)[0]


def _geometry_and_dose(plan):
    """(engine Geometry, dose cube) of a plan, cached per result file (slice scrolling re-reads them)."""
    path = services.media_path(plan.result_file)
    return _cached(plan.pk, str(path), path.stat().st_mtime_ns)


def _geometry_shape(plan):
    return _geometry_and_dose(plan)[0].grid.shape


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return HttpResponse(buf.getvalue(), content_type="image/png")


@permission_required(VIEW, raise_exception=True)
def plan_dvh_png(request, pk):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = get_object_or_404(Plan, pk=pk)
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=100)
    for sd in plan.structure_doses.exclude(kind="body"):
        ax.plot(sd.dvh_dose_gy, sd.dvh_volume_pct, "-" if sd.kind == "target" else "--", lw=1.6, label=sd.name)
    ax.axvline(plan.prescription_gy, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"Plan v{plan.version}: cumulative DVH")
    fig.tight_layout()
    return _png(fig)


@permission_required(VIEW, raise_exception=True)
def plan_slice_png(request, pk, plane, index):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = get_object_or_404(Plan, pk=pk)
    if not plan.result_file or plane not in ("axial", "coronal", "sagittal"):
        return HttpResponse(status=404)
    geo, dose = _geometry_and_dose(plan)
    x, y, z = geo.grid.axes()
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    index = int(np.clip(index, 0, geo.grid.shape[axis] - 1))

    def cut(a):
        return np.take(a, index, axis=axis).T

    h, v = {"axial": (x, y), "coronal": (x, z), "sagittal": (y, z)}[plane]
    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=90)
    ext = (h[0], h[-1], v[-1], v[0]) if plane == "axial" else (h[0], h[-1], v[0], v[-1])
    origin = "upper" if plane == "axial" else "lower"
    ax.imshow(cut(geo.density), cmap="gray", extent=ext, origin=origin, vmin=0, vmax=2, interpolation="nearest")
    vmax = float(dose.max()) or 1.0
    im = ax.imshow(np.ma.masked_less(cut(dose), 0.1 * vmax), cmap="jet", alpha=0.45, extent=ext, origin=origin,
                   vmin=0, vmax=vmax, interpolation="bilinear")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, s) in enumerate(geo.structures.items()):
        m = cut(s.mask.astype(float))
        if m.any() and m.min() < 0.5:
            ax.contour(h, v, m, levels=[0.5], colors=[colours[i % len(colours)]], linewidths=1.0)
    coord = (x, y, z)[axis][index]
    ax.set_title(f"{plane} {'xyz'[axis]} = {coord:.0f} mm", fontsize=9)
    fig.colorbar(im, ax=ax, label="Dose (Gy)", shrink=0.8)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------------------------------- DICOM

@permission_required(VIEW, raise_exception=True)
def plan_export(request, pk):
    from . import dicom_io

    plan = get_object_or_404(Plan.objects.select_related("course__patient"), pk=pk)
    try:
        data = dicom_io.export_plan_zip(plan)
    except RuleViolation as exc:
        messages.error(request, str(exc))
        return redirect("planning:plan-review", pk)
    resp = HttpResponse(data, content_type="application/zip")
    resp["Content-Disposition"] = f'attachment; filename="radpath-plan-{plan.pk}-v{plan.version}-dicom.zip"'
    return resp


@permission_required("planning.import_dicom", raise_exception=True)
def dicom_import(request, course_id):
    from . import dicom_io

    from .uploads import uploaded_files

    course = get_object_or_404(Course.objects.select_related("patient"), pk=course_id)
    result = None
    if request.method == "POST":
        try:
            files, post = uploaded_files(request)
            if post.get("folder", "").strip():
                files = dicom_io.folder_sources(post["folder"].strip())
            result = dicom_io.import_files(
                files, course=course, user=request.user,
                name=post.get("name", ""), attach_plan=bool(post.get("attach_plan")),
            )
            messages.success(request, result["message"])
            if result.get("plan"):
                return redirect("planning:plan-review", result["plan"].pk)
            return redirect("planning:course-plans", course.pk)
        except (ValidationError, RuleViolation) as exc:
            messages.error(request, f"Nothing was imported: {_errors(exc)}")
    from django.conf import settings

    from .uploads import max_files

    return render(request, "planning/dicom_import.html", {
        "course": course, "patient": course.patient, "max_files": max_files(),
        "folder_root": getattr(settings, "RADPATH_DICOM_IMPORT_ROOT", "")})

