"""Toxicity logging rules, worst-grade derivation, holds gating delivery, acute/late split, the data-out frame."""

import datetime as dt

import pytest

from outcomes import toxicity_analysis as analysis
from tests.toxicity.conftest import LATER, START
from workflow.toxicity import services as tox
from workflow.pathway.delivery import deliver_fraction, delivery_blockers
from workflow.errors import ConflictError, RuleViolation
from workflow.models import CourseHold, ToxicityEvent

pytestmark = pytest.mark.django_db
TODAY = dt.date(2027, 9, 1)


def deliver(course, n, user):
    for f in list(course.fractions.filter(status="scheduled").order_by("number"))[:n]:
        deliver_fraction(f, user=user, now=LATER)


def log(course, user, **kw):
    kw.setdefault("onset_date", START + dt.timedelta(days=3))
    kw.setdefault("today", TODAY)
    return tox.log_event(course, user=user, **kw)


def test_log_event_stores_canonical_term_and_who(treated, oncologist):
    ev = log(treated, oncologist, term="fatigue", grade=1, attribution="probable")
    assert (ev.term, ev.meddra_code, ev.soc) == ("Fatigue", "10016256", "General disorders and administration site conditions")
    assert ev.recorded_by == oncologist and ev.history.first().history_user == oncologist
    assert (ev.worst_grade, ev.worst_grade_date) == (1, ev.onset_date)
    assert not CourseHold.objects.exists()


@pytest.mark.parametrize("term,grade", [("Nausea", 4), ("Alopecia", 3), ("Acute kidney injury", 2)])
def test_grade_not_allowed_by_the_term_is_rejected(treated, oncologist, term, grade):
    with pytest.raises(RuleViolation) as err:
        log(treated, oncologist, term=term, grade=grade)
    assert err.value.field == "grade" and f"not allowed for {term}" in str(err.value)
    assert not ToxicityEvent.objects.exists()


def test_onset_before_course_start_needs_baseline(treated, oncologist):
    before = START - dt.timedelta(days=10)
    with pytest.raises(RuleViolation) as err:
        log(treated, oncologist, term="Dyspnea", grade=1, onset_date=before)
    assert err.value.field == "onset_date" and "baseline" in str(err.value)
    ev = log(treated, oncologist, term="Dyspnea", grade=1, onset_date=before, baseline=True)
    assert ev.baseline and tox.event_phase(ev) == "baseline"
    with pytest.raises(RuleViolation) as err:
        log(treated, oncologist, term="Cough", grade=1, onset_date=START, baseline=True)
    assert err.value.field == "baseline"


def test_dates_and_choices_are_checked(treated, oncologist):
    with pytest.raises(RuleViolation) as err:
        log(treated, oncologist, term="Cough", grade=1, onset_date=TODAY + dt.timedelta(days=1))
    assert err.value.field == "onset_date"
    with pytest.raises(RuleViolation) as err:
        log(treated, oncologist, term="Cough", grade=1, resolved_date=START)
    assert err.value.field == "resolved_date"
    with pytest.raises(RuleViolation) as err:
        log(treated, oncologist, term="Cough", grade=1, attribution="maybe")
    assert err.value.field == "attribution"


def test_grade_history_and_worst_grade_derivation(treated, oncologist):
    ev = log(treated, oncologist, term="Esophagitis", grade=1, onset_date=dt.date(2027, 3, 4))
    ev = tox.regrade(ev, grade=2, on_date=dt.date(2027, 3, 8), user=oncologist, today=TODAY)
    ev = tox.regrade(ev, grade=1, on_date=dt.date(2027, 3, 20), user=oncologist, today=TODAY)
    ev = tox.regrade(ev, grade=2, on_date=dt.date(2027, 3, 25), user=oncologist, today=TODAY)
    history = tox.grade_history(ev)
    assert [(d, g) for d, g, _ in history] == [
        (dt.date(2027, 3, 4), 1), (dt.date(2027, 3, 8), 2), (dt.date(2027, 3, 20), 1), (dt.date(2027, 3, 25), 2)
    ]
    assert tox.derive_worst(history) == (2, dt.date(2027, 3, 8))
    assert (ev.grade, ev.worst_grade, ev.worst_grade_date) == (2, 2, dt.date(2027, 3, 8))
    with pytest.raises(RuleViolation) as err:
        tox.regrade(ev, grade=1, on_date=dt.date(2027, 3, 21), user=oncologist, today=TODAY)
    assert err.value.field == "on_date"
    with pytest.raises(RuleViolation):
        tox.regrade(ev, grade=9, user=oncologist, today=TODAY)
    ev = tox.resolve(ev, resolved_date=dt.date(2027, 4, 10), user=oncologist, today=TODAY)
    assert ev.is_resolved


def test_grade_3_puts_the_course_on_hold_and_a_resume_decision_releases_it(treated, oncologist, therapist):
    deliver(treated, 3, therapist)
    ev = log(treated, oncologist, term="Pneumonitis", grade=3, onset_date=dt.date(2027, 3, 3), serious=True)
    ev.refresh_from_db()
    assert ev.action_taken == "held"
    hold = tox.open_hold(treated)
    assert hold.event == ev and hold.opened_by == oncologist and "Pneumonitis grade 3" in hold.reason
    nxt = treated.fractions.get(number=4, status="scheduled")
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(nxt, user=therapist, now=LATER)
    assert err.value.code == "delivery_blocked" and "Toxicity hold" in str(err.value)
    assert any("Pneumonitis" in r for r in delivery_blockers(treated))
    tox.record_hold_decision(hold, decision="resume", user=oncologist, note="Steroids started; SpO2 stable")
    hold.refresh_from_db()
    assert (hold.decision, hold.decided_by, hold.is_open) == ("resume", oncologist, False)
    assert hold.history.first().history_user == oncologist  # the decision is audited
    deliver_fraction(nxt, user=therapist, now=LATER)
    with pytest.raises(ConflictError):
        tox.record_hold_decision(hold, decision="resume", user=oncologist)


def test_modify_needs_a_note_and_stop_stops_the_course(treated, oncologist, therapist):
    deliver(treated, 2, therapist)
    ev = log(treated, oncologist, term="Esophagitis", grade=3, onset_date=dt.date(2027, 3, 2))
    hold = tox.open_hold(treated)
    with pytest.raises(RuleViolation) as err:
        tox.record_hold_decision(hold, decision="modify", user=oncologist)
    assert err.value.field == "note"
    with pytest.raises(RuleViolation):
        tox.record_hold_decision(hold, decision="pause", user=oncologist)
    tox.record_hold_decision(hold, decision="stop", user=oncologist, note="Grade 3 esophagitis, not recovering", today=dt.date(2027, 3, 4))
    treated.refresh_from_db()
    ev.refresh_from_db()
    assert (treated.status, treated.termination_reason, treated.stopped_on) == ("stopped", "toxicity", dt.date(2027, 3, 4))
    assert ev.action_taken == "stopped"
    assert not treated.fractions.filter(status="scheduled").exists()


def test_one_open_hold_per_course_and_regrade_to_3_raises_it(treated, oncologist):
    ev = log(treated, oncologist, term="Dyspnea", grade=2)
    assert tox.open_hold(treated) is None
    tox.regrade(ev, grade=3, on_date=dt.date(2027, 3, 5), user=oncologist, today=TODAY)
    log(treated, oncologist, term="Pneumonitis", grade=3, onset_date=dt.date(2027, 3, 5))
    assert CourseHold.objects.filter(course=treated).count() == 1
    assert "Dyspnea grade 3" in tox.open_hold(treated).reason and "Pneumonitis grade 3" in tox.open_hold(treated).reason


def test_hold_threshold_is_configurable_per_term(treated, oncologist, settings):
    settings.RADPATH_HOLD_GRADE_BY_TERM = {"dermatitis radiation": 4, "Nausea": 2}
    assert tox.hold_grade("Dermatitis radiation") == 4 and tox.hold_grade("Pneumonitis") == 3
    log(treated, oncologist, term="Dermatitis radiation", grade=3)
    assert tox.open_hold(treated) is None
    log(treated, oncologist, term="Nausea", grade=2)
    assert tox.open_hold(treated) is not None
    settings.RADPATH_HOLD_GRADE = 5
    assert tox.hold_grade("Pneumonitis") == 5


def test_baseline_and_closed_courses_do_not_hold(treated, oncologist, therapist):
    log(treated, oncologist, term="Dyspnea", grade=3, onset_date=START - dt.timedelta(days=5), baseline=True)
    assert tox.open_hold(treated) is None
    deliver(treated, 10, therapist)
    treated.refresh_from_db()
    assert treated.status == "completed"
    log(treated, oncologist, term="Pneumonitis", grade=3, onset_date=dt.date(2027, 5, 20))
    assert tox.open_hold(treated) is None


def test_acute_late_split_and_worst_per_term(treated, oncologist, therapist):
    deliver(treated, 10, therapist)
    treated.refresh_from_db()
    end = treated.completed_on
    assert (tox.course_start(treated), end) == (START, dt.date(2027, 3, 12))
    log(treated, oncologist, term="Pneumonitis", grade=1, onset_date=dt.date(2027, 3, 10))
    log(treated, oncologist, term="Pneumonitis", grade=2, onset_date=end + dt.timedelta(days=90))  # day 90: acute
    late = log(treated, oncologist, term="Pneumonitis", grade=3, onset_date=end + dt.timedelta(days=91))
    assert tox.event_phase(late) == "late"
    worst = tox.worst_grades(treated)
    assert worst[("Pneumonitis", "acute")] == (2, end + dt.timedelta(days=90))
    assert worst[("Pneumonitis", "late")] == (3, end + dt.timedelta(days=91))
    assert tox.phase(dt.date(2027, 3, 5), START, None) == "acute"


def test_toxicity_frame_feeds_the_statistics(treated, oncologist, therapist, patient):
    from tests.conftest import make_course
    from workflow.models import Course

    untreated = make_course(patient, fractions=5)  # nothing booked: not in the cohort
    deliver(treated, 10, therapist)
    log(treated, oncologist, term="Fatigue", grade=1, onset_date=dt.date(2027, 3, 3))
    ev = log(treated, oncologist, term="Fatigue", grade=1, onset_date=dt.date(2027, 3, 8))
    tox.regrade(ev, grade=2, on_date=dt.date(2027, 3, 10), user=oncologist, today=TODAY)
    log(treated, oncologist, term="Pneumonitis", grade=3, onset_date=dt.date(2027, 7, 1))
    frame = analysis.toxicity_frame(Course.objects.filter(pk__in=[treated.pk, untreated.pk]))
    assert len(frame) == 3 and set(frame["course_id"]) == {treated.pk}
    assert sorted(frame["grade"]) == [1, 2, 3]
    assert list(frame.sort_values("onset_date")["phase"]) == ["acute", "acute", "late"]
    courses = frame.attrs["courses"]
    assert list(courses["course_id"]) == [treated.pk]
    assert str(courses["rt_end"].iloc[0].date()) == "2027-03-12"
    assert str(courses["last_followup_date"].iloc[0].date()) == "2027-07-01"
    summary = analysis.toxicity_summary(Course.objects.all())
    worst = summary["worst"]
    assert worst[(worst.term == "Fatigue") & (worst.phase == "acute")]["worst_grade"].item() == 2
    rates = summary["rates"]["any"].set_index("term")
    assert rates.loc["Pneumonitis", "n_grade_ge3"] == 1 and rates.loc["Fatigue", "n_grade_ge3"] == 0
    cif = summary["cumulative_incidence"]
    assert cif.at([200])[0] == pytest.approx(1.0)


def test_frame_uses_recorded_death_as_competing_risk(treated, oncologist, therapist, patient):
    from outcomes.models import Death
    from workflow.models import Course

    deliver(treated, 10, therapist)
    Death.objects.create(patient=patient, date=dt.date(2027, 5, 1))
    frame = analysis.toxicity_frame(Course.objects.filter(pk=treated.pk))
    courses = frame.attrs["courses"]
    assert str(courses["death_date"].iloc[0].date()) == "2027-05-01" and frame.empty
    cif = analysis.toxicity_summary(Course.objects.filter(pk=treated.pk))["cumulative_incidence"]
    assert cif.cif_competing[-1] == pytest.approx(1.0) and cif.cif[-1] == 0
