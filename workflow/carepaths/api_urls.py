"""Care-path API routes; include under /api/: ``path("api/", include("workflow.carepaths.api_urls"))``."""

from rest_framework.routers import SimpleRouter

from . import api as carepath_api

router = SimpleRouter()
router.register("carepaths", carepath_api.CarePathViewSet, basename="carepath")
router.register("carepath-tasks", carepath_api.CareTaskViewSet, basename="carepath-task")
router.register("carepath-templates", carepath_api.CarePathTemplateViewSet, basename="carepath-template")

urlpatterns = router.urls
