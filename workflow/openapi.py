"""The OpenAPI schema says what the API answers (checked by schemathesis in tests/api_contract/).

drf-spectacular describes the happy path from the serializers; this module closes the gaps between that and the
responses the API really sends:

- Read-only choice fields on a ``blank=True`` model field (a derived response not yet known, a course not stopped)
  send ``""``: their schema is ``oneOf`` the enum and ``""`` (``nullable`` too when the model field is ``null=True``).
- Clinic times (machine opening hours, a preferred appointment time) are wall-clock times without an offset,
  ``HH:MM[:SS[.ffffff]]``: RFC 3339's ``partial-time``, documented by pattern (``format: time`` would demand an
  offset).
- Every operation documents its error responses: 400 (the body names the field), 401/403 (login, role), 404, and
  for changes 405 (a method the resource refuses, e.g. deleting an appointment) and 409 (a clash with the state).
"""

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

PARTIAL_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$"

ERROR_SCHEMA = {
    "type": "object",
    "description": "``{field: [messages]}`` naming each input at fault, or ``detail`` (and ``code``) for a rule.",
    "properties": {
        "detail": {"type": "string"},
        # the rule's code, or the messages of an input that is itself named ``code`` (e.g. a registry's code)
        "code": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
    "additionalProperties": True,
}
ERROR_DESCRIPTIONS = {
    "400": "Invalid input; the body names the field at fault",
    "401": "Not logged in",
    "403": "Not logged in, or your role does not allow this",
    "404": "No such record (or not visible to you)",
    "405": "The resource does not allow this method",
    "409": "Conflicts with current bookings or the record's state",
}
SAFE = {"get", "head", "options"}


def _model_field(field):
    parent = getattr(field, "parent", None)
    model = getattr(getattr(parent, "Meta", None), "model", None)
    if model is None or not field.source or "." in field.source or field.source == "*":
        return None
    try:
        return model._meta.get_field(field.source)
    except Exception:  # noqa: BLE001 - a serializer-only field
        return None


class RadPathAutoSchema(AutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.ChoiceField) and field.read_only and not getattr(field, "allow_blank", False):
            model_field = _model_field(field)
            if model_field is not None and getattr(model_field, "blank", False) and model_field.choices:
                schema = {"oneOf": [schema, {"type": "string", "enum": [""]}]}
                if model_field.null:
                    schema["nullable"] = True
        return schema


def _walk(node):
    if isinstance(node, dict):
        if node.get("format") == "time" and node.get("type") == "string":
            del node["format"]
            node["pattern"] = PARTIAL_TIME_PATTERN
            node.setdefault("description", "Clinic-local time, HH:MM[:SS] (RFC 3339 partial-time)")
        for value in node.values():
            _walk(value)
    elif isinstance(node, list):
        for value in node:
            _walk(value)


def postprocess(result, generator, request, public):
    """Schema-wide fixes: partial-time pattern and the error responses of every operation."""
    _walk(result)
    result.setdefault("components", {}).setdefault("schemas", {})["ApiError"] = ERROR_SCHEMA
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete", "head", "options"}:
                continue
            codes = ["400", "401", "403", "404"] + ([] if method in SAFE else ["405", "409"])
            responses = operation.setdefault("responses", {})
            for code in codes:
                existing = responses.get(code)
                if existing is None or "content" not in existing:
                    responses[code] = {"description": (existing or {}).get("description") or ERROR_DESCRIPTIONS[code], "content": ref}
    return result
