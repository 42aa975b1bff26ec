"""HTML date and time inputs that work in every locale.

Rule: the value of ``<input type=date>`` is always ISO 8601 (``YYYY-MM-DD``), of ``type=time`` ``HH:MM`` and of
``type=datetime-local`` ``YYYY-MM-DDTHH:MM``, whatever the page's language; the browser shows it in the user's own
format. Django's default widgets render the locale's first input format instead (``dd/mm/yyyy`` for en-gb), which
the browser drops, so a form re-shown after an error or opened on an existing record came back blank. Every form in
workflow, planning and outcomes uses these widgets; parsing needs nothing extra, as Django always accepts ISO input
besides the locale's formats. Dates shown as text elsewhere use the clinic's format (``j M Y``).
"""

import datetime as dt

from django import forms
from django.utils import timezone

ISO_DATE = "%Y-%m-%d"
ISO_TIME = "%H:%M"
ISO_DATETIME = "%Y-%m-%dT%H:%M"
DATETIME_INPUT_FORMATS = [ISO_DATETIME, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


class DateInput(forms.DateInput):
    input_type = "date"

    def __init__(self, attrs=None, format=None):
        super().__init__(attrs, format=ISO_DATE)


class TimeInput(forms.TimeInput):
    input_type = "time"

    def __init__(self, attrs=None, format=None):
        super().__init__(attrs, format=ISO_TIME)


class DateTimeInput(forms.DateTimeInput):
    """A local date and time: an aware value is shown in the clinic's time zone."""

    input_type = "datetime-local"

    def __init__(self, attrs=None, format=None):
        super().__init__(attrs, format=ISO_DATETIME)

    def format_value(self, value):
        if isinstance(value, dt.datetime) and timezone.is_aware(value):
            value = timezone.localtime(value)
        return super().format_value(value)
