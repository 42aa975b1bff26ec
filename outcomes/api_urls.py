"""Outcomes API routes; the project includes them under ``/api/outcomes/``."""

from django.urls import path, re_path
from rest_framework.routers import DefaultRouter

from . import api

router = DefaultRouter()
router.register("assessments", api.AssessmentViewSet, basename="outcomes-assessment")
router.register("deaths", api.DeathViewSet, basename="outcomes-death")
router.register("registries", api.RegistryViewSet, basename="outcomes-registry")
router.register(r"registries/(?P<registry_code>[-a-zA-Z0-9_]+)/variables", api.RegistryVariableViewSet,
                basename="outcomes-registry-variable")

urlpatterns = [
    path("courses/<int:pk>/outcome/", api.CourseOutcomeView.as_view(), name="outcomes-course-outcome"),
    path("patients/<int:pk>/outcome/", api.PatientOutcomeView.as_view(), name="outcomes-patient-outcome"),
    path("survival/", api.SurvivalView.as_view(), name="outcomes-survival"),
    path("toxicity/", api.ToxicityAnalysisView.as_view(), name="outcomes-toxicity"),
    path("ntcp/", api.NTCPView.as_view(), name="outcomes-ntcp-api"),
    re_path(r"^survival/plot\.(?P<fmt>png|svg)$", api.SurvivalPlotView.as_view(), name="outcomes-survival-plot"),
    re_path(r"^survival/forest\.(?P<fmt>png|svg)$", api.ForestPlotView.as_view(), name="outcomes-forest-plot"),
    re_path(r"^swimmer\.(?P<fmt>png|svg)$", api.SwimmerPlotView.as_view(), name="outcomes-swimmer-plot"),
    path("exports/analysis.zip", api.AnalysisExportView.as_view(), name="outcomes-export-analysis"),
    re_path(r"^exports/(?P<table>patients|assessments|toxicity|timing|dvh)\.(?P<fmt>csv|parquet|json)$", api.ExportView.as_view(),
            name="outcomes-export"),
    path("import/", api.RegistryImportView.as_view(), name="outcomes-api-import"),
] + router.urls
