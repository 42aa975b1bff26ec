"""Forms for registering and editing the clinical records: patient, diagnosis, multimodal treatment, course, and
the prescription amendment.

They collect input only. The rules are the model's own ``clean()`` (a surgery needs its type, total = N x d, a
diagnosis of the same patient), ``workflow.pathway.locking`` (identity links never move, a started course's prescription
is locked) and ``workflow.pathway.prescriptions`` (dose per fraction derived, defaults, amendments). Fields a rule locks are
shown disabled, so a tampered POST cannot change them either (Django ignores posted values of disabled fields).
"""

from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import reverse

from . import locking, prescriptions
from ..errors import RuleViolation
from ..forms import add_service_error
from .models import Course, Diagnosis, Patient, Treatment, TreatmentKind
from ..widgets import DateInput


class PatientPicker(forms.Widget):
    """Search-as-you-type patient picker: a text box that queries ``patient-search`` and a hidden input holding the
    chosen patient's id (``workflow/static/workflow/picker.js``). Without script, an exact MRN typed in the box is
    accepted."""

    template_name = "workflow/widgets/patient_picker.html"

    def value_from_datadict(self, data, files, name):
        value = data.get(name)
        if value:
            return value
        typed = (data.get(f"{name}_search") or "").strip()
        if not typed:
            return None
        patient = Patient.objects.active().filter(mrn__iexact=typed).first()
        return patient.pk if patient else typed

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        patient = None
        if value not in (None, ""):
            patient = Patient.objects.active().filter(pk=value).first() if str(value).isdigit() else None
        context["widget"].update(
            {
                "patient": patient,
                "search_url": reverse("patient-search"),
                "label_text": str(patient) if patient else "",
                "on_pick": getattr(self, "on_pick", ""),
            }
        )
        return context


class PatientField(forms.ModelChoiceField):
    widget = PatientPicker

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Patient.objects.active())
        kwargs.setdefault("help_text", "Type an MRN or a name and choose the patient.")
        super().__init__(**kwargs)


class LockedModelForm(forms.ModelForm):
    """A ModelForm whose ``clean()`` applies ``workflow.pathway.locking`` to an edit before the model validates it."""

    def clean(self):
        data = super().clean()
        if self.instance.pk is not None:
            try:
                locking.check_edit(self.instance, {k: v for k, v in data.items() if k in self.changed_data})
            except (DjangoValidationError, RuleViolation) as exc:
                add_service_error(self, exc)
        return data

    def lock(self, *names, help_text=None):
        for name in names:
            if name in self.fields:
                self.fields[name].disabled = True
                if help_text:
                    self.fields[name].help_text = help_text


class PatientForm(LockedModelForm):
    class Meta:
        model = Patient
        fields = ["mrn", "given_name", "family_name", "birth_date", "sex"]
        widgets = {"birth_date": DateInput}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("given_name", "family_name", "birth_date"):  # optional only for registry imports
            if name in self.fields:
                self.fields[name].required = True


class PatientRecordForm(LockedModelForm):
    """Base for a record that belongs to a patient: the patient is chosen once and never changes."""

    patient = PatientField()

    def __init__(self, *args, patient=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            patient = self.instance.patient
            self.lock("patient", help_text="A record never moves to another patient; void it and record it again.")
        if patient is not None:
            self.initial["patient"] = patient.pk
        self.patient = patient
        if "diagnosis" in self.fields:
            self.fields["patient"].widget.on_pick = "reload"  # the diagnosis choices are the chosen patient's
            self.fields["diagnosis"].queryset = (
                Diagnosis.objects.active().filter(patient=patient) if patient else Diagnosis.objects.none()
            )
            self.fields["diagnosis"].help_text = "" if patient else "Choose the patient first."
            latest = self.fields["diagnosis"].queryset.first()  # newest first
            if latest is not None and self.instance.pk is None:
                self.initial.setdefault("diagnosis", latest.pk)


class DiagnosisForm(PatientRecordForm):
    class Meta:
        model = Diagnosis
        fields = ["patient", "site", "histology", "stage", "diagnosed_on", "notes"]
        widgets = {"diagnosed_on": DateInput, "notes": forms.Textarea(attrs={"rows": 3})}


class TreatmentForm(PatientRecordForm):
    class Meta:
        model = Treatment
        fields = ["patient", "diagnosis", "kind", "surgery_type", "agent", "trial_arm", "start_date", "end_date", "notes"]
        widgets = {"start_date": DateInput, "end_date": DateInput, "notes": forms.Textarea(attrs={"rows": 3})}
        labels = {"agent": "Regimen, agent or trial name"}
        help_texts = {"surgery_type": "Surgery only.", "trial_arm": "Trial enrolment only."}

    def __init__(self, *args, kind=None, **kwargs):
        super().__init__(*args, **kwargs)
        if kind in TreatmentKind.values and self.instance.pk is None:
            self.initial["kind"] = kind


class CourseForm(PatientRecordForm):
    """A radiotherapy course. The dose per fraction is derived from the total dose and the number of fractions."""

    class Meta:
        model = Course
        fields = [
            "patient", "diagnosis", "name", "intent", "technique", "treated_site", "total_dose_gy", "fractions_planned",
            "twice_daily", "fraction_minutes",
        ]
        labels = {"total_dose_gy": "Total dose (Gy)", "fractions_planned": "Fractions", "fraction_minutes": "Appointment (minutes)"}
        help_texts = {"name": "Optional, e.g. Phase 1"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            technique = self.initial.get("technique", "IMRT")
            intent = self.initial.get("intent", "adjuvant")
            total, n, _, minutes = prescriptions.default_prescription(technique, intent)
            for name, value in (("technique", technique), ("intent", intent), ("total_dose_gy", total),
                                ("fractions_planned", n), ("fraction_minutes", minutes)):
                self.initial.setdefault(name, value)
        else:
            course = self.instance
            if locking.course_has_started(course):
                self.lock(*locking.PRESCRIPTION_FIELDS, *locking.BOOKING_FIELDS,
                          help_text="Locked: the course has started. Use Amend prescription.")
            elif course.fractions.filter(status="scheduled").exists():
                self.lock(*locking.BOOKING_FIELDS, help_text="Locked: fractions are booked. Use Amend prescription.")

    def derived_dose_per_fraction(self):
        data = self.cleaned_data if hasattr(self, "cleaned_data") else {}
        return prescriptions.dose_per_fraction(data.get("total_dose_gy"), data.get("fractions_planned"))

    def clean(self):
        data = super().clean()
        total, n = data.get("total_dose_gy"), data.get("fractions_planned")
        if total is not None and n:
            self.instance.dose_per_fraction_gy = prescriptions.dose_per_fraction(total, n)
        return data


class AmendForm(forms.Form):
    fractions_planned = forms.IntegerField(min_value=1, max_value=60, label="Fractions")
    total_dose_gy = forms.DecimalField(max_digits=6, decimal_places=2, min_value=0.5, max_value=100, label="Total dose (Gy)")
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Required; kept with the before and after prescription.")
