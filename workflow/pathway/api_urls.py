"""The REST API router (mounted at /api/). ``GET /api/patients/{id}/calendar.ics`` is the calendar action with the
iCalendar format suffix."""

from rest_framework.routers import DefaultRouter

from . import api

router = DefaultRouter()
router.register("patients", api.PatientViewSet, basename="patient")
router.register("diagnoses", api.DiagnosisViewSet, basename="diagnosis")
router.register("treatments", api.TreatmentViewSet, basename="treatment")
router.register("courses", api.CourseViewSet, basename="course")
router.register("simulations", api.SimulationVisitViewSet, basename="simulation")
router.register("fractions", api.FractionViewSet, basename="fraction")
router.register("followups", api.FollowUpVisitViewSet, basename="followup")
router.register("machines", api.MachineViewSet, basename="machine")
router.register("closures", api.ClosureViewSet, basename="closure")
router.register("downtimes", api.DowntimeViewSet, basename="downtime")

urlpatterns = router.urls
