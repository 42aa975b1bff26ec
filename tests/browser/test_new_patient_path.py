"""End to end in headless Chromium with the en-GB locale, all through the clinic pages, each step by its role:
the scheduler registers a new patient; the oncologist finds her with the search-as-you-type picker, adds the
diagnosis and prescribes a course (dose per fraction derived); the scheduler books and records the simulation and
schedules the fractions (the start date arrives prefilled, in ISO, although the page is en-gb); the physicist plans
(a tiny plan computed by a real db_worker / RQ worker) and does the physics check; the oncologist approves the plan;
the therapist delivers the first fraction from the treatment list."""

import datetime as dt
import os
from decimal import Decimal

import pytest
from django.utils import timezone

from planning.models import Plan
from tests.browser.support import launch, login
from tests.planning.conftest import media_root, workers  # noqa: F401 (fixtures)
from workflow.pathway import calendar, scheduling
from workflow.models import Course, Patient

SCREENSHOT = "/tmp/radpath-new-patient-course.png"


def complete_on_worklist(page, base, user, task_name, patient_name):
    from playwright.sync_api import expect

    login(page, base, user, "/carepaths/worklist/")
    page.get_by_role("button", name=f"Complete {task_name} for {patient_name}").click()
    page.wait_for_load_state()
    expect(page.get_by_role("status")).to_contain_text(f"{patient_name}: {task_name} completed.")


def treatment_day_travel():
    """The test delivers today's first fraction, so it needs a treatment day: on a weekend or holiday it travels
    back to the last treatment day, 10:00 in the clinic (clock ticking)."""
    import time_machine

    today = timezone.localdate()
    if calendar.is_treatment_day(today):
        return None
    day = today
    while not calendar.is_treatment_day(day):
        day -= dt.timedelta(days=1)
    return time_machine.travel(scheduling.local_datetime(day, dt.time(10, 0)), tick=True)


@pytest.mark.browser
def test_new_patient_from_registration_to_first_fraction(workers, live_server, users, clinic):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
    travel = treatment_day_travel()
    if travel is not None:
        travel.start()
    workers.start(1)
    base = live_server.url
    name = "Iris Newcombe"
    try:
        with sync_playwright() as p:
            browser = launch(p)

            def page_for():
                ctx = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-GB", timezone_id="Europe/London")
                return ctx, ctx.new_page()

            # 1. the scheduler (front desk) registers the patient
            ctx, page = page_for()
            login(page, base, "scheduler", "/patients/")
            page.get_by_role("link", name="Register patient").click()
            page.get_by_label("MRN").fill("MRN9001")
            page.get_by_label("Given name").fill("Iris")
            page.get_by_label("Family name").fill("Newcombe")
            page.get_by_label("Birth date").fill("1961-04-23")
            page.get_by_label("Sex").select_option("F")
            page.get_by_role("button", name="Register patient").click()
            expect(page.get_by_role("heading", level=1)).to_contain_text(name)
            expect(page.get_by_text("Born 23 Apr 1961")).to_be_visible()  # the clinic's display format
            expect(page.get_by_role("link", name="Prescribe radiotherapy")).to_have_count(0)
            ctx.close()
            patient = Patient.objects.get(mrn="MRN9001")
            assert patient.birth_date == dt.date(1961, 4, 23)

            # 2. the oncologist finds her by typing, adds the diagnosis and prescribes the course
            ctx, page = page_for()
            login(page, base, "oncologist", "/patients/")
            page.get_by_role("combobox").fill("newc")
            page.get_by_role("option", name="Newcombe, Iris (MRN9001)").click()
            page.wait_for_url(f"**/patients/{patient.pk}/")
            page.get_by_role("link", name="Add diagnosis").click()
            page.get_by_label("Site").select_option("other")
            page.get_by_label("Histology").fill("Chordoma")
            page.get_by_label("Diagnosed on").fill("2026-10-05")
            page.get_by_role("button", name="Save diagnosis").click()
            expect(page.get_by_role("status")).to_contain_text("Diagnosis recorded")
            page.get_by_role("link", name="Prescribe radiotherapy").click()
            page.get_by_label("Diagnosis").select_option(label="Other (5 Oct 2026)")
            page.get_by_label("Intent").select_option("palliative")
            expect(page.get_by_label("Total dose (Gy)")).to_have_value("20")  # the palliative default, 20 Gy / 5
            page.get_by_label("Intent").select_option("adjuvant")
            expect(page.get_by_label("Fractions")).to_have_value("25")
            page.get_by_label("Total dose (Gy)").fill("50")
            expect(page.locator("#dose-per-fraction")).to_have_text("2.00 Gy")
            page.get_by_label("Treated site").fill("Paraspinal")
            page.get_by_role("button", name="Prescribe course").click()
            expect(page.get_by_role("status")).to_contain_text("Course prescribed: 50 Gy in 25 fractions of 2 Gy (IMRT)")
            course = Course.objects.get(patient=patient)
            assert (course.total_dose_gy, course.fractions_planned, course.dose_per_fraction_gy) == (Decimal("50.00"), 25, Decimal("2.00"))
            ctx.close()
            ctx, page = page_for()
            complete_on_worklist(page, base, "oncologist", "Consult and consent", name)
            ctx.close()

            # 3. the scheduler books and records the simulation, then schedules the fractions
            ctx, page = page_for()
            login(page, base, "scheduler", f"/courses/{course.pk}/")
            page.get_by_role("link", name="Book simulation").click()
            today = timezone.localdate()
            page.get_by_label("Date and time").fill(f"{today.isoformat()}T08:00")
            page.get_by_label("Simulator").select_option(label="CT Sim")
            page.get_by_label("Immobilisation").fill("Vac-lok bag, arms up")
            page.get_by_role("button", name="Book simulation").click()
            expect(page.get_by_role("status")).to_contain_text("Simulation booked on CT Sim")
            page.get_by_role("button", name="Record simulation done").click()
            expect(page.get_by_role("status")).to_contain_text("Simulation recorded as done.")
            page.get_by_role("link", name="Schedule fractions").click()
            # the en-gb page still fills <input type=date> with an ISO value the browser keeps
            expect(page.locator("#id_start_date")).to_have_value(today.isoformat())
            page.get_by_label("Preferred time").fill("16:00")
            page.get_by_label("Machine").select_option(label="Linac 1")
            page.get_by_role("button", name="Book fractions").click()
            expect(page.get_by_role("status")).to_contain_text("Booked 25 fractions")
            ctx.close()
            first = course.fractions.get(number=1)
            assert scheduling.local_day(first.starts_at) == today

            # 4. contouring (oncologist), then a tiny plan by the physicist; the dosimetrist signs off planning
            ctx, page = page_for()
            complete_on_worklist(page, base, "oncologist", "Contouring (targets and OARs)", name)
            ctx.close()
            ctx, page = page_for()
            login(page, base, "physicist", f"/planning/courses/{course.pk}/")
            page.get_by_label("Gantry angles (degrees, comma separated)").fill("0, 120, 240")
            page.get_by_label("Beamlet size (mm)").fill("10")
            page.get_by_label("Dose grid (mm, phantoms)").fill("8")
            page.get_by_label("Maximum iterations").fill("20")
            page.get_by_role("button", name="Create and start optimisation").click()
            page.wait_for_url("**/planning/plans/*/")
            expect(page.locator("#plan-status-badge")).to_have_text("Done (awaiting review)", timeout=120000)
            plan = Plan.objects.get(course=course)
            ctx.close()
            ctx, page = page_for()
            complete_on_worklist(page, base, "dosimetrist", "Treatment planning", name)
            ctx.close()
            ctx, page = page_for()
            complete_on_worklist(page, base, "physicist", "Physics plan check", name)
            ctx.close()

            # 5. the oncologist approves the plan
            ctx, page = page_for()
            login(page, base, "oncologist", f"/planning/plans/{plan.pk}/")
            page.get_by_label("Comment").fill("Approved for treatment.")
            page.get_by_role("button", name="Approve plan").click()
            page.wait_for_load_state()
            expect(page.locator("#plan-status-badge")).to_have_text("Approved")
            ctx.close()

            # 6. the therapist delivers the first fraction on today's treatment list
            ctx, page = page_for()
            login(page, base, "therapist", "/treatment/")
            row = page.locator(f"#fraction-{first.pk}")
            expect(row).to_contain_text(name)
            row.get_by_role("button", name="Delivered").click()
            page.wait_for_load_state()
            expect(page.locator(f"#fraction-{first.pk}").locator("[data-status]")).to_have_text("Delivered")
            page.goto(f"{base}/courses/{course.pk}/")
            expect(page.get_by_role("link", name="Amend prescription")).to_have_count(0)  # therapists do not amend
            page.screenshot(path=SCREENSHOT, full_page=True)
            ctx.close()
            browser.close()
    finally:
        if travel is not None:
            travel.stop()

    first.refresh_from_db()
    course.refresh_from_db()
    assert first.status == "delivered" and first.delivered_by == users["therapist"]
    assert first.delivered_dose_gy == Decimal("2.00")
    assert course.status == "on_treatment" and course.plan_approved
    assert Plan.objects.get(pk=plan.pk).approved_by == users["oncologist"]
    assert course.carepath.tasks.get(code="physics_check").completed_by == users["physicist"]
