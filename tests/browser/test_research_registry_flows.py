"""End to end in headless Chromium on a real registry: GBSG2 (Schumacher et al. 1994; lifelines ``load_gbsg2`` =
R ``TH.data::GBSG2``, 686 patients) with its covariates, the hormone arm (246) imported with an RT course and the 440
others without one. ``time``/``cens`` become a death (event) or a last contact (censored) at diagnosis + ``time``,
so OS from diagnosis is R's ``Surv(time, cens)`` and the ``radiotherapy`` groups are R's ``horTh`` groups.

R 4 ``survival`` as printed (see tests/outcomes/test_covariate_analyses.py and test_registry_without_radiotherapy.py):
``survfit(Surv(time, cens) ~ I(pnodes >= 4))``: FALSE 376, 119 events, median NA (2039, NA); TRUE 310, 180, 983
(859, 1280) days = 32.3 (28.2-42.1) months. ``survfit(~ horTh)``: no 440, 205, 1528 (1296, 1814) = 50.2 (42.6-59.6)
months; yes 246, 94, 2018 (1918, NA) = 66.3 (63.0-NA). ``survdiff(~ horTh)``: chisq 8.56 on 1 df.

The oncologist imports the file through the page (a bad row first: listed by line and column, nothing imported),
then opens a registry patient without RT; the researcher runs the analyses through the form, reads the numbers the
page shows against R and against the API, and downloads the bundle and the de-identified CSV from the page.
"""

import csv
import datetime as dt
import io
import json
import zipfile

import pandas as pd
import pytest

from outcomes.registry_import import COLUMNS, import_registry
from tests.browser.support import launch, login
from tests.outcomes.test_covariate_analyses import VARIABLES, gbsg2_registry

D0 = dt.date(1984, 7, 1)
ANALYSIS = "/outcomes/analysis/"


def gbsg2_mixed_csv(bad_line=None):
    """GBSG2 as one registry CSV with its covariates; horTh = yes with an RT course, the others without one (their
    follow-up rows leave ``course_ref`` blank). ``bad_line``: that CSV line's patient gets tumour grade IV, which
    the data dictionary (I, II, III) refuses."""
    from lifelines.datasets import load_gbsg2

    data = load_gbsg2()
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS + [v[0] for v in VARIABLES], lineterminator="\n")
    w.writeheader()
    line = 1
    for i, r in enumerate(data.itertuples(index=False), start=1):
        mrn, rt = f"GBSG{i:04d}", r.horTh == "yes"
        line += 1
        w.writerow({"record_type": "patient", "mrn": mrn, "given_name": "G", "family_name": f"Case{i}",
                    "birth_date": dt.date(D0.year - int(r.age), 1, 15).isoformat(), "sex": "F", "site": "breast",
                    "diagnosed_on": D0.isoformat(), "horth": r.horTh, "menostat": r.menostat, "tsize": r.tsize,
                    "tgrade": "IV" if line == bad_line else r.tgrade, "pnodes": r.pnodes, "progrec": r.progrec,
                    "estrec": r.estrec})
        if rt:
            line += 1
            w.writerow({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "adjuvant",
                        "technique": "3DCRT", "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25",
                        "rt_start": (D0 + dt.timedelta(days=30)).isoformat()})
        end = (D0 + dt.timedelta(days=int(r.time))).isoformat()
        line += 1
        if int(r.cens) == 1:
            w.writerow({"record_type": "death", "mrn": mrn, "date": end, "cause": "disease"})
        else:
            w.writerow({"record_type": "followup", "mrn": mrn, "course_ref": "1" if rt else "", "date": end,
                        "last_known_alive": end})
    return out.getvalue(), data


def _gbsg2_imported(oncologist):
    gbsg2_registry()
    text, data = gbsg2_mixed_csv()
    summary = import_registry(text, user=oncologist, registry="gbsg2").to_dict()
    assert (summary["patients"], summary["courses"], summary["deaths"]) == (686, 246, 299)
    return data


def _run(page):
    """Submit the analysis form; the HTTP status of the page it returns."""
    with page.expect_response(lambda r: ANALYSIS + "?" in r.url) as info:
        page.get_by_role("button", name="Run analysis").click()
    page.wait_for_load_state("networkidle")
    return info.value.status


def _api_json(page, base, link_name):
    href = page.get_by_role("link", name=link_name, exact=True).first.get_attribute("href")
    resp = page.request.get(base + href)
    assert resp.status == 200, resp.text()
    return resp


def _row(page, caption, header):
    table = page.locator("table", has=page.locator("caption", has_text=caption))
    return table.locator("tbody tr", has=page.locator("th", has_text=header))


@pytest.mark.browser
def test_oncologist_imports_a_registry_through_the_page_and_follows_up_a_patient_without_rt(
        transactional_db, live_server, users, oncologist, monkeypatch, tmp_path):
    """A bad tumour grade on line 7: listed with its line and column, nothing imported. The corrected file: 686
    patients, 246 courses, the covariates counted. A patient without RT who died: the follow-up page says so, and a
    follow-up after the death is refused under its field."""
    from playwright.sync_api import expect, sync_playwright

    from outcomes.models import CovariateValue, FollowUpAssessment
    from workflow.models import Patient

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    gbsg2_registry()
    bad, _ = gbsg2_mixed_csv(bad_line=7)
    good, data = gbsg2_mixed_csv()
    (tmp_path / "bad.csv").write_text(bad)
    (tmp_path / "gbsg2.csv").write_text(good)
    first = data.iloc[0]
    assert (first.horTh, int(first.cens), int(first.time)) == ("no", 1, 1814)  # GBSG0001: no RT, died on day 1814

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            login(page, live_server.url, "oncologist", "/outcomes/import/")
            page.get_by_label("File").set_input_files(str(tmp_path / "bad.csv"))
            page.get_by_label("Registry").select_option("gbsg2")
            page.get_by_role("button", name="Validate and import").click()
            page.wait_for_load_state()
            problems = page.get_by_role("alert").filter(has_text="nothing was imported")
            expect(problems.get_by_role("heading")).to_have_text("1 problem: nothing was imported")
            expect(problems.locator("tbody tr")).to_have_count(1)
            expect(problems.locator("tbody tr td")).to_have_text(["7", "tgrade", "'IV' is not one of the levels I, II, III"])
            assert Patient.objects.count() == 0 and CovariateValue.objects.count() == 0

            page.get_by_label("File").set_input_files(str(tmp_path / "gbsg2.csv"))
            page.get_by_label("Registry").select_option("gbsg2")
            page.get_by_role("button", name="Validate and import").click()
            page.wait_for_load_state()
            expect(page.get_by_role("status").first).to_have_text(
                "Registry imported: 686 patients, 246 courses, 387 follow-ups, 299 deaths, 4802 covariate values.")

            patient = Patient.objects.get(mrn="GBSG0001")
            page.goto(f"{live_server.url}/patients/{patient.pk}/")
            page.get_by_role("link", name="Follow-up", exact=True).click()
            page.wait_for_url(f"**/outcomes/patients/{patient.pk}/")
            expect(page.get_by_role("heading", name="Follow-up without radiotherapy")).to_be_visible()
            died = (D0 + dt.timedelta(days=1814)).strftime("%-d %b %Y")  # 19 Jun 1989
            expect(page.locator("dl.facts dt:text-is('Died') + dd")).to_have_text(f"{died} (this cancer)")

            page.get_by_role("link", name="Log assessment").click()
            page.locator("#id_kind").select_option("followup")
            page.locator("#id_date").fill("1990-01-15")
            page.locator("#id_m-0-lesion").fill("T1")
            page.locator("#id_m-0-value_mm").fill("20")
            page.get_by_role("button", name="Save and recompute").click()
            page.wait_for_load_state()
            expect(page.locator(".field", has=page.locator("#id_date")).get_by_role("alert")).to_contain_text(
                "The patient died on 1989-06-19")
            page.screenshot(path="/tmp/radpath-registry-import-followup.png", full_page=True)
        finally:
            browser.close()
    assert not FollowUpAssessment.objects.filter(patient__mrn="GBSG0001", kind="followup", course__isnull=True,
                                                 date__year=1990).exists()


@pytest.mark.browser
def test_researcher_groups_by_a_covariate_with_cut_points_picks_cox_terms_and_strata_and_downloads_the_bundle(
        transactional_db, live_server, users, oncologist, monkeypatch):
    """Bad cut-points: named under their field, HTTP 400, nothing run. pnodes cut at 4: R's medians. The Cox terms and
    strata ticked on the page: the table says stratified, its ratios are the API's; RMST to 60 months, the landmark at
    12 months (in months, p < 0.0001 not "= 0.0000") and Gray's test are the API's; the bundle downloaded from the page holds that model (strata in its JSON) and its forest plot."""
    from playwright.sync_api import expect, sync_playwright

    from outcomes.models import CohortRelease

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    _gbsg2_imported(oncologist)
    base = live_server.url

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            login(page, base, "researcher", ANALYSIS)
            page.get_by_label("Time zero").select_option("diagnosis")
            page.get_by_label("Group by").select_option("gbsg2.pnodes")
            cuts = page.get_by_label("Cut-points (numeric covariate)")
            cuts.fill("4,abc")
            assert _run(page) == 400
            field = page.locator(".field", has=page.locator("#id_group_cuts"))
            expect(field.locator(".field-error")).to_have_text("'4,abc' is not 'median' or comma-separated numbers.")
            expect(page.locator("#analysis-errors")).to_contain_text("Cut-points (numeric covariate): '4,abc'")
            expect(page.get_by_role("heading", name="Overall survival")).to_have_count(0)
            expect(page.get_by_role("heading", name="Toxicity")).to_have_count(0)
            assert not CohortRelease.objects.exists()  # bad input releases nothing to the researcher's ledger

            page.get_by_label("Cut-points (numeric covariate)").fill("4")
            for term in ("group", "age", "gbsg2.tsize"):
                page.locator(f"input[name=cox_terms][value='{term}']").check()
            page.locator("input[name=cox_strata][value='gbsg2.tgrade']").check()
            page.get_by_label("RMST up to (months)").fill("60")
            page.get_by_label("Landmark at (months)").fill("12")
            page.get_by_label("Competing risks").check()
            assert _run(page) == 200

            caption = "Median and landmark survival"
            expect(_row(page, caption, "< 4").locator("td").nth(0)).to_have_text("376")
            expect(_row(page, caption, "< 4").locator("td").nth(1)).to_have_text("119")
            expect(_row(page, caption, "< 4").locator("td").nth(2)).to_have_text("not reached (67.0–NA)")
            expect(_row(page, caption, ">= 4").locator("td").nth(0)).to_have_text("310")
            expect(_row(page, caption, ">= 4").locator("td").nth(1)).to_have_text("180")
            expect(_row(page, caption, ">= 4").locator("td").nth(2)).to_have_text("32.3 (28.2–42.1)")  # R: 983 (859, 1280) days
            expect(page.locator("table th", has_text="Group: gbsg2.pnodes (Positive lymph nodes)")).to_be_visible()

            body = _api_json(page, base, "JSON").json()
            cox = body["cox"]
            assert cox["strata"] == ["gbsg2.tgrade"] and (cox["n"], cox["events"]) == (686, 299)
            assert [t["covariate"] for t in cox["terms"]] == ["gbsg2.pnodes=>= 4", "age_years", "gbsg2.tsize"]
            expect(page.locator("caption", has_text="Cox proportional hazards")).to_contain_text(
                "stratified by gbsg2.tgrade")
            for t in cox["terms"]:
                row = _row(page, "Cox proportional hazards", t["label"])
                expect(row.locator("td").nth(0)).to_have_text(
                    f"{t['hazard_ratio']:.3f} ({t['hr_lower']:.3f}–{t['hr_upper']:.3f})")
            rmst = body["methods"]["rmst"]
            assert (rmst["tau_days"], rmst["tau_months"]) == (pytest.approx(60 * 30.4375), pytest.approx(60))
            diff = rmst["comparisons"][0]["difference_months"]
            expect(page.locator("#rmst")).to_contain_text(
                f"{diff['estimate']:.2f} ({diff['lower']:.2f} to {diff['upper']:.2f})")
            landmark = body["methods"]["landmark"]
            assert (landmark["n_at_risk"], landmark["n_total"]) == (602, 686)  # 56 deaths, 28 censored before day 365
            expect(page.locator("#landmark h2")).to_have_text(
                "Landmark analysis at 12.0 months (day 365): 602 of 686 patients still at risk")
            expect(page.locator("#landmark")).to_contain_text(
                f"Landmark log-rank: χ² = {landmark['logrank']['chisq']:.2f} on 1 df, p < 0.0001")
            gray = body["methods"]["competing"]["gray"]  # GBSG2's deaths are all of the disease: nothing competes
            assert gray[0]["p_value"] < 1e-4
            expect(page.locator("#competing")).to_contain_text(
                f"Gray's test, death from this cancer: χ² = {gray[0]['statistic']:.2f} on 1 df, p < 0.0001")
            expect(page.locator("#competing")).to_contain_text(f"not computed: {gray[1]['note']}")
            forest = page.get_by_role("img", name="Forest plot of the Cox model's hazard ratios")
            assert forest.evaluate("img => img.complete && img.naturalWidth > 400")

            with page.expect_download() as download:
                page.locator("#analysis-bundle").click()
            bundle = zipfile.ZipFile(download.value.path())
            page.screenshot(path="/tmp/radpath-analysis-covariates.png", full_page=True)
        finally:
            browser.close()

    assert {"analysis.json", "km.png", "forest.png", "forest.svg", "manifest.json", "README.txt"} <= set(bundle.namelist())
    result = json.loads(bundle.read("analysis.json"))
    assert result["cox"]["strata"] == ["gbsg2.tgrade"]
    assert [t["hazard_ratio"] for t in result["cox"]["terms"]] == [t["hazard_ratio"] for t in cox["terms"]]
    assert result["methods"]["rmst"]["comparisons"][0]["difference_months"] == diff
    manifest = json.loads(bundle.read("manifest.json"))
    assert manifest["forest_plot"]["included"] and "stratified by gbsg2.tgrade" in manifest["forest_plot"]["title"]
    assert bundle.read("forest.png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.browser
def test_researcher_compares_radiotherapy_with_none_from_diagnosis_weights_on_covariates_and_exports(
        transactional_db, live_server, users, oncologist, monkeypatch):
    """Group by radiotherapy from diagnosis: R's horTh medians and log-rank; IPTW on nodes and age, its contrast in
    the groups' words and its marginal HR the API's; the patient CSV from the page link: every patient, the
    covariates, no identifier. From the start of RT the patients without RT are left out with a note."""
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    data = _gbsg2_imported(oncologist)
    base = live_server.url

    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            login(page, base, "researcher", ANALYSIS)
            page.get_by_label("Time zero").select_option("diagnosis")
            page.get_by_label("Group by").select_option("radiotherapy")
            for term in ("gbsg2.pnodes", "age"):
                page.locator(f"input[name=iptw_covariates][value='{term}']").check()
            assert _run(page) == 200

            caption = "Median and landmark survival"
            expect(_row(page, caption, "No radiotherapy").locator("td").nth(2)).to_have_text("50.2 (42.6–59.6)")
            expect(_row(page, caption, "Radiotherapy").last.locator("td").nth(2)).to_have_text("66.3 (63.0–NA)")
            expect(page.locator("p", has=page.locator("strong", has_text="Log-rank"))).to_contain_text("χ² = 8.56 on 1 df, p = 0.0034")

            body = _api_json(page, base, "JSON").json()
            iptw = body["methods"]["iptw"]
            assert iptw["treatment"] == "yes vs no"
            section = page.locator("#iptw")
            expect(section.get_by_role("heading")).to_contain_text("Radiotherapy vs No radiotherapy, balanced on")
            expect(section).to_contain_text(
                f"Marginal hazard ratio (Radiotherapy vs No radiotherapy) {iptw['hazard_ratio']:.3f} "
                f"({iptw['hr_lower']:.3f}–{iptw['hr_upper']:.3f})")
            expect(section).not_to_contain_text("yes vs no")

            export = _api_json(page, base, "CSV").text()

            # from the start of RT only the RT group is left: IPTW has no two groups, said under its field
            page.get_by_label("Time zero").select_option("rt_start")
            assert _run(page) == 400
            expect(page.locator("#analysis-errors")).to_contain_text(
                "IPTW: balance the two groups on: IPTW-weighted curves compare exactly two groups")
            for term in ("gbsg2.pnodes", "age"):
                page.locator(f"input[name=iptw_covariates][value='{term}']").uncheck()
            assert _run(page) == 200
            expect(_row(page, caption, "Radiotherapy").locator("td").nth(0)).to_have_text("246")
            expect(page.get_by_text("440 patient(s) of the cohort had no radiotherapy course")).to_be_visible()
        finally:
            browser.close()

    rows = pd.read_csv(io.StringIO(export))
    assert len(rows) == 686
    assert rows["radiotherapy"].value_counts().to_dict() == {"no": 440, "yes": 246}
    assert sorted(rows["gbsg2.pnodes"]) == sorted(float(x) for x in data.pnodes)
    assert not any(s in export for s in ("GBSG0", "Case1", "1914-01-15"))
