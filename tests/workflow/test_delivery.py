"""Delivery rules: gating, order, once, derived dose, completion with follow-ups, early stop."""

import datetime as dt
from decimal import Decimal

import pytest

from tests.conftest import make_course
from workflow.pathway import gates
from workflow.pathway.delivery import clear_for_treatment, course_progress, deliver_fraction, stop_course
from workflow.errors import RuleViolation
from workflow.pathway.followup import followup_schedule
from workflow.models import MachineSlot
from workflow.pathway.scheduling import book_course, local_datetime, mark_missed

pytestmark = pytest.mark.django_db
LATER = local_datetime(dt.date(2027, 6, 1), dt.time(12, 0))  # "now" after every fraction of these courses


@pytest.fixture
def booked(clinic, patient, therapist):
    course = make_course(patient, fractions=5, dose=Decimal("4.00"))
    booking = book_course(course, dt.date(2027, 3, 1), allow_past=True)
    return course, booking.fractions


def test_fraction_cannot_be_delivered_before_the_plan_is_approved(booked, therapist, oncologist):
    course, fractions = booked
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(fractions[0], user=therapist, now=LATER)
    assert err.value.code == "delivery_blocked" and "not cleared" in str(err.value)
    assert course.fractions.filter(status="delivered").count() == 0
    clear_for_treatment(course, user=oncologist)
    delivered = deliver_fraction(fractions[0], user=therapist, now=LATER)
    assert delivered.status == "delivered" and delivered.delivered_by == therapist
    assert delivered.delivered_dose_gy == Decimal("4.00")


def test_fractions_are_delivered_in_order_and_once(booked, therapist, oncologist):
    course, fractions = booked
    clear_for_treatment(course, user=oncologist)
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(fractions[1], user=therapist, now=LATER)
    assert err.value.code == "out_of_order"
    deliver_fraction(fractions[0], user=therapist, now=LATER)
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(fractions[0], user=therapist, now=LATER)
    assert err.value.code == "not_scheduled"
    assert course_progress(course).delivered_fractions == 1


def test_future_fraction_is_not_due(booked, therapist, oncologist):
    course, fractions = booked
    clear_for_treatment(course, user=oncologist)
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(fractions[0], user=therapist, now=local_datetime(dt.date(2027, 2, 26), dt.time(9)))
    assert err.value.field == "starts_at"


def test_progress_and_completion_with_a_missed_fraction(booked, therapist, oncologist):
    course, fractions = booked
    clear_for_treatment(course, user=oncologist)
    deliver_fraction(fractions[0], user=therapist, now=LATER)
    missed = mark_missed(fractions[1], user=therapist, reason="Transport")
    live = list(course.fractions.filter(status="scheduled").order_by("number"))
    assert [f.number for f in live] == [2, 3, 4, 5]
    for f in live[:-1]:
        deliver_fraction(f, user=therapist, now=LATER)
    progress = course_progress(course)
    assert (progress.delivered_fractions, progress.remaining_fractions, progress.missed_fractions) == (4, 1, 1)
    assert progress.delivered_dose_gy == Decimal("16.00") and progress.remaining_dose_gy == Decimal("4.00")
    last = deliver_fraction(missed.makeup, user=therapist, now=LATER)
    course.refresh_from_db()
    assert course.status == "completed" and course.completed_on == dt.date(2027, 3, 8)
    assert last.number == 5 and course_progress(course).delivered_dose_gy == Decimal("20.00")
    visits = list(course.followup_visits.order_by("due_date"))
    assert [v.due_date for v in visits] == [d for _, d in followup_schedule(dt.date(2027, 3, 8))]
    assert visits[0].label == "6 weeks" and visits[0].due_date == dt.date(2027, 4, 19)  # 42 days
    assert visits[1].due_date == dt.date(2027, 6, 7)  # 3 months = 91 days


def test_stop_course_cancels_the_remaining_fractions(booked, therapist, oncologist):
    course, fractions = booked
    clear_for_treatment(course, user=oncologist)
    deliver_fraction(fractions[0], user=therapist, now=LATER)
    with pytest.raises(RuleViolation) as err:
        stop_course(course, reason="boredom", user=oncologist)
    assert err.value.field == "reason"
    stop_course(course, reason="toxicity", note="G3 pneumonitis", user=oncologist)
    course.refresh_from_db()
    assert course.status == "stopped" and course.termination_reason == "toxicity"
    assert course.fractions.filter(status="cancelled").count() == 4
    assert not MachineSlot.objects.filter(fraction__course=course).exclude(fraction__status="delivered").exists()
    with pytest.raises(RuleViolation):
        deliver_fraction(fractions[1], user=therapist, now=LATER)


def test_registered_gate_blocks_delivery(booked, therapist, oncologist):
    course, fractions = booked
    clear_for_treatment(course, user=oncologist)

    def on_hold(c):
        return "On hold for review." if c.pk == course.pk else None

    gates.register_gate(on_hold)
    try:
        with pytest.raises(RuleViolation) as err:
            deliver_fraction(fractions[0], user=therapist, now=LATER)
        assert "On hold" in str(err.value)
    finally:
        gates._GATES.remove(on_hold)
    assert deliver_fraction(fractions[0], user=therapist, now=LATER).status == "delivered"


def test_changes_are_audited_with_the_user(booked, therapist, oncologist):
    course, fractions = booked
    clear_for_treatment(course, user=oncologist)
    deliver_fraction(fractions[0], user=therapist, now=LATER)
    history = list(fractions[0].history.order_by("history_date"))
    assert [h.status for h in history] == ["scheduled", "delivered"]
    assert history[-1].history_user == therapist
    delta = history[-1].diff_against(history[0])
    assert {c.field for c in delta.changes} >= {"status", "delivered_by", "delivered_dose_gy"}
    assert course.history.filter(plan_approved=True).order_by("history_date").first().history_user == oncologist


def test_clinical_records_are_never_hard_deleted(booked, oncologist):
    from workflow.clinical import HardDeleteForbidden
    from workflow.models import Course

    course, _ = booked
    with pytest.raises(HardDeleteForbidden):
        course.delete()
    with pytest.raises(HardDeleteForbidden):
        Course.objects.filter(pk=course.pk).delete()
    course.void(user=oncologist, reason="Entered in error")
    assert Course.objects.filter(pk=course.pk).exists()
    assert not Course.objects.active().filter(pk=course.pk).exists()
