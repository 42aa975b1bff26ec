"""RMST, landmark, competing risks, IPTW and the forest plot through the registry import, the analysis service, the
API and the page; numbers from R (survival 3.5-3, run on this machine) on the same data. Method-level validation
(cmprsk, survRM2, R survival) is in tests/outcomes_stats/test_methods_r_validation.py and
test_landmark_iptw_r_validation.py."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from outcomes import competing as cr
from outcomes import services
from outcomes.cohorts import CohortFilter
from outcomes.registry_import import import_registry

from .test_registry_import import csv_text, lung_registry_csv

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def lung_cohort(oncologist):
    import_registry(lung_registry_csv(), user=oncologist)
    return CohortFilter.from_params({"site": "lung"}).queryset()


def competing_registry_csv():
    """cmprsk's test data (tests/data/cmprsk_test.csv) as a registry: death on day ceiling(365 ss) from RT start,
    cause 'disease' for cc = 1 and 'other' for cc = 2, alive at that day for cc = 0; male when cv1 = 1."""
    d = pd.read_csv(DATA / "cmprsk_test.csv")
    start = dt.date(2010, 3, 1)
    rows = []
    for i, r in enumerate(d.itertuples(index=False), start=1):
        mrn = f"CR{i:04d}"
        rows.append({"record_type": "patient", "mrn": mrn, "given_name": f"Given{i}", "family_name": f"Family{i}",
                     "birth_date": dt.date(1950, 1 + i % 12, 1 + i % 28).isoformat(),
                     "sex": "M" if r.cv1 == 1 else "F", "site": "lung",
                     "diagnosed_on": (start - dt.timedelta(days=30)).isoformat()})
        rows.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "curative", "technique": "IMRT",
                     "treated_site": "Thorax", "total_dose_gy": "60", "fractions": "30", "rt_start": start.isoformat()})
        end = (start + dt.timedelta(days=int(np.ceil(r.ss * 365)))).isoformat()
        if r.cc == 0:
            rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": end, "last_known_alive": end})
        else:
            rows.append({"record_type": "death", "mrn": mrn, "date": end, "cause": "disease" if r.cc == 1 else "other"})
    return csv_text(rows)


def test_rmst_and_landmark_through_the_registry_match_r(lung_cohort):
    """R::

        print(survfit(Surv(time, status) ~ sex, data = lung), rmean = 365)
        # sex=1 rmean 241.4951 se 10.35823; sex=2 297.4654 se 10.79132
        sl <- subset(lung, time >= 180); survdiff(Surv(time - 180, status) ~ sex, data = sl)   # p= 0.0942275
        survfit(Surv(time - 180, status) ~ sex, data = sl)   # medians 207 (149, 280) and 293 (191, 507)
    """
    body = services.analyze(lung_cohort, endpoint="os", group_by="sex", rmst_tau=365, landmark_days=180).to_dict()
    rmst = {g["label"]: g for g in body["methods"]["rmst"]["groups"]}
    assert (rmst["M"]["rmst"], rmst["M"]["se"]) == (pytest.approx(241.4951, abs=5e-5), pytest.approx(10.35823, abs=5e-6))
    assert (rmst["F"]["rmst"], rmst["F"]["se"]) == (pytest.approx(297.4654, abs=5e-5), pytest.approx(10.79132, abs=5e-6))
    (cmp,) = body["methods"]["rmst"]["comparisons"]
    assert cmp["group"] == "M" and cmp["reference"] == "F"
    assert cmp["difference"]["estimate"] == pytest.approx(241.4951 - 297.4654, abs=1e-4)
    assert cmp["difference"]["upper"] < 0  # men live less of the first year, as the log-rank says
    lm = body["methods"]["landmark"]
    assert lm["n_at_risk"] == 160 and lm["landmark"] == 180
    assert lm["logrank"]["p_value"] == pytest.approx(0.0942275, abs=5e-8)
    med = {g["label"]: (g["median"]["median"], g["median"]["lower"], g["median"]["upper"]) for g in lm["groups"]}
    assert med == {"M": (207, 149, 280), "F": (293, 191, 507)}


def test_competing_risks_through_the_registry_match_r(oncologist):
    """R on the registry's own day counts::

        d$days <- ceiling(d$ss * 365); d$sexM <- cv1 == 1 (NA -> 0); d$ev <- factor(cc, 0:2, c("censor", "disease", "other"))
        fg <- finegray(Surv(days, ev) ~ ., data = d, etype = "disease")
        coxph(Surv(fgstart, fgstop, fgstatus) ~ sexM, weights = fgwt, data = fg, ties = "breslow", cluster = id)
        # coef -0.2009446106, robust se 0.3471845898, naive se 0.3551238233
        summary(survfit(Surv(days, ev) ~ sexM, data = d), times = c(365.25, 730.5))$pstate
        # sexM=0: disease 0.2516339869 0.4163858252; other 0.2516339869 0.3712979984
        # sexM=1: disease 0.2219394872 0.2695899156; other 0.2605239155 0.4160496193
    """
    import_registry(competing_registry_csv(), user=oncologist)
    cohort = CohortFilter.from_params({"site": "lung"}).queryset()
    body = services.analyze(cohort, endpoint="os", group_by="sex", competing=True, cox_terms="sex").to_dict()
    c = body["methods"]["competing"]
    assert c["causes"] == {"1": "death from this cancer", "2": "death from any other or unknown cause"}
    ci = {(r["cause"], r["label"]): [t["cif"] for t in r["at_times"][:2]] for r in c["cumulative_incidence"]}
    np.testing.assert_allclose(ci[(1, "F")], [0.2516339869, 0.4163858252], atol=1e-9)
    np.testing.assert_allclose(ci[(2, "F")], [0.2516339869, 0.3712979984], atol=1e-9)
    np.testing.assert_allclose(ci[(1, "M")], [0.2219394872, 0.2695899156], atol=1e-9)
    np.testing.assert_allclose(ci[(2, "M")], [0.2605239155, 0.4160496193], atol=1e-9)
    (term,) = c["fine_gray"]["terms"]
    assert term["covariate"] == "sex=M" and term["label"] == "Male (vs female)"
    assert (term["coef"], term["se"], term["se_model"]) == (pytest.approx(-0.2009446106, abs=1e-8),
                                                            pytest.approx(0.3471845898, abs=1e-8),
                                                            pytest.approx(0.3551238233, abs=1e-8))
    # cause-specific hazard of cancer death (other deaths censored): R coxph(Surv(days, cc == 1) ~ sexM, data = d)
    # coef -0.2959580261, se 0.3644337443 (Efron ties)
    (cs,) = c["cause_specific"]["terms"]
    assert (cs["coef"], cs["se"]) == (pytest.approx(-0.2959580261, abs=1e-6), pytest.approx(0.3644337443, abs=1e-6))
    # Gray's test: the method validated against cmprsk, on the same day counts
    d = pd.read_csv(DATA / "cmprsk_test.csv")
    days, sex = np.ceil(d["ss"] * 365), np.where(d["cv1"] == 1, "M", "F")
    for row, cause in zip(c["gray"], (1, 2)):
        ref = cr.gray_test(days, d["cc"], sex, cause)
        assert row["statistic"] == pytest.approx(ref.statistic, rel=1e-12) and row["df"] == 1


def test_competing_for_local_control_counts_deaths_without_failure(oncologist):
    """LC: a death without a recorded local failure is the competing event at the date of death."""
    from .test_api_exports import registry_rows

    import_registry(csv_text(registry_rows()), user=oncologist)
    cohort = CohortFilter.from_params({"site": "pleural_mesothelioma"}).queryset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(services.disclosure, "min_cohort", lambda: 1)
        body = services.analyze(cohort, endpoint="lc", competing=True, cox=False, min_group=1).to_dict()
    c = body["methods"]["competing"]
    rows = {r["cause"]: r for r in c["cumulative_incidence"]}
    assert rows[1]["events"] == 2 and rows[2]["events"] == 0  # both deaths followed a local failure
    assert "death without a recorded local failure" in c["rule"]


def test_iptw_through_the_registry(lung_cohort):
    """Weighted curves between the sexes with age as the confounder: weighted numbers at risk beside the raw ones,
    sum of stabilised weights close to n, effective sample size below n, a marginal HR."""
    body = services.analyze(lung_cohort, endpoint="os", group_by="sex", iptw_covariates="age").to_dict()
    iptw = body["methods"]["iptw"]
    assert iptw["covariates"] == ["age_years"] and iptw["treatment"] == "M vs F"
    groups = {g["label"]: g for g in iptw["groups"]}
    assert groups["M"]["n"] == 138 and groups["F"]["n"] == 90
    assert sum(g["sum_weights"] for g in groups.values()) == pytest.approx(228, rel=0.05)
    assert all(g["effective_n"] < g["n"] for g in groups.values())
    one_year = groups["M"]["at_times"][0]
    assert one_year["raw_n_risk"] > 0 and one_year["weighted_n_risk"] > 0
    assert iptw["hazard_ratio"] > 1 and iptw["hr_lower"] < iptw["hazard_ratio"] < iptw["hr_upper"]


@pytest.mark.parametrize("params, field", [
    ({"rmst_tau": "soon"}, "rmst_tau"),
    ({"rmst_tau": "-3"}, "rmst_tau"),
    ({"rmst_tau": "99999", "group_by": "sex"}, "rmst_tau"),  # beyond the last follow-up
    ({"landmark_days": "x"}, "landmark_days"),
    ({"landmark_days": "5000"}, "landmark_days"),  # nobody at risk that late
    ({"competing": "maybe"}, "competing"),
    ({"landmark_by": "colour", "landmark_days": "30"}, "landmark_by"),
    ({"iptw_covariates": "colour", "group_by": "sex"}, "iptw_covariates"),
    ({"iptw_covariates": "age"}, "iptw_covariates"),  # no grouping to compare
])
def test_bad_method_parameters_are_a_400_naming_the_field(lung_cohort, users, client, params, field):
    client.force_login(users["researcher"])
    resp = client.get("/api/outcomes/survival/", {"site": "lung", "endpoint": "os", **params})
    assert resp.status_code == 400, resp.content
    assert field in resp.json()


def test_api_returns_the_methods_and_the_forest_plot(lung_cohort, users, client):
    client.force_login(users["researcher"])
    q = {"site": "lung", "group_by": "sex", "rmst_tau": "365", "landmark_days": "180", "competing": "true",
         "iptw_covariates": "age"}
    body = client.get("/api/outcomes/survival/", q).json()
    assert set(body["methods"]) == {"rmst", "landmark", "competing", "iptw"}
    png = client.get("/api/outcomes/survival/forest.png", q)
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    svg = client.get("/api/outcomes/survival/forest.svg", q)
    assert b"<svg" in svg.content and b"Male (vs female)" in svg.content and b"Age (per year)" in svg.content
    client.force_login(users["therapist"])
    assert client.get("/api/outcomes/survival/forest.png", q).status_code == 403


def test_landmark_groups_below_the_minimum_are_suppressed(lung_cohort, settings):
    """At day 500, 20 men and 21 women of lung are still at risk: with a minimum of 21 the men's landmark curve is
    left out (and said so), the women's is shown, and the ledger records the landmark's patient sets."""
    settings.RADPATH_MIN_COHORT = 21
    res = services.analyze(lung_cohort, endpoint="os", group_by="sex", landmark_days=500, cox=False)
    lm = res.to_dict()["methods"]["landmark"]
    assert [(g["label"], g["n"]) for g in lm["groups"]] == [("F", 21)]
    assert lm["logrank"] is None
    assert "group(s) M have fewer than 21 patients still at risk" in lm["notes"][0]
    sizes = sorted(len(s) for s in res.released_sets())
    assert sizes == [21, 21, 90, 138]  # the two sexes, the landmark cohort shown and its one group
    settings.RADPATH_MIN_COHORT = 42
    with pytest.raises(services.RuleViolation) as exc:
        services.analyze(lung_cohort, endpoint="os", landmark_days=500, cox=False)
    assert exc.value.field == "landmark_days"


def test_analysis_page_shows_the_methods_in_months(lung_cohort, users, client):
    """The page takes months: RMST up to 12 months is the service's RMST at 365.25 days, shown in months; the
    landmark, competing-risk and IPTW sections and the forest plot appear; a horizon beyond follow-up is said."""
    client.force_login(users["researcher"])
    page = client.get("/outcomes/analysis/", {"site": "lung", "group_by": "sex", "rmst_tau_months": "12",
                                               "landmark_months": "6", "competing": "on", "iptw_covariates": "age"})
    assert page.status_code == 200
    html = page.content.decode()
    for anchor in ('id="rmst"', 'id="landmark"', 'id="competing"', 'id="iptw"', "/api/outcomes/survival/forest.png?"):
        assert anchor in html, anchor
    body = services.analyze(lung_cohort, endpoint="os", group_by="sex", rmst_tau=12 * 30.4375, cox=False).to_dict()
    male = next(g for g in body["methods"]["rmst"]["groups"] if g["label"] == "M")
    assert f"<th scope=\"row\">Male</th><td>138</td><td>{male['rmst_months']:.2f}</td>" in html
    assert "Gray&#x27;s test" in html or "Gray's test" in html
    bad = client.get("/outcomes/analysis/", {"site": "lung", "rmst_tau_months": "500"})
    # beyond follow-up: said under the RMST field (the page's months, not the API's rmst_tau), a 400, not a 500
    assert bad.status_code == 400 and "RMST up to (months): " in bad.content.decode()


def jasa_registry_csv():
    """Stanford heart transplant list (tests/data/jasa.csv) as a registry: time zero = acceptance (the RT start
    field), death or last contact at futime, the transplant recorded as a response (PR) on day ``wait``, so
    "responded by the landmark" is "transplanted by the landmark"."""
    d = pd.read_csv(DATA / "jasa.csv")
    start = dt.date(1990, 1, 1)
    rows = []
    for i, r in enumerate(d.itertuples(index=False), start=1):
        mrn = f"JASA{i:03d}"
        rows.append({"record_type": "patient", "mrn": mrn, "given_name": f"Given{i}", "family_name": f"Family{i}",
                     "birth_date": "1940-05-05", "sex": "M", "site": "lung",
                     "diagnosed_on": (start - dt.timedelta(days=10)).isoformat()})
        rows.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "curative", "technique": "IMRT",
                     "treated_site": "Thorax", "total_dose_gy": "60", "fractions": "30", "rt_start": start.isoformat()})
        if not np.isnan(r.wait):
            day = (start + dt.timedelta(days=int(r.wait))).isoformat()
            rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": day, "imaging": "CT",
                         "response": "PR"})
        end = (start + dt.timedelta(days=int(r.futime))).isoformat()
        if r.fustat == 1:
            rows.append({"record_type": "death", "mrn": mrn, "date": end, "cause": "other"})
        else:
            rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": end, "last_known_alive": end})
    return csv_text(rows)


def test_landmark_by_response_status_matches_r_heart_transplant(oncologist):
    """Groups fixed at the landmark from a time-dependent status. R (as in tests/outcomes_stats)::

        lm <- subset(d, futime >= 30); lm$grp <- ifelse(!is.na(lm$wait) & lm$wait <= 30, "yes", "no")
        survdiff(Surv(futime - 30, fustat) ~ grp, data = lm)   # 44 / 30 / 28.88331, 35 / 22 / 23.11669, p= 0.754248
        survfit(Surv(futime - 30, fustat) ~ grp, data = lm)    # no: 188 (79, 644); yes: 312 (50, NA)
    """
    import_registry(jasa_registry_csv(), user=oncologist)
    cohort = CohortFilter.from_params({"site": "lung"}).queryset()
    body = services.analyze(cohort, endpoint="os", landmark_days=30, landmark_by="response", cox=False).to_dict()
    lm = body["methods"]["landmark"]
    assert lm["n_at_risk"] == 79 and lm["group_rule"].startswith("response")
    groups = {g["label"]: g for g in lm["groups"]}
    assert (groups["responded"]["n"], groups["responded"]["events"]) == (35, 22)
    assert (groups["no response yet"]["n"], groups["no response yet"]["events"]) == (44, 30)
    assert groups["responded"]["display"] == "Responded (CR/PR) by the landmark"
    assert lm["logrank"]["p_value"] == pytest.approx(0.754248, abs=5e-7)
    med = {k: (g["median"]["median"], g["median"]["lower"], g["median"]["upper"]) for k, g in groups.items()}
    assert med == {"no response yet": (188, 79, 644), "responded": (312, 50, None)}
    with pytest.raises(services.RuleViolation) as exc:
        services.analyze(cohort, endpoint="os", landmark_by="response", cox=False)
    assert exc.value.field == "landmark_by"


def test_a_ledger_refusal_names_the_part_that_singles_patients_out(lung_cohort, users):
    """R's lung data: 2 patients have an OS time under 12 days (5 and 11). After the whole cohort, a landmark at
    day 12 would reveal its at-risk set, all but those 2: refused, naming the landmark set; nothing recorded."""
    from outcomes.models import CohortRelease

    researcher = users["researcher"]
    services.analyze(lung_cohort, endpoint="os", cox=False, user=researcher)
    before = CohortRelease.objects.filter(user=researcher).count()
    with pytest.raises(services.disclosure.CohortTooSmall) as exc:
        services.analyze(lung_cohort, endpoint="os", cox=False, landmark_days=12, user=researcher)
    assert "The part that does: the landmark's at-risk set at 0.394 months." in str(exc.value)
    assert CohortRelease.objects.filter(user=researcher).count() == before
