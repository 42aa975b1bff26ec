"""End to end in headless Chromium: a physicist opens the worklist, completes the plan check, and the patient moves
on the department board from the physics check to plan approval."""

import os

import pytest
from django.utils import timezone

from tests.browser.support import launch, login
from tests.carepaths.conftest import make_course
from workflow import carepaths
from workflow.calendar import ClinicCalendar

os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
SCREENSHOT = "/tmp/radpath-carepath-board.png"


def _back(calendar, day, n):
    import datetime as dt

    for _ in range(n):
        day -= dt.timedelta(days=1)
        while not calendar.is_open(day):
            day -= dt.timedelta(days=1)
    return day


@pytest.mark.browser
@pytest.mark.urls("tests.carepaths.urls")
def test_physicist_completes_the_plan_check_and_the_patient_moves_on(transactional_db, live_server, users, patient, clinic):
    from playwright.sync_api import expect, sync_playwright

    course = make_course(patient)
    cal, today = ClinicCalendar(), timezone.localdate()
    d = [_back(cal, today, n) for n in (8, 6, 5, 4, 3)]  # consult, sim, contouring, planning: physics check 2-3 days late
    carepaths.replay_path(course.carepath, started_on=d[0], users=users, today=today,
                          completions={"consult": d[1], "simulation": d[2], "contouring": d[3], "planning": d[4]})
    physics = course.carepath.tasks.get(code="physics_check")
    assert physics.status == "open" and physics.due_date < today
    path_id = course.carepath.pk

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            login(page, live_server.url, "physicist", "/carepaths/board/")
            expect(page.locator(f"#col-physics_check #path-{path_id}")).to_contain_text("Ada Pleura")
            expect(page.locator(f"#col-physics_check #path-{path_id}")).to_contain_text("blocked")

            page.get_by_role("link", name="My worklist").click()
            page.wait_for_url("**/carepaths/worklist/")
            row = page.locator(f"#worklist-overdue #task-{physics.pk}")
            expect(row).to_contain_text("Physics plan check")
            expect(row).to_contain_text("Ada Pleura")
            expect(row).to_contain_text("working day")
            page.screenshot(path="/tmp/radpath-carepath-worklist.png", full_page=True)
            row.get_by_role("button", name="Complete Physics plan check for Ada Pleura").click()
            page.wait_for_load_state()
            expect(page.get_by_role("status")).to_contain_text("Ada Pleura: Physics plan check completed.")
            expect(page.locator(f"#task-{physics.pk}")).to_have_count(0)

            page.get_by_role("link", name="Department board").click()
            page.wait_for_url("**/carepaths/board/")
            expect(page.locator(f"#col-plan_approval #path-{path_id}")).to_contain_text("Ada Pleura")
            expect(page.locator(f"#col-physics_check #path-{path_id}")).to_have_count(0)
            page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            browser.close()

    physics.refresh_from_db()
    assert physics.status == "done" and physics.completed_by == users["physicist"] and physics.completed_on == today
    assert course.carepath.tasks.get(code="plan_approval").status == "open"
    assert carepaths.carepath_gate(course) is not None  # plan approval still blocks until the plan is approved
