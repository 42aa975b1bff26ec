"""Planning pages, mounted by the lead at /planning/ (``path("planning/", include("planning.urls"))``)."""

from django.urls import path

from . import views

app_name = "planning"

urlpatterns = [
    path("courses/<int:course_id>/", views.course_plans, name="course-plans"),
    path("courses/<int:course_id>/import/", views.dicom_import, name="dicom-import"),
    path("plans/<int:pk>/", views.plan_review, name="plan-review"),
    path("plans/<int:pk>/status.json", views.plan_status, name="plan-status"),
    path("plans/<int:pk>/start/", views.plan_start, name="plan-start"),
    path("plans/<int:pk>/cancel/", views.plan_cancel, name="plan-cancel"),
    path("plans/<int:pk>/retry/", views.plan_retry, name="plan-retry"),
    path("plans/<int:pk>/approve/", views.plan_approve, name="plan-approve"),
    path("plans/<int:pk>/reject/", views.plan_reject, name="plan-reject"),
    path("plans/<int:pk>/new-version/", views.plan_new_version, name="plan-new-version"),
    path("plans/<int:pk>/dose-check/", views.plan_dose_check, name="plan-dose-check"),
    path("plans/<int:pk>/dose-check.json", views.plan_dose_check_status, name="plan-dose-check-status"),
    path("plans/<int:pk>/dvh.png", views.plan_dvh_png, name="plan-dvh"),
    path("plans/<int:pk>/slice/<str:plane>/<int:index>.png", views.plan_slice_png, name="plan-slice"),
    path("plans/<int:pk>/dicom.zip", views.plan_export, name="plan-export"),
]
