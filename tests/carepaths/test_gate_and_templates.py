"""Blocking tasks gate delivery; template edits never touch running paths; hold, skip, reassign are audited."""

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied

from tests.carepaths.conftest import MONDAY, restart, task
from tests.carepaths.conftest import make_course
from workflow.carepaths import services as carepaths
from workflow.pathway.delivery import clear_for_treatment, deliver_fraction
from workflow.errors import RuleViolation
from workflow.models import CarePath, CarePathTemplate, TemplateStep
from workflow.pathway.scheduling import book_course, local_datetime

pytestmark = pytest.mark.django_db
LATER = local_datetime(dt.date(2027, 6, 1), dt.time(12))
UP_TO_PLANNING = {"consult": MONDAY, "simulation": dt.date(2027, 3, 2), "contouring": dt.date(2027, 3, 3), "planning": dt.date(2027, 3, 4)}


@pytest.fixture
def at_physics_check(path_course, users):
    restart(path_course, MONDAY, UP_TO_PLANNING, users)
    assert task(path_course, "physics_check").status == "open"
    booking = book_course(path_course, dt.date(2027, 3, 8), allow_past=True)
    return path_course, booking.fractions


def test_open_blocking_task_keeps_the_first_fraction_from_delivery(at_physics_check, users):
    course, fractions = at_physics_check
    clear_for_treatment(course, user=users["oncologist"])  # approved before the physics check: still blocked
    assert task(course, "plan_approval").status == "done"
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(fractions[0], user=users["therapist"], now=LATER)
    assert err.value.code == "delivery_blocked" and "Physics plan check (physicist)" in str(err.value)
    assert course.fractions.filter(status="delivered").count() == 0
    carepaths.complete_task(task(course, "physics_check"), users["physicist"], on=dt.date(2027, 3, 5))
    assert carepaths.carepath_gate(course) is None
    deliver_fraction(fractions[0], user=users["therapist"], now=LATER)
    assert task(course, "first_fraction").status == "done"


def test_a_held_blocking_task_still_blocks_and_a_skipped_one_does_not(at_physics_check, users):
    course, fractions = at_physics_check
    clear_for_treatment(course, user=users["oncologist"])
    physics = carepaths.hold(task(course, "physics_check"), user=users["physicist"], reason="Waiting for the QA phantom")
    assert physics.status == "on_hold" and "Physics plan check" in carepaths.carepath_gate(course)
    with pytest.raises(RuleViolation):
        carepaths.complete_task(physics, users["physicist"])  # release first
    carepaths.release(physics, user=users["physicist"])
    with pytest.raises(RuleViolation):
        carepaths.skip(physics, user=users["physicist"], reason="  ")  # a reason is required
    carepaths.skip(physics, user=users["physicist"], reason="Checked by the vendor's independent calculation")
    assert carepaths.carepath_gate(course) is None
    deliver_fraction(fractions[0], user=users["therapist"], now=LATER)


@pytest.mark.parametrize("strict", [False, True])
def test_one_rule_a_blocking_step_not_reached_blocks_the_first_fraction_too(templates, patient, users, clinic, settings, strict):
    """A new patient's course, cleared before its path reached the physics check: the first fraction is refused,
    whatever the old strict setting says (the demo's patients, whose check is open, are refused the same way)."""
    settings.CAREPATHS_STRICT_GATE = strict  # no longer read: one rule
    course = make_course(patient, fractions=2, dose=Decimal("5.00"))
    booking = book_course(course, dt.date(2027, 3, 1), allow_past=True)
    clear_for_treatment(course, user=users["oncologist"])
    assert task(course, "physics_check").status == "pending"
    with pytest.raises(RuleViolation) as err:
        deliver_fraction(booking.fractions[0], user=users["therapist"], now=LATER)
    assert err.value.code == "delivery_blocked" and "Physics plan check (physicist, not reached yet)" in str(err.value)
    assert "Plan approval" not in str(err.value)  # done by the clearance
    assert course.fractions.filter(status="delivered").count() == 0


def test_courses_without_a_path_are_not_blocked(templates, patient, users, clinic):
    course = make_course(patient, fractions=2, dose=Decimal("5.00"))
    course.carepath.void(user=users["oncologist"], reason="Entered in error")
    assert carepaths.carepath_gate(course) is None
    booking = book_course(course, dt.date(2027, 3, 1), allow_past=True)
    clear_for_treatment(course, user=users["oncologist"])
    deliver_fraction(booking.fractions[0], user=users["therapist"], now=LATER)


def test_template_edits_do_not_touch_running_paths(templates, patient, users):
    template = templates["curative-imrt-vmat"]
    running = make_course(patient)
    before = list(running.carepath.tasks.order_by("order").values_list("code", "name", "role", "due_days", "blocks_treatment"))
    snapshot = running.carepath.snapshot
    physics = template.steps.get(code="physics_check")
    physics.name, physics.due_days, physics.role = "Physics second check", 4, "dosimetrist"
    physics.save()
    TemplateStep.objects.create(template=template, order=99, code="survivorship", name="Survivorship visit", role="oncologist", after=["first_followup"])
    template.version += 1
    template.save()
    running = CarePath.objects.get(pk=running.carepath.pk)
    assert list(running.tasks.order_by("order").values_list("code", "name", "role", "due_days", "blocks_treatment")) == before
    assert running.snapshot == snapshot and running.template_version == 1
    new = make_course(patient, treated_site="Spine").carepath
    assert new.template_version == 2 and new.tasks.get(code="physics_check").name == "Physics second check"
    assert new.tasks.filter(code="survivorship").exists() and not running.tasks.filter(code="survivorship").exists()


def test_inactive_template_is_not_chosen(templates, patient):
    templates["palliative"].active = False
    templates["palliative"].save()
    course = make_course(patient, intent="palliative", technique="3DCRT", fractions=5, dose=Decimal("4.00"))
    assert course.carepath.template_code == "curative-imrt-vmat"


def test_reassign_hold_and_skip_are_audited_and_need_the_role(path_course, users):
    from tests.conftest import make_user

    consult = task(path_course, "consult")
    with pytest.raises(PermissionDenied):
        carepaths.hold(consult, user=users["therapist"], reason="no")
    second = make_user("dr_two", "oncologist")
    with pytest.raises(RuleViolation):
        carepaths.reassign(consult, user=users["oncologist"], to_user=users["physicist"])  # not an oncologist
    carepaths.reassign(consult, user=users["oncologist"], to_user=second, reason="Covering clinic")
    consult.refresh_from_db()
    assert consult.assignee == second and consult.status_reason == "Covering clinic"
    carepaths.hold(consult, user=users["scheduler"], reason="Patient asked to postpone")  # scheduler manages tasks
    carepaths.release(consult, user=second)
    carepaths.skip(consult, user=second, reason="Seen at the tumour board")
    history = list(consult.history.order_by("history_date").values_list("status", "history_user__username", "status_reason"))
    assert history[-4:] == [
        ("open", "oncologist", "Covering clinic"),
        ("on_hold", "scheduler", "Patient asked to postpone"),
        ("open", "dr_two", ""),
        ("skipped", "dr_two", "Seen at the tumour board"),
    ]
    assert task(path_course, "simulation").status == "open"  # a skipped step lets the next open


def test_default_template_loader_is_idempotent_and_keeps_clinic_edits(templates):
    sbrt = templates["sbrt"]
    sbrt.name = "SBRT (our clinic)"
    sbrt.save()
    assert carepaths.load_default_templates() == []
    sbrt.refresh_from_db()
    assert sbrt.name == "SBRT (our clinic)"
    sbrt.steps.all().delete()
    sbrt.delete()
    (again,) = carepaths.load_default_templates()
    assert again.code == "sbrt" and again.steps.count() == 11 and again.steps.filter(code="physics_check", blocks_treatment=True).exists()
    for template in CarePathTemplate.objects.all():
        carepaths.validate_steps([s.as_snapshot() for s in template.steps.all()])


def test_a_template_whose_steps_do_not_chain_cannot_start_a_path(templates):
    with pytest.raises(RuleViolation):
        carepaths.validate_steps([{"order": 1, "code": "a", "after": ["b"], "due_anchor": ""}, {"order": 2, "code": "b", "after": [], "due_anchor": ""}])


def test_clinic_edits_a_step_in_the_admin_and_running_paths_keep_theirs(client, templates, patient):
    from tests.conftest import PASSWORD, make_user

    make_user("boss", is_superuser=True, is_staff=True)
    client.login(username="boss", password=PASSWORD)
    running = make_course(patient).carepath
    step = templates["curative-imrt-vmat"].steps.get(code="planning")
    res = client.post(f"/admin/workflow/templatestep/{step.pk}/change/", {
        "template": step.template_id, "order": step.order, "code": "planning", "name": "Planning (VMAT)", "role": "dosimetrist",
        "after": '["contouring"]', "due_days": 4, "due_unit": "working", "due_anchor": "", "event": "",
    })
    assert res.status_code == 302, res.content.decode()[:2000]
    step.refresh_from_db()
    assert step.name == "Planning (VMAT)" and step.template.version == 2
    assert running.tasks.get(code="planning").name == "Treatment planning" and running.tasks.get(code="planning").due_days == 3
    assert client.get(f"/admin/workflow/carepathtemplate/{step.template_id}/change/").status_code == 200
    assert client.get(f"/admin/workflow/carepath/{running.pk}/change/").status_code == 200
