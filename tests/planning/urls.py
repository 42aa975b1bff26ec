"""Tests-only urlconf: the project's URLs plus planning's, until the lead includes them in config/urls.py."""

from django.urls import include, path

from config.urls import urlpatterns as project

mounted = any(getattr(p, "pattern", None) and str(p.pattern) == "planning/" for p in project)

urlpatterns = list(project) if mounted else [
    path("api/planning/", include("planning.api_urls")),
    path("planning/", include("planning.urls")),
] + list(project)
