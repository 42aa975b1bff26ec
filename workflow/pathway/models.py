"""The care pathway: patient, diagnosis, multimodal treatments, course, simulation, fractions, follow-up.

Scheduling rules live in ``workflow.pathway.scheduling`` and delivery rules in ``workflow.pathway.delivery``; the models hold the
data and the invariants the database itself can enforce (one appointment per machine slot, one active fraction per
number).
"""

import datetime
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from simple_history.models import HistoricalRecords

from . import date_rules
from ..clinical import ClinicalRecord
from ..params import has_control_characters

def clinic_date(day):
    """A date as the clinic writes it (``5 Oct 2026``); HTML inputs use ISO (``workflow.widgets``)."""
    from django.utils.dateformat import format as date_format

    return date_format(day, "j M Y") if day else ""


SLOT_MINUTES = 5
"""Machine time is booked in 5-minute units; one row per unit makes overlap a unique-constraint violation."""


class Sex(models.TextChoices):
    FEMALE = "F", "Female"
    MALE = "M", "Male"
    OTHER = "O", "Other"
    UNKNOWN = "U", "Unknown"


class Patient(ClinicalRecord):
    mrn = models.CharField("MRN", max_length=32, unique=True)
    # Required when a patient is registered in the clinic (forms, API); a historical registry import may leave
    # them out rather than invent them (de-identified trial data has none): age is then unknown.
    given_name = models.CharField(max_length=100, blank=True)
    family_name = models.CharField(max_length=100, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)

    class Meta:
        ordering = ["family_name", "given_name"]
        permissions = [("view_identified", "Can see identified patient data")]

    def __str__(self):
        if not (self.family_name or self.given_name):
            return f"({self.mrn})"
        return f"{self.family_name}, {self.given_name} ({self.mrn})"

    def clean(self):
        errors = {}
        for name in ("mrn", "given_name", "family_name"):
            if has_control_characters(getattr(self, name) or ""):
                # An MRN or name is a single line: it goes into .ics files, filenames and CSV rows verbatim.
                errors[name] = "Control characters (line breaks, tabs, NUL) are not allowed."
        date_rules.check_birth_date(errors, "birth_date", self.birth_date)
        if errors:
            raise ValidationError(errors)

    @property
    def name(self):
        return f"{self.given_name} {self.family_name}"


class DiseaseSite(models.TextChoices):
    PLEURAL_MESOTHELIOMA = "pleural_mesothelioma", "Pleural mesothelioma"
    PERITONEAL_MESOTHELIOMA = "peritoneal_mesothelioma", "Peritoneal mesothelioma"
    PERICARDIAL_MESOTHELIOMA = "pericardial_mesothelioma", "Pericardial mesothelioma"
    SPINE = "spine", "Spine"
    PROSTATE = "prostate", "Prostate"
    LUNG = "lung", "Lung"
    LIVER = "liver", "Liver"
    HEAD_AND_NECK = "head_and_neck", "Head and neck"
    CNS = "cns", "CNS"
    SARCOMA = "sarcoma", "Sarcoma"
    BREAST = "breast", "Breast"
    OTHER = "other", "Other"


class Diagnosis(ClinicalRecord):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="diagnoses")
    site = models.CharField(max_length=40, choices=DiseaseSite.choices)
    histology = models.CharField(max_length=120, blank=True)
    stage = models.CharField(max_length=40, blank=True)
    diagnosed_on = models.DateField()
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["-diagnosed_on"]
        verbose_name_plural = "diagnoses"

    def __str__(self):
        return f"{self.get_site_display()} ({clinic_date(self.diagnosed_on)})"

    def clean(self):
        errors = {}
        date_rules.check_window(errors, "diagnosed_on", self.diagnosed_on, "Diagnosis date")
        if self.patient_id:
            date_rules.check_after_birth(errors, "diagnosed_on", self.diagnosed_on, self.patient, "Diagnosis date")
        if errors:
            raise ValidationError(errors)


class TreatmentKind(models.TextChoices):
    SURGERY = "surgery", "Surgery"
    CHEMOTHERAPY = "chemotherapy", "Chemotherapy"
    IMMUNOTHERAPY = "immunotherapy", "Immunotherapy"
    TRIAL = "trial", "Clinical-trial enrolment"


class SurgeryType(models.TextChoices):
    PD = "pd", "Pleurectomy/decortication (P/D)"
    EPP = "epp", "Extrapleural pneumonectomy (EPP)"
    CRS_HIPEC = "crs_hipec", "Cytoreduction + HIPEC"
    PERICARDIECTOMY = "pericardiectomy", "Pericardiectomy"
    OTHER = "other", "Other surgery"


class Treatment(ClinicalRecord):
    """A non-radiotherapy step of the multimodal pathway: surgery, systemic therapy, or trial enrolment."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="treatments")
    diagnosis = models.ForeignKey(Diagnosis, null=True, blank=True, on_delete=models.PROTECT, related_name="treatments")
    kind = models.CharField(max_length=20, choices=TreatmentKind.choices)
    surgery_type = models.CharField(max_length=20, choices=SurgeryType.choices, blank=True)
    agent = models.CharField(max_length=120, blank=True, help_text="Drug regimen, or trial name")
    trial_arm = models.CharField(max_length=60, blank=True)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["start_date"]

    def clean(self):
        errors = {}
        if self.kind == TreatmentKind.SURGERY and not self.surgery_type:
            errors["surgery_type"] = "Surgery needs a surgery type."
        if self.kind != TreatmentKind.SURGERY and self.surgery_type:
            errors["surgery_type"] = "Only surgery has a surgery type."
        date_rules.check_window(errors, "start_date", self.start_date, "Start date")
        date_rules.check_window(errors, "end_date", self.end_date, "End date")
        if self.patient_id:
            date_rules.check_after_birth(errors, "start_date", self.start_date, self.patient, "Start date")
        if self.end_date and self.start_date and "end_date" not in errors and self.end_date < self.start_date:
            errors["end_date"] = "End date is before start date."
        if errors:
            raise ValidationError(errors)

    def __str__(self):
        label = self.get_surgery_type_display() if self.surgery_type else self.get_kind_display()
        return f"{label} ({clinic_date(self.start_date)})"


class Intent(models.TextChoices):
    CURATIVE = "curative", "Curative / definitive"
    ADJUVANT = "adjuvant", "Adjuvant"
    NEOADJUVANT = "neoadjuvant", "Neoadjuvant"
    PALLIATIVE = "palliative", "Palliative"
    REIRRADIATION = "reirradiation", "Re-irradiation"


class Technique(models.TextChoices):
    IMRT = "IMRT", "IMRT"
    VMAT = "VMAT", "VMAT"
    CRT3D = "3DCRT", "3D-CRT"
    SBRT = "SBRT", "SBRT"
    IORT_ELECTRONS = "IORT_E", "IORT (electrons)"


class Modality(models.TextChoices):
    PHOTON = "photon", "Photons"
    ELECTRON = "electron", "Electrons"


TECHNIQUE_MODALITY = {
    Technique.IMRT: Modality.PHOTON,
    Technique.VMAT: Modality.PHOTON,
    Technique.CRT3D: Modality.PHOTON,
    Technique.SBRT: Modality.PHOTON,
    Technique.IORT_ELECTRONS: Modality.ELECTRON,
}


class CourseStatus(models.TextChoices):
    PLANNED = "planned", "Planned"
    SIMULATED = "simulated", "Simulated"
    APPROVED = "approved", "Plan approved"
    ON_TREATMENT = "on_treatment", "On treatment"
    COMPLETED = "completed", "Completed"
    STOPPED = "stopped", "Stopped early"


class TerminationReason(models.TextChoices):
    TOXICITY = "toxicity", "Toxicity"
    PROGRESSION = "progression", "Progression"
    PATIENT_CHOICE = "patient_choice", "Patient choice"
    DEATH = "death", "Death"
    OTHER = "other", "Other"


DOSE_TOLERANCE_GY = Decimal("0.01")


class Course(ClinicalRecord):
    """A radiotherapy course: intent, technique and a prescription of N fractions of d Gy to D Gy."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="courses")
    diagnosis = models.ForeignKey(Diagnosis, null=True, blank=True, on_delete=models.PROTECT, related_name="courses")
    name = models.CharField(max_length=80, blank=True)
    intent = models.CharField(max_length=20, choices=Intent.choices)
    technique = models.CharField(max_length=10, choices=Technique.choices)
    treated_site = models.CharField(max_length=120)
    total_dose_gy = models.DecimalField(
        max_digits=6, decimal_places=2, validators=[MinValueValidator(Decimal("0.5")), MaxValueValidator(Decimal("100"))]
    )
    fractions_planned = models.PositiveSmallIntegerField(validators=[MinValueValidator(1), MaxValueValidator(60)])
    dose_per_fraction_gy = models.DecimalField(
        max_digits=5, decimal_places=2, validators=[MinValueValidator(Decimal("0.5")), MaxValueValidator(Decimal("30"))]
    )
    twice_daily = models.BooleanField("BID", default=False, help_text="Two fractions a day, at least 6 h apart")
    fraction_minutes = models.PositiveSmallIntegerField(
        default=15, validators=[MinValueValidator(15), MaxValueValidator(30)], help_text="Appointment length"
    )
    status = models.CharField(max_length=20, choices=CourseStatus.choices, default=CourseStatus.PLANNED)
    plan_approved = models.BooleanField(default=False, help_text="Cleared for treatment")
    plan_approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    plan_approved_at = models.DateTimeField(null=True, blank=True)
    termination_reason = models.CharField(max_length=20, choices=TerminationReason.choices, blank=True)
    termination_note = models.CharField(max_length=200, blank=True)
    stopped_on = models.DateField(null=True, blank=True)
    booked_end_date = models.DateField(
        null=True, blank=True, editable=False, help_text="Last treatment day as first booked: the yardstick for prolongation"
    )
    completed_on = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [
            ("approve_course", "Can clear a course for treatment"),
            ("stop_course", "Can stop a course early"),
        ]

    def __str__(self):
        return f"{self.patient.mrn} {self.treated_site} {self.total_dose_gy} Gy / {self.fractions_planned} fx"

    @property
    def modality(self):
        return TECHNIQUE_MODALITY.get(self.technique, Modality.PHOTON)

    def clean(self):
        errors = {}
        if self.total_dose_gy is not None and self.fractions_planned and self.dose_per_fraction_gy is not None:
            expected = Decimal(self.fractions_planned) * Decimal(self.dose_per_fraction_gy)
            if abs(expected - Decimal(self.total_dose_gy)) > DOSE_TOLERANCE_GY:
                errors["total_dose_gy"] = (
                    f"Total dose {self.total_dose_gy} Gy is not {self.fractions_planned} x "
                    f"{self.dose_per_fraction_gy} Gy = {expected} Gy."
                )
        if self.technique == Technique.IORT_ELECTRONS and self.fractions_planned and self.fractions_planned != 1:
            errors["fractions_planned"] = "IORT is a single fraction."
        if self.status == CourseStatus.STOPPED and not self.termination_reason:
            errors["termination_reason"] = "A stopped course needs a termination reason."
        if self.diagnosis_id and self.patient_id and self.diagnosis.patient_id != self.patient_id:
            errors["diagnosis"] = "Diagnosis belongs to another patient."
        for name in ("stopped_on", "completed_on"):
            date_rules.check_window(errors, name, getattr(self, name))
            if self.patient_id:
                date_rules.check_after_birth(errors, name, getattr(self, name), self.patient)
        if errors:
            raise ValidationError(errors)


class MachineKind(models.TextChoices):
    LINAC = "linac", "Linear accelerator"
    CT_SIM = "ct_sim", "CT simulator"
    IORT = "iort", "IORT unit (operating room)"


class Machine(models.Model):
    name = models.CharField(max_length=40, unique=True)
    kind = models.CharField(max_length=10, choices=MachineKind.choices, default=MachineKind.LINAC)
    techniques = models.JSONField(default=list, blank=True, help_text="Technique codes this machine can deliver")
    opens_at = models.TimeField(default=datetime.time(7, 0))
    closes_at = models.TimeField(default=datetime.time(19, 0))
    active = models.BooleanField(default=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["name"]
        permissions = [("manage_downtime", "Can record machine downtime")]

    def __str__(self):
        return self.name

    def supports(self, technique):
        return technique in (self.techniques or [])

    def clean(self):
        valid = set(Technique.values)
        bad = [t for t in (self.techniques or []) if t not in valid]
        if bad:
            raise ValidationError({"techniques": f"Unknown technique(s): {', '.join(bad)}."})
        if self.opens_at and self.closes_at and self.opens_at >= self.closes_at:
            raise ValidationError({"closes_at": "Closing time must be after opening time."})


class Closure(models.Model):
    """A day the whole clinic is closed, beyond the national holidays the ``holidays`` package knows."""

    date = models.DateField(unique=True)
    reason = models.CharField(max_length=120)

    history = HistoricalRecords()

    class Meta:
        ordering = ["date"]

    def __str__(self):
        return f"{self.date} {self.reason}"

    def clean(self):
        errors = {}
        date_rules.check_window(errors, "date", self.date)
        if errors:
            raise ValidationError(errors)


class Downtime(models.Model):
    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="downtimes")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=120)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords()

    class Meta:
        ordering = ["starts_at"]
        constraints = [models.CheckConstraint(condition=Q(ends_at__gt=models.F("starts_at")), name="downtime_ends_after_start")]

    def __str__(self):
        return f"{self.machine} down {self.starts_at:%Y-%m-%d %H:%M}-{self.ends_at:%H:%M}: {self.reason}"


class AppointmentStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    DELIVERED = "delivered", "Delivered"
    MISSED = "missed", "Missed"
    CANCELLED = "cancelled", "Cancelled"


class ImagingModality(models.TextChoices):
    CT = "CT", "CT"
    MRI = "MRI", "MRI"
    PET_CT = "PET-CT", "PET-CT"
    XRAY = "XRAY", "X-ray"


class SkinMarks(models.TextChoices):
    TATTOOS = "tattoos", "Permanent tattoos"
    MARKS = "marks", "Skin marks (ink)"
    NONE = "none", "None (surface guidance)"


class SimulationVisit(ClinicalRecord):
    """The CT (or MRI / PET-CT / X-ray) simulation in treatment position; an appointment on a simulator."""

    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="simulations")
    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="simulations")
    starts_at = models.DateTimeField()
    duration_minutes = models.PositiveSmallIntegerField(default=30, validators=[MinValueValidator(15), MaxValueValidator(90)])
    modality = models.CharField(max_length=10, choices=ImagingModality.choices, default=ImagingModality.CT)
    immobilisation = models.CharField(max_length=120, blank=True, help_text="e.g. wing board, thermoplastic mask")
    skin_marks = models.CharField(max_length=10, choices=SkinMarks.choices, default=SkinMarks.TATTOOS)
    status = models.CharField(max_length=10, choices=AppointmentStatus.choices, default=AppointmentStatus.SCHEDULED)
    notes = models.TextField(blank=True)

    class Meta:
        ordering = ["starts_at"]

    def __str__(self):
        return f"Simulation {self.course.patient.mrn} {self.starts_at:%Y-%m-%d %H:%M}"

    @property
    def ends_at(self):
        return self.starts_at + timedelta(minutes=self.duration_minutes)


class Fraction(ClinicalRecord):
    """One treatment appointment. ``number`` is the dose-fraction number (1..N) among live appointments.

    A missed appointment keeps the number it had; the live fractions after it are renumbered and a make-up is
    appended at the end, so delivered fractions always count 1, 2, ... N.
    """

    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="fractions")
    number = models.PositiveSmallIntegerField()
    starts_at = models.DateTimeField()
    duration_minutes = models.PositiveSmallIntegerField(default=15, validators=[MinValueValidator(15), MaxValueValidator(30)])
    machine = models.ForeignKey(Machine, on_delete=models.PROTECT, related_name="fractions")
    status = models.CharField(max_length=10, choices=AppointmentStatus.choices, default=AppointmentStatus.SCHEDULED)
    is_makeup = models.BooleanField(default=False)
    delivered_dose_gy = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True)
    delivered_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    delivered_at = models.DateTimeField(null=True, blank=True)
    status_note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["course", "number"],
                condition=Q(status__in=["scheduled", "delivered"]),
                name="one_live_fraction_per_number",
            )
        ]
        indexes = [models.Index(fields=["machine", "starts_at"]), models.Index(fields=["starts_at"])]
        permissions = [
            ("deliver_fraction", "Can record fraction delivery or a missed fraction"),
            ("schedule_fraction", "Can schedule and move fractions"),
        ]

    def __str__(self):
        return f"{self.course.patient.mrn} fx {self.number} {self.starts_at:%Y-%m-%d %H:%M} {self.status}"

    @property
    def is_live(self):
        return self.status in (AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED)

    @property
    def number_label(self):
        """The number to show: a live fraction's dose-fraction number; a missed or cancelled appointment is not a
        fraction of the course any more (its number went to the next live one), so it reads "missed (was 12)"."""
        if self.is_live:
            return str(self.number)
        return f"{self.get_status_display().lower()} (was {self.number})"

    @property
    def ends_at(self):
        return self.starts_at + timedelta(minutes=self.duration_minutes)


class MachineSlot(models.Model):
    """One 5-minute unit of machine time held by one appointment. The unique constraint is the no-overlap rule."""

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="slots")
    starts_at = models.DateTimeField()
    fraction = models.ForeignKey(Fraction, null=True, blank=True, on_delete=models.CASCADE, related_name="slots")
    simulation = models.ForeignKey(SimulationVisit, null=True, blank=True, on_delete=models.CASCADE, related_name="slots")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["machine", "starts_at"], name="one_appointment_per_machine_slot"),
            models.CheckConstraint(
                condition=Q(fraction__isnull=False, simulation__isnull=True) | Q(fraction__isnull=True, simulation__isnull=False),
                name="slot_held_by_one_appointment",
            ),
        ]


class FollowUpStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed"
    BOOKED = "booked", "Booked"
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"


class FollowUpVisit(ClinicalRecord):
    """A follow-up imaging visit proposed from the clinic's protocol when a course completes."""

    course = models.ForeignKey(Course, on_delete=models.PROTECT, related_name="followup_visits")
    due_date = models.DateField()
    modality = models.CharField(max_length=10, choices=ImagingModality.choices, default=ImagingModality.CT)
    label = models.CharField(max_length=60, help_text="Protocol step, e.g. '3 months'")
    status = models.CharField(max_length=10, choices=FollowUpStatus.choices, default=FollowUpStatus.PROPOSED)

    class Meta:
        ordering = ["due_date"]

    def clean(self):
        errors = {}
        date_rules.check_window(errors, "due_date", self.due_date, "Due date")
        if self.course_id:
            date_rules.check_after_birth(errors, "due_date", self.due_date, self.course.patient, "Due date")
        if errors:
            raise ValidationError(errors)

    def __str__(self):
        return f"{self.course.patient.mrn} follow-up {self.label} due {self.due_date}"


# --- prescription amendments (the audit record of ``workflow.pathway.prescriptions.amend_prescription``) ----------


class PrescriptionAmendment(models.Model):
    """One change of a started course's prescription: who, when, why, and the prescription before and after.

    Rows are written only by ``amend_prescription`` and never edited or deleted; the course's own history keeps the
    versions of the course as well.
    """

    course = models.ForeignKey("workflow.Course", on_delete=models.PROTECT, related_name="amendments")
    amended_at = models.DateTimeField(auto_now_add=True)
    amended_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=300)
    before_total_dose_gy = models.DecimalField(max_digits=6, decimal_places=2)
    before_fractions = models.PositiveSmallIntegerField()
    before_dose_per_fraction_gy = models.DecimalField(max_digits=5, decimal_places=2)
    after_total_dose_gy = models.DecimalField(max_digits=6, decimal_places=2)
    after_fractions = models.PositiveSmallIntegerField()
    after_dose_per_fraction_gy = models.DecimalField(max_digits=5, decimal_places=2)
    delivered_fractions = models.PositiveSmallIntegerField(help_text="Fractions delivered when the amendment was made")
    fractions_added = models.PositiveSmallIntegerField(default=0, help_text="Scheduled fractions booked by the amendment")
    fractions_cancelled = models.PositiveSmallIntegerField(default=0, help_text="Scheduled fractions cancelled by it")
    clearance_withdrawn = models.BooleanField(
        default=False, help_text="The dose per fraction changed: the approved plan no longer fits, treatment waits for a new approval"
    )

    class Meta:
        ordering = ["amended_at"]

    def __str__(self):
        return (
            f"{self.course_id}: {self.before_total_dose_gy} Gy / {self.before_fractions} -> "
            f"{self.after_total_dose_gy} Gy / {self.after_fractions} ({self.reason})"
        )
