"""API errors: bad input is a 400 naming the field, a clash with existing bookings a 409, never a 500.

Service functions raise Django's ``ValidationError`` (with field names) for bad input and ``workflow.errors``
exceptions for rule conflicts; this handler turns both into DRF responses so views stay thin.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as django_server_error
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import ConflictError, RuleViolation


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {field: [str(m) for e in errs for m in e.messages] for field, errs in exc.error_dict.items()}
        else:
            detail = {"non_field_errors": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ConflictError):
        body = {"detail": str(exc), "code": exc.code}
        if exc.field:
            body[exc.field] = [str(exc)]
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, RuleViolation):
        body = {"detail": str(exc), "code": exc.code}
        if exc.field:
            body[exc.field] = [str(exc)]
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DjangoPermissionDenied):
        return Response({"detail": str(exc) or "Permission denied."}, status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, OverflowError):
        # Backstop: a date or number beyond what Python or the database can hold. The field checks
        # (workflow.params) refuse known cases first, naming the field; this keeps any other one a 400.
        return Response({"non_field_errors": ["A date or number is out of range."]}, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        # ``raise ValidationError("...")`` without a field: keep the documented shape, an object.
        response.data = {"non_field_errors": response.data}
    return response


def not_found(request, exception=None):
    """404 for a URL no route matches: JSON under ``/api/`` (what the schema documents), the HTML page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


def server_error(request):
    """500: JSON under ``/api/``, so even an unforeseen failure answers in the API's documented shape."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error."}, status=500)
    return django_server_error(request)
