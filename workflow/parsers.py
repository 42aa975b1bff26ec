"""The API's JSON parser: a body the server cannot take apart safely is a 400, never a 500.

- Nesting: Python's ``json`` recurses once per level, so ``[[[[...]]]]`` 100,000 deep raises ``RecursionError``
  (a 500 through DRF's own parser). Bodies deeper than ``MAX_DEPTH`` (32: the deepest RadPath input is a plan's
  objective list, 3 levels) are refused before parsing, by a linear scan of the brackets.
- NUL characters: no database keeps ``\\u0000`` in text (PostgreSQL refuses it), so a string holding one is
  refused with the field that holds it named (``{"objectives.0.structure": ["..."]}``).
- NaN and Infinity are not JSON: refused (DRF's strict mode).
"""

import json

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError, ValidationError

MAX_DEPTH = 32


def nesting_depth(text):
    """The deepest bracket nesting of a JSON text (brackets inside strings are skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def find_nul(value, path=()):
    """The dotted path of the first string (or key) holding a NUL character, or None."""
    if isinstance(value, str):
        return ".".join(path) or "body" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return ".".join(path + (key.replace("\x00", ""),)) or "body"
            found = find_nul(item, path + (key,))
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, path + (str(index),))
            if found:
                return found
    return None


class SafeJSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - the body is not {encoding}.") from exc
        if nesting_depth(text) > MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {MAX_DEPTH} levels.")
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
        field = find_nul(data)
        if field:
            raise ValidationError({field: ["NUL characters are not allowed."]})
        return data


def _refuse_constant(name):
    raise ValueError(f"{name} is not a valid JSON value")
