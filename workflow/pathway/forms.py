"""Forms for the clinic pages. They collect input only; the services (``workflow.pathway.scheduling``,
``workflow.pathway.delivery``) apply the rules, and ``workflow.forms.add_service_error`` puts a service's complaint
on the field it names.
"""

from django import forms

from .models import Machine, MachineKind, TerminationReason
from ..widgets import DATETIME_INPUT_FORMATS as DATETIME_FORMATS
from ..widgets import DateInput, DateTimeInput, TimeInput


def treatment_machines():
    return Machine.objects.filter(active=True).exclude(kind=MachineKind.CT_SIM)


class ScheduleForm(forms.Form):
    start_date = forms.DateField(widget=DateInput, help_text="First treatment day (the clinic calendar skips closed days).")
    preferred_time = forms.TimeField(
        required=False, widget=TimeInput, help_text="Daily appointment time to keep where capacity allows."
    )
    machine = forms.ModelChoiceField(
        queryset=Machine.objects.none(), required=False, empty_label="Any capable machine", help_text="Preferred machine."
    )

    def __init__(self, *args, course=None, **kwargs):
        super().__init__(*args, **kwargs)
        machines = treatment_machines()
        if course is not None:
            machines = machines.filter(pk__in=[m.pk for m in machines if m.supports(course.technique)])
        self.fields["machine"].queryset = machines


class SimulationForm(forms.Form):
    starts_at = forms.DateTimeField(widget=DateTimeInput, input_formats=DATETIME_FORMATS, label="Date and time")
    machine = forms.ModelChoiceField(queryset=Machine.objects.filter(active=True, kind=MachineKind.CT_SIM), label="Simulator")
    duration_minutes = forms.IntegerField(min_value=15, max_value=90, initial=30, label="Duration (minutes)")
    modality = forms.ChoiceField(choices=[("CT", "CT"), ("MRI", "MRI"), ("PET-CT", "PET-CT"), ("XRAY", "X-ray")], initial="CT")
    immobilisation = forms.CharField(max_length=120, required=False, help_text="e.g. wing board, thermoplastic mask")
    skin_marks = forms.ChoiceField(
        choices=[("tattoos", "Permanent tattoos"), ("marks", "Skin marks (ink)"), ("none", "None (surface guidance)")]
    )
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


class DowntimeForm(forms.Form):
    machine = forms.ModelChoiceField(queryset=Machine.objects.filter(active=True))
    starts_at = forms.DateTimeField(widget=DateTimeInput, input_formats=DATETIME_FORMATS, label="Starts")
    ends_at = forms.DateTimeField(widget=DateTimeInput, input_formats=DATETIME_FORMATS, label="Ends")
    reason = forms.CharField(max_length=120, help_text="e.g. planned service, QA, breakdown")

    def clean(self):
        data = super().clean()
        if data.get("starts_at") and data.get("ends_at") and data["ends_at"] <= data["starts_at"]:
            self.add_error("ends_at", "Downtime must end after it starts.")
        return data


class StopCourseForm(forms.Form):
    reason = forms.ChoiceField(choices=TerminationReason.choices, label="Termination reason")
    note = forms.CharField(max_length=200, required=False)


class MissForm(forms.Form):
    reason = forms.CharField(max_length=200, required=False)


class PatientSearchForm(forms.Form):
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "MRN or name", "type": "search"}))
