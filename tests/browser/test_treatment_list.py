"""End to end in headless Chromium: a therapist logs in, opens the treatment list and records a fraction delivered."""

import datetime as dt
import os

import pytest
from django.utils import timezone

from tests.browser.support import last_treatment_day, launch, login
from workflow.pathway import delivery, scheduling

SCREENSHOT = "/tmp/radpath-treatment-list.png"


@pytest.mark.browser
def test_therapist_marks_a_fraction_delivered(transactional_db, live_server, users, clinic, course, oncologist, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs an event loop in this thread
    day = last_treatment_day()
    delivery.clear_for_treatment(course, user=oncologist)
    scheduling.book_course(course, day, preferred_time=dt.time(9, 0), machine=clinic["linac1"], allow_past=True)
    fraction = course.fractions.get(number=1)
    assert scheduling.local_day(fraction.starts_at) == day
    list_path = "/treatment/" if day == timezone.localdate() else f"/treatment/?date={day}"

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            login(page, live_server.url, "therapist", list_path)

            expect(page.get_by_role("heading", name="Linac 1")).to_be_visible()
            row = page.locator(f"#fraction-{fraction.pk}")
            expect(row).to_contain_text("Ada Pleura")
            expect(row).to_contain_text("1/25")
            expect(row.locator("[data-status]")).to_have_text("Scheduled")

            row.get_by_role("button", name="Delivered").click()
            page.wait_for_load_state()

            expect(page.get_by_role("status")).to_contain_text("fraction 1 delivered")
            row = page.locator(f"#fraction-{fraction.pk}")
            expect(row.locator("[data-status]")).to_have_text("Delivered")
            expect(row.get_by_role("button", name="Delivered")).to_have_count(0)
            page.screenshot(path=SCREENSHOT, full_page=True)
        finally:
            browser.close()

    fraction.refresh_from_db()
    assert fraction.status == "delivered" and fraction.delivered_by == users["therapist"]
    assert os.path.getsize(SCREENSHOT) > 0
