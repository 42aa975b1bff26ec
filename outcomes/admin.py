"""Admin: assessments and deaths with their history (read the derived values, never edit them here)."""

from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import CourseOutcome, Death, FollowUpAssessment, LesionMeasurement


class MeasurementInline(admin.TabularInline):
    model = LesionMeasurement
    extra = 0
    fields = ["kind", "lesion", "organ", "is_node", "ct_level", "value_mm", "voided_at"]
    readonly_fields = ["voided_at"]


@admin.register(FollowUpAssessment)
class FollowUpAssessmentAdmin(SimpleHistoryAdmin):
    list_display = ["date", "patient", "course", "kind", "derived_response", "override_response", "response", "disease_status"]
    list_filter = ["kind", "response", "criteria"]
    search_fields = ["patient__mrn"]
    inlines = [MeasurementInline]
    readonly_fields = ["target_sum_mm", "nadir_mm", "change_from_baseline_pct", "change_from_nadir_pct", "target_response",
                       "derived_response", "response", "disease_status"]


@admin.register(Death)
class DeathAdmin(SimpleHistoryAdmin):
    list_display = ["patient", "date", "cause"]
    search_fields = ["patient__mrn"]


@admin.register(CourseOutcome)
class CourseOutcomeAdmin(admin.ModelAdmin):
    list_display = ["course", "rt_start", "best_response", "first_progression_date", "recurrence_date", "current_status"]
    list_filter = ["best_response", "current_status"]

    def has_change_permission(self, request, obj=None):
        return False
