"""Clinic pages: today's treatment list, patients and their pathway, course detail, scheduling and downtime forms.

Views stay thin: they read, call the service that owns a rule (``workflow.pathway.scheduling``, ``workflow.pathway.delivery``),
and show its complaint as a message or a form error. Every page needs identified-data access (researchers get 403);
each action needs the permission its role table grants.
"""

import datetime as dt
from collections import OrderedDict

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from . import calendar, delivery, scheduling
from .. import params
from ..errors import RuleViolation
from .forms import (
    DowntimeForm,
    MissForm,
    PatientSearchForm,
    ScheduleForm,
    SimulationForm,
    StopCourseForm,
    treatment_machines,
)
from ..forms import add_service_error, service_error_text
from ..downloads import attachment
from .ics import calendar_filename, patient_calendar_bytes
from .models import AppointmentStatus, Course, Downtime, Fraction, Patient, SimulationVisit

SERVICE_ERRORS = (RuleViolation, DjangoValidationError)
IDENTIFIED = ("workflow.view_identified",)


def identified(*perms):
    """Page guard: identified-data access plus ``perms``; anyone else gets 403 (never a login loop)."""
    return permission_required(IDENTIFIED + perms, raise_exception=True)


def _redirect_back(request, fallback):
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return redirect(target)
    return redirect(fallback)


def _parse_day(value):
    try:
        return params.parse_date(value, "date")
    except DjangoValidationError:
        return None


def home(request):
    return render(request, "home.html", {"today": timezone.localdate()})


# --- today's treatment list --------------------------------------------------------------------------------------


@identified("workflow.view_fraction")
def treatment_list(request):
    day = _parse_day(request.GET.get("date"))
    if request.GET.get("date") and day is None:
        messages.warning(request, "That date was not understood; showing today.")
    day = day or timezone.localdate()
    fractions = list(scheduling.daily_list(day))

    lists = OrderedDict((m, []) for m in treatment_machines().order_by("name"))
    for fraction in fractions:
        lists.setdefault(fraction.machine, []).append(fraction)

    blockers = {}
    for course in {f.course for f in fractions if f.status == AppointmentStatus.SCHEDULED}:
        blockers[course.pk] = delivery.delivery_blockers(course)
    for fraction in fractions:
        fraction.blockers = blockers.get(fraction.course_id, [])

    start = scheduling.local_datetime(day, dt.time(0))
    downtimes = Downtime.objects.filter(starts_at__lt=start + dt.timedelta(days=1), ends_at__gt=start).select_related("machine")
    return render(
        request,
        "workflow/treatment_list.html",
        {
            "day": day,
            "today": timezone.localdate(),
            "previous_day": day - dt.timedelta(days=1),
            "next_day": day + dt.timedelta(days=1),
            "closure": calendar.closure_reason(day),
            "downtimes": downtimes,
            "lists": [(machine, rows) for machine, rows in lists.items()],
            "fraction_count": len(fractions),
            "miss_form": MissForm(),
        },
    )


@require_POST
@identified("workflow.deliver_fraction")
def fraction_deliver(request, pk):
    fraction = get_object_or_404(Fraction.objects.active().select_related("course__patient"), pk=pk)
    try:
        delivery.deliver_fraction(fraction, user=request.user)
    except SERVICE_ERRORS as exc:
        messages.error(request, f"{fraction.course.patient.name}, fraction {fraction.number}: {service_error_text(exc)}")
    else:
        messages.success(request, f"{fraction.course.patient.name}: fraction {fraction.number} delivered.")
    return _redirect_back(request, reverse("treatment-list"))


@require_POST
@identified("workflow.deliver_fraction")
def fraction_miss(request, pk):
    fraction = get_object_or_404(Fraction.objects.active().select_related("course__patient"), pk=pk)
    form = MissForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        missed = scheduling.mark_missed(fraction, user=request.user, reason=reason)
    except SERVICE_ERRORS as exc:
        messages.error(request, f"{fraction.course.patient.name}, fraction {fraction.number}: {service_error_text(exc)}")
    else:
        messages.warning(
            request,
            f"{fraction.course.patient.name}: fraction {fraction.number} missed; make-up booked, "
            f"the course now ends {missed.new_last_day:%a %d %b %Y}.",
        )
    return _redirect_back(request, reverse("treatment-list"))


# --- patients ----------------------------------------------------------------------------------------------------


@identified("workflow.view_patient")
def patient_list(request):
    form = PatientSearchForm(request.GET or None)
    patients = Patient.objects.active().annotate(
        active_courses=Count("courses", filter=Q(courses__voided_at__isnull=True, courses__status__in=["approved", "on_treatment"]))
    )
    if form.is_valid() and form.cleaned_data["q"]:
        q = form.cleaned_data["q"].strip()
        patients = patients.filter(Q(mrn__icontains=q) | Q(given_name__icontains=q) | Q(family_name__icontains=q))
    # An aggregate drops Meta.ordering (GROUP BY): order explicitly, MRN last so pages never shuffle.
    patients = patients.order_by("family_name", "given_name", "mrn")
    page = Paginator(patients, 50).get_page(request.GET.get("page"))
    return render(request, "workflow/patient_list.html", {"form": form, "page": page})


def _progress_percent(progress):
    if not progress.planned_fractions:
        return 0
    return min(100, round(100 * progress.delivered_fractions / progress.planned_fractions))


def _course_summary(course):
    progress = delivery.course_progress(course)
    return {
        "course": course,
        "progress": progress,
        "percent": _progress_percent(progress),
        "time": scheduling.treatment_time(course),
        "blockers": delivery.delivery_blockers(course) if course.status not in ("completed", "stopped") else [],
    }


def pathway_timeline(patient):
    """The patient's pathway as dated events, oldest first (display only; the records are the source)."""
    events = []
    for diagnosis in patient.diagnoses.active():
        detail = ", ".join(x for x in (diagnosis.histology, diagnosis.stage) if x)
        events.append({"date": diagnosis.diagnosed_on, "kind": "diagnosis", "title": f"Diagnosis: {diagnosis.get_site_display()}",
                       "detail": detail, "record": ("diagnosis", diagnosis.pk)})
    for treatment in patient.treatments.active():
        title = treatment.get_surgery_type_display() if treatment.surgery_type else treatment.get_kind_display()
        detail = " ".join(x for x in (treatment.agent, treatment.trial_arm and f"(arm {treatment.trial_arm})") if x)
        if treatment.end_date:
            detail = f"{detail} until {treatment.end_date:%d %b %Y}".strip()
        events.append({"date": treatment.start_date, "kind": treatment.kind, "title": title, "detail": detail,
                       "record": ("treatment", treatment.pk)})
    for course in patient.courses.active():
        for visit in course.simulations.active().select_related("machine"):
            events.append(
                {
                    "date": timezone.localtime(visit.starts_at).date(),
                    "kind": "simulation",
                    "title": f"{visit.get_modality_display()} simulation ({visit.get_status_display().lower()})",
                    "detail": f"{visit.machine} {timezone.localtime(visit.starts_at):%H:%M}; {visit.immobilisation or 'no immobilisation noted'}",
                }
            )
        summary = _course_summary(course)
        start = summary["time"].first_day or timezone.localtime(course.created_at).date()
        events.append({"date": start, "kind": "radiotherapy", "title": f"Radiotherapy: {course.treated_site}", "summary": summary,
                       "course": course.pk})
        if course.stopped_on:
            events.append(
                {
                    "date": course.stopped_on,
                    "kind": "stopped",
                    "title": "Course stopped early",
                    "detail": f"{course.get_termination_reason_display()} {course.termination_note}".strip(),
                }
            )
        for visit in course.followup_visits.active():
            events.append(
                {
                    "date": visit.due_date,
                    "kind": "followup",
                    "title": f"Follow-up {visit.get_modality_display()} ({visit.label})",
                    "detail": visit.get_status_display(),
                }
            )
    events.sort(key=lambda e: e["date"])
    return events


@identified("workflow.view_patient")
def patient_detail(request, pk):
    patient = get_object_or_404(Patient.objects.active(), pk=pk)
    timeline = pathway_timeline(patient)
    for event in timeline:
        kind, record = event.get("record", (None, None))
        if kind and request.user.has_perm(f"workflow.change_{kind}"):
            event["edit_url"] = reverse(f"{kind}-edit", args=[record])
    return render(
        request,
        "workflow/patient_detail.html",
        {"patient": patient, "timeline": timeline, "today": timezone.localdate()},
    )


@identified("workflow.view_patient", "workflow.view_fraction")
def patient_calendar(request, pk):
    patient = get_object_or_404(Patient.objects.active(), pk=pk)
    response = HttpResponse(patient_calendar_bytes(patient), content_type="text/calendar; charset=utf-8")
    attachment(response, calendar_filename(patient))
    return response


# --- courses -----------------------------------------------------------------------------------------------------


def _course(pk):
    return get_object_or_404(Course.objects.active().select_related("patient", "diagnosis", "plan_approved_by"), pk=pk)


@identified("workflow.view_course", "workflow.view_fraction")
def course_detail(request, pk):
    course = _course(pk)
    fractions = course.fractions.active().select_related("machine", "delivered_by").order_by("starts_at")
    summary = _course_summary(course)
    context = dict(summary)
    context.update(
        {
            "summary": summary,
            "patient": course.patient,
            "fractions": fractions,
            "simulations": course.simulations.active().select_related("machine"),
            "followups": course.followup_visits.active(),
            "stop_form": StopCourseForm(),
            "is_open": course.status not in ("completed", "stopped"),
            "has_scheduled": fractions.filter(status=AppointmentStatus.SCHEDULED).exists(),
            "skipped": scheduling.skipped_days(course),
            "today": timezone.localdate(),
        }
    )
    return render(request, "workflow/course_detail.html", context)


@identified("workflow.view_course", "workflow.schedule_fraction")
def course_schedule(request, pk):
    course = _course(pk)
    form = ScheduleForm(request.POST or None, course=course, initial={"start_date": timezone.localdate()})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            booking = scheduling.book_course(
                course, data["start_date"], preferred_time=data["preferred_time"], machine=data["machine"], user=request.user
            )
        except SERVICE_ERRORS as exc:
            add_service_error(form, exc)
        else:
            skipped = scheduling.skipped_days(course)
            skipped_text = (" Skipped: " + "; ".join(f"{d:%a %d %b} ({reason})" for d, reason in skipped) + ".") if skipped else ""
            messages.success(
                request,
                f"Booked {len(booking.fractions)} fractions from {booking.first_day:%a %d %b %Y} to {booking.last_day:%a %d %b %Y}.{skipped_text}",
            )
            return redirect("course-detail", pk=course.pk)
    return render(request, "workflow/course_schedule.html", {"course": course, "patient": course.patient, "form": form})


@require_POST
@identified("workflow.approve_course")
def course_clear(request, pk):
    course = _course(pk)
    try:
        delivery.clear_for_treatment(course, user=request.user)
    except SERVICE_ERRORS as exc:
        messages.error(request, service_error_text(exc))
    else:
        messages.success(request, "Course cleared for treatment.")
    return redirect("course-detail", pk=course.pk)


@require_POST
@identified("workflow.stop_course")
def course_stop(request, pk):
    course = _course(pk)
    form = StopCourseForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a termination reason to stop the course.")
        return redirect("course-detail", pk=course.pk)
    try:
        delivery.stop_course(course, reason=form.cleaned_data["reason"], note=form.cleaned_data["note"], user=request.user)
    except SERVICE_ERRORS as exc:
        messages.error(request, service_error_text(exc))
    else:
        messages.warning(request, "Course stopped; its remaining fractions are cancelled.")
    return redirect("course-detail", pk=course.pk)


@identified("workflow.view_course", "workflow.add_simulationvisit")
def course_simulation(request, pk):
    course = _course(pk)
    form = SimulationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = dict(form.cleaned_data)
        starts_at, machine = data.pop("starts_at"), data.pop("machine")
        try:
            visit = scheduling.book_simulation(course, starts_at, machine, user=request.user, **data)
        except SERVICE_ERRORS as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Simulation booked on {visit.machine} at {timezone.localtime(visit.starts_at):%a %d %b %Y %H:%M}.")
            return redirect("course-detail", pk=course.pk)
    return render(request, "workflow/course_simulation.html", {"course": course, "patient": course.patient, "form": form})


@require_POST
@identified("workflow.change_simulationvisit")
def simulation_complete(request, pk):
    visit = get_object_or_404(SimulationVisit.objects.active(), pk=pk)
    try:
        scheduling.complete_simulation(visit, user=request.user)
    except SERVICE_ERRORS as exc:
        messages.error(request, service_error_text(exc))
    else:
        messages.success(request, "Simulation recorded as done.")
    return redirect("course-detail", pk=visit.course_id)


# --- machine downtime --------------------------------------------------------------------------------------------


@identified("workflow.add_downtime", "workflow.manage_downtime")
def downtime_new(request):
    form = DowntimeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = scheduling.add_downtime(data["machine"], data["starts_at"], data["ends_at"], data["reason"], user=request.user)
        except SERVICE_ERRORS as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, f"Downtime recorded on {result.downtime.machine}; {len(result.moves)} fraction(s) moved.")
            return render(request, "workflow/downtime_result.html", {"result": result})
    upcoming = Downtime.objects.filter(ends_at__gte=timezone.now()).select_related("machine")[:20]
    return render(request, "workflow/downtime_form.html", {"form": form, "upcoming": upcoming})
