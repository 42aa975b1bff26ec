"""Tests-only URLconf: the project's URLs plus the outcomes routes (until the lead adds them to config/urls.py)."""

from django.urls import include, path

from config.urls import urlpatterns as project

urlpatterns = [
    path("api/outcomes/", include("outcomes.api_urls")),
    path("outcomes/", include("outcomes.urls")),
] + [p for p in project]
