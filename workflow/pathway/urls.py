from django.urls import path

from . import record_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("treatment/", views.treatment_list, name="treatment-list"),
    path("fractions/<int:pk>/deliver/", views.fraction_deliver, name="fraction-deliver"),
    path("fractions/<int:pk>/miss/", views.fraction_miss, name="fraction-miss"),
    path("patients/", views.patient_list, name="patient-list"),
    path("patients/new/", record_views.patient_new, name="patient-new"),
    path("patients/search/", record_views.patient_search, name="patient-search"),
    path("patients/<int:pk>/", views.patient_detail, name="patient-detail"),
    path("patients/<int:pk>/edit/", record_views.patient_edit, name="patient-edit"),
    path("diagnoses/new/", record_views.diagnosis_new, name="diagnosis-new"),
    path("diagnoses/<int:pk>/edit/", record_views.diagnosis_edit, name="diagnosis-edit"),
    path("treatments/new/", record_views.treatment_new, name="treatment-new"),
    path("treatments/<int:pk>/edit/", record_views.treatment_edit, name="treatment-edit"),
    path("courses/new/", record_views.course_new, name="course-new"),
    path("courses/<int:pk>/edit/", record_views.course_edit, name="course-edit"),
    path("courses/<int:pk>/amend/", record_views.course_amend, name="course-amend"),
    path("patients/<int:pk>/calendar.ics", views.patient_calendar, name="patient-calendar"),
    path("courses/<int:pk>/", views.course_detail, name="course-detail"),
    path("courses/<int:pk>/schedule/", views.course_schedule, name="course-schedule"),
    path("courses/<int:pk>/simulation/", views.course_simulation, name="course-simulation"),
    path("courses/<int:pk>/clear/", views.course_clear, name="course-clear"),
    path("courses/<int:pk>/stop/", views.course_stop, name="course-stop"),
    path("simulations/<int:pk>/complete/", views.simulation_complete, name="simulation-complete"),
    path("downtime/new/", views.downtime_new, name="downtime-new"),
]
