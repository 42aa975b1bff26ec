"""REST serializers for the care pathway.

Resource serializers validate through the model's own ``full_clean()``, so a rule the model states (the course
prescription total = N x d, a surgery needs a surgery type, a diagnosis of the same patient) gives the same 400
naming the field whether the record comes from the API, a form or the admin. Status fields that only the services
may change (course status, plan approval, termination, fraction delivery) are read-only here.

Action serializers describe the input of the service calls (``/schedule/``, ``/stop/``, ``/miss/`` ...) and, for
the schema, their output.
"""

import copy

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from . import locking
from ..params import validate_date_window
from .models import (
    AppointmentStatus,
    Closure,
    CourseStatus,
    Course,
    Diagnosis,
    Downtime,
    FollowUpVisit,
    Fraction,
    ImagingModality,
    Machine,
    Patient,
    PrescriptionAmendment,
    SimulationVisit,
    SkinMarks,
    TerminationReason,
    Treatment,
)


def read_only_status(choices, help_text=""):
    """A read-only status as plain text listing its values. (Writable enums keep their own schema component; the
    read-only copies would otherwise collide in the OpenAPI enum names.)"""
    values = ", ".join(value for value, _ in choices)
    return serializers.CharField(read_only=True, help_text=f"{help_text} One of: {values}.".strip())

VOID_FIELDS = ("voided_at", "void_reason")
STAMP_FIELDS = ("created_at", "updated_at")


def django_errors_to_drf(exc):
    """A Django ``ValidationError`` as DRF error detail, keyed by field (``non_field_errors`` for the rest)."""
    if hasattr(exc, "error_dict"):
        return {
            ("non_field_errors" if field == NON_FIELD_ERRORS else field): [str(m) for e in errs for m in e.messages]
            for field, errs in exc.error_dict.items()
        }
    return {"non_field_errors": list(exc.messages)}


class CleanModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer whose validation ends with the model's ``full_clean()`` on the would-be record."""

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if self.instance is not None:
            try:
                locking.check_edit(self.instance, attrs)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(django_errors_to_drf(exc)) from exc
        model = self.Meta.model
        candidate = copy.copy(self.instance) if self.instance is not None else model()
        for name, value in attrs.items():
            setattr(candidate, name, value)
        try:
            candidate.full_clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(django_errors_to_drf(exc)) from exc
        return attrs


class PatientSerializer(CleanModelSerializer):
    name = serializers.CharField(read_only=True)

    class Meta:
        model = Patient
        fields = ("id", "mrn", "given_name", "family_name", "name", "birth_date", "sex") + STAMP_FIELDS + VOID_FIELDS
        read_only_fields = STAMP_FIELDS + VOID_FIELDS
        # optional in the model for registry imports only; the clinic API registers patients with them
        extra_kwargs = {"given_name": {"required": True, "allow_blank": False},
                        "family_name": {"required": True, "allow_blank": False},
                        "birth_date": {"required": True, "allow_null": False}}


class DiagnosisSerializer(CleanModelSerializer):
    site_display = serializers.CharField(source="get_site_display", read_only=True)

    class Meta:
        model = Diagnosis
        fields = (
            ("id", "patient", "site", "site_display", "histology", "stage", "diagnosed_on", "notes")
            + STAMP_FIELDS
            + VOID_FIELDS
        )
        read_only_fields = STAMP_FIELDS + VOID_FIELDS


class TreatmentSerializer(CleanModelSerializer):
    class Meta:
        model = Treatment
        fields = (
            (
                "id",
                "patient",
                "diagnosis",
                "kind",
                "surgery_type",
                "agent",
                "trial_arm",
                "start_date",
                "end_date",
                "notes",
            )
            + STAMP_FIELDS
            + VOID_FIELDS
        )
        read_only_fields = STAMP_FIELDS + VOID_FIELDS

    def validate(self, attrs):
        attrs = super().validate(attrs)
        patient = attrs.get("patient", getattr(self.instance, "patient", None))
        diagnosis = attrs.get("diagnosis", getattr(self.instance, "diagnosis", None))
        if diagnosis is not None and patient is not None and diagnosis.patient_id != patient.pk:
            raise serializers.ValidationError({"diagnosis": ["Diagnosis belongs to another patient."]})
        return attrs


COURSE_SERVICE_FIELDS = (
    "status",
    "plan_approved",
    "plan_approved_by",
    "plan_approved_at",
    "termination_reason",
    "termination_note",
    "stopped_on",
    "booked_end_date",
    "completed_on",
)


class CourseSerializer(CleanModelSerializer):
    """A course prescription. Status, approval and termination change only through the course actions."""

    modality = serializers.CharField(read_only=True)
    status = read_only_status(CourseStatus.choices, "Changed by the course actions.")
    termination_reason = read_only_status(TerminationReason.choices + [("", "")], "Set by /stop/.")

    class Meta:
        model = Course
        fields = (
            (
                "id",
                "patient",
                "diagnosis",
                "name",
                "intent",
                "technique",
                "modality",
                "treated_site",
                "total_dose_gy",
                "fractions_planned",
                "dose_per_fraction_gy",
                "twice_daily",
                "fraction_minutes",
            )
            + COURSE_SERVICE_FIELDS
            + STAMP_FIELDS
            + VOID_FIELDS
        )
        read_only_fields = COURSE_SERVICE_FIELDS + STAMP_FIELDS + VOID_FIELDS


class MachineSerializer(CleanModelSerializer):
    class Meta:
        model = Machine
        fields = ("id", "name", "kind", "techniques", "opens_at", "closes_at", "active")


class ClosureSerializer(CleanModelSerializer):
    shift_bookings = serializers.BooleanField(
        write_only=True, required=False, default=False,
        help_text="Move the fractions booked that day to the end of their courses (else a day with bookings is 409)",
    )

    class Meta:
        model = Closure
        fields = ("id", "date", "reason", "shift_bookings")

    def validate(self, attrs):
        shift = attrs.pop("shift_bookings", False)
        attrs = super().validate(attrs)
        attrs["shift_bookings"] = shift
        return attrs


class DowntimeSerializer(serializers.ModelSerializer):
    machine_name = serializers.CharField(source="machine.name", read_only=True)

    class Meta:
        model = Downtime
        fields = ("id", "machine", "machine_name", "starts_at", "ends_at", "reason", "created_by", "created_at")
        read_only_fields = ("created_by", "created_at")
        extra_kwargs = {"starts_at": {"validators": [validate_date_window]}, "ends_at": {"validators": [validate_date_window]}}

    def validate(self, attrs):
        attrs = super().validate(attrs)
        if attrs["ends_at"] <= attrs["starts_at"]:
            raise serializers.ValidationError({"ends_at": ["Downtime must end after it starts."]})
        return attrs


class SimulationVisitSerializer(CleanModelSerializer):
    """A simulation visit. Booking (``POST``) goes through ``scheduling.book_simulation``; time and machine are fixed
    once booked, the rest (immobilisation, marks, notes) can be edited."""

    machine_name = serializers.CharField(source="machine.name", read_only=True)
    patient = serializers.IntegerField(source="course.patient_id", read_only=True)
    status = read_only_status(AppointmentStatus.choices)

    class Meta:
        model = SimulationVisit
        fields = (
            (
                "id",
                "course",
                "patient",
                "machine",
                "machine_name",
                "starts_at",
                "duration_minutes",
                "modality",
                "immobilisation",
                "skin_marks",
                "status",
                "notes",
            )
            + STAMP_FIELDS
            + VOID_FIELDS
        )
        read_only_fields = ("status",) + STAMP_FIELDS + VOID_FIELDS

    def get_fields(self):
        fields = super().get_fields()
        if self.instance is not None:
            for name in ("machine", "starts_at", "duration_minutes"):  # course: refused by locking, naming it
                fields[name].read_only = True
        return fields


class FractionSerializer(serializers.ModelSerializer):
    """One treatment appointment (read-only: delivery, miss and move are actions)."""

    patient = serializers.IntegerField(source="course.patient_id", read_only=True)
    patient_name = serializers.SerializerMethodField()
    fractions_planned = serializers.IntegerField(source="course.fractions_planned", read_only=True)
    machine_name = serializers.CharField(source="machine.name", read_only=True)
    ends_at = serializers.DateTimeField(read_only=True)
    status = read_only_status(AppointmentStatus.choices, "Changed by /deliver/, /miss/ and the scheduler.")

    class Meta:
        model = Fraction
        fields = (
            "id",
            "course",
            "patient",
            "patient_name",
            "number",
            "fractions_planned",
            "starts_at",
            "ends_at",
            "duration_minutes",
            "machine",
            "machine_name",
            "status",
            "is_makeup",
            "delivered_dose_gy",
            "delivered_by",
            "delivered_at",
            "status_note",
            "voided_at",
        )
        read_only_fields = fields

    def get_patient_name(self, obj) -> str:
        return obj.course.patient.name


class FollowUpVisitSerializer(CleanModelSerializer):
    patient = serializers.IntegerField(source="course.patient_id", read_only=True)

    class Meta:
        model = FollowUpVisit
        fields = ("id", "course", "patient", "due_date", "modality", "label", "status") + STAMP_FIELDS + VOID_FIELDS
        read_only_fields = STAMP_FIELDS + VOID_FIELDS

# --- action inputs ---------------------------------------------------------------------------------------------


class VoidSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class ScheduleSerializer(serializers.Serializer):
    start_date = serializers.DateField(validators=[validate_date_window])
    preferred_time = serializers.TimeField(required=False, allow_null=True, default=None)
    machine = serializers.PrimaryKeyRelatedField(
        queryset=Machine.objects.filter(active=True), required=False, allow_null=True, default=None
    )


class AmendSerializer(serializers.Serializer):
    """A prescription amendment: the new number of fractions and the total dose or the dose per fraction."""

    reason = serializers.CharField(max_length=300)
    fractions_planned = serializers.IntegerField(min_value=1, max_value=60, required=False, allow_null=True, default=None)
    total_dose_gy = serializers.DecimalField(max_digits=6, decimal_places=2, required=False, allow_null=True, default=None)
    dose_per_fraction_gy = serializers.DecimalField(
        max_digits=5, decimal_places=2, required=False, allow_null=True, default=None
    )


class PrescriptionAmendmentSerializer(serializers.ModelSerializer):
    amended_by = serializers.CharField(source="amended_by.username", read_only=True)

    class Meta:
        model = PrescriptionAmendment
        fields = (
            "id", "course", "amended_at", "amended_by", "reason",
            "before_total_dose_gy", "before_fractions", "before_dose_per_fraction_gy",
            "after_total_dose_gy", "after_fractions", "after_dose_per_fraction_gy",
            "delivered_fractions", "fractions_added", "fractions_cancelled", "clearance_withdrawn",
        )
        read_only_fields = fields


class StopSerializer(serializers.Serializer):
    reason = serializers.ChoiceField(choices=TerminationReason.choices)
    note = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    on_date = serializers.DateField(required=False, allow_null=True, default=None, validators=[validate_date_window])


class DeliverSerializer(serializers.Serializer):
    dose_gy = serializers.DecimalField(max_digits=5, decimal_places=2, required=False, allow_null=True, default=None)


class MissSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class MoveSerializer(serializers.Serializer):
    starts_at = serializers.DateTimeField(validators=[validate_date_window])
    machine = serializers.PrimaryKeyRelatedField(
        queryset=Machine.objects.filter(active=True), required=False, allow_null=True, default=None
    )


class SimulationBookingSerializer(serializers.Serializer):
    course = serializers.PrimaryKeyRelatedField(queryset=Course.objects.active())
    starts_at = serializers.DateTimeField(validators=[validate_date_window])
    machine = serializers.PrimaryKeyRelatedField(queryset=Machine.objects.filter(active=True))
    duration_minutes = serializers.IntegerField(min_value=15, max_value=90, required=False, default=30)
    modality = serializers.ChoiceField(choices=ImagingModality.choices, required=False, default=ImagingModality.CT)
    immobilisation = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    skin_marks = serializers.ChoiceField(choices=SkinMarks.choices, required=False, default=SkinMarks.TATTOOS)
    notes = serializers.CharField(required=False, allow_blank=True, default="")


# --- action outputs (for the schema and the response bodies) -----------------------------------------------------


class BookingSerializer(serializers.Serializer):
    course = serializers.IntegerField()
    first_day = serializers.DateField(allow_null=True)
    last_day = serializers.DateField(allow_null=True)
    fraction_count = serializers.IntegerField()
    machines = serializers.ListField(child=serializers.CharField())
    daily_time_changes = serializers.IntegerField()
    fractions = FractionSerializer(many=True)


class MissedSerializer(serializers.Serializer):
    fraction = FractionSerializer()
    makeup = FractionSerializer()
    new_last_day = serializers.DateField()


class MoveReportSerializer(serializers.Serializer):
    fraction = serializers.IntegerField()
    course = serializers.IntegerField()
    patient = serializers.CharField(help_text="MRN")
    from_start = serializers.DateTimeField()
    from_machine = serializers.CharField()
    to_start = serializers.DateTimeField()
    to_machine = serializers.CharField()
    same_day = serializers.BooleanField()


class DowntimeReportSerializer(serializers.Serializer):
    downtime = DowntimeSerializer()
    moved = MoveReportSerializer(many=True)
    moved_same_day = serializers.IntegerField()
    moved_to_later_day = serializers.IntegerField()
    simulations_to_rebook = serializers.ListField(child=serializers.IntegerField(), help_text="Simulation visit ids")


class ClosureReportSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    date = serializers.DateField()
    reason = serializers.CharField()
    moved = MoveReportSerializer(many=True, help_text="Fractions moved to the end of their courses")


class ProgressSerializer(serializers.Serializer):
    planned_fractions = serializers.IntegerField()
    planned_dose_gy = serializers.DecimalField(max_digits=6, decimal_places=2)
    delivered_fractions = serializers.IntegerField()
    delivered_dose_gy = serializers.DecimalField(max_digits=6, decimal_places=2)
    remaining_fractions = serializers.IntegerField()
    remaining_dose_gy = serializers.DecimalField(max_digits=6, decimal_places=2)
    missed_fractions = serializers.IntegerField()


class MissedDaySerializer(serializers.Serializer):
    number = serializers.IntegerField()
    date = serializers.DateField()
    note = serializers.CharField()


class TreatmentTimeSerializer(serializers.Serializer):
    first_day = serializers.DateField(allow_null=True)
    last_day = serializers.DateField(allow_null=True)
    booked_end_date = serializers.DateField(allow_null=True)
    overall_treatment_days = serializers.IntegerField(allow_null=True)
    prolongation_days = serializers.IntegerField()
    missed = MissedDaySerializer(many=True)
    interruptions = serializers.ListField(child=serializers.DateField(), help_text="Treatment days with no fraction")


class CourseProgressSerializer(serializers.Serializer):
    course = serializers.IntegerField()
    status = serializers.CharField()
    progress = ProgressSerializer()
    treatment_time = TreatmentTimeSerializer()
    blockers = serializers.ListField(child=serializers.CharField())
