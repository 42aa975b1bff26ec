"""Follow-up outcomes: imaging assessments with lesion measurements, deaths, and the derived response record.

What a clinician types: the assessment (date, imaging, target-lesion diameters or mRECIST pleural thickness,
non-target status, new lesions, vital status), a death (date, cause) and, when needed, an override of the derived
response with a reason. What is *derived* (never typed): the response at each assessment, best overall response,
disease-status timeline, first progression and recurrence dates. ``outcomes.services.recompute_course`` writes the
derived values on every save or correction of any assessment of that course, so they can be queried in SQL.

Roles (``workflow.roles.extend_role`` below): oncologists log follow-ups, override responses and import registry
data; researchers only run analyses and download de-identified exports (no ``workflow.view_identified``).
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from workflow import roles
from workflow.clinical import ClinicalRecord
from workflow.models import Course, ImagingModality, Patient


class Criteria(models.TextChoices):
    RECIST = "recist1.1", "RECIST 1.1"
    MRECIST = "mrecist1.1", "mRECIST 1.1 (pleural mesothelioma)"


class Response(models.TextChoices):
    CR = "CR", "Complete response"
    PR = "PR", "Partial response"
    SD = "SD", "Stable disease"
    PD = "PD", "Progressive disease"
    NE = "NE", "Not evaluable"


class NonTarget(models.TextChoices):
    NONE = "none", "No non-target disease at baseline"
    ABSENT = "absent", "Absent (disappeared)"
    PRESENT = "present", "Present (non-CR / non-PD)"
    PROGRESSION = "unequivocal_progression", "Unequivocal progression"
    NOT_EVALUATED = "not_evaluated", "Not evaluated"


class AssessmentKind(models.TextChoices):
    BASELINE = "baseline", "Baseline imaging"
    FOLLOWUP = "followup", "Follow-up imaging"
    CONTACT = "contact", "Contact only (vital status, no imaging)"


class VitalStatus(models.TextChoices):
    ALIVE = "alive", "Alive"
    DEAD = "dead", "Dead"


class FailureSite(models.TextChoices):
    UNKNOWN = "", "Unknown / not applicable"
    LOCAL = "local", "Local (in field)"
    REGIONAL = "regional", "Regional"
    DISTANT = "distant", "Distant"


class DiseaseStatus(models.TextChoices):
    CR = "complete_remission", "Complete remission (NED)"
    PR = "partial_remission", "Partial remission"
    SD = "stable", "Stable"
    PD = "progression", "Progression"
    RECURRENCE = "recurrence", "Recurrence after complete remission"
    NE = "not_evaluable", "Not evaluable"


IMAGING_CHOICES = ImagingModality.choices + [("none", "None")]


class FollowUpAssessment(ClinicalRecord):
    """One dated assessment of a patient's course: baseline or follow-up imaging, or a contact (alive on date).

    ``course`` is empty for a patient followed without any radiotherapy course (a registry patient treated by
    surgery or chemotherapy alone): such assessments are derived per patient into ``PatientOutcome``. A patient
    with an RT course logs follow-up on that course (``outcomes.services.save_assessment``)."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="assessments")
    course = models.ForeignKey(
        Course, null=True, blank=True, on_delete=models.PROTECT, related_name="assessments",
        help_text="The RT course followed up; empty for a patient without radiotherapy (patient-level follow-up)",
    )
    kind = models.CharField(max_length=10, choices=AssessmentKind.choices, default=AssessmentKind.FOLLOWUP)
    date = models.DateField()
    imaging = models.CharField(max_length=10, choices=IMAGING_CHOICES, default=ImagingModality.CT)
    criteria = models.CharField(max_length=12, choices=Criteria.choices, default=Criteria.RECIST)
    non_target = models.CharField(max_length=24, choices=NonTarget.choices, default=NonTarget.NONE)
    new_lesions = models.BooleanField(default=False)
    failure_site = models.CharField(
        max_length=10, choices=FailureSite.choices, blank=True, default="",
        help_text="Where progression was seen (local = in the irradiated field)",
    )
    vital_status = models.CharField(max_length=5, choices=VitalStatus.choices, default=VitalStatus.ALIVE)
    last_known_alive = models.DateField(null=True, blank=True, help_text="Last date the patient was known alive")
    notes = models.TextField(blank=True)

    # Clinician override of the derived response (both kept).
    override_response = models.CharField(max_length=2, choices=Response.choices, blank=True)
    override_reason = models.CharField(max_length=300, blank=True)
    override_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    override_at = models.DateTimeField(null=True, blank=True)

    # Derived by outcomes.services.recompute_course (never typed by hand).
    target_sum_mm = models.FloatField(null=True, blank=True, editable=False)
    nadir_mm = models.FloatField(null=True, blank=True, editable=False)
    change_from_baseline_pct = models.FloatField(null=True, blank=True, editable=False)
    change_from_nadir_pct = models.FloatField(null=True, blank=True, editable=False)
    target_response = models.CharField(max_length=2, choices=Response.choices, blank=True, editable=False)
    derived_response = models.CharField(max_length=2, choices=Response.choices, blank=True, editable=False)
    response = models.CharField(
        max_length=2, choices=Response.choices, blank=True, editable=False, help_text="Effective: override, else derived"
    )
    disease_status = models.CharField(max_length=20, choices=DiseaseStatus.choices, blank=True, editable=False)

    class Meta:
        ordering = ["date", "id"]
        indexes = [models.Index(fields=["course", "date"]), models.Index(fields=["patient", "date"])]
        permissions = [("override_response", "Can override a derived tumour response")]

    def __str__(self):
        return f"{self.get_kind_display()} {self.date} ({self.response or '-'})"

    def clean(self):
        errors = {}
        if self.course_id and self.patient_id and self.course.patient_id != self.patient_id:
            errors["course"] = "Course belongs to another patient."
        if self.override_response and not self.override_reason.strip():
            errors["override_reason"] = "An override needs a reason."
        if self.last_known_alive and self.date and self.last_known_alive < self.date and self.vital_status == "alive":
            errors["last_known_alive"] = "Last known alive cannot be before an assessment the patient attended."
        if errors:
            raise ValidationError(errors)


class MeasurementKind(models.TextChoices):
    TARGET = "target", "Target lesion (RECIST 1.1)"
    PLEURAL = "pleural", "Pleural thickness (mRECIST)"


class LesionMeasurement(ClinicalRecord):
    """A target-lesion diameter (RECIST: longest diameter, short axis for nodes) or a pleural thickness (mRECIST:
    site and CT level). ``value_mm`` empty = not measured at this assessment; 0 = disappeared."""

    assessment = models.ForeignKey(FollowUpAssessment, on_delete=models.PROTECT, related_name="measurements")
    kind = models.CharField(max_length=10, choices=MeasurementKind.choices, default=MeasurementKind.TARGET)
    lesion = models.CharField(max_length=40, help_text="Lesion id (e.g. T1) or pleural site (e.g. anterior)")
    organ = models.CharField(max_length=40, blank=True)
    is_node = models.BooleanField(default=False)
    ct_level = models.PositiveSmallIntegerField(null=True, blank=True, help_text="mRECIST CT level (1-3)")
    value_mm = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["kind", "ct_level", "lesion"]

    def __str__(self):
        return f"{self.lesion} {self.value_mm} mm"

    def clean(self):
        errors = {}
        if self.kind == MeasurementKind.PLEURAL and not self.ct_level:
            errors["ct_level"] = "A pleural measurement needs its CT level."
        if self.value_mm is not None and self.value_mm < 0:
            errors["value_mm"] = "A measurement cannot be negative."
        if errors:
            raise ValidationError(errors)


class CauseOfDeath(models.TextChoices):
    DISEASE = "disease", "This cancer"
    TREATMENT = "treatment", "Treatment-related"
    OTHER_CANCER = "other_cancer", "Another cancer"
    OTHER = "other", "Other cause"
    UNKNOWN = "unknown", "Unknown"


class Death(ClinicalRecord):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="deaths")
    date = models.DateField()
    cause = models.CharField(max_length=20, choices=CauseOfDeath.choices, default=CauseOfDeath.UNKNOWN)
    cause_detail = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(fields=["patient"], condition=Q(voided_at__isnull=True), name="one_live_death_per_patient")
        ]

    def __str__(self):
        return f"Death {self.date} ({self.get_cause_display()})"


class DerivedOutcome(models.Model):
    """The derived response record of one unit of follow-up (an RT course, or a patient without one), rewritten by
    ``outcomes.services`` from its assessments on every change, so it can be queried in SQL."""

    criteria = models.CharField(max_length=12, blank=True)
    baseline_date = models.DateField(null=True, blank=True)
    baseline_sum_mm = models.FloatField(null=True, blank=True)
    best_response = models.CharField(max_length=2, choices=Response.choices, blank=True)
    best_response_date = models.DateField(null=True, blank=True)
    first_response_date = models.DateField(null=True, blank=True)
    first_complete_remission_date = models.DateField(null=True, blank=True)
    first_progression_date = models.DateField(null=True, blank=True)
    recurrence_date = models.DateField(null=True, blank=True)
    first_local_failure_date = models.DateField(null=True, blank=True)
    current_status = models.CharField(max_length=20, choices=DiseaseStatus.choices, blank=True)
    last_assessment_date = models.DateField(null=True, blank=True)
    last_contact_date = models.DateField(null=True, blank=True, help_text="Patient last known alive (any course)")
    derivation_issue = models.CharField(max_length=300, blank=True)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class CourseOutcome(DerivedOutcome):
    """Per course: RT dates and every derived outcome, rewritten by ``recompute_course`` (queryable in SQL).

    ``rt_start_recorded`` / ``rt_end_recorded`` hold dates from a historical registry (no fraction records);
    ``rt_start`` / ``rt_end`` are the delivered fractions' first / last day when there are any, else the recorded.
    """

    course = models.OneToOneField(Course, on_delete=models.CASCADE, related_name="outcome", primary_key=True)
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="course_outcomes")
    rt_start_recorded = models.DateField(null=True, blank=True)
    rt_end_recorded = models.DateField(null=True, blank=True)
    # derived
    rt_start = models.DateField(null=True, blank=True)
    rt_end = models.DateField(null=True, blank=True)

    class Meta:
        permissions = [
            ("view_deidentified", "Can download de-identified research exports"),
            ("run_analysis", "Can run survival analyses"),
            ("import_registry", "Can bulk-import historical registry data"),
        ]

    def __str__(self):
        return f"Outcome of course {self.course_id}: BOR {self.best_response or '-'}"


class PatientOutcome(DerivedOutcome):
    """Per patient: the derived outcome of the patient's follow-up outside any RT course (assessments with no
    ``course``), rewritten by ``outcomes.services.recompute_patient_outcome``. It is the analysis unit of a patient
    without radiotherapy (``outcomes.cohorts``): time zero is the diagnosis, there is no RT start."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="outcome", primary_key=True)

    def __str__(self):
        return f"Outcome of patient {self.patient_id} (no RT course): BOR {self.best_response or '-'}"


FOLLOWUP_PERMS = [
    "outcomes.view_followupassessment",
    "outcomes.add_followupassessment",
    "outcomes.change_followupassessment",
    "outcomes.override_response",
    "outcomes.view_lesionmeasurement",
    "outcomes.add_lesionmeasurement",
    "outcomes.change_lesionmeasurement",
    "outcomes.view_death",
    "outcomes.add_death",
    "outcomes.change_death",
    "outcomes.view_courseoutcome",
    "outcomes.view_patientoutcome",
]
RESEARCH_PERMS = ["outcomes.view_deidentified", "outcomes.run_analysis"]

roles.extend_role(roles.ONCOLOGIST, FOLLOWUP_PERMS + RESEARCH_PERMS + ["outcomes.import_registry"])
roles.extend_role(roles.RESEARCHER, RESEARCH_PERMS)
for _role in (roles.THERAPIST, roles.SCHEDULER, roles.PHYSICIST, roles.DOSIMETRIST):
    roles.extend_role(_role, ["outcomes.view_followupassessment", "outcomes.view_death", "outcomes.view_courseoutcome",
                                "outcomes.view_patientoutcome"])


class CohortRelease(models.Model):
    """One set of patients a researcher was given results about (an export, an analysis, a group of it).

    The release ledger of ``outcomes.disclosure``: a new release is refused when, against this user's earlier
    ones, it would single out fewer than ``RADPATH_MIN_COHORT`` patients. ``patient_ids`` holds the sorted patient
    ids (int64, zlib-compressed); ``digest`` is their SHA-256, one row per distinct set and user. An audit log in
    its own right: rows are only ever added.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="cohort_releases")
    created_at = models.DateTimeField(auto_now_add=True)
    kind = models.CharField(max_length=40)
    digest = models.CharField(max_length=64)
    n_patients = models.PositiveIntegerField()
    patient_ids = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "digest"], name="cohortrelease_unique_set_per_user")]

    def __str__(self):
        return f"{self.kind} of {self.n_patients} patients for {self.user_id}"


# ---------------------------------------------------------------------------------------------------------------
# Registries and their data dictionaries (covariates)
# ---------------------------------------------------------------------------------------------------------------

VARIABLE_NAME = RegexValidator(
    r"^[a-z][a-z0-9_]{0,39}$", "Lower-case letters, digits and _ (starting with a letter), at most 40 characters: "
    "it is the CSV column name.")


class Registry(models.Model):
    """A historical data source (a trial, a registry) whose CSV imports may carry the covariates its data
    dictionary (``variables``) declares. Editable as data (admin, API); every change kept (simple-history)."""

    code = models.SlugField(max_length=40, unique=True, help_text="Short name used in API parameters, e.g. gbsg2")
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "registries"

    def __str__(self):
        return f"{self.code} ({self.name})"


class VariableLevel(models.TextChoices):
    PATIENT = "patient", "Patient (one value per patient)"
    COURSE = "course", "Course (one value per RT course)"


class VariableKind(models.TextChoices):
    NUMERIC = "numeric", "Numeric"
    CATEGORICAL = "categorical", "Categorical"


class RegistryVariable(models.Model):
    """One named variable of a registry's data dictionary: patient- or course-level, numeric (unit, allowed range)
    or categorical (allowed levels; the first is the reference level of Cox dummies)."""

    registry = models.ForeignKey(Registry, on_delete=models.PROTECT, related_name="variables")
    name = models.CharField(max_length=40, validators=[VARIABLE_NAME], help_text="The CSV column name")
    level = models.CharField(max_length=8, choices=VariableLevel.choices, default=VariableLevel.PATIENT)
    kind = models.CharField(max_length=12, choices=VariableKind.choices)
    unit = models.CharField(max_length=30, blank=True, help_text="Numeric: unit, e.g. mm or fmol/l")
    minimum = models.FloatField(null=True, blank=True, help_text="Numeric: smallest allowed value")
    maximum = models.FloatField(null=True, blank=True, help_text="Numeric: largest allowed value")
    levels = models.JSONField(default=list, blank=True,
                              help_text="Categorical: allowed levels in order; the first is the reference level")
    description = models.CharField(max_length=300)

    history = HistoricalRecords()

    class Meta:
        ordering = ["registry", "name"]
        constraints = [models.UniqueConstraint(fields=["registry", "name"], name="registryvariable_unique_name")]

    def __str__(self):
        return f"{self.registry.code}.{self.name}"

    @property
    def key(self):
        """How analyses and exports name it: ``<registry code>.<name>``."""
        return f"{self.registry.code}.{self.name}"

    def clean(self):
        from .covariates import check_variable

        check_variable(self)


class CovariateValue(ClinicalRecord):
    """One imported value of a registry variable: a patient's (``course`` empty) or a course's. Numbers in
    ``number``, categorical levels in ``level``; indexed by variable so a cohort's column is one query."""

    variable = models.ForeignKey(RegistryVariable, on_delete=models.PROTECT, related_name="values")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="covariate_values")
    course = models.ForeignKey(Course, null=True, blank=True, on_delete=models.PROTECT, related_name="covariate_values")
    number = models.FloatField(null=True, blank=True)
    level = models.CharField(max_length=60, blank=True)

    class Meta:
        indexes = [models.Index(fields=["variable", "patient"]), models.Index(fields=["variable", "course"])]
        constraints = [
            models.UniqueConstraint(fields=["variable", "patient"], condition=Q(course__isnull=True, voided_at__isnull=True),
                                    name="covariate_one_live_patient_value"),
            models.UniqueConstraint(fields=["variable", "course"], condition=Q(course__isnull=False, voided_at__isnull=True),
                                    name="covariate_one_live_course_value"),
        ]

    def __str__(self):
        return f"{self.variable_id}: {self.number if self.level == '' else self.level}"
