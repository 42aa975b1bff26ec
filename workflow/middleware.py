"""Login is required everywhere: patient data never leaves the server to an anonymous request."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseBadRequest, JsonResponse

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


class RefuseNulInQuery:
    """A NUL byte in the URL path or a query parameter is refused with 400 naming the parameter.

    No database stores NUL in text (PostgreSQL refuses it outright), so letting ``?q=%00`` reach a filter turns bad
    input into a 500. Refusing it here, before any view runs, covers every page and endpoint at once.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        field = None
        if "\x00" in request.path:
            field = "path"
        else:
            for name, values in request.GET.lists():
                if "\x00" in name or any("\x00" in v for v in values):
                    field = name.replace("\x00", "")
                    break
        if field is not None:
            message = "NUL characters are not allowed."
            if request.path.startswith("/api/"):
                return JsonResponse({field or "query": [message]}, status=400)
            return HttpResponseBadRequest(f"{field}: {message}", content_type="text/plain; charset=utf-8")
        return self.get_response(request)
