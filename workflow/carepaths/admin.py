"""Admin for care-path templates (clinics edit them here) and, read-only, the running paths and their tasks.

Saving a template bumps its version; running paths keep the copy of the steps they started with.
"""

from django.contrib import admin, messages
from simple_history.admin import SimpleHistoryAdmin

from ..errors import RuleViolation
from .models import CarePath, CarePathTemplate, CareTask, TemplateStep

# workflow.admin gives every unregistered workflow model a generic admin (autodiscover runs before this module is
# imported from WorkflowConfig.ready); these specific ones replace it.
for _model in (CarePathTemplate, TemplateStep, CarePath, CareTask):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class TemplateStepInline(admin.TabularInline):
    model = TemplateStep
    extra = 0
    fields = ("order", "code", "name", "role", "after", "due_days", "due_unit", "due_anchor", "event", "blocks_treatment")


@admin.register(CarePathTemplate)
class CarePathTemplateAdmin(SimpleHistoryAdmin):
    list_display = ("name", "code", "intents", "techniques", "priority", "active", "version", "updated_at")
    list_filter = ("active",)
    inlines = [TemplateStepInline]
    readonly_fields = ("version",)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        template = form.instance
        from .services import validate_steps

        try:
            validate_steps([s.as_snapshot() for s in template.steps.order_by("order")])
        except RuleViolation as exc:
            messages.warning(request, f"Check the steps: {exc} New paths cannot start from this template until fixed.")
        if change:
            template.version += 1
            template._history_user = request.user
            template.save(update_fields=["version", "updated_at"])


class CareTaskInline(admin.TabularInline):
    model = CareTask
    extra = 0
    can_delete = False
    fields = ("order", "name", "role", "status", "assignee", "opened_on", "due_date", "completed_on", "completed_by", "completed_by_event", "status_reason")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CarePath)
class CarePathAdmin(SimpleHistoryAdmin):
    list_display = ("course", "template_name", "template_version", "started_on", "status")
    list_filter = ("status", "template_code")
    readonly_fields = ("course", "template", "template_code", "template_name", "template_version", "snapshot", "started_on", "status")
    inlines = [CareTaskInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(CareTask)
class CareTaskAdmin(SimpleHistoryAdmin):
    list_display = ("path", "name", "role", "status", "due_date", "completed_on", "assignee")
    list_filter = ("status", "role", "blocks_treatment")
    readonly_fields = [f.name for f in CareTask._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TemplateStep)
class TemplateStepAdmin(SimpleHistoryAdmin):
    list_display = ("template", "order", "code", "name", "role", "after", "due_days", "due_unit", "due_anchor", "event", "blocks_treatment")
    list_filter = ("template", "role", "blocks_treatment")
    ordering = ("template", "order")

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        obj.template.version += 1
        obj.template._history_user = request.user
        obj.template.save(update_fields=["version", "updated_at"])
