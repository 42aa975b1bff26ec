"""Tests-only URLconf: the project's URLs plus the side-effect API and pages (until config/urls.py includes them)."""

from django.urls import include, path

from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    path("api/", include("workflow.toxicity.api_urls")),
    path("", include("workflow.toxicity.urls")),
    *project_urlpatterns,
]
