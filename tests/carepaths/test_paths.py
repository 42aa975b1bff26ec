"""Care paths: instantiation from a template, chaining, automatic completion from pathway events, due dates."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied

from tests.carepaths.conftest import MONDAY, restart, task
from tests.carepaths.conftest import make_course
from tests.conftest import make_user
from workflow.carepaths import services as carepaths
from workflow.pathway.delivery import clear_for_treatment, deliver_fraction, stop_course
from workflow.errors import RuleViolation
from workflow.models import CarePath, Closure, TaskStatus
from workflow.pathway.scheduling import book_course, book_simulation, complete_simulation, local_datetime

pytestmark = pytest.mark.django_db
LATER = local_datetime(dt.date(2027, 6, 1), dt.time(12))


def test_course_creation_instantiates_its_path_from_the_template(templates, patient, diagnosis):
    course = make_course(patient, diagnosis)
    path = CarePath.objects.get(course=course)
    template = templates["curative-imrt-vmat"]
    assert path.template == template and path.template_code == "curative-imrt-vmat" and path.template_version == template.version
    codes = [t.code for t in path.tasks.order_by("order")]
    assert codes == [s.code for s in template.steps.order_by("order")] == [s["code"] for s in path.snapshot]
    assert codes[:7] == ["consult", "simulation", "contouring", "planning", "physics_check", "plan_approval", "first_fraction"]
    statuses = dict(path.tasks.values_list("code", "status"))
    assert statuses["consult"] == "open" and all(s == "pending" for c, s in statuses.items() if c != "consult")
    physics = path.tasks.get(code="physics_check")
    assert physics.role == "physicist" and physics.blocks_treatment
    assert carepaths.instantiate_path(course) == path and CarePath.objects.filter(course=course).count() == 1  # idempotent


@pytest.mark.parametrize(
    "intent,technique,fractions,dose,expected",
    [
        ("palliative", "3DCRT", 5, "4.00", "palliative"),
        ("curative", "SBRT", 5, "10.00", "sbrt"),
        ("palliative", "SBRT", 1, "8.00", "sbrt"),
        ("curative", "IORT_E", 1, "12.00", "iort"),
        ("reirradiation", "SBRT", 5, "6.00", "reirradiation"),
        ("neoadjuvant", "VMAT", 25, "2.00", "curative-imrt-vmat"),
    ],
)
def test_template_is_chosen_by_intent_and_technique(templates, patient, intent, technique, fractions, dose, expected):
    course = make_course(patient, intent=intent, technique=technique, fractions=fractions, dose=Decimal(dose))
    assert course.carepath.template_code == expected


def test_reirradiation_adds_a_blocking_prior_dose_review(templates, patient):
    course = make_course(patient, intent="reirradiation", technique="VMAT", fractions=10, dose=Decimal("3.00"))
    review = course.carepath.tasks.get(code="prior_dose_review")
    assert review.role == "physicist" and review.blocks_treatment and review.after == ["simulation"]
    assert course.carepath.tasks.get(code="planning").after == ["contouring", "prior_dose_review"]


def test_completing_a_task_opens_the_next_with_its_due_date(path_course, users):
    consult = task(path_course, "consult")
    assert (consult.opened_on, consult.due_date) == (MONDAY, dt.date(2027, 3, 3))  # 2 working days
    carepaths.complete_task(consult, users["oncologist"], on=dt.date(2027, 3, 2))
    sim = task(path_course, "simulation")
    assert sim.status == "open" and sim.opened_on == dt.date(2027, 3, 2)
    assert sim.due_date == dt.date(2027, 3, 9)  # 5 working days after Tuesday: Wed..Fri, Mon, Tue
    assert task(path_course, "contouring").status == "pending"
    consult.refresh_from_db()
    assert consult.status == "done" and consult.completed_by == users["oncologist"] and consult.completed_on == dt.date(2027, 3, 2)


def test_only_the_steps_role_completes_it(path_course, users):
    consult = task(path_course, "consult")
    for role in ("therapist", "physicist", "dosimetrist", "scheduler", "researcher"):
        with pytest.raises(PermissionDenied):
            carepaths.complete_task(consult, users[role])
    admin = make_user("boss", is_superuser=True, is_staff=True)
    with pytest.raises(PermissionDenied):  # a superuser is not an oncologist
        carepaths.complete_task(consult, admin)
    assert task(path_course, "consult").status == "open"
    carepaths.complete_task(consult, users["oncologist"], on=MONDAY)
    with pytest.raises(RuleViolation) as err:  # a pending step cannot be completed by hand
        carepaths.complete_task(task(path_course, "contouring"), users["oncologist"])
    assert err.value.code == "not_open"


def test_events_complete_tasks_automatically(path_course, users, clinic):
    onc, therapist = users["oncologist"], users["therapist"]
    carepaths.complete_task(task(path_course, "consult"), onc, on=MONDAY)
    visit = book_simulation(path_course, local_datetime(dt.date(2027, 3, 3), dt.time(9)), clinic["ct"], user=users["scheduler"])
    assert task(path_course, "simulation").status == "open"
    complete_simulation(visit, user=therapist)
    sim = task(path_course, "simulation")
    assert sim.status == "done" and sim.completed_by_event == "simulation_completed" and sim.completed_on == dt.date(2027, 3, 3)
    contouring = task(path_course, "contouring")
    assert contouring.status == "open" and contouring.opened_on == dt.date(2027, 3, 3) and contouring.due_date == dt.date(2027, 3, 5)
    carepaths.complete_task(contouring, onc, on=dt.date(2027, 3, 4))
    carepaths.complete_task(task(path_course, "planning"), users["dosimetrist"], on=dt.date(2027, 3, 5))
    carepaths.complete_task(task(path_course, "physics_check"), users["physicist"], on=dt.date(2027, 3, 8))
    approval = task(path_course, "plan_approval")
    assert approval.status == "open" and approval.due_date == dt.date(2027, 3, 15)  # 8 working days after the simulation
    clear_for_treatment(path_course, user=onc, now=local_datetime(dt.date(2027, 3, 9), dt.time(16)))
    approval = task(path_course, "plan_approval")
    assert approval.status == "done" and approval.completed_on == dt.date(2027, 3, 9) and approval.completed_by == onc
    booking = book_course(path_course, dt.date(2027, 3, 10), allow_past=True)
    assert task(path_course, "first_fraction").due_date == dt.date(2027, 3, 17)  # 10 working days after sim
    for fraction in booking.fractions:
        deliver_fraction(fraction, user=therapist, now=LATER)
        if fraction.number == 1:
            first = task(path_course, "first_fraction")
            assert first.status == "done" and first.completed_on == dt.date(2027, 3, 10)
            assert task(path_course, "weekly_review").status == "open" and task(path_course, "last_fraction").status == "open"
    last = task(path_course, "last_fraction")
    assert last.status == "done" and last.completed_by_event == "course_completed" and last.completed_on == dt.date(2027, 3, 16)
    eot = task(path_course, "eot_summary")
    assert eot.status == "open" and eot.role == "oncologist" and eot.due_date == dt.date(2027, 3, 23)


def test_stopping_the_course_stops_its_path(path_course, users):
    stop_course(path_course, reason="patient_choice", user=users["oncologist"])
    path = CarePath.objects.get(course=path_course)
    assert path.status == "stopped"
    assert set(path.tasks.values_list("status", flat=True)) == {"cancelled"}


def test_due_dates_skip_weekends_holidays_and_closures(templates, patient, users):
    # Thursday 24 December 2026; Friday 25 is Christmas (US federal holiday); Monday 28 is a clinic closure.
    Closure.objects.create(date=dt.date(2026, 12, 28), reason="Staff training")
    course = make_course(patient)
    path = restart(course, dt.date(2026, 12, 24))
    consult = path.tasks.get(code="consult")
    assert consult.due_date == dt.date(2026, 12, 30)  # 2 working days: Tue 29, Wed 30
    # A calendar-day due date landing on a closed day moves to the next open day.
    follow = path.tasks.get(code="first_followup")
    follow.due_unit, follow.due_days = "calendar", 3
    cal = carepaths.ClinicCalendar()
    assert carepaths.due_date(follow, dt.date(2026, 12, 23), {}, cal) == dt.date(2026, 12, 29)  # Sat 26 -> Tue 29
    # Overdue is counted in working days: due Wed 23 Dec, today Tue 29 Dec: 2 working days late, not 6 calendar days.
    consult.due_date = dt.date(2026, 12, 23)
    carepaths.annotate_urgency(consult, dt.date(2026, 12, 29), cal)
    assert consult.urgency == "overdue" and consult.days_late == 2  # Thu 24 and Tue 29 are open days
    carepaths.annotate_urgency(consult, dt.date(2026, 12, 23), cal)
    assert consult.urgency == "due_today" and consult.days_late == 0


def test_anchor_due_date_counts_from_the_anchor_step(templates, patient, users):
    course = make_course(patient, intent="palliative", technique="3DCRT", fractions=5, dose=Decimal("4.00"))
    # Friday 2 July 2027 simulation; Monday 5 July is Independence Day (observed): start due within 2 working days.
    restart(course, dt.date(2027, 7, 1), {"consult": dt.date(2027, 7, 1), "simulation": dt.date(2027, 7, 2), "contouring": dt.date(2027, 7, 2)},
            users={"oncologist": users["oncologist"], "therapist": users["therapist"]})
    planning = task(course, "planning")
    assert planning.status == "open" and planning.due_date == dt.date(2027, 7, 6)  # 1 working day after Fri: Tue 6
    assert task(course, "simulation").due_date == dt.date(2027, 7, 2)


@pytest.mark.parametrize("status", ["completed", "stopped"])
def test_historical_courses_get_no_care_path(templates, patient, users, status):
    """A course entered already completed or stopped (history, a registry) gets no path and no tasks; a course
    still to be treated does."""
    extra = {"completed_on": dt.date(2020, 3, 1)} if status == "completed" else {"termination_reason": "toxicity"}
    historical = make_course(patient, status=status, **extra)
    assert not CarePath.objects.filter(course=historical).exists()
    assert carepaths.instantiate_path(historical, user=users["oncologist"]) is None
    assert carepaths.worklist(role="oncologist", today=dt.date(2027, 3, 1))["overdue"] == []
    assert make_course(patient).carepath.tasks.get(code="consult").status == "open"
