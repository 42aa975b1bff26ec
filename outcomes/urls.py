"""Outcome pages; the project includes them under ``/outcomes/``."""

from django.urls import path

from . import views

urlpatterns = [
    path("analysis/", views.analysis, name="outcomes-analysis"),
    path("import/", views.registry_upload, name="outcomes-import"),
    path("courses/<int:pk>/", views.course_followup, name="outcomes-course"),
    path("courses/<int:course_pk>/assessments/new/", views.assessment_form, name="outcomes-assessment-new"),
    path("assessments/<int:pk>/edit/", views.assessment_form, name="outcomes-assessment-edit"),
    path("assessments/<int:pk>/override/", views.assessment_override, name="outcomes-assessment-override"),
]
