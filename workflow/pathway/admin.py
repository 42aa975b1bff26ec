"""Admin for every care-pathway model (the app's other domains register theirs in their own ``admin``), with the audit history (django-simple-history) one click away.

Clinical records cannot be deleted here either: the delete permission and the bulk delete action are gone, and the
"Void selected" action marks records entered-in-error instead (who, when, why), exactly like ``DELETE`` in the API.
Machine slots are the scheduler's bookkeeping: read-only.
"""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from simple_history.admin import SimpleHistoryAdmin

from . import scheduling
from ..errors import ConflictError, RuleViolation
from .record_forms import LockedModelForm
from .models import (
    Closure,
    Course,
    Diagnosis,
    Downtime,
    FollowUpVisit,
    Fraction,
    Machine,
    MachineSlot,
    Patient,
    PrescriptionAmendment,
    SimulationVisit,
    Treatment,
)

VOID_FIELDS = ("voided_at", "voided_by", "void_reason", "created_at", "updated_at")


@admin.action(description="Void selected records (entered in error)")
def void_selected(modeladmin, request, queryset):
    count = 0
    for record in queryset.filter(voided_at__isnull=True):
        record.void(user=request.user, reason="Voided in admin")
        count += 1
    modeladmin.message_user(request, f"Voided {count} record(s); they stay in the database and in the history.", messages.SUCCESS)


class ClinicalAdmin(SimpleHistoryAdmin):
    """Clinical records: history shown, never deleted, voiding instead; the locks of ``workflow.pathway.locking`` apply
    (identity links never move, a started course's prescription changes only by amendment)."""

    form = LockedModelForm
    readonly_fields = VOID_FIELDS
    actions = [void_selected]

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def save_model(self, request, obj, form, change):
        obj._history_user = request.user
        super().save_model(request, obj, form, change)


class VoidedListFilter(admin.SimpleListFilter):
    title = "voided"
    parameter_name = "voided"

    def lookups(self, request, model_admin):
        return [("no", "Active"), ("yes", "Voided")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(voided_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(voided_at__isnull=False)
        return queryset


class DiagnosisInline(admin.TabularInline):
    model = Diagnosis
    extra = 0
    fields = ("site", "histology", "stage", "diagnosed_on")
    show_change_link = True
    can_delete = False


class CourseInline(admin.TabularInline):
    model = Course
    form = LockedModelForm
    fk_name = "patient"
    extra = 0
    fields = ("name", "intent", "technique", "treated_site", "total_dose_gy", "fractions_planned", "status")
    readonly_fields = ("status",)
    show_change_link = True
    can_delete = False


@admin.register(Patient)
class PatientAdmin(ClinicalAdmin):
    list_display = ("mrn", "family_name", "given_name", "birth_date", "sex", "voided_at")
    search_fields = ("mrn", "family_name", "given_name")
    list_filter = ("sex", VoidedListFilter)
    inlines = [DiagnosisInline, CourseInline]


@admin.register(Diagnosis)
class DiagnosisAdmin(ClinicalAdmin):
    list_display = ("patient", "site", "histology", "stage", "diagnosed_on", "voided_at")
    list_filter = ("site", VoidedListFilter)
    search_fields = ("patient__mrn", "patient__family_name", "histology")
    autocomplete_fields = ("patient",)
    date_hierarchy = "diagnosed_on"


@admin.register(Treatment)
class TreatmentAdmin(ClinicalAdmin):
    list_display = ("patient", "kind", "surgery_type", "agent", "start_date", "end_date", "voided_at")
    list_filter = ("kind", "surgery_type", VoidedListFilter)
    search_fields = ("patient__mrn", "patient__family_name", "agent")
    autocomplete_fields = ("patient",)


class FractionInline(admin.TabularInline):
    model = Fraction
    extra = 0
    fields = ("number", "starts_at", "machine", "status", "is_makeup", "delivered_dose_gy", "delivered_by")
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Course)
class CourseAdmin(ClinicalAdmin):
    list_display = (
        "patient",
        "treated_site",
        "intent",
        "technique",
        "total_dose_gy",
        "fractions_planned",
        "status",
        "plan_approved",
        "voided_at",
    )
    list_filter = ("status", "intent", "technique", "plan_approved", VoidedListFilter)
    search_fields = ("patient__mrn", "patient__family_name", "treated_site", "name")
    autocomplete_fields = ("patient",)
    readonly_fields = VOID_FIELDS + ("booked_end_date", "plan_approved_by", "plan_approved_at")
    inlines = [FractionInline]


@admin.register(SimulationVisit)
class SimulationVisitAdmin(ClinicalAdmin):
    list_display = ("course", "starts_at", "machine", "modality", "status", "voided_at")
    list_filter = ("status", "modality", "machine", VoidedListFilter)
    search_fields = ("course__patient__mrn", "course__patient__family_name")
    date_hierarchy = "starts_at"


@admin.register(Fraction)
class FractionAdmin(ClinicalAdmin):
    list_display = ("course", "number", "starts_at", "machine", "status", "is_makeup", "delivered_by", "voided_at")
    list_filter = ("status", "machine", "is_makeup", VoidedListFilter)
    search_fields = ("course__patient__mrn", "course__patient__family_name")
    date_hierarchy = "starts_at"
    readonly_fields = VOID_FIELDS + ("delivered_by", "delivered_at")


@admin.register(FollowUpVisit)
class FollowUpVisitAdmin(ClinicalAdmin):
    list_display = ("course", "label", "due_date", "modality", "status", "voided_at")
    list_filter = ("status", "modality", VoidedListFilter)
    search_fields = ("course__patient__mrn", "course__patient__family_name", "label")
    date_hierarchy = "due_date"


@admin.register(Machine)
class MachineAdmin(SimpleHistoryAdmin):
    list_display = ("name", "kind", "techniques", "opens_at", "closes_at", "active")
    list_filter = ("kind", "active")
    search_fields = ("name",)

    def has_delete_permission(self, request, obj=None):
        return False  # machines carry appointments: retire them with active=False


class ClosureForm(forms.ModelForm):
    shift_bookings = forms.BooleanField(
        required=False, label="Move the fractions booked that day to the end of their courses"
    )

    class Meta:
        model = Closure
        fields = ("date", "reason")

    def clean(self):
        data = super().clean()
        day = data.get("date")
        if day and not data.get("shift_bookings"):
            booked = scheduling.booked_on(day).count()
            if booked:
                self.add_error("date", f"{booked} fraction(s) are booked on {day}: tick the box to move them to the "
                                       "end of their courses, or move them first.")
        return data


@admin.register(Closure)
class ClosureAdmin(SimpleHistoryAdmin):
    """Closures are made by ``scheduling.add_closure`` (machine locks, booked-day rule), here as in the API."""

    form = ClosureForm
    list_display = ("date", "reason")
    date_hierarchy = "date"

    def has_change_permission(self, request, obj=None):
        return False  # a closure's day is not edited: remove it and add another

    def save_model(self, request, obj, form, change):
        try:
            result = scheduling.add_closure(obj.date, obj.reason, user=request.user,
                                            shift_bookings=form.cleaned_data.get("shift_bookings", False))
        except (ConflictError, RuleViolation) as exc:  # a booking committed since the form was checked
            raise PermissionDenied(str(exc)) from exc
        obj.pk = result.closure.pk
        if result.moves:
            self.message_user(request, f"{len(result.moves)} fraction(s) moved to the end of their courses.",
                              messages.WARNING)


@admin.register(Downtime)
class DowntimeAdmin(SimpleHistoryAdmin):
    list_display = ("machine", "starts_at", "ends_at", "reason", "created_by")
    list_filter = ("machine",)
    date_hierarchy = "starts_at"
    readonly_fields = ("created_by", "created_at")

    # Downtime moves booked fractions: record it on the Downtime page or POST /api/downtimes/, which call the
    # scheduler. Here it is for reading and for the history.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(MachineSlot)
class MachineSlotAdmin(admin.ModelAdmin):
    list_display = ("machine", "starts_at", "fraction", "simulation")
    list_filter = ("machine",)
    date_hierarchy = "starts_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PrescriptionAmendment)
class PrescriptionAmendmentAdmin(admin.ModelAdmin):
    """The audit of prescription amendments: written only by ``amend_prescription``, read-only here."""

    list_display = ("course", "amended_at", "amended_by", "before_total_dose_gy", "before_fractions",
                    "after_total_dose_gy", "after_fractions", "reason")
    list_select_related = ("course__patient", "amended_by")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
