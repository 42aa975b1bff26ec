"""End to end in headless Chromium: a physicist opens an imported external plan, starts the independent dose check,
and sees the gamma pass rate and the DVH differences table once a real db_worker has recalculated it."""

import os

import pytest

from planning import dicom_io
from planning.models import DoseCheck
from tests.browser.support import launch, login

from .test_recalculation import OTHER_BEAMS, _external_case

SCREENSHOT = "/tmp/radpath-dose-check.png"


@pytest.mark.browser
@pytest.mark.urls("tests.planning.urls")
def test_physicist_starts_the_dose_check_and_sees_gamma_and_dvh_differences(workers, live_server, users, cshape_course):
    from playwright.sync_api import expect, sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's sync API runs an event loop in this thread
    files, _ = _external_case(cshape_course, OTHER_BEAMS, offset=1.03)
    ext = dicom_io.import_files(files, course=cshape_course, user=users["physicist"])["plan"]
    workers.start(1)
    review = f"/planning/plans/{ext.pk}/"
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
            login(page, live_server.url, "physicist", review)
            section = page.locator("#dose-check")
            expect(section.get_by_role("heading", name="Independent dose check")).to_be_visible()
            expect(page.locator("#dose-check-table")).to_have_count(0)
            page.get_by_label("Distance to agreement (mm)").fill("3")
            page.get_by_role("button", name="Recalculate and compare").click()
            page.wait_for_url(f"**{review}")
            # queued, then the worker's result replaces the status once the page's poll sees it finished
            expect(page.locator("#dose-check-gamma")).to_contain_text("3 % / 3 mm global, threshold 10 %", timeout=120000)
            check = DoseCheck.objects.get(plan=ext)
            assert check.status == "done" and check.gamma["pass_rate_pct"] >= 99.0
            expect(page.locator("#dose-check-gamma")).to_contain_text(f"{check.gamma['pass_rate_pct']:.1f} % of")
            table = page.locator("#dose-check-table")
            row = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="PTV", exact=True))
            expect(row).to_contain_text("(-2.9 %)")
            expect(table.get_by_role("rowheader", name="Cord", exact=True)).to_be_visible()
            expect(page.locator("#dose-check-beams")).to_contain_text("sliding window")
            page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            browser.close()
