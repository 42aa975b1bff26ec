"""End to end in headless Chromium: a physicist opens the worklist, completes the plan check, and the patient moves
on the department board from the physics check to plan approval."""

import os

import pytest
from django.utils import timezone

from tests.browser.support import launch, login
from tests.carepaths.conftest import make_course
from workflow.carepaths import services as carepaths
from workflow.pathway.calendar import ClinicCalendar

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


CHAIN = ["consult", "simulation", "contouring", "planning", "physics_check", "plan_approval", "first_fraction"]


@pytest.mark.browser
@pytest.mark.urls("tests.carepaths.urls")
def test_board_columns_stay_on_a_laptop_screen(transactional_db, live_server, users, clinic):
    """Patients at eight different steps: on a 1024 px window every column is on the page (they wrap onto rows),
    none runs off to the right and the board has no horizontal scroll."""
    import datetime as dt

    from playwright.sync_api import sync_playwright

    from workflow.models import Patient

    cal, today = ClinicCalendar(), timezone.localdate()
    for k in range(len(CHAIN) + 1):
        p = Patient.objects.create(mrn=f"B{k}", given_name="Board", family_name=f"Step{k}", birth_date=dt.date(1960, 1, 1), sex="F")
        course = make_course(p)
        start = _back(cal, today, 2 * len(CHAIN) + 2)
        done = {code: _back(cal, today, 2 * (len(CHAIN) - i)) for i, code in enumerate(CHAIN[:k])}
        carepaths.replay_path(course.carepath, started_on=start, users=users, today=today, completions=done)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1024, "height": 800})
            login(page, live_server.url, "oncologist", "/carepaths/board/")
            columns = page.locator(".board-col")
            assert columns.count() >= 7
            board = page.locator(".board").evaluate("b => [b.scrollWidth, b.clientWidth]")
            assert board[0] <= board[1], board
            assert page.evaluate("document.documentElement.scrollWidth") <= 1024
            for i in range(columns.count()):
                box = columns.nth(i).bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= 1024, (i, box)
        finally:
            browser.close()
