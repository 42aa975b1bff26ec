"""Side-effect API routes; the project includes them under /api/:
``path("api/", include("workflow.toxicity.api_urls"))``."""

from rest_framework.routers import SimpleRouter

from . import api as toxicity_api

router = SimpleRouter()
router.register("ctcae-terms", toxicity_api.CtcaeTermViewSet, basename="ctcae-term")
router.register("toxicity-events", toxicity_api.ToxicityEventViewSet, basename="toxicity-event")
router.register("toxicity-holds", toxicity_api.CourseHoldViewSet, basename="toxicity-hold")
router.register("weekly-reviews", toxicity_api.WeeklyReviewViewSet, basename="weekly-review")

urlpatterns = router.urls
