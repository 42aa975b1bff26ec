"""Clinic pages that register and edit the clinical records: patient (front desk / scheduler, oncologist),
diagnosis, multimodal treatment and radiotherapy course (oncologist), and the prescription amendment.

Views stay thin: the forms collect input, the model, ``workflow.pathway.locking`` and ``workflow.pathway.prescriptions`` hold the
rules, and every save is audited with the request user (django-simple-history).
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from . import prescriptions
from ..errors import RuleViolation
from ..forms import add_service_error
from .models import Course, Diagnosis, Patient, Treatment, TreatmentKind
from .record_forms import AmendForm, CourseForm, DiagnosisForm, PatientForm, TreatmentForm
from .views import identified

SEARCH_LIMIT = 20


def gy(value):
    """A dose as the clinic writes it: 50 Gy, 1.8 Gy, 2.67 Gy."""
    return f"{value.normalize():f}"


def _save(form, user):
    record = form.save(commit=False)
    record._history_user = user
    record.save()
    return record


def _patient_from(request):
    """The patient a new record is for: ``?patient=<id>`` (or the posted picker value)."""
    value = request.POST.get("patient") or request.GET.get("patient")
    if value and str(value).isdigit():
        return Patient.objects.active().filter(pk=value).first()
    return None


@identified("workflow.view_patient")
def patient_search(request):
    """JSON for the patient picker: up to 20 live patients whose MRN or name matches ``q``, by name."""
    q = (request.GET.get("q") or "").strip()[:100]
    patients = Patient.objects.none()
    if len(q) >= 2:
        query = Q(mrn__icontains=q) | Q(given_name__icontains=q) | Q(family_name__icontains=q)
        if "," in q:  # "Family, Given"
            family, given = (part.strip() for part in q.split(",", 1))
            query |= Q(family_name__icontains=family, given_name__icontains=given)
        elif " " in q:  # "Given Family"
            given, family = q.split(" ", 1)
            query |= Q(given_name__icontains=given.strip(), family_name__icontains=family.strip())
        patients = Patient.objects.active().filter(query).order_by("family_name", "given_name", "mrn")[:SEARCH_LIMIT]
    results = [
        {
            "id": p.pk,
            "mrn": p.mrn,
            "label": str(p),
            "born": p.birth_date.strftime("%d %b %Y") if p.birth_date else "",
            "url": reverse("patient-detail", args=[p.pk]),
        }
        for p in patients
    ]
    return JsonResponse({"results": results})


def _form_page(request, form, *, title, patient=None, course=None, submit="Save", cancel=None, extra=None):
    context = {"form": form, "title": title, "patient": patient, "course": course, "submit": submit, "cancel": cancel}
    context.update(extra or {})
    return render(request, "workflow/records/form.html", context)


# --- patients ----------------------------------------------------------------------------------------------------


@identified("workflow.add_patient")
def patient_new(request):
    form = PatientForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        patient = _save(form, request.user)
        messages.success(request, f"{patient.name} ({patient.mrn}) registered.")
        return redirect("patient-detail", pk=patient.pk)
    return _form_page(request, form, title="Register a patient", submit="Register patient", cancel=reverse("patient-list"))


@identified("workflow.change_patient")
def patient_edit(request, pk):
    patient = get_object_or_404(Patient.objects.active(), pk=pk)
    form = PatientForm(request.POST or None, instance=patient)
    if request.method == "POST" and form.is_valid():
        _save(form, request.user)
        messages.success(request, "Patient details saved.")
        return redirect("patient-detail", pk=patient.pk)
    return _form_page(request, form, title="Patient details", patient=patient, cancel=reverse("patient-detail", args=[pk]))


# --- diagnoses and treatments --------------------------------------------------------------------------------------


@identified("workflow.add_diagnosis")
def diagnosis_new(request):
    patient = _patient_from(request)
    form = DiagnosisForm(request.POST or None, patient=patient)
    if request.method == "POST" and form.is_valid():
        diagnosis = _save(form, request.user)
        messages.success(request, f"Diagnosis recorded: {diagnosis}.")
        return redirect("patient-detail", pk=diagnosis.patient_id)
    cancel = reverse("patient-detail", args=[patient.pk]) if patient else reverse("patient-list")
    return _form_page(request, form, title="Add a diagnosis", patient=patient, submit="Save diagnosis", cancel=cancel)


@identified("workflow.change_diagnosis")
def diagnosis_edit(request, pk):
    diagnosis = get_object_or_404(Diagnosis.objects.active().select_related("patient"), pk=pk)
    form = DiagnosisForm(request.POST or None, instance=diagnosis)
    if request.method == "POST" and form.is_valid():
        _save(form, request.user)
        messages.success(request, "Diagnosis saved.")
        return redirect("patient-detail", pk=diagnosis.patient_id)
    return _form_page(request, form, title="Edit diagnosis", patient=diagnosis.patient,
                      cancel=reverse("patient-detail", args=[diagnosis.patient_id]))


TREATMENT_TITLES = {
    TreatmentKind.SURGERY: "Add surgery",
    TreatmentKind.CHEMOTHERAPY: "Add chemotherapy",
    TreatmentKind.IMMUNOTHERAPY: "Add immunotherapy",
    TreatmentKind.TRIAL: "Add a trial enrolment",
}


@identified("workflow.add_treatment")
def treatment_new(request):
    patient = _patient_from(request)
    kind = request.GET.get("kind")
    form = TreatmentForm(request.POST or None, patient=patient, kind=kind)
    if request.method == "POST" and form.is_valid():
        treatment = _save(form, request.user)
        messages.success(request, f"{treatment.get_kind_display()} recorded: {treatment}.")
        return redirect("patient-detail", pk=treatment.patient_id)
    cancel = reverse("patient-detail", args=[patient.pk]) if patient else reverse("patient-list")
    return _form_page(request, form, title=TREATMENT_TITLES.get(kind, "Add a treatment"), patient=patient,
                      submit="Save treatment", cancel=cancel)


@identified("workflow.change_treatment")
def treatment_edit(request, pk):
    treatment = get_object_or_404(Treatment.objects.active().select_related("patient"), pk=pk)
    form = TreatmentForm(request.POST or None, instance=treatment)
    if request.method == "POST" and form.is_valid():
        _save(form, request.user)
        messages.success(request, "Treatment saved.")
        return redirect("patient-detail", pk=treatment.patient_id)
    return _form_page(request, form, title=f"Edit {treatment.get_kind_display().lower()}", patient=treatment.patient,
                      cancel=reverse("patient-detail", args=[treatment.patient_id]))


# --- radiotherapy courses ------------------------------------------------------------------------------------------


def _course_page(request, form, **kwargs):
    extra = {"course_form": True, "prescription_defaults": prescriptions.defaults_table()}
    return _form_page(request, form, extra=extra, **kwargs)


@identified("workflow.add_course")
def course_new(request):
    patient = _patient_from(request)
    form = CourseForm(request.POST or None, patient=patient)
    if request.method == "POST" and form.is_valid():
        course = _save(form, request.user)
        messages.success(
            request,
            f"Course prescribed: {gy(course.total_dose_gy)} Gy in {course.fractions_planned} fractions of "
            f"{gy(course.dose_per_fraction_gy)} Gy ({course.get_technique_display()}).",
        )
        return redirect("course-detail", pk=course.pk)
    cancel = reverse("patient-detail", args=[patient.pk]) if patient else reverse("patient-list")
    return _course_page(request, form, title="Prescribe a radiotherapy course", patient=patient,
                        submit="Prescribe course", cancel=cancel)


@identified("workflow.change_course")
def course_edit(request, pk):
    course = get_object_or_404(Course.objects.active().select_related("patient"), pk=pk)
    form = CourseForm(request.POST or None, instance=course)
    if request.method == "POST" and form.is_valid():
        _save(form, request.user)
        messages.success(request, "Course saved.")
        return redirect("course-detail", pk=course.pk)
    return _course_page(request, form, title="Edit course", patient=course.patient, course=course,
                        cancel=reverse("course-detail", args=[pk]),
                        )


@identified("workflow.view_course", "workflow.add_prescriptionamendment")
def course_amend(request, pk):
    course = get_object_or_404(Course.objects.active().select_related("patient"), pk=pk)
    initial = {"fractions_planned": course.fractions_planned, "total_dose_gy": course.total_dose_gy}
    form = AmendForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = prescriptions.amend_prescription(
                course, reason=data["reason"], user=request.user,
                fractions_planned=data["fractions_planned"], total_dose_gy=data["total_dose_gy"],
            )
        except PermissionDenied:
            raise
        except (DjangoValidationError, RuleViolation) as exc:
            add_service_error(form, exc)
        else:
            record = result.record
            messages.success(
                request,
                f"Prescription amended to {gy(record.after_total_dose_gy)} Gy in {record.after_fractions} fractions of "
                f"{gy(record.after_dose_per_fraction_gy)} Gy; {record.fractions_added} fraction(s) booked, "
                f"{record.fractions_cancelled} cancelled.",
            )
            if record.clearance_withdrawn:
                messages.warning(
                    request,
                    "The dose per fraction changed: the course is no longer cleared for treatment until a plan for the "
                    "new prescription is approved.",
                )
            return redirect("course-detail", pk=course.pk)
    delivered = course.fractions.filter(status="delivered").count()
    return _form_page(
        request, form, title="Amend prescription", patient=course.patient, course=course, submit="Amend prescription",
        cancel=reverse("course-detail", args=[pk]),
        extra={"amend": True, "delivered": delivered, "amendments": course.amendments.select_related("amended_by")},
    )
