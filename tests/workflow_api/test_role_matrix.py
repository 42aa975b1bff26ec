"""Who books, moves, delivers and misses fractions, on the API and the pages (issue 13: therapists booked courses).

Rule (README, demo logins): therapists deliver fractions and record missed ones (the make-up is appended by the
scheduling rule); schedulers book courses and move fractions. Every other role is refused (403) and nothing changes.
"""

import datetime as dt

import pytest
from django.urls import reverse

from workflow.pathway import scheduling
from workflow.models import Fraction

from .conftest import first_scheduled, future_monday

ROLES = ["therapist", "scheduler", "oncologist", "physicist", "dosimetrist", "researcher"]
BOOKS = {"scheduler"}
DELIVERS = {"therapist"}


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_only_schedulers_book_a_course_on_the_api(api, course, clinic, role):
    response = api(role).post(f"/api/courses/{course.pk}/schedule/", {"start_date": future_monday().isoformat()}, format="json")
    assert response.status_code == (201 if role in BOOKS else 403), response.content
    assert Fraction.objects.filter(course=course).count() == (25 if role in BOOKS else 0)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_only_schedulers_book_a_course_on_the_page(web, course, clinic, role):
    url = reverse("course-schedule", args=[course.pk])
    client = web(role)
    assert client.get(url).status_code == (200 if role in BOOKS else 403)
    response = client.post(url, {"start_date": future_monday().isoformat(), "preferred_time": "09:00", "machine": clinic["linac1"].pk})
    assert response.status_code == (302 if role in BOOKS else 403)
    assert Fraction.objects.filter(course=course).count() == (25 if role in BOOKS else 0)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_only_schedulers_move_a_fraction(api, course, clinic, role):
    scheduling.book_course(course, future_monday(), preferred_time=dt.time(9, 0), machine=clinic["linac1"])
    fraction = first_scheduled(course)
    target = scheduling.local_datetime(scheduling.local_day(fraction.starts_at), dt.time(14, 0))
    response = api(role).post(f"/api/fractions/{fraction.pk}/move/", {"starts_at": target.isoformat()}, format="json")
    assert response.status_code == (200 if role in BOOKS else 403), response.content
    fraction.refresh_from_db()
    assert (fraction.starts_at == target) is (role in BOOKS)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_only_therapists_record_delivered_and_missed_fractions(api, booked_course, role):
    client = api(role)
    first = first_scheduled(booked_course)
    response = client.post(f"/api/fractions/{first.pk}/deliver/", {}, format="json")
    assert response.status_code == (200 if role in DELIVERS else 403), response.content
    nxt = first_scheduled(booked_course)
    response = client.post(f"/api/fractions/{nxt.pk}/miss/", {"reason": "Unwell"}, format="json")
    assert response.status_code == (200 if role in DELIVERS else 403), response.content
    delivered = booked_course.fractions.filter(status="delivered").count()
    missed = booked_course.fractions.filter(status="missed").count()
    assert (delivered, missed) == ((1, 1) if role in DELIVERS else (0, 0))
    # the therapist's missed fraction got its make-up appended: 25 live fractions still, 26 rows
    assert booked_course.fractions.count() == (26 if role in DELIVERS else 25)


@pytest.mark.django_db
def test_therapists_see_no_schedule_button(web, course, clinic):
    html = web("therapist").get(reverse("course-detail", args=[course.pk])).content.decode()
    assert "Schedule fractions" not in html
    assert "Schedule fractions" in web("scheduler").get(reverse("course-detail", args=[course.pk])).content.decode()
