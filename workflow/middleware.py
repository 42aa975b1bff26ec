"""Login is required everywhere, and nothing a signed-in user sees is kept by a browser or proxy cache.

- ``LoginRequiredEverywhere``: patient data never leaves the server to an anonymous request.
- ``RefuseNulInQuery``: a NUL byte in the path or a query parameter is a 400 naming the parameter.
- ``NoStoreForSignedIn``: every response to a signed-in user (session, token or Basic on the API) and every API
  response carries ``Cache-Control: no-store, private``, so a shared or back-button cache never holds patient
  data. Static files keep their own caching.
"""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseBadRequest, JsonResponse
from django.utils.cache import patch_cache_control

OPEN_PREFIXES = ("/accounts/login", "/static/", "/favicon.ico", "/healthz")
CACHEABLE_PREFIXES = ("/static/", "/favicon.ico")


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


class NoStoreForSignedIn:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.path.startswith(CACHEABLE_PREFIXES):
            return response
        user = getattr(request, "user", None)  # DRF sets it on the request once it has authenticated
        if request.path.startswith("/api/") or (user is not None and user.is_authenticated):
            patch_cache_control(response, no_store=True, private=True)
        return response
