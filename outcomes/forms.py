"""Forms: follow-up logging (assessment + a small measurements formset), override, analysis, registry upload."""

from django import forms

from workflow.widgets import DateInput
from workflow.models import DiseaseSite, Intent, Technique, TreatmentKind

from . import covariates, services
from .models import CauseOfDeath, FollowUpAssessment, LesionMeasurement, Registry, Response

DATE = DateInput()
MONTH = forms.TextInput(attrs={"type": "month", "placeholder": "YYYY-MM", "pattern": r"\d{4}-\d{2}"})


class AssessmentForm(forms.ModelForm):
    death_date = forms.DateField(required=False, widget=DATE, help_text="Only when vital status is dead")
    death_cause = forms.ChoiceField(choices=CauseOfDeath.choices, required=False)

    class Meta:
        model = FollowUpAssessment
        fields = ["kind", "date", "imaging", "criteria", "non_target", "new_lesions", "failure_site", "vital_status",
                  "last_known_alive", "notes"]
        widgets = {"date": DATE, "last_known_alive": DATE, "notes": forms.Textarea(attrs={"rows": 2})}

    def clean(self):
        data = super().clean()
        if data.get("vital_status") == "dead" and not data.get("death_date"):
            self.add_error("death_date", "Give the date of death.")
        return data

    def death(self):
        d = self.cleaned_data
        if d.get("vital_status") == "dead" and d.get("death_date"):
            return {"date": d["death_date"], "cause": d.get("death_cause") or "unknown"}
        return None


class MeasurementForm(forms.ModelForm):
    class Meta:
        model = LesionMeasurement
        fields = ["kind", "lesion", "organ", "is_node", "ct_level", "value_mm"]
        labels = {"value_mm": "mm", "ct_level": "CT level", "is_node": "Node"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.empty_permitted = True  # a spare row (no lesion, no value) is ignored, not an error

    def has_changed(self):
        if not self.is_bound:
            return super().has_changed()
        return any((self.data.get(self.add_prefix(f)) or "").strip() for f in ("lesion", "value_mm"))


MeasurementFormSet = forms.formset_factory(MeasurementForm, extra=6, max_num=12, can_delete=False)


def measurement_rows(formset):
    return [
        {k: f.cleaned_data.get(k) for k in services.MEASUREMENT_FIELDS}
        for f in formset.forms
        if f.has_changed() and f.cleaned_data.get("lesion")
    ]


class OverrideForm(forms.Form):
    response = forms.ChoiceField(choices=Response.choices)
    reason = forms.CharField(max_length=300)


class AnalysisForm(forms.Form):
    endpoint = forms.ChoiceField(choices=list(services.ENDPOINTS.items()), initial="os")
    time_zero = forms.ChoiceField(choices=[("rt_start", "Start of RT"), ("diagnosis", "Diagnosis")], initial="rt_start")
    group_by = forms.ChoiceField(choices=list(services.GROUPINGS.items()), required=False)
    group_cuts = forms.CharField(required=False, label="Cut-points (numeric covariate)",
                                 help_text="e.g. 3,10 (groups < 3, 3 to < 10, >= 10) or median")
    conf_type = forms.ChoiceField(choices=[("log", "log (R survfit default)"), ("log-log", "log-log (lifelines)")], initial="log",
                                  label="95 % CI method")
    site = forms.MultipleChoiceField(choices=DiseaseSite.choices, required=False, widget=forms.SelectMultiple(attrs={"size": 4}))
    intent = forms.MultipleChoiceField(choices=Intent.choices, required=False, widget=forms.SelectMultiple(attrs={"size": 3}))
    technique = forms.MultipleChoiceField(choices=Technique.choices, required=False, widget=forms.SelectMultiple(attrs={"size": 3}))
    treatment = forms.MultipleChoiceField(choices=TreatmentKind.choices, required=False, label="Treatments received",
                                          widget=forms.SelectMultiple(attrs={"size": 3}))
    multimodal = forms.ChoiceField(choices=[("", "Any"), ("yes", "Surgery + chemo + RT"), ("no", "Not multimodal")], required=False)
    trial_arm = forms.CharField(required=False)
    radiotherapy = forms.ChoiceField(choices=[("", "Any"), ("yes", "RT courses only"), ("no", "Without radiotherapy")],
                                     required=False, help_text="Patients without an RT course are analysed from "
                                                               "diagnosis")
    covariate = forms.CharField(required=False, label="Covariate filter",
                                help_text="registry.variable:low..high or registry.variable:level1,level2; repeat "
                                          "?covariate= in the URL for several")
    # months (YYYY-MM): researchers may not filter by day (outcomes.disclosure); the cohort filter parses them
    diagnosed_from = forms.CharField(required=False, widget=MONTH, label="Diagnosed from (month)")
    diagnosed_to = forms.CharField(required=False, widget=MONTH, label="Diagnosed to (month)")
    rt_start_from = forms.CharField(required=False, widget=MONTH, label="RT start from (month)")
    rt_start_to = forms.CharField(required=False, widget=MONTH, label="RT start to (month)")
    min_toxicity_grade = forms.TypedChoiceField(choices=[("", "Any")] + [(g, f">= {g}") for g in range(1, 6)], coerce=int,
                                                required=False, empty_value=None, label="Toxicity grade at least")
    cox_terms = forms.MultipleChoiceField(
        choices=[(t, {"group": "The grouping", "age": "Age"}.get(t) or services.GROUPINGS[t]) for t in services.COX_TERMS],
        required=False, widget=forms.CheckboxSelectMultiple, label="Cox model terms",
        help_text="None ticked: the grouping, age and sex.")
    cox_strata = forms.MultipleChoiceField(choices=[(t, services.GROUPINGS[t]) for t in services.COX_TERMS[2:]],
                                           required=False, widget=forms.CheckboxSelectMultiple, label="Cox strata")

    rmst_tau_months = forms.FloatField(required=False, min_value=0.1, label="RMST up to (months)",
                                       help_text="Restricted mean survival time per group, with the difference")
    landmark_months = forms.FloatField(required=False, min_value=0, label="Landmark at (months)",
                                       help_text="Survival from then on, among the patients still at risk")
    landmark_by = forms.ChoiceField(choices=[("", "The grouping"), ("response", "Response (CR/PR) by the landmark")],
                                    required=False, label="Landmark groups")
    competing = forms.BooleanField(required=False, label="Competing risks",
                                   help_text="Cumulative incidence per cause, Gray's test, Fine-Gray model")
    iptw_covariates = forms.MultipleChoiceField(
        choices=[(t, {"age": "Age"}.get(t) or services.GROUPINGS[t]) for t in services.IPTW_TERMS], required=False,
        widget=forms.CheckboxSelectMultiple, label="IPTW: balance the two groups on",
        help_text="Propensity-weighted curves and marginal hazard ratio (a grouping with two groups)")

    DEFAULTS = {"endpoint": "os", "time_zero": "rt_start", "conf_type": "log"}

    def method_params(self):
        """The extra methods in the service's units (days)."""
        d = self.cleaned_data
        to_days = lambda m: None if m is None else m * services.ep.DAYS_PER_MONTH  # noqa: E731
        return {"rmst_tau": to_days(d.get("rmst_tau_months")), "landmark_days": to_days(d.get("landmark_months")),
                "landmark_by": d.get("landmark_by") or None,
                "competing": bool(d.get("competing")), "iptw_covariates": d.get("iptw_covariates") or None}

    def __init__(self, data=None, *args, **kwargs):
        if data is not None:
            # A partial URL (``?endpoint=os&group_by=multimodal``) runs with the defaults for what it leaves out.
            data = data.copy()
            for name, value in self.DEFAULTS.items():
                if not data.get(name):
                    data[name] = value
        super().__init__(data, *args, **kwargs)
        variables = covariates.all_variables()  # the registries' covariates as groupings, Cox terms and strata
        self.fields["group_by"].choices += [(v.key, f"{v.key} ({v.description})") for v in variables]
        self.fields["cox_terms"].choices += [(v.key, v.key) for v in variables]
        self.fields["cox_strata"].choices += [(v.key, v.key) for v in variables if v.kind == "categorical"]
        self.fields["iptw_covariates"].choices += [(v.key, v.key) for v in variables]
        if services.toxicity_model() is None:
            del self.fields["min_toxicity_grade"]
            self.fields["group_by"].choices = [c for c in self.fields["group_by"].choices if c[0] != "grade3_toxicity"]


class RegistryUploadForm(forms.Form):
    file = forms.FileField(help_text="CSV, UTF-8; see the column list below")
    registry = forms.ModelChoiceField(
        queryset=Registry.objects.order_by("code"), to_field_name="code", required=False, empty_label="None",
        help_text="The registry whose data dictionary declares the file's extra (covariate) columns")
