"""Outcome pages; the project includes them under ``/outcomes/``."""

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("analysis/", views.analysis, name="outcomes-analysis"),
    path("import/", views.registry_upload, name="outcomes-import"),
    path("ntcp/", views.ntcp_cohort, name="outcomes-ntcp"),
    re_path(r"^ntcp/(?P<kind>calibration|dose-response)\.png$", views.ntcp_figure, name="outcomes-ntcp-figure"),
    path("courses/<int:pk>/", views.course_followup, name="outcomes-course"),
    path("courses/<int:course_pk>/assessments/new/", views.assessment_form, name="outcomes-assessment-new"),
    path("patients/<int:pk>/", views.patient_followup, name="outcomes-patient"),
    path("patients/<int:patient_pk>/assessments/new/", views.assessment_form, name="outcomes-patient-assessment-new"),
    path("assessments/<int:pk>/edit/", views.assessment_form, name="outcomes-assessment-edit"),
    path("assessments/<int:pk>/override/", views.assessment_override, name="outcomes-assessment-override"),
]
