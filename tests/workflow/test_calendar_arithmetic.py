"""Working-day arithmetic is closed-form (numpy busday_count + the holidays and closures in the range).

Counts are checked against the US federal calendar (the default ``CLINIC_HOLIDAY_COUNTRY``) and against the
day-by-day definition, and a span of decades is counted without walking it.
"""

import datetime as dt

import pytest

from workflow.pathway.calendar import ClinicCalendar


def walk(calendar, start, end):
    """The definition: treatment days in (start, end], one day at a time."""
    count, day = 0, start
    while day < end:
        day += dt.timedelta(days=1)
        count += calendar.is_open(day)
    return count


def test_december_2026_has_21_working_days_with_christmas_closed():
    # 23 weekdays in December 2026 (Tue 1 to Thu 31), minus Christmas (Fri 25th): 22.
    calendar = ClinicCalendar(closures={})
    assert calendar.working_days_between(dt.date(2026, 11, 30), dt.date(2026, 12, 31)) == 22
    # A manual closure on Thu 24 December removes one more.
    closed = ClinicCalendar(closures={dt.date(2026, 12, 24): "Christmas Eve"})
    assert closed.working_days_between(dt.date(2026, 11, 30), dt.date(2026, 12, 31)) == 21


def test_thanksgiving_week_and_a_closure_on_a_weekend_counts_nothing_extra():
    calendar = ClinicCalendar(closures={dt.date(2026, 11, 28): "Saturday closure"})
    # Fri 20 Nov -> Fri 27 Nov 2026: Mon-Wed, Thanksgiving (Thu 26) closed, Fri open: 4.
    assert calendar.working_days_between(dt.date(2026, 11, 20), dt.date(2026, 11, 27)) == 4


def test_signs_and_end_points():
    calendar = ClinicCalendar(closures={})
    friday, monday = dt.date(2026, 11, 13), dt.date(2026, 11, 16)
    assert calendar.working_days_between(friday, monday) == 1
    assert calendar.working_days_between(monday, friday) == -1
    assert calendar.working_days_between(monday, monday) == 0
    saturday, sunday = dt.date(2026, 11, 14), dt.date(2026, 11, 15)
    assert calendar.working_days_between(saturday, sunday) == 0
    assert calendar.working_days_between(sunday, monday) == 1


@pytest.mark.parametrize("start, end", [(dt.date(2025, 12, 20), dt.date(2027, 1, 10)), (dt.date(2026, 7, 3), dt.date(2026, 7, 6)),
                                        (dt.date(2024, 2, 28), dt.date(2024, 3, 1))])
def test_agrees_with_the_day_by_day_definition(start, end):
    calendar = ClinicCalendar(closures={dt.date(2026, 3, 10): "Inspection", dt.date(2026, 7, 6): "Bridge day"})
    assert calendar.working_days_between(start, end) == walk(calendar, start, end)
    assert calendar.working_days_between(end, start) == -walk(calendar, start, end)


def test_a_century_is_counted_and_matches_the_walk():
    calendar = ClinicCalendar(closures={})
    start, end = dt.date(1950, 1, 1), dt.date(2049, 12, 31)
    assert calendar.working_days_between(start, end) == walk(calendar, start, end)


def test_the_last_representable_day_does_not_overflow():
    calendar = ClinicCalendar(closures={})
    # (9999-12-24, 9999-12-31]: end + 1 day does not exist; the count is taken without computing it.
    start, end = dt.date(9999, 12, 24), dt.date.max
    assert calendar.working_days_between(start, end) == walk(calendar, start, end)
