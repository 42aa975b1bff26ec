"""End to end in headless Chromium: an oncologist logs a follow-up and sees the derived response; a researcher runs
a survival analysis and downloads the de-identified export of the cohort."""

import datetime as dt
import io
import os

import pandas as pd
import pytest

from outcomes import services
from outcomes.cohorts import CohortFilter
from tests.browser.support import launch, login
from tests.conftest import make_course
from workflow.models import Diagnosis, Patient, Treatment

D = dt.date


def _lung_course(mrn, rt_start=D(2025, 2, 3)):
    p = Patient.objects.create(mrn=mrn, given_name="Given" + mrn, family_name="Family" + mrn, birth_date=D(1952, 5, 1), sex="F")
    dx = Diagnosis.objects.create(patient=p, site="lung", diagnosed_on=rt_start - dt.timedelta(days=40))
    c = make_course(p, dx)
    services.set_recorded_rt_dates(c, rt_start, rt_start + dt.timedelta(days=40))
    return p, c


def _target(lesion, value):
    return {"kind": "target", "lesion": lesion, "organ": "lung", "is_node": False, "value_mm": value}


@pytest.mark.browser
def test_oncologist_logs_a_follow_up_and_sees_the_derived_response(transactional_db, live_server, users, oncologist, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    from outcomes.models import CourseOutcome, FollowUpAssessment

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    _, course = _lung_course("FU0001")
    services.save_assessment(course=course, user=oncologist, data={"kind": "baseline", "date": D(2025, 1, 20)},
                             measurements=[_target("T1", 50), _target("T2", 30)])  # sum 80 mm
    new_path = f"/outcomes/courses/{course.pk}/assessments/new/"

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            login(page, live_server.url, "oncologist", new_path)
            # the lesions of the last assessment are offered again; only the values are typed
            expect(page.locator("#id_m-0-lesion")).to_have_value("T1")
            expect(page.locator("#id_m-1-lesion")).to_have_value("T2")
            page.locator("#id_kind").select_option("followup")
            page.locator("#id_date").fill("2025-05-05")
            page.locator("#id_m-0-value_mm").fill("-4")  # bad input: named error, nothing saved
            page.locator("#id_m-1-value_mm").fill("20")
            page.get_by_role("button", name="Save and recompute").click()
            page.wait_for_load_state()
            expect(page.get_by_role("alert").first).to_be_visible()
            assert FollowUpAssessment.objects.filter(course=course, kind="followup").count() == 0

            page.locator("#id_m-0-value_mm").fill("30")  # 30 + 20 = 50 mm: -37.5 % from baseline -> PR
            page.get_by_role("button", name="Save and recompute").click()
            page.wait_for_url(f"**/outcomes/courses/{course.pk}/")
            expect(page.get_by_role("status").first).to_contain_text("responses recomputed")
            row = page.locator("tbody tr", has_text="5 May 2025")
            expect(row).to_contain_text("50.0")
            expect(row).to_contain_text("-38 %")
            expect(row.locator("td").nth(5)).to_have_text("PR")
            expect(page.locator("dl.facts")).to_contain_text("Partial response")
            page.screenshot(path="/tmp/radpath-outcomes-followup.png", full_page=True)
        finally:
            browser.close()

    a = FollowUpAssessment.objects.get(course=course, kind="followup")
    assert (a.derived_response, float(a.target_sum_mm)) == ("PR", 50.0)
    assert CourseOutcome.objects.get(course=course).best_response == "PR"


def _cohort(oncologist):
    """Ten lung patients: five after surgery + chemotherapy (three deaths), five without (five deaths)."""
    spec = [  # (multimodal, death after RT start in days or None, last contact in days)
        (True, 400, None), (True, 700, None), (True, 800, None), (True, None, 900), (True, None, 1000),
        (False, 150, None), (False, 260, None), (False, 330, None), (False, 480, None), (False, 600, None),
    ]
    start = D(2024, 3, 4)
    for i, (multimodal, death, contact) in enumerate(spec):
        p, c = _lung_course(f"AN{i:04d}", rt_start=start)
        if multimodal:
            Treatment.objects.create(patient=p, kind="surgery", surgery_type="lobectomy", start_date=start - dt.timedelta(days=30))
            Treatment.objects.create(patient=p, kind="chemotherapy", start_date=start - dt.timedelta(days=20))
        if death is not None:
            services.record_death(p, user=oncologist, date=start + dt.timedelta(days=death), cause="disease")
        else:
            day = start + dt.timedelta(days=contact)
            services.save_assessment(course=c, user=oncologist, data={"kind": "contact", "date": day, "last_known_alive": day})


@pytest.mark.browser
def test_researcher_runs_a_survival_analysis_and_exports_the_cohort(transactional_db, live_server, users, oncologist, monkeypatch,
                                                                    settings):
    from playwright.sync_api import expect, sync_playwright

    settings.RADPATH_MIN_COHORT = 5  # 10 patients in two groups of 5; the minimum is tested in tests/outcomes/test_disclosure.py

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    _cohort(oncologist)
    expected = services.analyze(CohortFilter().queryset(), endpoint="os", group_by="multimodal", cox=False).to_dict(include_points=False)
    medians = {g["label"]: g["median"]["median"] for g in expected["groups"]}
    assert medians == {"other": 330.0, "surgery+chemo+RT": 800.0}  # S drops 1 -> .8 -> .6 -> .4 at the 3rd death

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            login(page, live_server.url, "researcher", "/outcomes/analysis/")
            page.get_by_label("Endpoint").select_option("os")
            page.get_by_label("Group by").select_option("multimodal")
            page.get_by_role("button", name="Run analysis").click()
            page.wait_for_load_state("networkidle")

            expect(page.get_by_role("heading", name="Overall survival")).to_be_visible()
            plot = page.get_by_role("img", name="Kaplan-Meier curves of Overall survival by multimodal")
            expect(plot).to_be_visible()
            assert plot.evaluate("img => img.complete && img.naturalWidth > 400")
            table = page.locator("table", has=page.locator("caption", has_text="Median and landmark survival"))
            expect(table.locator("tbody tr")).to_have_count(2)
            # medians in months, like the plot: 330 days = 10.8 months, 800 days = 26.3 months; labels, not codes
            expect(table.locator("tbody tr", has_text="Not multimodal")).to_contain_text("10.8")
            expect(table.locator("tbody tr", has_text="Surgery + chemotherapy + RT")).to_contain_text("26.3")
            expect(table.locator("tbody tr", has_text="surgery+chemo+RT")).to_have_count(0)
            expect(page.locator("p", has_text="Log-rank")).to_contain_text(f"{expected['logrank']['chisq']:.2f} on 1 df")
            expect(page.get_by_text("FamilyAN0000")).to_have_count(0)

            csv_link = page.get_by_role("link", name="CSV").first
            response = page.request.get(csv_link.get_attribute("href") if csv_link.get_attribute("href").startswith("http")
                                        else live_server.url + csv_link.get_attribute("href"))
            assert response.status == 200
            body = response.text()
            page.screenshot(path="/tmp/radpath-outcomes-analysis.png", full_page=True)
        finally:
            browser.close()

    export = pd.read_csv(io.StringIO(body))
    assert len(export) == 10
    assert not any(s in body for s in ("AN000", "Given", "Family", "1952-05-01"))  # no MRN, name or birth date
    assert sorted(export["os_event"].tolist()) == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert os.path.getsize("/tmp/radpath-outcomes-analysis.png") > 0


@pytest.mark.browser
def test_oncologist_follows_up_a_patient_without_radiotherapy_from_the_patient_page(transactional_db, live_server, users,
                                                                                   oncologist, monkeypatch):
    """A patient treated by surgery alone: Follow-up on the patient page, baseline then a follow-up CT, PR derived."""
    from playwright.sync_api import expect, sync_playwright

    from outcomes.models import FollowUpAssessment, PatientOutcome

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    p = Patient.objects.create(mrn="NORT02", given_name="Sole", family_name="Surgery", birth_date=D(1951, 3, 1), sex="M")
    Diagnosis.objects.create(patient=p, site="lung", diagnosed_on=D(2025, 1, 5))
    Treatment.objects.create(patient=p, kind="surgery", surgery_type="other", start_date=D(2025, 2, 1))
    services.save_assessment(patient=p, user=oncologist, data={"kind": "baseline", "date": D(2025, 1, 20)},
                             measurements=[_target("T1", 40)])

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            login(page, live_server.url, "oncologist", f"/patients/{p.pk}/")
            page.get_by_role("link", name="Follow-up", exact=True).click()
            page.wait_for_url(f"**/outcomes/patients/{p.pk}/")
            expect(page.get_by_role("heading", name="Follow-up without radiotherapy")).to_be_visible()
            page.get_by_role("link", name="Log assessment").click()
            expect(page.locator("#id_m-0-lesion")).to_have_value("T1")
            page.locator("#id_kind").select_option("followup")
            page.locator("#id_date").fill("2025-05-05")
            page.locator("#id_m-0-value_mm").fill("24")  # -40 % from 40 mm: PR
            page.get_by_role("button", name="Save and recompute").click()
            page.wait_for_url(f"**/outcomes/patients/{p.pk}/")
            row = page.locator("tbody tr", has_text="5 May 2025")
            expect(row.locator("td").nth(5)).to_have_text("PR")
            expect(page.locator("dl.facts")).to_contain_text("Partial response")
            expect(page.locator("dl.facts")).not_to_contain_text("RT")
        finally:
            browser.close()
    a = FollowUpAssessment.objects.get(patient=p, kind="followup")
    assert a.course_id is None and a.derived_response == "PR"
    assert PatientOutcome.objects.get(patient=p).best_response == "PR"
