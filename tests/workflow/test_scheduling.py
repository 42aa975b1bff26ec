"""Scheduling rules on a real database: treatment days, capacity, stable times, BID, make-ups, downtime."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from tests.conftest import make_course
from workflow.errors import ConflictError, RuleViolation
from workflow.models import Closure, Fraction, Machine, MachineSlot, Patient
from workflow.pathway.scheduling import (
    add_downtime,
    book_course,
    local_datetime,
    local_day,
    mark_missed,
    move_fraction,
    treatment_time,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def us_calendar(settings):
    settings.CLINIC_HOLIDAY_COUNTRY = "US"
    settings.CLINIC_HOLIDAY_SUBDIVISION = None


def days(fractions):
    return [local_day(f.starts_at) for f in fractions]


def new_patient(i):
    return Patient.objects.create(mrn=f"MRN{i:04d}", given_name="P", family_name=str(i), birth_date=dt.date(1960, 1, 1))


def test_course_starting_on_friday_skips_the_weekend(clinic, course):
    friday = dt.date(2027, 3, 5)
    booking = book_course(course, friday, allow_past=True)
    assert len(booking.fractions) == 25
    first_week = days(booking.fractions[:6])
    assert first_week == [dt.date(2027, 3, d) for d in (5, 8, 9, 10, 11, 12)]
    assert all(d.weekday() < 5 for d in days(booking.fractions))
    assert [f.number for f in booking.fractions] == list(range(1, 26))
    assert booking.course.booked_end_date == dt.date(2027, 4, 8)  # 25 treatment days from Fri 5 March


def test_course_across_christmas_and_new_year(clinic, patient):
    course = make_course(patient, fractions=10)
    booking = book_course(course, dt.date(2026, 12, 21), allow_past=True)
    # Christmas (Fri 25 Dec) and New Year's Day (Fri 1 Jan) are US federal holidays: skipped, never doubled up.
    assert days(booking.fractions) == [
        dt.date(2026, 12, 21), dt.date(2026, 12, 22), dt.date(2026, 12, 23), dt.date(2026, 12, 24),
        dt.date(2026, 12, 28), dt.date(2026, 12, 29), dt.date(2026, 12, 30), dt.date(2026, 12, 31),
        dt.date(2027, 1, 4), dt.date(2027, 1, 5),
    ]


def test_manual_closure_is_skipped(clinic, patient):
    Closure.objects.create(date=dt.date(2027, 3, 10), reason="Staff training")
    booking = book_course(make_course(patient, fractions=3), dt.date(2027, 3, 9), allow_past=True)
    assert days(booking.fractions) == [dt.date(2027, 3, 9), dt.date(2027, 3, 11), dt.date(2027, 3, 12)]


def test_daily_time_is_stable_and_on_a_capable_machine(clinic, course):
    booking = book_course(course, dt.date(2027, 3, 1), preferred_time=dt.time(9, 30), allow_past=True)
    assert {timezone.localtime(f.starts_at).time() for f in booking.fractions} == {dt.time(9, 30)}
    assert {f.machine.name for f in booking.fractions} == {"Linac 1"}
    assert booking.daily_time_changes == 0


def test_technique_needs_a_capable_machine(clinic, patient):
    course = make_course(patient, fractions=5, technique="SBRT", dose=Decimal("8.00"))
    booking = book_course(course, dt.date(2027, 3, 1), allow_past=True)
    assert {f.machine.name for f in booking.fractions} == {"Linac 1"}  # only Linac 1 does SBRT
    with pytest.raises(RuleViolation) as err:
        book_course(make_course(patient, fractions=5, technique="SBRT", dose=Decimal("8.00")), dt.date(2027, 3, 1), machine=clinic["linac2"], allow_past=True)
    assert err.value.field == "machine"


def test_full_machine_spills_to_another_machine_then_to_the_next_day(clinic):
    for name in ("Linac 2", "Linac 3"):
        Machine.objects.filter(name=name).update(active=False)
    Machine.objects.filter(name="Linac 1").update(opens_at=dt.time(8, 0), closes_at=dt.time(8, 30))  # two 15-min slots
    monday = dt.date(2027, 3, 1)
    b1 = book_course(make_course(new_patient(1), fractions=2), monday, allow_past=True)
    b2 = book_course(make_course(new_patient(2), fractions=2), monday, allow_past=True)
    b3 = book_course(make_course(new_patient(3), fractions=2), monday, allow_past=True)
    assert days(b1.fractions) == days(b2.fractions) == [monday, dt.date(2027, 3, 2)]
    assert {timezone.localtime(f.starts_at).time() for f in b1.fractions + b2.fractions} == {dt.time(8, 0), dt.time(8, 15)}
    # The machine is full on Monday and Tuesday: the third course starts Wednesday.
    assert days(b3.fractions) == [dt.date(2027, 3, 3), dt.date(2027, 3, 4)]
    Machine.objects.filter(name="Linac 2").update(active=True)
    b4 = book_course(make_course(new_patient(4), fractions=1), monday, allow_past=True)
    assert b4.fractions[0].machine.name == "Linac 2" and days(b4.fractions) == [monday]


def test_appointments_never_overlap_on_a_machine(clinic):
    monday = dt.date(2027, 3, 1)
    bookings = [book_course(make_course(new_patient(i), fractions=5, fraction_minutes=20), monday, preferred_time=dt.time(10, 0), allow_past=True) for i in range(6)]
    fractions = [f for b in bookings for f in b.fractions]
    by_machine = {}
    for f in fractions:
        by_machine.setdefault(f.machine_id, []).append((f.starts_at, f.ends_at))
    for intervals in by_machine.values():
        intervals.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(intervals, intervals[1:]))
    with pytest.raises(IntegrityError), transaction.atomic():
        slot = MachineSlot.objects.first()
        MachineSlot.objects.create(machine=slot.machine, starts_at=slot.starts_at, fraction=fractions[-1])


def test_bid_course_gets_two_fractions_six_hours_apart(clinic, patient):
    course = make_course(patient, fractions=6, dose=Decimal("1.50"), twice_daily=True)
    booking = book_course(course, dt.date(2027, 3, 1), preferred_time=dt.time(8, 0), allow_past=True)
    per_day = {}
    for f in booking.fractions:
        per_day.setdefault(local_day(f.starts_at), []).append(f.starts_at)
    assert list(per_day) == [dt.date(2027, 3, 1), dt.date(2027, 3, 2), dt.date(2027, 3, 3)]
    for first, second in per_day.values():
        assert second - first >= dt.timedelta(hours=6)


def test_missed_fraction_is_made_up_at_the_end(clinic, patient):
    course = make_course(patient, fractions=5)
    booking = book_course(course, dt.date(2027, 3, 1), allow_past=True)  # Mon..Fri
    missed = mark_missed(booking.fractions[1], reason="Patient unwell")
    assert missed.fraction.status == "missed"
    assert missed.makeup.is_makeup and missed.makeup.number == 5
    assert missed.new_last_day == dt.date(2027, 3, 8)  # next Monday
    live = list(course.fractions.filter(status__in=["scheduled", "delivered"]).order_by("starts_at"))
    assert [f.number for f in live] == [1, 2, 3, 4, 5]
    assert days(live) == [dt.date(2027, 3, d) for d in (1, 3, 4, 5, 8)]
    tt = treatment_time(course)
    assert tt.overall_treatment_days == 8 and tt.booked_end_date == dt.date(2027, 3, 5)
    assert tt.prolongation_days == 1
    assert tt.interruptions == [dt.date(2027, 3, 2)]
    assert tt.missed[0]["date"] == dt.date(2027, 3, 2)
    with pytest.raises(RuleViolation):
        mark_missed(missed.fraction)


def test_downtime_moves_fraction_to_another_machine_the_same_day(clinic, patient):
    course = make_course(patient, fractions=3)
    booking = book_course(course, dt.date(2027, 3, 1), preferred_time=dt.time(9, 0), allow_past=True)
    result = add_downtime(clinic["linac1"], local_datetime(dt.date(2027, 3, 2), dt.time(8, 0)), local_datetime(dt.date(2027, 3, 2), dt.time(12, 0)), "Magnetron")
    assert len(result.moves) == 1
    move = result.moves[0]
    assert move.same_day and move.to_machine.name == "Linac 2"
    assert timezone.localtime(move.to_start).time() == dt.time(9, 0)
    assert days(course.fractions.order_by("starts_at")) == days(booking.fractions)


def test_downtime_with_no_capable_machine_moves_the_course_end(clinic, patient):
    Machine.objects.filter(name="Linac 2").update(active=False)
    course = make_course(patient, fractions=3)
    book_course(course, dt.date(2027, 3, 1), preferred_time=dt.time(9, 0), allow_past=True)
    day = dt.date(2027, 3, 2)
    result = add_downtime(clinic["linac1"], local_datetime(day, dt.time(7, 0)), local_datetime(day, dt.time(19, 0)), "Service")
    assert len(result.moves) == 1 and not result.moves[0].same_day
    live = list(course.fractions.filter(status="scheduled").order_by("starts_at"))
    assert days(live) == [dt.date(2027, 3, 1), dt.date(2027, 3, 3), dt.date(2027, 3, 4)]
    assert [f.number for f in live] == [1, 2, 3]
    assert result.as_dict()["moved_to_later_day"] == 1


def test_moving_a_fraction_onto_a_taken_slot_is_a_conflict(clinic, patient):
    a = book_course(make_course(patient, fractions=1), dt.date(2027, 3, 1), preferred_time=dt.time(9, 0), allow_past=True)
    b = book_course(make_course(new_patient(9), fractions=1), dt.date(2027, 3, 1), preferred_time=dt.time(10, 0), allow_past=True)
    with pytest.raises(ConflictError):
        move_fraction(b.fractions[0], a.fractions[0].starts_at, machine=a.fractions[0].machine)
    assert Fraction.objects.get(pk=b.fractions[0].pk).starts_at == local_datetime(dt.date(2027, 3, 1), dt.time(10, 0))


def test_booking_twice_is_refused_and_changes_nothing(clinic, course):
    book_course(course, dt.date(2027, 3, 1), allow_past=True)
    with pytest.raises(ConflictError):
        book_course(course, dt.date(2027, 4, 1), allow_past=True)
    assert course.fractions.count() == 25


def test_past_start_date_is_rejected(clinic, course):
    with pytest.raises(RuleViolation) as err:
        book_course(course, timezone.localdate() - dt.timedelta(days=3))
    assert err.value.field == "start_date"
    assert course.fractions.count() == 0


@pytest.mark.django_db(transaction=True)
def test_racing_schedulers_never_both_win_a_slot(clinic):
    """Two threads insert the same machine slot at the same instant: the database lets exactly one win."""
    machine = Machine.objects.get(name="Linac 1")
    courses = [make_course(new_patient(i), fractions=1) for i in range(2)]
    start = local_datetime(dt.date(2027, 3, 1), dt.time(9, 0))
    fractions = [Fraction.objects.create(course=c, number=1, starts_at=start, machine=machine) for c in courses]
    barrier = threading.Barrier(2)
    outcomes = []

    def claim(fraction):
        try:
            barrier.wait(timeout=10)
            with transaction.atomic():
                MachineSlot.objects.create(machine=machine, starts_at=start, fraction=fraction)
            outcomes.append("won")
        except IntegrityError:
            outcomes.append("lost")
        except Exception as exc:  # SQLite: the second writer may time out on the lock instead
            outcomes.append(f"lost:{type(exc).__name__}")
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f,)) for f in fractions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close_old_connections()
    assert outcomes.count("won") == 1, outcomes
    assert MachineSlot.objects.filter(machine=machine, starts_at=start).count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_course_bookings_do_not_overlap(clinic):
    """Four schedulers book four courses at the same preferred time at once: every booking is whole or refused."""
    Machine.objects.exclude(name="Linac 1").update(active=False)
    courses = [make_course(new_patient(i), fractions=5) for i in range(4)]
    barrier = threading.Barrier(4)
    results = []

    def book(course):
        try:
            barrier.wait(timeout=10)
            results.append(book_course(course, dt.date(2027, 3, 1), preferred_time=dt.time(9, 0), allow_past=True))
        except ConflictError as exc:
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=book, args=(c,)) for c in courses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    close_old_connections()
    booked = [r for r in results if not isinstance(r, Exception)]
    assert booked, results
    starts = list(Fraction.objects.filter(machine__name="Linac 1").values_list("starts_at", flat=True))
    assert len(starts) == len(set(starts)) == 5 * len(booked)
    for r in results:
        if isinstance(r, ConflictError):
            assert r.code == "slot_taken"
    for c in courses:
        assert c.fractions.count() in (0, 5)
