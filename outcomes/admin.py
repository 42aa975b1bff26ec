"""Admin: assessments and deaths with their history (read the derived values, never edit them here); registries and
their data dictionaries (editable, every change in the history, never deleted); imported covariate values (voided,
never deleted).

Assessments, measurements and deaths are clinical records: no delete permission and no bulk delete here; the
"Void selected" action voids them (who, when, why) and recomputes the patient's derived outcomes, as the API does.
"""

from django.contrib import admin, messages
from simple_history.admin import SimpleHistoryAdmin

from workflow.pathway.admin import ClinicalAdmin, VOID_FIELDS

from . import services
from .models import (
    CourseOutcome,
    CovariateValue,
    Death,
    FollowUpAssessment,
    LesionMeasurement,
    PatientOutcome,
    Registry,
    RegistryVariable,
)


@admin.action(description="Void selected records (entered in error) and recompute outcomes")
def void_and_recompute(modeladmin, request, queryset):
    patients = set()
    count = 0
    for record in queryset.filter(voided_at__isnull=True).select_related("patient"):
        record.void(user=request.user, reason="Voided in admin")
        patients.add(record.patient)
        count += 1
    for patient in patients:
        services.recompute_patient(patient)
    modeladmin.message_user(request, f"Voided {count} record(s); they stay in the database and in the history.", messages.SUCCESS)


class MeasurementInline(admin.TabularInline):
    model = LesionMeasurement
    extra = 0
    can_delete = False
    fields = ["kind", "lesion", "organ", "is_node", "ct_level", "value_mm", "voided_at"]
    readonly_fields = ["voided_at"]


@admin.register(FollowUpAssessment)
class FollowUpAssessmentAdmin(ClinicalAdmin):
    list_display = ["date", "patient", "course", "kind", "derived_response", "override_response", "response", "disease_status"]
    list_filter = ["kind", "response", "criteria"]
    search_fields = ["patient__mrn"]
    inlines = [MeasurementInline]
    actions = [void_and_recompute]
    readonly_fields = VOID_FIELDS + ("target_sum_mm", "nadir_mm", "change_from_baseline_pct", "change_from_nadir_pct",
                                     "target_response", "derived_response", "response", "disease_status")


@admin.register(Death)
class DeathAdmin(ClinicalAdmin):
    list_display = ["patient", "date", "cause", "voided_at"]
    search_fields = ["patient__mrn"]
    actions = [void_and_recompute]


@admin.register(CourseOutcome)
class CourseOutcomeAdmin(admin.ModelAdmin):
    list_display = ["course", "rt_start", "best_response", "first_progression_date", "recurrence_date", "current_status"]
    list_filter = ["best_response", "current_status"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(PatientOutcome)
class PatientOutcomeAdmin(admin.ModelAdmin):
    """Derived (read-only): a patient's follow-up outside any RT course."""

    list_display = ["patient", "best_response", "first_progression_date", "recurrence_date", "current_status",
                    "last_contact_date"]
    list_filter = ["best_response", "current_status"]
    search_fields = ["patient__mrn"]

    def has_change_permission(self, request, obj=None):
        return False


class VariableInline(admin.TabularInline):
    model = RegistryVariable
    extra = 1
    can_delete = False
    fields = ["name", "level", "kind", "unit", "minimum", "maximum", "levels", "description"]


class NoDeleteHistoryAdmin(SimpleHistoryAdmin):
    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(Registry)
class RegistryAdmin(NoDeleteHistoryAdmin):
    list_display = ["code", "name", "created_at"]
    search_fields = ["code", "name"]
    inlines = [VariableInline]


@admin.register(RegistryVariable)
class RegistryVariableAdmin(NoDeleteHistoryAdmin):
    """One data-dictionary entry; the rules of ``outcomes.covariates.check_variable`` apply on save."""

    list_display = ["registry", "name", "level", "kind", "unit", "minimum", "maximum", "levels"]
    list_filter = ["registry", "kind", "level"]
    search_fields = ["name", "description"]


@admin.register(CovariateValue)
class CovariateValueAdmin(ClinicalAdmin):
    list_display = ["variable", "patient", "course", "number", "level", "voided_at"]
    list_filter = ["variable__registry", "variable"]
    search_fields = ["patient__mrn"]
    raw_id_fields = ["patient", "course"]
