"""End to end in headless Chromium: an oncologist logs a grade 3 pneumonitis, sees the hold on today's treatment
list, and resumes treatment; the therapist can then deliver the fraction the hold had blocked."""

import datetime as dt
import os

import pytest
from django.utils import timezone

from tests.browser.support import last_treatment_day, launch, login
from workflow.pathway import delivery, scheduling
from workflow.models import CourseHold, ToxicityEvent

SCREENSHOT = "/tmp/radpath-toxicity-hold.png"


def open_as(browser, base, username, next_path):
    """A new page, logged in as ``username``, on ``next_path``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    login(page, base, username, next_path)
    return page


@pytest.mark.browser
@pytest.mark.urls("tests.toxicity.urls")
def test_oncologist_logs_grade_3_pneumonitis_sees_hold_and_resumes(transactional_db, live_server, users, clinic, course, oncologist, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    day = last_treatment_day()
    delivery.clear_for_treatment(course, user=oncologist)
    scheduling.book_course(course, day, preferred_time=dt.time(9, 0), machine=clinic["linac1"], allow_past=True)
    fraction = course.fractions.get(number=1)
    list_path = "/treatment/" if day == timezone.localdate() else f"/treatment/?date={day}"

    with sync_playwright() as p:
        browser = launch(p)
        try:
            # The oncologist opens today's list and logs the side effect from the patient's row.
            onc = open_as(browser, live_server.url, "oncologist", list_path)
            row = onc.locator(f"#fraction-{fraction.pk}")
            expect(row).to_contain_text("Ada Pleura")
            row.get_by_role("link", name="Log side effect").click()
            expect(onc.get_by_role("heading", name="Log side effect")).to_be_visible()

            term = onc.get_by_label("CTCAE term")
            expect(term).to_be_focused()
            term.fill("pneumonitis")
            grade3 = onc.locator("label[for=id_grade_3]")
            expect(grade3).to_contain_text("limits self-care ADL; oxygen needed")
            onc.keyboard.press("Tab")
            onc.locator("#id_grade_1").focus()
            onc.keyboard.press("3")  # grade by keyboard
            expect(onc.locator("#id_grade_3")).to_be_checked()
            onc.get_by_label("Serious adverse event").check()
            onc.screenshot(path="/tmp/radpath-toxicity-form.png", full_page=True)
            onc.get_by_role("button", name="Log side effect", exact=True).click()

            # Back on today's list: the hold is shown on the patient's row.
            onc.wait_for_url(f"**{list_path}")
            expect(onc.get_by_role("status")).to_contain_text("ON HOLD")
            row = onc.locator(f"#fraction-{fraction.pk}")
            expect(row).to_contain_text("Toxicity hold: Pneumonitis grade 3")
            onc.screenshot(path=SCREENSHOT, full_page=True)

            # The therapist cannot deliver while the course is on hold.
            ther = open_as(browser, live_server.url, "therapist", list_path)
            ther.locator(f"#fraction-{fraction.pk}").get_by_role("button", name="Delivered").click()
            ther.wait_for_load_state()
            expect(ther.get_by_role("status")).to_contain_text("Toxicity hold")

            # The oncologist decides from today's list: resume treatment.
            expect(row.locator("[data-toxicity-hold]")).to_have_text("On hold")
            row.get_by_role("link", name="Decide on hold").click()
            expect(onc.get_by_role("alert").first).to_contain_text("Pneumonitis grade 3")
            onc.get_by_label("Resume treatment", exact=True).check()
            onc.get_by_label("Note").fill("Steroids started, SpO2 95% on air; resume")
            onc.get_by_role("button", name="Record decision").click()
            onc.wait_for_url(f"**{list_path}")
            expect(onc.get_by_role("status")).to_contain_text("Treatment resumed")
            expect(onc.locator(f"#fraction-{fraction.pk}")).not_to_contain_text("On hold")

            # Delivery is possible again.
            ther.goto(f"{live_server.url}{list_path}")
            row = ther.locator(f"#fraction-{fraction.pk}")
            expect(row).not_to_contain_text("Toxicity hold")
            row.get_by_role("button", name="Delivered").click()
            ther.wait_for_load_state()
            expect(ther.get_by_role("status")).to_contain_text("fraction 1 delivered")
        finally:
            browser.close()

    event = ToxicityEvent.objects.get()
    assert (event.term, event.grade, event.serious, event.recorded_by.username) == ("Pneumonitis", 3, True, "oncologist")
    hold = CourseHold.objects.get()
    assert (hold.decision, hold.decided_by.username) == ("resume", "oncologist")
    fraction.refresh_from_db()
    assert fraction.status == "delivered"
