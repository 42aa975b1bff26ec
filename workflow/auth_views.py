"""API tokens: ``POST /api/auth/token/`` (HTTP Basic, once) and ``POST /api/auth/logout/``; see ``workflow.auth``."""

from drf_spectacular.authentication import BasicScheme
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from knox import views as knox_views
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated

from .auth import ThrottledBasicAuthentication


class ThrottledBasicScheme(BasicScheme):
    """The OpenAPI security scheme of ``ThrottledBasicAuthentication``: plain HTTP Basic."""

    target_class = "workflow.auth.ThrottledBasicAuthentication"

TOKEN_RESPONSE = inline_serializer(
    "ApiToken", {"token": serializers.CharField(), "expiry": serializers.DateTimeField(allow_null=True)}
)


class TokenLoginView(knox_views.LoginView):
    """Exchange a username and password (HTTP Basic, once) for an API token."""

    authentication_classes = [ThrottledBasicAuthentication]
    permission_classes = [IsAuthenticated]
    throttle_scope = "token"

    @extend_schema(
        summary="Get an API token (log in once with HTTP Basic; then send `Authorization: Token <token>`)",
        request=None,
        responses={200: TOKEN_RESPONSE, 401: OpenApiResponse(description="Wrong username or password"),
                   429: OpenApiResponse(description="Locked out after repeated wrong passwords")},
    )
    def post(self, request, format=None):
        return super().post(request, format)


class TokenLogoutView(knox_views.LogoutView):
    @extend_schema(
        summary="Revoke the API token sent with this request",
        request=None,
        responses={204: None, 401: OpenApiResponse(description="No valid token sent")},
    )
    def post(self, request, format=None):
        return super().post(request, format)
