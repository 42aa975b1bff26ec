"""Admin: plans and imported geometries are read-mostly here; lifecycle changes go through the pages/API services."""

from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .models import CTDensityTable, DoseCheck, ImportedGeometry, Plan, StructureDose


class StructureDoseInline(admin.TabularInline):
    model = StructureDose
    fields = ["name", "kind", "volume_cc", "metrics"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Plan)
class PlanAdmin(SimpleHistoryAdmin):
    list_display = ["id", "course", "version", "method", "status", "progress_pct", "attempts", "approved_by", "approved_at"]
    list_filter = ["status", "method", "geometry_source", "phantom"]
    search_fields = ["course__patient__mrn", "course__treated_site", "name"]
    readonly_fields = [f.name for f in Plan._meta.fields]
    inlines = [StructureDoseInline]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(ImportedGeometry)
class ImportedGeometryAdmin(SimpleHistoryAdmin):
    list_display = ["id", "patient", "course", "name", "created_at", "created_by"]
    search_fields = ["patient__mrn", "name", "study_uid"]
    readonly_fields = [f.name for f in ImportedGeometry._meta.fields]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(CTDensityTable)
class CTDensityTableAdmin(SimpleHistoryAdmin):
    """Physicists keep each CT scanner's HU -> relative electron density calibration here (audited, never deleted)."""

    list_display = ["name", "manufacturer", "model", "station", "is_default", "updated_at"]
    search_fields = ["name", "manufacturer", "model", "station"]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(DoseCheck)
class DoseCheckAdmin(SimpleHistoryAdmin):
    """Independent dose checks are started from the plan page or the API; read-only here."""

    list_display = ["id", "plan", "status", "requested_by", "created_at", "finished_at"]
    list_filter = ["status"]
    search_fields = ["plan__course__patient__mrn"]
    readonly_fields = [f.name for f in DoseCheck._meta.fields]

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
