"""Parsing what a client sends: query parameters, identifiers and the sane window for clinical dates.

Rule: bad input is a 400 naming the field, never a 500. Every view that reads ``?date=``, ``?course=`` or
``?patient=`` goes through these helpers, which raise Django's ``ValidationError`` keyed by the parameter name
(the API's exception handler turns it into ``{"date": ["..."]}``; pages show the message).

Dates: a clinical date lies in a window, from 1900-01-01 (no living patient was born earlier, and the calendar
arithmetic is bounded) to ``DATE_HORIZON_YEARS`` (30) years after today (follow-up runs 10 years after treatment).
A date outside it, such as 9999-12-31 or 0001-01-01, is refused before any scheduling or working-day arithmetic
runs, so no request can overflow ``datetime`` or walk millions of days.
"""

import datetime as dt

from django.core.exceptions import ValidationError
from django.utils import timezone

EARLIEST_DATE = dt.date(1900, 1, 1)
DATE_HORIZON_YEARS = 30
MAX_ID = 2**63 - 1


def latest_date(today=None):
    """The last date the clinic accepts: 31 December, ``DATE_HORIZON_YEARS`` years after today."""
    today = today or timezone.localdate()
    return dt.date(today.year + DATE_HORIZON_YEARS, 12, 31)


def window_message(field_label="Date"):
    return f"{field_label} must be between {EARLIEST_DATE.isoformat()} and {latest_date().isoformat()}."


def in_window(day, latest=None):
    """``latest``: the window's end when the caller has it (``latest_date()`` reads the clock; a file of a million
    dates reads it once)."""
    if isinstance(day, dt.datetime):
        day = day.date()
    return EARLIEST_DATE <= day <= (latest or latest_date())


def validate_date_window(value):
    """Model/serializer validator: a date (or datetime) inside the clinic's sane window."""
    if value is not None and not in_window(value):
        raise ValidationError(window_message(), code="date_out_of_range")


def check_date_window(value, field):
    """Raise ``{field: [...]}`` when ``value`` lies outside the window."""
    if value is not None and not in_window(value):
        raise ValidationError({field: [window_message()]}, code="date_out_of_range")
    return value


def parse_date(value, field="date", default=None):
    """``YYYY-MM-DD`` inside the window, or ``default`` when empty; otherwise ``{field: [...]}``."""
    if value in (None, ""):
        return default
    if isinstance(value, dt.date):
        day = value
    else:
        try:
            day = dt.date.fromisoformat(str(value).strip())
        except ValueError:
            raise ValidationError({field: [f"'{value}' is not a date; use YYYY-MM-DD."]}, code="invalid") from None
    return check_date_window(day, field)


def query_date(params, field="date", default=None):
    return parse_date(params.get(field), field, default)


def parse_id(value, field):
    """A record id (positive integer) or None when empty; ``?course=abc`` is ``{"course": [...]}``."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise ValidationError({field: [f"'{value}' is not a valid id; give a positive whole number."]}, code="invalid")
    return int(text)


def query_id(params, field):
    return parse_id(params.get(field), field)


def require_in_window(value, field):
    """Service guard: a scheduling date outside the window is a ``RuleViolation`` on ``field`` (HTTP 400)."""
    from .errors import RuleViolation

    if value is not None and not in_window(value):
        raise RuleViolation(window_message(), field=field, code="date_out_of_range")
    return value


def has_control_characters(text):
    """True when ``text`` holds a C0 control character (CR, LF, TAB, NUL...) or DEL."""
    return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
