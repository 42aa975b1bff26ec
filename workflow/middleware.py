"""Login is required everywhere: patient data never leaves the server to an anonymous request."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login

OPEN_PREFIXES = ("/accounts/login", "/static/", "/favicon.ico", "/healthz")


class LoginRequiredEverywhere:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        path = request.path
        if request.user.is_authenticated or path.startswith(OPEN_PREFIXES) or path.startswith("/admin/login"):
            return self.get_response(request)
        if path.startswith("/api/"):
            # DRF authenticates API requests itself (session or HTTP basic) and answers 401/403.
            return self.get_response(request)
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
