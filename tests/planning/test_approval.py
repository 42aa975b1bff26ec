"""Review and approval: who may approve, frozen plans, versions, the delivery gate, delivered-dose accumulation."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from planning import services
from planning.models import Plan, PlanStatus
from tests.conftest import make_course
from workflow.pathway.delivery import clear_for_treatment, deliver_fraction, delivery_blockers
from workflow.errors import ConflictError, RuleViolation
from workflow.pathway.scheduling import book_course, local_datetime

from .conftest import make_done_plan

LATER = local_datetime(dt.date(2027, 6, 1), dt.time(12, 0))


@pytest.fixture
def booked(clinic, cshape_course):
    course = make_course(cshape_course.patient, cshape_course.diagnosis, fractions=5, dose=Decimal("4.00"), treated_site="Spine T8")
    booking = book_course(course, dt.date(2027, 3, 1), allow_past=True)
    return course, booking.fractions


def test_only_oncologists_approve(booked, users):
    course, _ = booked
    plan = make_done_plan(course, users["physicist"])
    for role in ("physicist", "dosimetrist", "therapist", "scheduler", "researcher"):
        with pytest.raises(PermissionDenied):
            services.approve_plan(plan, user=users[role])
        with pytest.raises(PermissionDenied):
            services.reject_plan(plan, user=users[role], comment="no")
    plan = services.approve_plan(plan, user=users["oncologist"], comment="Cord sparing fine.")
    assert plan.status == PlanStatus.APPROVED and plan.approved_by == users["oncologist"] and plan.approved_at
    assert plan.review_comment == "Cord sparing fine."
    course.refresh_from_db()
    assert course.plan_approved and course.status == "approved" and course.plan_approved_by == users["oncologist"]
    assert plan.history.first().history_user == users["oncologist"]


def test_only_finished_plans_can_be_reviewed_and_rejection_needs_a_comment(booked, users):
    course, _ = booked
    draft = services.create_plan(course, user=users["physicist"], grid_mm=8.0)
    with pytest.raises(ConflictError):
        services.approve_plan(draft, user=users["oncologist"])
    plan = make_done_plan(course, users["physicist"])
    with pytest.raises(ValidationError) as e:
        services.reject_plan(plan, user=users["oncologist"], comment="  ")
    assert "comment" in e.value.error_dict
    plan = services.reject_plan(plan, user=users["oncologist"], comment="Core dose too high; replan.")
    assert plan.status == PlanStatus.REJECTED and plan.reviewed_by == users["oncologist"]
    with pytest.raises(ConflictError):
        services.approve_plan(plan, user=users["oncologist"])
    assert not Plan.objects.get(pk=plan.pk).approved_at


def test_approved_plan_is_frozen_and_a_change_makes_a_new_version(booked, users):
    course, _ = booked
    plan = services.approve_plan(make_done_plan(course, users["physicist"]), user=users["oncologist"])
    plan.goals = plan.goals + [{"structure": "Core", "metric": "Dmax", "comparison": "<=", "value": 10.0, "priority": 1}]
    with pytest.raises(RuleViolation) as e:
        plan.save()
    assert e.value.code == "plan_frozen" and e.value.field == "goals"
    with pytest.raises(RuleViolation):
        services.update_plan(Plan.objects.get(pk=plan.pk), user=users["physicist"], max_iterations=10)
    with pytest.raises(ConflictError):
        services.start_plan(Plan.objects.get(pk=plan.pk), user=users["physicist"])
    v2 = services.new_version(Plan.objects.get(pk=plan.pk), user=users["physicist"], gantry_angles=[0, 90, 180, 270])
    assert v2.version == 2 and v2.parent_id == plan.pk and v2.status == PlanStatus.DRAFT
    assert v2.goals == Plan.objects.get(pk=plan.pk).goals and v2.gantry_angles == [0.0, 90.0, 180.0, 270.0]
    # approving version 2 supersedes version 1
    Plan.objects.filter(pk=v2.pk).update(status=PlanStatus.DONE)
    services.approve_plan(v2, user=users["oncologist"])
    v1 = Plan.objects.get(pk=plan.pk)
    assert v1.status == PlanStatus.SUPERSEDED and v1.superseded_at
    assert services.current_plan(course).pk == v2.pk
    # a superseded plan stays frozen; voiding is still possible (clinical records are never deleted)
    v1.beamlet_mm = 2.0
    with pytest.raises(RuleViolation):
        v1.save()
    Plan.objects.get(pk=plan.pk).void(users["physicist"], "test")


def test_delivery_gate_needs_an_approved_plan(booked, users):
    course, fractions = booked
    therapist, oncologist = users["therapist"], users["oncologist"]
    plan = make_done_plan(course, users["physicist"])
    clear_for_treatment(course, user=oncologist)  # cleared by hand, but the course has an unapproved plan
    course.refresh_from_db()
    assert any("No approved treatment plan" in r for r in delivery_blockers(course))
    with pytest.raises(RuleViolation) as e:
        deliver_fraction(fractions[0], user=therapist, now=LATER)
    assert e.value.code == "delivery_blocked"
    services.approve_plan(plan, user=oncologist)
    course.refresh_from_db()
    assert delivery_blockers(course) == []
    assert deliver_fraction(fractions[0], user=therapist, now=LATER).status == "delivered"
    # a new version being prepared does not interrupt treatment on the approved plan
    services.new_version(Plan.objects.get(pk=plan.pk), user=users["physicist"], max_iterations=20)
    deliver_fraction(fractions[1], user=therapist, now=LATER)


def test_course_without_plans_is_not_gated(clinic, patient, users):
    course = make_course(patient, fractions=2, dose=Decimal("4.00"))
    fractions = book_course(course, dt.date(2027, 3, 1), allow_past=True).fractions
    clear_for_treatment(course, user=users["oncologist"])
    assert deliver_fraction(fractions[0], user=users["therapist"], now=LATER).status == "delivered"


def test_delivered_dose_accumulates_per_fraction(booked, users):
    course, fractions = booked
    plan = services.approve_plan(make_done_plan(course, users["physicist"], core_gy=15.0), user=users["oncologist"])
    summary = services.course_dose(course)
    assert summary["plan"].pk == plan.pk and summary["delivered_fractions"] == 0
    core = next(s for s in summary["structures"] if s["name"] == "Core")
    assert core["planned"]["Dmean"] == pytest.approx(15.0) and core["delivered"] == {}
    deliver_fraction(fractions[0], user=users["therapist"], now=LATER)
    deliver_fraction(fractions[1], user=users["therapist"], now=LATER, dose_gy=Decimal("2.00"))  # half a fraction
    summary = services.course_dose(course)
    core = next(s for s in summary["structures"] if s["name"] == "Core")
    ptv = next(s for s in summary["structures"] if s["name"] == "PTV")
    assert summary["delivered_fractions"] == 2
    assert core["delivered"]["Dmean"] == pytest.approx(15.0 / 5 * 1.5)
    assert ptv["delivered"]["D95"] == pytest.approx(20.0 / 5 * 1.5)


def _physics_check(course):
    return course.carepath.tasks.get(code="physics_check")


def test_approval_is_refused_while_the_blocking_physics_check_is_open(clinic, cshape_course, users, client):
    """The care path's physics plan check blocks approval: 409 naming the step, the page says so, nothing changes."""
    from workflow.carepaths import services as carepaths

    course = make_course(cshape_course.patient, cshape_course.diagnosis, fractions=5, dose=Decimal("4.00"), checks_done=False)
    plan = make_done_plan(course, users["physicist"])
    with pytest.raises(ConflictError) as err:
        services.approve_plan(plan, user=users["oncologist"])
    assert err.value.code == "approval_blocked" and "Physics plan check (physicist" in str(err.value)
    client.force_login(users["oncologist"])
    r = client.post(f"/api/planning/plans/{plan.pk}/approve/", {"comment": "ok"}, content_type="application/json")
    assert r.status_code == 409 and r.json()["code"] == "approval_blocked" and "Physics plan check" in r.json()["detail"]
    html = client.get(f"/planning/plans/{plan.pk}/").content.decode()
    assert 'id="approval-blocked"' in html and "Physics plan check" in html
    plan.refresh_from_db()
    course.refresh_from_db()
    assert plan.status == PlanStatus.DONE and not course.plan_approved and course.carepath.tasks.get(code="plan_approval").status != "done"
    carepaths.skip(_physics_check(course), user=users["physicist"], reason="Independent check by the vendor's software")
    assert 'id="approval-blocked"' not in client.get(f"/planning/plans/{plan.pk}/").content.decode()
    assert services.approve_plan(plan, user=users["oncologist"]).status == PlanStatus.APPROVED


def test_progress_text_names_the_iteration_once():
    plan = Plan(status=PlanStatus.RUNNING, progress_message="Optimising: iteration 63", iteration=63, objective_value=1.23456)
    assert services.progress_text(plan) == "Running · Optimising: iteration 63 · objective 1.235"
    plan.progress_message = "Starting"
    assert services.progress_text(plan) == "Running · Starting · iteration 63 · objective 1.235"
