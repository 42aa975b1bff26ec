"""Weekly on-treatment reviews: due every 5 delivered fractions; missed fractions push the due date."""

import datetime as dt
from decimal import Decimal

import pytest

from tests.conftest import make_course
from tests.toxicity.conftest import LATER, START
from workflow.toxicity import services as tox
from workflow.pathway.delivery import clear_for_treatment, deliver_fraction
from workflow.errors import ConflictError, RuleViolation
from workflow.pathway.scheduling import book_course, mark_missed

pytestmark = pytest.mark.django_db


def deliver(course, n, user):
    for f in list(course.fractions.filter(status="scheduled").order_by("number"))[:n]:
        deliver_fraction(f, user=user, now=LATER)


def test_reviews_fall_on_every_fifth_fraction(treated):
    ms = tox.review_milestones(treated)
    assert [(m.number, m.due_fraction, m.due_date) for m in ms] == [(1, 5, dt.date(2027, 3, 5)), (2, 10, dt.date(2027, 3, 12))]


def test_missed_fractions_push_the_review_due_date(treated, therapist):
    deliver(treated, 2, therapist)
    mark_missed(treated.fractions.get(number=3, status="scheduled"), user=therapist, reason="Unwell")
    ms = tox.review_milestones(treated)
    # fraction 5 is now the booking of Monday 8 March (the Wednesday slot was missed); review 2 the make-up day
    assert ms[0].due_date == dt.date(2027, 3, 8) and not ms[0].fraction_delivered
    assert ms[1].due_date == dt.date(2027, 3, 15)
    mark_missed(treated.fractions.get(number=3, status="scheduled"), user=therapist, reason="Transport")
    assert tox.review_milestones(treated)[0].due_date == dt.date(2027, 3, 9)


def test_worklist_shows_due_and_overdue_with_latest_toxicities(treated, oncologist, therapist):
    assert tox.reviews_due(today=dt.date(2027, 3, 4)) == []
    assert [(r.number, r.status) for r in tox.reviews_due(today=dt.date(2027, 3, 5))] == [(1, "due")]  # booked today
    assert tox.reviews_due(today=dt.date(2027, 3, 8)) == []  # fraction 5 not given yet: waits for it
    deliver(treated, 5, therapist)
    treated.refresh_from_db()
    ev = tox.log_event(treated, term="Fatigue", grade=1, onset_date=dt.date(2027, 3, 4), user=oncologist, today=dt.date(2027, 3, 5))
    rows = tox.reviews_due(today=dt.date(2027, 3, 5))
    assert [(r.course, r.number, r.status) for r in rows] == [(treated, 1, "due")]
    assert rows[0].latest_toxicities == [ev]
    rows = tox.reviews_due(today=dt.date(2027, 3, 9))
    assert [(r.number, r.status, r.days_overdue) for r in rows] == [(1, "overdue", 4)]
    assert tox.reviews_due(today=dt.date(2027, 3, 9), user=oncologist, mine=True)[0].course == treated
    assert tox.reviews_due(today=dt.date(2027, 3, 9), user=therapist, mine=True) == []
    with pytest.raises(RuleViolation) as err:
        tox.complete_review(treated, number=1, findings="", user=oncologist, review_date=dt.date(2027, 3, 9))
    assert err.value.field == "findings"
    with pytest.raises(RuleViolation) as err:
        tox.complete_review(treated, number=2, findings="Fine", user=oncologist, review_date=dt.date(2027, 3, 9))
    assert "not due until 12 Mar 2027" in str(err.value)
    review = tox.complete_review(
        treated, number=1, findings="Grade 1 fatigue; skin intact; weight stable", weight_kg=Decimal("71.5"), user=oncologist,
        review_date=dt.date(2027, 3, 9),
    )
    assert (review.due_fraction, review.due_date, review.completed_by) == (5, dt.date(2027, 3, 5), oncologist)
    assert tox.reviews_due(today=dt.date(2027, 3, 9)) == []
    with pytest.raises(ConflictError):
        tox.complete_review(treated, number=1, findings="again", user=oncologist, review_date=dt.date(2027, 3, 9))
    assert [m.status(dt.date(2027, 3, 9)) for m in tox.review_milestones(treated)] == ["done", "upcoming"]


def test_last_review_stays_on_the_worklist_after_completion(treated, oncologist, therapist):
    deliver(treated, 10, therapist)
    treated.refresh_from_db()
    assert treated.status == "completed"
    rows = tox.reviews_due(today=dt.date(2027, 3, 15))
    assert [(r.number, r.status) for r in rows] == [(1, "overdue"), (2, "overdue")]
    assert tox.reviews_due(today=dt.date(2027, 4, 30)) == []


def test_stopped_course_only_keeps_reviews_of_delivered_fractions(clinic, patient, oncologist, therapist):
    course = make_course(patient, fractions=15)
    book_course(course, START, allow_past=True)
    clear_for_treatment(course, user=oncologist)
    deliver(course, 6, therapist)
    from workflow.pathway.delivery import stop_course

    stop_course(course, reason="toxicity", user=oncologist, on_date=dt.date(2027, 3, 9))
    rows = tox.reviews_due(today=dt.date(2027, 3, 10))
    assert [(r.number, r.due_date) for r in rows] == [(1, dt.date(2027, 3, 5))]
