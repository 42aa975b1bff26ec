"""Admin: assessments and deaths with their history (read the derived values, never edit them here).

Assessments, measurements and deaths are clinical records: no delete permission and no bulk delete here; the
"Void selected" action voids them (who, when, why) and recomputes the patient's derived outcomes, as the API does.
"""

from django.contrib import admin, messages

from workflow.pathway.admin import ClinicalAdmin, VOID_FIELDS

from . import services
from .models import CourseOutcome, Death, FollowUpAssessment, LesionMeasurement


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
