"""Registry bulk import: errors by line and field with nothing imported; R validation through the import."""

import csv
import datetime as dt
import io

import pytest

from outcomes import services
from outcomes.cohorts import CohortFilter
from outcomes.models import CourseOutcome, Death, FollowUpAssessment
from outcomes.registry_import import COLUMNS, RegistryImportError, import_registry
from workflow.models import Course, Patient, Treatment


def csv_text(rows):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return out.getvalue()


GOOD = [
    {"record_type": "patient", "mrn": "R1", "given_name": "Quilla", "family_name": "Vantongeren", "birth_date": "1950-02-03",
     "sex": "F", "site": "pleural_mesothelioma", "diagnosed_on": "2019-01-10", "surgery": "pd", "surgery_date": "2019-02-20",
     "chemotherapy": "cisplatin/pemetrexed", "chemotherapy_date": "2019-04-01", "trial_arm": "A"},
    {"record_type": "course", "mrn": "R1", "course_ref": "1", "intent": "adjuvant", "technique": "IMRT",
     "treated_site": "Left hemithorax", "total_dose_gy": "50.4", "fractions": "28", "rt_start": "2019-07-01", "rt_end": "2019-08-08"},
    {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2019-11-01", "imaging": "CT", "response": "PR"},
    {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2020-06-01", "imaging": "CT", "response": "PD",
     "failure_site": "local"},
    {"record_type": "death", "mrn": "R1", "date": "2021-05-02", "cause": "disease"},
]


def test_valid_file_imports_everything(oncologist):
    summary = import_registry(csv_text(GOOD), user=oncologist)
    assert summary.to_dict() == {"patients": 1, "courses": 1, "followups": 2, "deaths": 1}
    from workflow.models import CarePath, CareTask

    course = Course.objects.get(patient__mrn="R1")
    assert course.status == "completed"  # treated years ago, outside RadPath: no care path, nothing on a worklist
    assert not CarePath.objects.filter(course=course).exists() and not CareTask.objects.exists()
    p = Patient.objects.get(mrn="R1")
    assert Treatment.objects.filter(patient=p).count() == 3
    out = CourseOutcome.objects.get(course__patient=p)
    assert out.rt_start == dt.date(2019, 7, 1) and out.best_response == "PR"
    assert out.first_progression_date == dt.date(2020, 6, 1) == out.first_local_failure_date
    a = FollowUpAssessment.objects.get(date=dt.date(2019, 11, 1))
    assert (a.derived_response, a.override_response, a.response) == ("NE", "PR", "PR")
    assert "registry" in a.override_reason
    assert CohortFilter.from_params({"multimodal": "yes", "trial_arm": "A"}).queryset().count() == 1


def test_bad_rows_reported_by_line_and_field_and_nothing_imported(oncologist):
    rows = [dict(r) for r in GOOD]
    rows[0]["birth_date"] = "1950-13-03"  # line 2
    rows[1]["technique"] = "GAMMA"  # line 3
    rows[1]["total_dose_gy"] = "fifty"  # line 3
    rows[3]["date"] = "2022-01-01"  # line 5: after death
    rows.append({"record_type": "followup", "mrn": "R1", "course_ref": "9", "date": "2020-01-01"})  # line 7
    rows.append({"record_type": "death", "mrn": "NOPE", "date": "2020-01-01"})  # line 8
    rows.append({"record_type": "alien", "mrn": "R1"})  # line 9
    rows.append({"record_type": "patient", "mrn": "R2", "given_name": "X", "family_name": "Y", "birth_date": "1960-01-01",
                 "site": "lung"})  # line 10: no diagnosed_on
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(rows), user=oncologist)
    got = {(e.line, e.field) for e in exc.value.errors}
    assert {(2, "birth_date"), (3, "technique"), (3, "total_dose_gy"), (5, "date"), (7, "course_ref"), (8, "mrn"),
            (9, "record_type"), (10, "diagnosed_on")} <= got
    assert Patient.objects.count() == 0 and Course.objects.count() == 0 and Death.objects.count() == 0
    assert FollowUpAssessment.objects.count() == 0


def test_error_in_last_row_rolls_back_nothing_written(oncologist):
    rows = [dict(r) for r in GOOD] + [{"record_type": "death", "mrn": "R1", "date": "2021-06-01"}]  # second death
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(rows), user=oncologist)
    assert [(e.line, e.field) for e in exc.value.errors] == [(7, "mrn")]
    assert Patient.objects.count() == 0


def test_duplicate_of_existing_patient_is_rejected(oncologist, patient):
    rows = [dict(GOOD[0], mrn=patient.mrn)]
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(rows), user=oncologist)
    assert (exc.value.errors[0].line, exc.value.errors[0].field) == (2, "mrn")


# --- Validation against R through the bulk import ------------------------------------------------------------


def lung_registry_csv():
    """lifelines' ``load_lung()`` (R ``survival::lung``, NCCTG advanced lung cancer, 228 patients) as a registry CSV.

    RT start is a fixed date; death = RT start + ``time`` days when ``status`` = 1 (lifelines recoded R's 2 = dead
    to 1), otherwise a last-known-alive contact at RT start + ``time``. Sex 1 = male, 2 = female as in R.
    """
    from lifelines.datasets import load_lung

    lung = load_lung()
    start = dt.date(2001, 1, 8)
    rows = []
    for i, r in enumerate(lung.itertuples(index=False), start=1):
        mrn = f"NCCTG{i:04d}"
        age = int(r.age)
        rows.append({"record_type": "patient", "mrn": mrn, "given_name": f"Ncctg{i:04d}", "family_name": f"Case{i:04d}",
                     "birth_date": dt.date(start.year - age - 1, 6, 1 + i % 28).isoformat(), "sex": "M" if r.sex == 1 else "F",
                     "site": "lung", "diagnosed_on": (start - dt.timedelta(days=21)).isoformat()})
        rows.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "palliative", "technique": "3DCRT",
                     "treated_site": "Thorax", "total_dose_gy": "30", "fractions": "10", "rt_start": start.isoformat()})
        end = (start + dt.timedelta(days=int(r.time))).isoformat()
        if int(r.status) == 1:
            rows.append({"record_type": "death", "mrn": mrn, "date": end, "cause": "disease"})
        else:
            rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": end, "last_known_alive": end})
    return csv_text(rows)


def test_r_lung_validation_through_bulk_import(oncologist):
    """R ``survival`` on ``lung`` (the numbers ``tests/outcomes_stats/test_survival_r_validation.py`` also asserts):

    * ``survfit(Surv(time, status) ~ 1, data = lung)``: n 228, events 165, median 310, 0.95LCL 285, 0.95UCL 363
      (default ``conf.type = "log"``);
    * ``summary(fit, times = 365.25)``: n.risk 65, n.event 121, survival 0.409, std.err 0.0358, 95 % CI 0.345-0.486;
    * ``survfit(... ~ sex)``: medians 270 (212, 310) and 426 (348, 550);
    * ``survdiff(Surv(time, status) ~ sex, data = lung)``: Chisq = 10.3 on 1 degrees of freedom, p = 0.00131.

    Sources: R survival package output as printed in E. C. Zabor, "Survival analysis in R" tutorial
    (https://www.emilyzabor.com/tutorials/survival_analysis_in_r_tutorial.html) and Machine Learning with R
    Cookbook, 2nd ed., "Using the log-rank test"; data: ``lifelines.datasets.load_lung`` = ``survival::lung``.
    """
    summary = import_registry(lung_registry_csv(), user=oncologist)
    assert summary.to_dict() == {"patients": 228, "courses": 228, "followups": 63, "deaths": 165}
    cohort = CohortFilter.from_params({"site": "lung"}).queryset()
    res = services.analyze(cohort, endpoint="os", time_zero="rt_start", conf_type="log")
    body = res.to_dict()
    (g,) = body["groups"]
    assert (g["n"], g["events"]) == (228, 165)
    assert (g["median"]["median"], g["median"]["lower"], g["median"]["upper"]) == (310, 285, 363)
    assert body["conf_type"] == "log" and body["time_zero"] == "rt_start"
    one_year = g["at_times"][0]
    assert one_year["years"] == 1 and one_year["n_risk"] == 65 and one_year["n_event"] == 121
    assert round(one_year["survival"], 3) == 0.409
    assert (round(one_year["lower"], 3), round(one_year["upper"], 3)) == (0.345, 0.486)

    by_sex = services.analyze(cohort, endpoint="os", group_by="sex").to_dict()
    med = {g["label"]: (g["median"]["median"], g["median"]["lower"], g["median"]["upper"]) for g in by_sex["groups"]}
    assert med == {"M": (270, 212, 310), "F": (426, 348, 550)}
    lr = by_sex["logrank"]
    assert round(lr["chisq"], 1) == 10.3 and lr["df"] == 1
    assert lr["p_value"] == pytest.approx(0.00131116, abs=5e-6)
    sex_term = {t["covariate"]: t for t in by_sex["cox"]["terms"]}
    assert "age_years" in sex_term  # Cox adjusted for age; sex is the stratifier here


def test_pfs_on_last_contact_only_registry_warns_that_censoring_collapses_to_day_zero(oncologist):
    """The lung registry holds deaths and last-contact rows, no disease assessments: PFS censors at the last
    assessment (the rule), so all 63 censored patients fall at day 0. The analysis must say so, and OS must not."""
    import_registry(lung_registry_csv(), user=oncologist)
    cohort = CohortFilter.from_params({"site": "lung"}).queryset()
    pfs = services.analyze(cohort, endpoint="pfs", cox=False).to_dict()
    (g,) = pfs["groups"]
    assert (g["n"], g["events"]) == (228, 165)  # every death is a PFS event
    notes = " ".join(pfs["notes"])
    assert "0 censored patient(s) are censored at their last disease assessment; 63 had no assessment" in notes
    assert "Warning: no censored patient has a disease assessment to censor at" in notes
    os_notes = services.analyze(cohort, endpoint="os", cox=False).to_dict()["notes"]
    assert not any("censored" in n for n in os_notes)


def test_cox_terms_and_strata_chosen_by_the_researcher_match_r(oncologist):
    """``coxph(Surv(time, status) ~ sex, data = lung)``: coef -0.5310, exp(coef) 0.5880, se 0.1672, p 0.00149 (R
    codes sex 1 = male, 2 = female, so the coefficient is female vs male; RadPath's term is male = 1, the same fit
    with the sign turned). ``coxph(Surv(time, status) ~ age + sex, data = lung)``: age 0.017045 (se 0.009223,
    p 0.0646), sex -0.513219 (se 0.167458, p 0.00218). Both as printed in E. C. Zabor's "Survival analysis in R"
    tutorial and R's ``survival`` vignette output."""
    import_registry(lung_registry_csv(), user=oncologist)
    cohort = CohortFilter.from_params({"site": "lung"}).queryset()

    only_sex = services.analyze(cohort, endpoint="os", cox_terms="sex").to_dict()["cox"]
    (term,) = only_sex["terms"]
    assert term["covariate"] == "sex=M"
    assert round(-term["coef"], 4) == -0.5310 and round(1 / term["hazard_ratio"], 3) == 0.588
    assert round(term["se"], 4) == 0.1672 and round(term["p_value"], 5) == 0.00149

    both = {t["covariate"]: t for t in services.analyze(cohort, endpoint="os", cox_terms=["age", "sex"]).to_dict()["cox"]["terms"]}
    assert set(both) == {"age_years", "sex=M"}
    assert round(both["age_years"]["coef"], 6) == 0.017045 and round(both["age_years"]["se"], 6) == 0.009223
    assert round(both["age_years"]["p_value"], 4) == 0.0646
    # R prints 6 decimals; lifelines' and R's Newton iterations stop at different tolerances (2e-6 apart here)
    assert round(-both["sex=M"]["coef"], 5) == round(-0.513219, 5) and round(both["sex=M"]["se"], 5) == round(0.167458, 5)
    assert round(both["sex=M"]["p_value"], 5) == 0.00218
    assert all(t["ph_p_value"] is not None for t in both.values())  # a PH check per term

    # strata(sex): sex gets its own baseline, no coefficient; age's estimate moves off the unstratified one
    strat = services.analyze(cohort, endpoint="os", cox_terms="age", cox_strata="sex").to_dict()["cox"]
    assert [t["covariate"] for t in strat["terms"]] == ["age_years"]
    assert strat["terms"][0]["coef"] != pytest.approx(both["age_years"]["coef"], abs=1e-4)


@pytest.mark.parametrize("params, field", [
    ({"cox_terms": "sex,hormone"}, "cox_terms"),
    ({"cox_terms": "group"}, "cox_terms"),             # 'group' without a grouping
    ({"cox_terms": "age,sex", "cox_strata": "sex"}, "cox_strata"),
    ({"cox_strata": "colour"}, "cox_strata"),
])
def test_bad_cox_choice_is_a_400_naming_the_field(client, users, params, field):
    client.force_login(users["researcher"])
    resp = client.get("/api/outcomes/survival/", {"endpoint": "os", **params})
    assert resp.status_code == 400, resp.content
    assert field in resp.json()


def test_a_patient_row_needs_only_what_an_analysis_needs(oncologist, client, users):
    """No invented names or birth date: a de-identified registry gives the identifier, site and diagnosis date.
    The clinic still registers patients with names and a birth date (API 400 naming the field)."""
    rows = []
    for i in range(12):
        mrn = f"D{i:02d}"
        rows.append({"record_type": "patient", "mrn": mrn, "site": "lung", "diagnosed_on": "2019-01-10"})
        rows.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "palliative", "technique": "3DCRT",
                     "treated_site": "Thorax", "total_dose_gy": "30", "fractions": "10", "rt_start": "2019-02-01"})
        rows.append({"record_type": "death", "mrn": mrn, "date": f"2019-{3 + i % 9:02d}-15"})
    assert import_registry(csv_text(rows), user=oncologist).to_dict() == {"patients": 12, "courses": 12, "followups": 0,
                                                                         "deaths": 12}
    p = Patient.objects.get(mrn="D03")
    assert (p.given_name, p.family_name, p.birth_date) == ("", "", None)
    body = services.analyze(CohortFilter.from_params({"site": "lung"}).queryset(), endpoint="os",
                            cox_terms="age").to_dict()
    assert body["groups"][0]["n"] == 12 and body["groups"][0]["events"] == 12
    assert body["cox"] is None and "with 0 covariate(s)" in body["cox_error"]
    assert "Cox model: no patient has a birth date (the registry gave none), so age is left out." in body["notes"]

    for col in ("mrn", "site", "diagnosed_on"):
        bad = [{**rows[0], "mrn": "Z1", col: ""}]
        with pytest.raises(RegistryImportError) as exc:
            import_registry(csv_text(bad), user=oncologist)
        assert (2, col) in {(e.line, e.field) for e in exc.value.errors}

    client.force_login(users["oncologist"])
    resp = client.post("/api/patients/", {"mrn": "C1", "family_name": "Doe", "birth_date": "1950-01-01", "sex": "F"},
                       content_type="application/json")
    assert resp.status_code == 400 and "given_name" in resp.json()
