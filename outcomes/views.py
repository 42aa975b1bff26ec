"""Outcome pages: a course's follow-up timeline and logging form (oncologists), the analysis page (researchers),
and the registry import page. Thin: forms parse, ``outcomes.services`` decides, errors become form errors."""

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from workflow.errors import RuleViolation
from workflow.models import Course, Patient

from . import disclosure, services
from .cohorts import CohortFilter
from .forms import AnalysisForm, AssessmentForm, MeasurementFormSet, OverrideForm, RegistryUploadForm, measurement_rows
from .models import CourseOutcome, Death, FollowUpAssessment, PatientOutcome, Registry
from .registry_import import COLUMNS, RegistryImportError, import_registry, max_upload_bytes, template_csv, upload_too_large

IDENTIFIED = "workflow.view_identified"


def guard(*perms):
    return permission_required(perms, raise_exception=True)


def _service_error(form, exc):
    if isinstance(exc, RuleViolation):
        field = exc.field if exc.field in form.fields else None
        form.add_error(field, str(exc))
    elif hasattr(exc, "error_dict"):
        for field, errs in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, "; ".join(errs))
    else:
        form.add_error(None, "; ".join(exc.messages))


@guard(IDENTIFIED, "outcomes.view_followupassessment")
def course_followup(request, pk):
    course = get_object_or_404(Course.objects.select_related("patient", "diagnosis"), pk=pk)
    outcome = CourseOutcome.objects.filter(course=course).first()
    rows = services.timeline(course)
    return render(request, "outcomes/course_followup.html", {
        "course": course, "patient": course.patient, "outcome": outcome, "rows": rows, "override_form": OverrideForm(),
        "death": Death.objects.active().filter(patient=course.patient).first(),
    })


@guard(IDENTIFIED, "outcomes.view_followupassessment")
def patient_followup(request, pk):
    """Follow-up of a patient without radiotherapy (assessments outside any course); with an RT course, that
    course's follow-up page is the place."""
    patient = get_object_or_404(Patient.objects.active(), pk=pk)
    course = Course.objects.active().filter(patient=patient).order_by("pk").first()
    if course is not None and not FollowUpAssessment.objects.active().filter(patient=patient, course__isnull=True).exists():
        return redirect("outcomes-course", course.pk)
    return render(request, "outcomes/course_followup.html", {
        "course": None, "patient": patient, "outcome": PatientOutcome.objects.filter(patient=patient).first(),
        "rows": services.patient_timeline(patient), "override_form": OverrideForm(), "has_course": course is not None,
        "death": Death.objects.active().filter(patient=patient).first(),
    })


@guard(IDENTIFIED, "outcomes.add_followupassessment")
def assessment_form(request, pk=None, course_pk=None, patient_pk=None):
    instance = get_object_or_404(FollowUpAssessment.objects.active(), pk=pk) if pk else None
    if instance is not None and not request.user.has_perm("outcomes.change_followupassessment"):
        return HttpResponse(status=403)
    if instance is not None:
        course, patient = instance.course, instance.patient
    elif course_pk is not None:
        course = get_object_or_404(Course, pk=course_pk)
        patient = course.patient
    else:
        course, patient = None, get_object_or_404(Patient.objects.active(), pk=patient_pk)
    if request.method == "POST":
        form = AssessmentForm(request.POST, instance=instance)
        formset = MeasurementFormSet(request.POST, prefix="m")
        if form.is_valid() and formset.is_valid():
            data = {k: form.cleaned_data[k] for k in services.ASSESSMENT_FIELDS if k in form.cleaned_data}
            try:
                services.save_assessment(course=course, patient=patient, user=request.user, data=data,
                                         measurements=measurement_rows(formset), assessment=instance,
                                         death=form.death())
            except (RuleViolation, ValidationError) as exc:
                _service_error(form, exc)
            else:
                messages.success(request, "Assessment saved; responses recomputed.")
                return redirect("outcomes-course", course.pk) if course else redirect("outcomes-patient", patient.pk)
    else:
        initial = []
        if instance is not None:
            initial = [{k: getattr(m, k) for k in services.MEASUREMENT_FIELDS} for m in instance.measurements.active()]
        else:
            unit = {"course": course} if course is not None else {"patient": patient, "course__isnull": True}
            prev = FollowUpAssessment.objects.active().filter(**unit).exclude(kind="contact").order_by("-date").first()
            if prev is not None:  # same lesions as last time, values to fill in
                initial = [{k: getattr(m, k) for k in services.MEASUREMENT_FIELDS if k != "value_mm"} for m in prev.measurements.active()]
        form = AssessmentForm(instance=instance, initial=None if instance else {"criteria": _default_criteria(course, patient)})
        formset = MeasurementFormSet(prefix="m", initial=initial)
    return render(request, "outcomes/assessment_form.html", {
        "course": course, "patient": patient, "form": form, "formset": formset, "instance": instance,
    })


def _default_criteria(course, patient=None):
    diagnosis = course.diagnosis if course is not None else (
        patient.diagnoses.filter(voided_at__isnull=True).order_by("diagnosed_on", "pk").first())
    return "mrecist1.1" if diagnosis and diagnosis.site == "pleural_mesothelioma" else "recist1.1"


@require_POST
@guard(IDENTIFIED, "outcomes.override_response")
def assessment_override(request, pk):
    a = get_object_or_404(FollowUpAssessment.objects.active(), pk=pk)
    form = OverrideForm(request.POST)
    if form.is_valid():
        try:
            services.override_response(a, user=request.user, **form.cleaned_data)
            messages.success(request, "Override recorded; the derived response is kept alongside it.")
        except RuleViolation as exc:
            messages.error(request, str(exc))
    else:
        messages.error(request, "An override needs a response and a reason.")
    return redirect("outcomes-course", a.course_id) if a.course_id else redirect("outcomes-patient", a.patient_id)


# the service's names for the page's fields where they differ (the page takes months, the service days)
PAGE_FIELDS = {"rmst_tau": "rmst_tau_months", "landmark_days": "landmark_months"}


def _analysis_error(form, exc):
    """A refused analysis: on the page's field the service names (without the API's ``field:`` prefix, the label
    says it), so the researcher sees which choice to change; else (cohort too small, ledger) for the whole page."""
    field = PAGE_FIELDS.get(exc.field, exc.field)
    if field not in form.fields:
        return str(exc)
    message = str(exc)
    prefix = f"{exc.field}: "
    form.add_error(field, message[len(prefix):] if message.startswith(prefix) else message)
    return None


@guard("outcomes.run_analysis")
def analysis(request):
    form = AnalysisForm(request.GET or None)
    result = body = error = toxicity = None
    query = api_query = ""
    if form.is_bound and form.is_valid():
        query = request.GET.urlencode()
        api_query = _api_query(request.GET, form)
        params = dict(form.cleaned_data)
        try:
            cohort = CohortFilter.for_user(request.GET, request.user).cohort()
        except RuleViolation as exc:
            error = _analysis_error(form, exc)
            cohort = None
        if cohort is not None:
            try:
                result = services.analyze(
                    cohort, endpoint=params["endpoint"], time_zero=params["time_zero"],
                    group_by=params.get("group_by") or "", conf_type=params["conf_type"],
                    user=request.user, cox_terms=params.get("cox_terms") or None,
                    cox_strata=params.get("cox_strata") or None,
                    group_cuts=params.get("group_cuts") or None, **form.method_params(),
                )
                body = result.to_dict(include_points=False)
            except RuleViolation as exc:
                error = _analysis_error(form, exc)
        if cohort is not None and not form.errors:  # bad input runs nothing: no toxicity release in the ledger either
            try:
                toxicity = services.toxicity_analysis_dict(cohort, user=request.user)
            except RuleViolation as exc:
                toxicity = {"n_courses": 0, "error": str(exc)}
    group_by = body and body.get("group_by")
    return render(request, "outcomes/analysis.html", {
        "form": form, "result": body, "error": error, "query": query, "api_query": api_query, "toxicity": toxicity,
        "api_base": "/api/outcomes/", "min_cohort": disclosure.min_cohort(),
        "group_label": dict(form.fields["group_by"].choices).get(group_by, group_by) if group_by else "",
        "iptw_contrast": _iptw_contrast(body),
    }, status=400 if form.errors else 200)  # bad input: 400 naming the field; a refused cohort: said, 200


def _iptw_contrast(body):
    """The IPTW contrast ("yes vs no", treated first) in the groups' labels as the tables show them."""
    iptw = ((body or {}).get("methods") or {}).get("iptw")
    if not iptw:
        return ""
    shown = {g["label"]: g.get("display") or g["label"] for g in iptw.get("groups", [])}
    return " vs ".join(shown.get(side, side) for side in iptw["treatment"].split(" vs "))


def _api_query(params, form):
    """The page's query in the API's terms (the page takes months, the API days): links to the JSON result and the
    analysis bundle then carry the same RMST horizon and landmark as the page shows."""
    q = params.copy()
    for name in ("rmst_tau_months", "landmark_months"):
        q.pop(name, None)
    methods = form.method_params()
    for name in ("rmst_tau", "landmark_days"):
        if methods[name] is not None:
            q[name] = repr(float(methods[name]))
    return q.urlencode()


@guard(IDENTIFIED, "outcomes.import_registry")
def registry_upload(request):
    errors = summary = None
    error_count = 0
    status = 200
    if request.GET.get("template"):
        resp = HttpResponse(template_csv(), content_type="text/csv")
        resp["Content-Disposition"] = 'attachment; filename="radpath-registry-template.csv"'
        return resp
    if request.method == "POST":
        too_large = upload_too_large(request.META.get("CONTENT_LENGTH"))
        form = RegistryUploadForm(None if too_large else request.POST, None if too_large else request.FILES)
        if too_large is None and form.is_valid():
            too_large = upload_too_large(upload=form.cleaned_data["file"])
        if too_large:
            form = RegistryUploadForm()
            form.errors["file"] = form.error_class([too_large])
            status = 413
        elif form.is_valid():
            try:
                summary = import_registry(form.cleaned_data["file"], user=request.user,
                                          registry=form.cleaned_data.get("registry")).to_dict()
                messages.success(request, "Registry imported: {patients} patients, {courses} courses, {followups} follow-ups, "
                                          "{deaths} deaths".format(**summary)
                                 + (", {covariate_values} covariate values.".format(**summary)
                                    if summary.get("covariate_values") else "."))
            except RegistryImportError as exc:
                errors, error_count = exc.errors, exc.total
    else:
        form = RegistryUploadForm()
    return render(request, "outcomes/registry_import.html", {
        "form": form, "errors": errors, "error_count": error_count, "summary": summary, "columns": COLUMNS,
        "registries": Registry.objects.prefetch_related("variables__registry").order_by("code"),
        "template_url": reverse("outcomes-import") + "?template=1", "max_upload_mb": max_upload_bytes() // 2**20,
    }, status=status)


def _ntcp_request(params, user):
    """(courses, model id, sites) of an NTCP cohort request: the standard cohort filters; without ``site`` the
    model's own population sites; ``site=all`` takes every site."""
    model_id = params.get("model") or NTCP_DEFAULT_MODEL
    site = params.get("site", "")
    base = params.copy() if hasattr(params, "getlist") else dict(params)  # keeps repeated ?covariate= filters
    for name in ("model", "site"):
        base.pop(name, None)
    if site and site != "all":
        base["site"] = site
    courses = CohortFilter.for_user(base, user).queryset()
    return courses, model_id, ([] if site else None)


NTCP_DEFAULT_MODEL = "pneumonitis_quantec_mld"


@guard("outcomes.run_analysis")
def ntcp_cohort(request):
    """Predicted vs observed toxicity of one NTCP model over the clinic's finished courses (de-identified)."""
    from . import ntcp_services

    error = result = None
    try:
        courses, model_id, sites = _ntcp_request(request.GET, request.user)
        result = ntcp_services.analysis_dict(ntcp_services.cohort_analysis(courses, model_id, sites=sites,
                                                                           user=request.user))
    except RuleViolation as exc:
        error = str(exc)
    return render(request, "outcomes/ntcp.html", {
        "result": result, "error": error, "models": ntcp_services.models(), "query": request.GET.urlencode(),
        "selected": request.GET.get("model") or NTCP_DEFAULT_MODEL, "site": request.GET.get("site", ""),
    }, status=400 if error else 200)


@guard("outcomes.run_analysis")
def ntcp_figure(request, kind):
    from . import ntcp_services

    try:
        courses, model_id, sites = _ntcp_request(request.GET, request.user)
        result = ntcp_services.cohort_analysis(courses, model_id, sites=sites, refit=(kind == "dose-response"),
                                               user=request.user)
    except RuleViolation as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain")
    data = ntcp_services.calibration_png(result) if kind == "calibration" else ntcp_services.dose_response_png(result)
    return HttpResponse(data, content_type="image/png")
