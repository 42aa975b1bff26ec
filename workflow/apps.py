from django.apps import AppConfig


class WorkflowConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "workflow"
    verbose_name = "Care pathway"

    def ready(self):
        from django.db.models.signals import post_migrate

        from . import roles

        post_migrate.connect(roles.sync_role_groups, dispatch_uid="radpath-sync-role-groups")

        # The domains on top of the pathway plug into it here: their services register delivery/approval gates and
        # listen to the pathway's signals (workflow.pathway.gates / .signals).
        from .toxicity import services as _toxicity  # noqa: F401
        from .carepaths import services as _carepaths  # noqa: F401
