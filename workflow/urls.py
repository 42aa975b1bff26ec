from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="home"),
    path("treatment/", views.treatment_list, name="treatment-list"),
    path("fractions/<int:pk>/deliver/", views.fraction_deliver, name="fraction-deliver"),
    path("fractions/<int:pk>/miss/", views.fraction_miss, name="fraction-miss"),
    path("patients/", views.patient_list, name="patient-list"),
    path("patients/<int:pk>/", views.patient_detail, name="patient-detail"),
    path("patients/<int:pk>/calendar.ics", views.patient_calendar, name="patient-calendar"),
    path("courses/<int:pk>/", views.course_detail, name="course-detail"),
    path("courses/<int:pk>/schedule/", views.course_schedule, name="course-schedule"),
    path("courses/<int:pk>/simulation/", views.course_simulation, name="course-simulation"),
    path("courses/<int:pk>/clear/", views.course_clear, name="course-clear"),
    path("courses/<int:pk>/stop/", views.course_stop, name="course-stop"),
    path("simulations/<int:pk>/complete/", views.simulation_complete, name="simulation-complete"),
    path("downtime/new/", views.downtime_new, name="downtime-new"),
]
