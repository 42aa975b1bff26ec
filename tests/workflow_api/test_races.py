"""Booking, downtime and closures raced through the API (issue 13: on PostgreSQL a downtime recorded while bookings
ran left 2 fractions inside it, and a closure left 4 fractions on a closed day).

Rule (workflow.pathway.scheduling): the three serialise on the machines they touch, so whatever order the database picks,
no scheduled fraction is inside a downtime or on a closed day, no machine holds two overlapping fractions, every
booking is whole or refused, and a refusal is a clean 409 naming its code. Each round 22 requests (16 bookings, 4
downtimes, 2 closures) start together from 22 threads on their own database connections; three rounds on
different weeks. Runs on PostgreSQL (``.ci/run``'s second pass) and on the SQLite file.
"""

import datetime as dt
import threading

import pytest
from django.db import close_old_connections, connection
from rest_framework.test import APIClient

from tests.conftest import make_course
from workflow.models import Closure, Downtime, Fraction, Patient
from workflow.pathway.scheduling import local_day

from .conftest import future_monday

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROUNDS = 3
BOOKINGS = 16


def _round_requests(monday, courses, round_no):
    """(method, url, body) for one round: 16 bookings at 08:00-11:45, four downtimes, two closures that week."""
    day = [monday + dt.timedelta(days=k) for k in range(5)]
    requests = [
        ("post", f"/api/courses/{c.pk}/schedule/", {"start_date": str(monday), "preferred_time": f"{8 + k // 4:02d}:{15 * (k % 4):02d}"})
        for k, c in enumerate(courses)
    ]
    linac1, linac2 = _linacs()
    requests += [
        ("post", "/api/downtimes/", {"machine": linac1, "starts_at": f"{day[1]}T08:00", "ends_at": f"{day[1]}T12:00", "reason": f"Magnetron r{round_no}"}),
        ("post", "/api/downtimes/", {"machine": linac2, "starts_at": f"{day[3]}T07:00", "ends_at": f"{day[3]}T19:00", "reason": f"Service r{round_no}"}),
        ("post", "/api/downtimes/", {"machine": linac1, "starts_at": f"{day[0]}T09:00", "ends_at": f"{day[0]}T10:30", "reason": f"QA r{round_no}"}),
        ("post", "/api/downtimes/", {"machine": linac2, "starts_at": f"{day[4]}T08:30", "ends_at": f"{day[4]}T09:30", "reason": f"MLC r{round_no}"}),
        ("post", "/api/closures/", {"date": str(day[2]), "reason": f"Staff training r{round_no}"}),
        ("post", "/api/closures/", {"date": str(day[4] + dt.timedelta(days=3)), "reason": f"Power work r{round_no}"}),
    ]
    return requests


def _linacs():
    from workflow.models import Machine

    return Machine.objects.get(name="Linac 1").pk, Machine.objects.get(name="Linac 2").pk


def _violations():
    """Every broken rule in the database: fractions inside a downtime, on a closed day, or overlapping on a machine."""
    found = []
    scheduled = list(Fraction.objects.filter(status="scheduled").select_related("machine"))
    for d in Downtime.objects.all():
        found += [f"fraction {f.pk} {f.starts_at} inside downtime {d}" for f in scheduled
                  if f.machine_id == d.machine_id and f.starts_at < d.ends_at and f.ends_at > d.starts_at]
    closed = set(Closure.objects.values_list("date", flat=True))
    found += [f"fraction {f.pk} on closed day {local_day(f.starts_at)}" for f in scheduled if local_day(f.starts_at) in closed]
    live = sorted(Fraction.objects.filter(status__in=["scheduled", "delivered"]), key=lambda f: (f.machine_id, f.starts_at))
    found += [f"fractions {a.pk} and {b.pk} overlap on machine {a.machine_id}" for a, b in zip(live, live[1:])
              if a.machine_id == b.machine_id and b.starts_at < a.ends_at]
    return found


def test_bookings_downtime_and_closures_raced_leave_no_violation(users, clinic):
    results = []
    lock = threading.Lock()
    for round_no in range(ROUNDS):
        monday = future_monday(weeks=3 + 2 * round_no)
        courses = []
        for k in range(BOOKINGS):
            patient = Patient.objects.create(mrn=f"R{round_no}-{k:02d}", given_name="Race", family_name=f"{round_no}-{k}",
                                             birth_date=dt.date(1960, 1, 1))
            courses.append(make_course(patient, fractions=5))
        requests = _round_requests(monday, courses, round_no)
        assert len(requests) >= 20
        barrier = threading.Barrier(len(requests))
        round_results = []

        def send(method, url, body):
            client = APIClient()
            # Downtime and closures from the scheduler too: one role books, records downtime and closes days.
            client.force_login(users["scheduler"])
            try:
                barrier.wait(timeout=60)
                response = getattr(client, method)(url, body, format="json")
                with lock:
                    round_results.append((url, response.status_code, response.json()))
            finally:
                connection.close()

        threads = [threading.Thread(target=send, args=r) for r in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        close_old_connections()
        assert len(round_results) == len(requests)
        results += round_results

        assert _violations() == []
        for c in courses:
            assert c.fractions.filter(status="scheduled").count() in (0, 5), c
    statuses = [status for _, status, _ in results]
    assert set(statuses) <= {201, 409}, [r for r in results if r[1] not in (201, 409)]
    for url, status, body in results:
        if status == 409:
            assert body["code"] in {"day_has_bookings", "slot_taken", "no_capacity"}, body
    bookings = [r for r in results if "/schedule/" in r[0]]
    assert sum(status == 201 for _, status, _ in bookings) >= BOOKINGS * ROUNDS // 2
    downtimes = [body for url, status, body in results if url == "/api/downtimes/"]
    assert len(downtimes) == 4 * ROUNDS and all(d["downtime"]["id"] for d in downtimes)
