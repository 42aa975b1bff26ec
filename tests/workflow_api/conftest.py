"""Fixtures for the API and page tests: logged-in clients per role and courses booked in the past or future."""

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from workflow.pathway import delivery, scheduling


def past_monday(weeks=3):
    today = timezone.localdate()
    return today - dt.timedelta(days=today.weekday() + 7 * weeks)


def future_monday(weeks=2):
    today = timezone.localdate()
    return today + dt.timedelta(days=7 * weeks - today.weekday())


@pytest.fixture
def api(users):
    """``api("therapist")`` is an APIClient logged in (session) as that role's user."""

    def client_for(role):
        client = APIClient()
        client.force_login(users[role])
        return client

    return client_for


@pytest.fixture
def web(users):
    """``web("therapist")`` is a Django test client logged in as that role's user."""
    from django.test import Client

    def client_for(role):
        c = Client()
        c.force_login(users[role])
        return c

    return client_for


@pytest.fixture
def booked_course(course, clinic, oncologist):
    """The fixture course, cleared for treatment and booked from a Monday three weeks ago on Linac 1."""
    delivery.clear_for_treatment(course, user=oncologist)
    scheduling.book_course(course, past_monday(), preferred_time=dt.time(9, 0), machine=clinic["linac1"], allow_past=True)
    course.refresh_from_db()
    return course


def first_scheduled(course):
    return course.fractions.filter(status="scheduled").order_by("starts_at").first()
