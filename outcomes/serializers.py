"""Serializers for follow-up assessments (with their measurements), deaths and derived course outcomes."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from workflow.models import Course, Patient

from .models import (
    CourseOutcome,
    Death,
    FollowUpAssessment,
    LesionMeasurement,
    PatientOutcome,
    Registry,
    RegistryVariable,
    Response,
)


class MeasurementSerializer(serializers.ModelSerializer):
    class Meta:
        model = LesionMeasurement
        fields = ["id", "kind", "lesion", "organ", "is_node", "ct_level", "value_mm"]
        read_only_fields = ["id"]


class DeathInputSerializer(serializers.Serializer):
    date = serializers.DateField()
    cause = serializers.ChoiceField(choices=Death._meta.get_field("cause").choices, default="unknown")
    cause_detail = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")


class AssessmentSerializer(serializers.ModelSerializer):
    """Write: the clinical input and its measurements. Read: plus every derived value (never writable)."""

    course = serializers.PrimaryKeyRelatedField(
        queryset=Course.objects.active(), required=False, allow_null=True,
        help_text="The RT course followed up; leave out (with patient) for a patient without radiotherapy")
    patient = serializers.PrimaryKeyRelatedField(
        queryset=Patient.objects.active(), required=False,
        help_text="Only for a patient without an RT course (else it is the course's patient)")
    measurements = serializers.SerializerMethodField()
    measurements_input = MeasurementSerializer(many=True, write_only=True, required=False, source="measurement_rows")
    death = DeathInputSerializer(write_only=True, required=False)

    class Meta:
        model = FollowUpAssessment
        fields = [
            "id", "course", "patient", "kind", "date", "imaging", "criteria", "non_target", "new_lesions", "failure_site",
            "vital_status", "last_known_alive", "notes", "measurements", "measurements_input", "death",
            "target_sum_mm", "nadir_mm", "change_from_baseline_pct", "change_from_nadir_pct", "target_response",
            "derived_response", "override_response", "override_reason", "override_by", "override_at", "response",
            "disease_status", "voided_at",
        ]
        read_only_fields = [
            "target_sum_mm", "nadir_mm", "change_from_baseline_pct", "change_from_nadir_pct",
            "target_response", "derived_response", "override_response", "override_reason", "override_by", "override_at",
            "response", "disease_status", "voided_at",
        ]

    def get_measurements(self, obj) -> list:
        return MeasurementSerializer(obj.measurements.active(), many=True).data


class OverrideSerializer(serializers.Serializer):
    response = serializers.ChoiceField(choices=Response.choices)
    reason = serializers.CharField(max_length=300)


class DeathSerializer(serializers.ModelSerializer):
    patient = serializers.PrimaryKeyRelatedField(queryset=Patient.objects.active())

    class Meta:
        model = Death
        fields = ["id", "patient", "date", "cause", "cause_detail", "voided_at"]
        read_only_fields = ["voided_at"]


class PatientOutcomeSerializer(serializers.ModelSerializer):
    class Meta:
        model = PatientOutcome
        fields = [
            "patient", "criteria", "baseline_date", "baseline_sum_mm", "best_response", "best_response_date",
            "first_response_date", "first_complete_remission_date", "first_progression_date", "recurrence_date",
            "first_local_failure_date", "current_status", "last_assessment_date", "last_contact_date",
            "derivation_issue", "computed_at",
        ]
        read_only_fields = fields


class CourseOutcomeSerializer(serializers.ModelSerializer):
    class Meta:
        model = CourseOutcome
        fields = [
            "course", "patient", "rt_start", "rt_end", "criteria", "baseline_date", "baseline_sum_mm", "best_response",
            "best_response_date", "first_response_date", "first_complete_remission_date", "first_progression_date",
            "recurrence_date", "first_local_failure_date", "current_status", "last_assessment_date",
            "last_contact_date", "derivation_issue", "computed_at",
        ]
        read_only_fields = fields


class RegistryVariableSerializer(serializers.ModelSerializer):
    """One data-dictionary entry; the model's rules (``outcomes.covariates.check_variable``) give 400s by field."""

    key = serializers.CharField(read_only=True)
    levels = serializers.ListField(child=serializers.CharField(max_length=60), required=False, default=list)

    class Meta:
        model = RegistryVariable
        fields = ["id", "key", "name", "level", "kind", "unit", "minimum", "maximum", "levels", "description"]
        read_only_fields = ["id", "key"]

    def validate(self, attrs):
        inst = RegistryVariable()
        if self.instance is not None:
            for f in RegistryVariable._meta.concrete_fields:
                setattr(inst, f.attname, getattr(self.instance, f.attname))
        for k, v in attrs.items():
            setattr(inst, k, v)
        inst.registry = self.context["registry"]
        try:
            inst.full_clean(exclude=["registry"], validate_unique=False)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from exc
        if RegistryVariable.objects.filter(registry=inst.registry, name=inst.name).exclude(pk=inst.pk).exists():
            raise serializers.ValidationError({"name": f"{inst.registry.code} already has a variable '{inst.name}'."})
        return attrs


class RegistrySerializer(serializers.ModelSerializer):
    variables = RegistryVariableSerializer(many=True, read_only=True)

    class Meta:
        model = Registry
        fields = ["id", "code", "name", "description", "created_at", "variables"]
        read_only_fields = ["id", "created_at", "variables"]
