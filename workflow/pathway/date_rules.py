"""Date rules shared by the clinical models' ``clean()`` (so the API, the forms and the admin refuse alike).

- Every clinical date lies in the clinic's window (``workflow.params``: 1900-01-01 to 30 years ahead).
- A birth date is not in the future.
- Nothing clinical happens before the patient was born: a diagnosis, a treatment, a course's dates.
Each rule adds ``{field: message}`` to the ``errors`` dict the model's ``clean()`` raises.
"""

import datetime as dt

from django.utils import timezone

from ..params import in_window, window_message


def _day(value):
    return value.date() if isinstance(value, dt.datetime) else value


def check_window(errors, field, value, label="Date"):
    if value is not None and field not in errors and not in_window(value):
        errors[field] = window_message(label)


def check_birth_date(errors, field, value):
    check_window(errors, field, value, "Birth date")
    if value is not None and field not in errors and value > timezone.localdate():
        errors[field] = "Birth date is in the future."


def check_after_birth(errors, field, value, patient, label="Date"):
    """``value`` is on or after the patient's birth date."""
    birth = getattr(patient, "birth_date", None) if patient is not None else None
    if value is None or birth is None or field in errors:
        return
    if _day(value) < birth:
        errors[field] = f"{label} {_day(value).isoformat()} is before the patient's birth ({birth.isoformat()})."
