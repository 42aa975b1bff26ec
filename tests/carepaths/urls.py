"""Tests-only URLconf: the site's routes plus the care-path pages and API (until config.urls includes them)."""

from django.urls import include, path

from config.urls import urlpatterns as site_urlpatterns

urlpatterns = [
    path("api/", include("workflow.carepaths.api_urls")),
    path("", include("workflow.carepaths.urls")),
] + list(site_urlpatterns)
