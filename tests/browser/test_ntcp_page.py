"""End to end in headless Chromium: a researcher opens the NTCP page from the menu, switches model and reads the
cohort's calibration and dose-response (figures really load)."""

import pytest

from tests.browser.support import launch, login
from tests.outcomes.test_ntcp_clinic import _event, _finished_course


@pytest.mark.browser
def test_researcher_reads_predicted_vs_observed_pneumonitis(transactional_db, live_server, users, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # Ten courses, the minimum cohort a researcher may see (RADPATH_MIN_COHORT), in six 5 Gy dose bins.
    cohort = [(6.0, 0), (7.0, 0), (12.0, 0), (13.0, 0), (18.0, 2), (19.0, 0), (24.0, 0), (23.0, 0), (30.0, 2), (36.0, 3)]
    for i, (dose, grade) in enumerate(cohort):
        course = _finished_course(300 + i, "pleural_mesothelioma", dose)
        if grade:
            _event(course, grade=grade)
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page()
        login(page, live_server.url, "researcher", "/outcomes/analysis/")
        page.get_by_role("link", name="NTCP").click()
        page.wait_for_url("**/outcomes/ntcp/")
        expect(page.locator("#ntcp-n")).to_contain_text("10 course(s), 3 with Pneumonitis grade >= 2")
        page.get_by_label("Model").select_option("pneumonitis_lkb_seppenwoolde")
        page.get_by_role("button", name="Show").click()
        page.wait_for_url("**model=pneumonitis_lkb_seppenwoolde**")
        expect(page.get_by_role("heading", name="Radiation pneumonitis, LKB (Seppenwoolde 2003, cited by QUANTEC)")).to_be_visible()
        rows = page.locator("#ntcp-dose-response tbody tr")
        expect(rows).to_have_count(6)
        for alt in ("Observed rate against mean predicted", "Observed rate of Pneumonitis"):
            img = page.locator(f"img[alt^='{alt}']")
            img.scroll_into_view_if_needed()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        expect(page.locator("#ntcp-fit")).to_contain_text("td50")
        assert "NT03" not in page.content()
        browser.close()
