"""Planning REST API, mounted by the lead at /api/planning/ (``path("api/planning/", include("planning.api_urls"))``)."""

from rest_framework.routers import DefaultRouter

from . import api

router = DefaultRouter()
router.register("plans", api.PlanViewSet, basename="plan")
router.register("dicom-imports", api.DicomImportViewSet, basename="dicom-import")
router.register("ct-density-tables", api.CTDensityTableViewSet, basename="ct-density-table")

urlpatterns = router.urls
