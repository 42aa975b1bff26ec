"""The clinic calendar: which days are treatment days.

Rule (DOMAIN.md section 2): treatment days are Monday to Friday, minus the public holidays of the clinic's country
(``CLINIC_HOLIDAY_COUNTRY``, from the ``holidays`` package) and manual clinic closures (``Closure`` rows). Machine
downtime is per machine and handled by the scheduler, not here.
"""

import datetime as dt
from functools import lru_cache

import holidays
import numpy as np
from django.conf import settings


@lru_cache(maxsize=512)
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

    def closed_weekdays(self, start, end):
        """Public holidays and manual closures falling Monday to Friday in [start, end], sorted."""
        days = {d for d in self.closures if start <= d <= end}
        for year in range(start.year, end.year + 1):
            days.update(
                d
                for d in _public_holidays(settings.CLINIC_HOLIDAY_COUNTRY, settings.CLINIC_HOLIDAY_SUBDIVISION, year)
                if start <= d <= end
            )
        return sorted(d for d in days if d.weekday() < 5)

    def working_days_between(self, start, end):
        """Treatment days in (start, end]: how many working days late ``end`` is relative to ``start``.

        Closed form, not a walk over the days: numpy's ``busday_count`` counts the Mondays-to-Fridays of the range
        in O(weeks) and the holidays and closures inside the range are subtracted, so a span of decades costs one
        holiday table per year (cached), not one lookup per day. ``busday_count`` counts [start, end); the
        interval here is (start, end], so the two end days are corrected without ever computing ``end + 1 day``
        (which overflows at 9999-12-31).
        """
        if end < start:
            return -self.working_days_between(end, start)
        if end == start:
            return 0
        closed = np.array(self.closed_weekdays(start, end), dtype="datetime64[D]")
        count = int(np.busday_count(np.datetime64(start, "D"), np.datetime64(end, "D"), holidays=closed))
        return count - int(self.is_open(start)) + int(self.is_open(end))

def closure_reason(day):
    return ClinicCalendar().closure_reason(day)


def is_treatment_day(day):
    return ClinicCalendar().is_open(day)


def next_treatment_day(day):
    return ClinicCalendar().next_open_day(day)


def add_working_days(day, n):
    return ClinicCalendar().add_working_days(day, n)
