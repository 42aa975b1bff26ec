"""Login hardening: lockout of repeated wrong passwords, and API tokens so clients need not send a password.

- ``LoginLockoutBackend`` is django-axes' standalone backend (first in ``AUTHENTICATION_BACKENDS``): after
  ``AXES_FAILURE_LIMIT`` wrong passwords for one username, or from one client IP, every login for it is refused
  until ``AXES_COOLOFF_TIME`` has passed — even with the right password — on the login page, the admin and the
  API's HTTP Basic. Attempts are rows in the database, so every web process sees the same counts.
  An ``authenticate()`` call without a request (the test client's ``login()``, a shell) is not an HTTP login and
  has no client to lock out, so it is passed on to the password check unthrottled.
- ``ThrottledBasicAuthentication`` answers a locked-out Basic login 429 (Retry-After), not a bare 401.
- ``workflow.auth_views.TokenLoginView`` (``POST /api/auth/token/`` with HTTP Basic) hands out an API token (django-rest-knox: only a
  SHA-512 digest is stored, it expires after ``RADPATH_API_TOKEN_HOURS``). Send it as ``Authorization: Token
  <token>``: checking a token is one hash, where HTTP Basic re-runs the deliberately slow password hash (1-3 s) on
  every request. ``POST /api/auth/logout/`` revokes the token sent.
"""

from axes.backends import AxesStandaloneBackend
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_credentials
from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BasicAuthentication


class LoginLockoutBackend(AxesStandaloneBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def cooloff_seconds():
    return int(settings.AXES_COOLOFF_TIME.total_seconds()) if settings.AXES_COOLOFF_TIME else None


class ThrottledBasicAuthentication(BasicAuthentication):
    """HTTP Basic whose locked-out username or client IP gets 429 Too Many Requests with Retry-After."""

    def authenticate_credentials(self, userid, password, request=None):
        try:
            return super().authenticate_credentials(userid, password, request)
        except exceptions.AuthenticationFailed:
            if request is not None and not AxesProxyHandler.is_allowed(request, get_credentials(username=userid)):
                raise exceptions.Throttled(
                    wait=cooloff_seconds(), detail="Too many failed logins: this account or address is locked for a while."
                ) from None
            raise
