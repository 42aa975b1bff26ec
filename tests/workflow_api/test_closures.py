"""A clinic closure on a day with booked fractions: refused, or (asked to) shifting each course by one treatment day.

The rule (DOMAIN 2; ``scheduling.add_closure``): a closure never doubles up fractions and never loses one: each
fraction booked that day moves to the first open day after its course's last fraction, so the course keeps its
fraction count and its end moves one treatment day later. The admin goes through the same service.
"""

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client

from workflow.pathway import scheduling
from workflow.pathway.calendar import ClinicCalendar
from workflow.models import Closure


def live_days(course):
    return [scheduling.local_day(f.starts_at) for f in course.fractions.filter(status="scheduled").order_by("starts_at")]


def a_future_booked_day(course):
    today = dt.date.today()
    days = [d for d in live_days(course) if d > today + dt.timedelta(days=1)]
    return days[len(days) // 2]


@pytest.mark.django_db
def test_shift_bookings_moves_the_days_fraction_to_the_course_end(api, booked_course):
    before = live_days(booked_course)
    n_live = booked_course.fractions.filter(status__in=["scheduled", "delivered"]).count()
    day = a_future_booked_day(booked_course)
    moved_fraction = booked_course.fractions.get(status="scheduled", starts_at__date=day)

    response = api("scheduler").post("/api/closures/", {"date": str(day), "reason": "Flood", "shift_bookings": True},
                                     format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["date"] == str(day) and len(body["moved"]) == 1
    assert body["moved"][0]["fraction"] == moved_fraction.pk and body["moved"][0]["same_day"] is False
    after = live_days(booked_course)
    assert day not in after
    assert booked_course.fractions.filter(status__in=["scheduled", "delivered"]).count() == n_live
    # the course end moved to the next open day after the old last fraction, and no day holds two fractions
    assert after[-1] == ClinicCalendar().next_open_day(before[-1])
    assert len(set(after)) == len(after)
    numbers = list(booked_course.fractions.filter(status="scheduled").order_by("starts_at").values_list("number", flat=True))
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    moved_fraction.refresh_from_db()
    assert "closure" in moved_fraction.status_note and moved_fraction.history.latest().history_user.username == "scheduler"


@pytest.mark.django_db
def test_without_shift_a_booked_day_is_still_a_conflict_and_nothing_moves(api, booked_course):
    day = a_future_booked_day(booked_course)
    before = live_days(booked_course)
    response = api("scheduler").post("/api/closures/", {"date": str(day), "reason": "Flood", "shift_bookings": False},
                                     format="json")
    assert response.status_code == 409 and response.json()["code"] == "day_has_bookings"
    assert live_days(booked_course) == before and not Closure.objects.exists()


@pytest.mark.django_db
def test_a_free_day_closes_with_nothing_moved(api, booked_course):
    day = live_days(booked_course)[-1] + dt.timedelta(days=7)
    response = api("scheduler").post("/api/closures/", {"date": str(day), "reason": "Staff day"}, format="json")
    assert response.status_code == 201 and response.json()["moved"] == []
    assert Closure.objects.get().date == day


@pytest.mark.django_db
def test_shift_bookings_must_be_a_boolean(api, booked_course):
    day = a_future_booked_day(booked_course)
    response = api("scheduler").post("/api/closures/", {"date": str(day), "reason": "x", "shift_bookings": "maybe"},
                                     format="json")
    assert response.status_code == 400 and "shift_bookings" in response.json()
    assert not Closure.objects.exists()


@pytest.fixture
def superuser_client(db):
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.org", "pw-boss-123"))
    return client


@pytest.mark.django_db
def test_admin_refuses_a_booked_day_unless_asked_to_shift(superuser_client, booked_course):
    day = a_future_booked_day(booked_course)
    before = live_days(booked_course)
    response = superuser_client.post("/admin/workflow/closure/add/", {"date": str(day), "reason": "Flood"})
    assert response.status_code == 200 and "1 fraction(s) are booked" in response.content.decode()
    assert not Closure.objects.exists() and live_days(booked_course) == before

    response = superuser_client.post("/admin/workflow/closure/add/",
                                     {"date": str(day), "reason": "Flood", "shift_bookings": "on"})
    assert response.status_code == 302
    closure = Closure.objects.get()
    assert closure.date == day and closure.history.latest().history_user.username == "boss"
    assert day not in live_days(booked_course)
    assert len(live_days(booked_course)) == len(before)


@pytest.mark.django_db
def test_admin_cannot_edit_a_closure_day(superuser_client, booked_course):
    closure = scheduling.add_closure(live_days(booked_course)[-1] + dt.timedelta(days=7), "Staff day").closure
    other = closure.date + dt.timedelta(days=1)
    superuser_client.post(f"/admin/workflow/closure/{closure.pk}/change/", {"date": str(other), "reason": "x"})
    closure.refresh_from_db()
    assert closure.date != other
