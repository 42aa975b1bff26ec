"""URL map: pages per app, the REST API under /api/, its OpenAPI schema and interactive docs, and the admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.views.generic import RedirectView
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from workflow.auth_views import TokenLoginView, TokenLogoutView

urlpatterns = [
    path("favicon.ico", RedirectView.as_view(url=static("workflow/favicon.svg"), permanent=True)),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/auth/token/", TokenLoginView.as_view(), name="api-token"),
    path("api/auth/logout/", TokenLogoutView.as_view(), name="api-token-logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from drf-spectacular-sidecar's static files and its set-up script as a file (the split view): no
    # CDN and no inline script, so the docs work offline under the site's Content-Security-Policy unchanged.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/planning/", include("planning.api_urls")),
    path("planning/", include("planning.urls")),
    path("api/outcomes/", include("outcomes.api_urls")),
    path("outcomes/", include("outcomes.urls")),
    path("api/", include("workflow.toxicity.api_urls")),
    path("api/", include("workflow.carepaths.api_urls")),
    path("api/", include("workflow.pathway.api_urls")),
    path("", include("workflow.toxicity.urls")),
    path("", include("workflow.carepaths.urls")),
    path("", include("workflow.pathway.urls")),
]

# Under /api/ an unmatched URL (or an unforeseen error) answers JSON, as the OpenAPI schema documents.
handler404 = "workflow.api_errors.not_found"
handler500 = "workflow.api_errors.server_error"
