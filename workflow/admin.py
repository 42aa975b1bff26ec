"""The workflow app's admin (Django's autodiscovery imports ``<app>.admin``): each domain registers its models in its
own ``admin`` module, imported here; any model of the app left without one gets a history admin (clinical records
the no-delete, void-instead one).
"""

from django.contrib import admin
from simple_history.admin import SimpleHistoryAdmin

from .carepaths import admin as carepaths_admin  # noqa: F401
from .pathway import admin as pathway_admin  # noqa: F401
from .pathway.admin import ClinicalAdmin, VoidedListFilter
from .toxicity import admin as toxicity_admin  # noqa: F401


def _register_remaining():
    """Every other workflow model (e.g. the toxicity records) gets an admin with its history; clinical records get
    the no-delete, void-instead admin. Models that already have an admin keep it."""
    from django.apps import apps

    from .clinical import ClinicalRecord

    for model in apps.get_app_config("workflow").get_models():
        if admin.site.is_registered(model) or model._meta.model_name.startswith("historical"):
            continue
        if issubclass(model, ClinicalRecord):
            base = ClinicalAdmin
            extra = {"list_filter": (VoidedListFilter,)}
        else:
            base = SimpleHistoryAdmin
            extra = {}
        admin.site.register(model, type(f"{model.__name__}Admin", (base,), extra))


_register_remaining()
