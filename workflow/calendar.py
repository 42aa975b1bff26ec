"""The clinic calendar: which days are treatment days.

Rule (DOMAIN.md section 2): treatment days are Monday to Friday, minus the public holidays of the clinic's country
(``CLINIC_HOLIDAY_COUNTRY``, from the ``holidays`` package) and manual clinic closures (``Closure`` rows). Machine
downtime is per machine and handled by the scheduler, not here.
"""

import datetime as dt
from functools import lru_cache

import holidays
from django.conf import settings


@lru_cache(maxsize=64)
def _public_holidays(country, subdivision, year):
    try:
        calendar = holidays.country_holidays(country, subdiv=subdivision, years=year)
    except NotImplementedError:
        return {}
    return dict(calendar)


def public_holiday(day):
    """The name of the public holiday on ``day`` in the clinic's country, or None."""
    return _public_holidays(settings.CLINIC_HOLIDAY_COUNTRY, settings.CLINIC_HOLIDAY_SUBDIVISION, day.year).get(day)


class ClinicCalendar:
    """Open/closed days over a window, with the manual closures loaded once (one query, not one per day)."""

    def __init__(self, closures=None):
        if closures is None:
            from .models import Closure

            closures = dict(Closure.objects.values_list("date", "reason"))
        self.closures = dict(closures)

    def closure_reason(self, day):
        if day.weekday() >= 5:
            return "Weekend"
        if day in self.closures:
            return self.closures[day]
        return public_holiday(day)

    def is_open(self, day):
        return self.closure_reason(day) is None

    def next_open_day(self, day):
        """The first treatment day strictly after ``day``."""
        day = day + dt.timedelta(days=1)
        while not self.is_open(day):
            day += dt.timedelta(days=1)
        return day

    def open_days(self, start):
        """Treatment days from ``start`` (inclusive) onwards, without end."""
        day = start
        while True:
            if self.is_open(day):
                yield day
            day += dt.timedelta(days=1)

    def add_working_days(self, day, n):
        """``n`` treatment days after ``day`` (n=0 is ``day`` itself if open, else the next open day)."""
        if n == 0:
            return day if self.is_open(day) else self.next_open_day(day)
        for _ in range(n):
            day = self.next_open_day(day)
        return day

    def working_days_between(self, start, end):
        """Treatment days in (start, end]: how many working days late ``end`` is relative to ``start``."""
        if end <= start:
            return -self.working_days_between(end, start) if end < start else 0
        count, day = 0, start
        while day < end:
            day += dt.timedelta(days=1)
            count += self.is_open(day)
        return count


def closure_reason(day):
    return ClinicCalendar().closure_reason(day)


def is_treatment_day(day):
    return ClinicCalendar().is_open(day)


def next_treatment_day(day):
    return ClinicCalendar().next_open_day(day)


def add_working_days(day, n):
    return ClinicCalendar().add_working_days(day, n)
