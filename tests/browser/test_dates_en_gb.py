"""Dates in Chromium with the clinic's en-GB locale: a record opened for correction keeps its dates in the
<input type=date> (Django renders them ISO, not dd/mm/yyyy), so saving without retyping works."""

import datetime as dt
import os

import pytest

from outcomes import services
from outcomes.models import FollowUpAssessment
from tests.browser.support import launch, login
from tests.conftest import make_course
from workflow.models import Diagnosis, Patient


@pytest.mark.browser
def test_correcting_an_assessment_keeps_its_date_in_en_gb(transactional_db, live_server, users, oncologist):
    from playwright.sync_api import expect, sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    p = Patient.objects.create(mrn="GB0001", given_name="Olive", family_name="Hart", birth_date=dt.date(1950, 2, 1), sex="F")
    dx = Diagnosis.objects.create(patient=p, site="lung", diagnosed_on=dt.date(2025, 1, 2))
    course = make_course(p, dx)
    services.set_recorded_rt_dates(course, dt.date(2025, 2, 3), dt.date(2025, 3, 14))
    target = {"kind": "target", "lesion": "T1", "organ": "lung", "is_node": False, "value_mm": 40}
    services.save_assessment(course=course, user=oncologist, data={"kind": "baseline", "date": dt.date(2025, 1, 20)}, measurements=[target])
    followup = services.save_assessment(course=course, user=oncologist, data={"kind": "followup", "date": dt.date(2025, 5, 5)},
                                        measurements=[dict(target, value_mm=25)])

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            ctx = browser.new_context(locale="en-GB", timezone_id="Europe/London", viewport={"width": 1280, "height": 1000})
            page = ctx.new_page()
            assert page.evaluate("navigator.language") == "en-GB"
            login(page, live_server.url, "oncologist", f"/outcomes/assessments/{followup.pk}/edit/")
            expect(page.locator("#id_date")).to_have_value("2025-05-05")
            page.locator("#id_notes").fill("Corrected: lesion re-measured on the same scan.")
            page.get_by_role("button", name="Save and recompute").click()
            page.wait_for_url(f"**/outcomes/courses/{course.pk}/")
            expect(page.get_by_role("status").first).to_contain_text("responses recomputed")
            expect(page.locator("tbody tr", has_text="5 May 2025")).to_have_count(1)  # the clinic's display format
        finally:
            browser.close()

    corrected = FollowUpAssessment.objects.active().get(course=course, kind="followup")
    assert corrected.date == dt.date(2025, 5, 5) and corrected.notes.startswith("Corrected")
