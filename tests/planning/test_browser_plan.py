"""End to end in headless Chromium: a physicist starts a plan and watches the progress bar finish (a real
db_worker process computes it; RQ workers with RADPATH_CI_REDIS=1), an oncologist approves it, and a therapist
can then deliver the first fraction."""

import datetime as dt
import os

import pytest
from django.utils import timezone

from planning.models import Plan
from tests.browser.support import launch, last_treatment_day, login
from workflow.pathway import scheduling

SCREENSHOT = "/tmp/radpath-plan-review.png"


@pytest.mark.browser
@pytest.mark.urls("tests.planning.urls")
def test_physicist_plans_oncologist_approves_first_fraction_delivered(workers, live_server, users, clinic, cshape_course):
    from playwright.sync_api import expect, sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
    workers.start(1)
    day = last_treatment_day()
    scheduling.book_course(cshape_course, day, preferred_time=dt.time(9, 0), machine=clinic["linac1"], allow_past=True)
    fraction = cshape_course.fractions.get(number=1)
    list_path = "/treatment/" if day == timezone.localdate() else f"/treatment/?date={day}"
    plans_path = f"/planning/courses/{cshape_course.pk}/"

    with sync_playwright() as p:
        browser = launch(p)
        try:
            # 1. the physicist creates and starts a plan, and watches the progress bar
            ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = ctx.new_page()
            login(page, live_server.url, "physicist", plans_path)
            page.get_by_label("Gantry angles (degrees, comma separated)").fill("0, 72, 144, 216, 288")
            page.get_by_label("Beamlet size (mm)").fill("10")
            page.get_by_label("Dose grid (mm, phantoms)").fill("8")
            page.get_by_label("Maximum iterations").fill("80")
            page.get_by_role("button", name="Create and start optimisation").click()
            page.wait_for_url("**/planning/plans/*/")
            plan = Plan.objects.get(course=cshape_course)
            bar = page.locator("#plan-progress")
            expect(bar).to_be_visible()
            # the bar moves while the worker optimises (progress between 0 and 100 seen in the page)
            page.wait_for_function("() => { const b = document.getElementById('plan-progress'); return b && b.value > 0 && b.value < 100; }", timeout=60000)
            expect(page.locator("#plan-status-badge")).to_have_text("Done (awaiting review)", timeout=120000)
            expect(page.locator("#plan-progress")).to_have_attribute("value", "100")
            expect(page.locator("#goals-table")).to_contain_text("PTV D95 >= 50 Gy")
            expect(page.get_by_role("button", name="Approve plan")).to_have_count(0)
            ctx.close()

            # 2. the oncologist reviews and approves
            ctx = browser.new_context(viewport={"width": 1280, "height": 1000})
            page = ctx.new_page()
            review = f"/planning/plans/{plan.pk}/"
            login(page, live_server.url, "oncologist", review)
            expect(page.locator("#dvh")).to_be_visible()
            slider = page.locator("#slider-axial")
            slider.fill("5")
            expect(page.locator("#out-axial")).to_have_text("5")
            expect(page.locator("#slice-axial")).to_have_attribute("src", f"/planning/plans/{plan.pk}/slice/axial/5.png")
            page.get_by_label("Comment").fill("Core sparing acceptable.")
            page.get_by_role("button", name="Approve plan").click()
            page.wait_for_load_state()
            expect(page.get_by_role("status").first).to_contain_text("Plan approved")
            expect(page.locator("#plan-status-badge")).to_have_text("Approved")
            page.screenshot(path=SCREENSHOT, full_page=True)
            ctx.close()

            # 3. the therapist delivers the first fraction
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            page = ctx.new_page()
            login(page, live_server.url, "therapist", list_path)
            row = page.locator(f"#fraction-{fraction.pk}")
            expect(row.locator("[data-status]")).to_have_text("Scheduled")
            row.get_by_role("button", name="Delivered").click()
            page.wait_for_load_state()
            expect(page.locator(f"#fraction-{fraction.pk}").locator("[data-status]")).to_have_text("Delivered")
            ctx.close()
        finally:
            browser.close()

    plan.refresh_from_db()
    fraction.refresh_from_db()
    assert plan.status == "approved" and plan.approved_by == users["oncologist"]
    assert fraction.status == "delivered"
    assert os.path.getsize(SCREENSHOT) > 0
