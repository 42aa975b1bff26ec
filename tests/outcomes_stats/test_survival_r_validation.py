"""Kaplan-Meier / log-rank / Cox validated against published output of R's ``survival`` package.

Data: NCCTG advanced lung cancer (``survival::lung``), shipped by lifelines as
``lifelines.datasets.load_lung()``. R codes ``status`` 1 = censored, 2 = dead; lifelines' copy codes
0 = censored, 1 = dead (165 deaths of 228, checked below), so no recoding is needed.

Published R output used (each number verified against a public source):

* ``survfit(Surv(time, status) ~ 1, data = lung)`` ->
  ``n 228, events 165, median 310, 0.95LCL 285, 0.95UCL 363`` (printed in many R tutorials, e.g. the
  Emily Zabor "Survival analysis in R" tutorial and the survival exercises by selva86 / r-statistics).
* ``summary(fit, times = 365.25)`` -> ``time 365, n.risk 65, n.event 121, survival 0.409,
  std.err 0.0358, lower 95% CI 0.345, upper 95% CI 0.486`` (Zabor tutorial, reproduced in course
  notes found by search).
* ``survfit(Surv(time, status) ~ sex, data = lung)`` -> ``sex=1: 138, 112, 270 (212, 310);
  sex=2: 90, 53, 426 (348, 550)`` (same tutorials; survminer's own test
  ``tests/testthat/test-surv_median.R`` asserts medians c(270, 426)).
* ``survdiff(Surv(time, status) ~ sex, data = lung)`` -> ``Observed 112 / 53, Expected 91.5817 /
  73.4183, Chisq = 10.3 on 1 degrees of freedom, p = 0.00131116`` (Machine Learning with R Cookbook,
  2nd ed., "Using the log-rank test").
* ``coxph(Surv(time, status) ~ sex + age, data = lung)`` -> ``sex coef -0.513219, exp 0.5986
  (0.4311-0.8311), p 0.00218; age coef 0.017045, exp 1.0172 (0.9990-1.0357), p 0.06459``.
"""


import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.datasets import load_lung

from outcomes.survival import (
    cox_ph,
    kaplan_meier,
    kaplan_meier_by_group,
    logrank_by_column,
    median_survival,
    number_at_risk,
    summarize,
    survival_at,
)


@pytest.fixture(scope="module")
def lung():
    df = load_lung()
    assert len(df) == 228
    assert set(df["status"].unique()) == {0, 1}  # lifelines recoded R's 1/2 to 0/1
    assert int(df["status"].sum()) == 165
    return df


def test_overall_median_and_ci_match_r(lung):
    km = kaplan_meier(lung["time"], lung["status"])  # default conf_type "log" = R survfit
    med = median_survival(km)
    assert (km.n, km.events) == (228, 165)
    assert (med.median, med.lower, med.upper) == (310, 285, 363)
    assert med.conf_type == "log"


def test_one_year_survival_matches_r_summary(lung):
    km = kaplan_meier(lung["time"], lung["status"])
    (s,) = survival_at(km, [365.25])
    assert s.n_risk == 65
    assert s.n_event == 121
    assert round(s.survival, 3) == 0.409
    assert round(s.std_err, 4) == 0.0358
    assert round(s.lower, 3) == 0.345
    assert round(s.upper, 3) == 0.486
    assert s.conf_type == "log"


def test_medians_by_sex_match_r(lung):
    curves = kaplan_meier_by_group(lung, "time", "status", "sex")
    got = {k: median_survival(v) for k, v in curves.items()}
    assert (curves["1"].n, curves["1"].events) == (138, 112)
    assert (curves["2"].n, curves["2"].events) == (90, 53)
    assert (got["1"].median, got["1"].lower, got["1"].upper) == (270, 212, 310)
    assert (got["2"].median, got["2"].lower, got["2"].upper) == (426, 348, 550)


def test_logrank_by_sex_matches_r_survdiff(lung):
    res = logrank_by_column(lung, "time", "status", "sex")
    assert res.df == 1
    assert res.observed == [112, 53]
    assert res.expected == pytest.approx([91.5817, 73.4183], abs=1e-4)
    assert round(res.chisq, 1) == 10.3
    assert res.chisq == pytest.approx(10.3267, abs=1e-4)
    assert res.p_value == pytest.approx(0.00131116, rel=1e-4)


def test_cox_sex_age_matches_r_coxph(lung):
    res = cox_ph(lung, "time", "status", ["sex", "age"])
    terms = {t.covariate: t for t in res.terms}
    assert terms["sex"].coef == pytest.approx(-0.513219, abs=1e-5)
    assert terms["sex"].hazard_ratio == pytest.approx(0.5986, abs=1e-4)
    assert (round(terms["sex"].hr_lower, 4), round(terms["sex"].hr_upper, 4)) == (0.4311, 0.8311)
    assert terms["sex"].p_value == pytest.approx(0.00218, abs=1e-5)
    assert terms["age"].hazard_ratio == pytest.approx(1.0172, abs=1e-4)
    assert (round(terms["age"].hr_lower, 4), round(terms["age"].hr_upper, 4)) == (0.9990, 1.0357)
    assert terms["age"].p_value == pytest.approx(0.06459, abs=1e-5)
    # PH check present (Schoenfeld / Grambsch-Therneau) for each covariate
    assert all(0 <= t.ph_p_value <= 1 for t in res.terms)
    assert res.ties == "efron"


def test_log_log_method_matches_lifelines_and_is_labelled(lung):
    km = kaplan_meier(lung["time"], lung["status"], conf_type="log-log")
    ref = KaplanMeierFitter().fit(lung["time"], lung["status"])
    ci = ref.confidence_interval_survival_function_.iloc[1:]  # lifelines adds a t=0 row
    np.testing.assert_allclose(km.survival, ref.survival_function_.iloc[1:, 0].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(km.lower, ci.iloc[:, 0].to_numpy(), atol=1e-12)
    np.testing.assert_allclose(km.upper, ci.iloc[:, 1].to_numpy(), atol=1e-12)
    assert km.conf_type == "log-log"
    # the two methods genuinely differ at one year (this is why the method is reported)
    log = survival_at(kaplan_meier(lung["time"], lung["status"]), [365.25])[0]
    loglog = survival_at(km, [365.25])[0]
    assert log.survival == loglog.survival
    assert abs(log.lower - loglog.lower) > 1e-3


def test_number_at_risk_table(lung):
    km = kaplan_meier(lung["time"], lung["status"])
    times = [0, 250, 500, 750, 1000]
    got = number_at_risk(km, times)
    expected = [int((lung["time"] >= t).sum()) for t in times]
    assert got == expected
    assert got[0] == 228


def test_summary_is_json_ready(lung):
    import json

    km = kaplan_meier(lung["time"], lung["status"])
    summ = summarize(km, [365.25, 730.5, 1826.25]).to_dict()
    text = json.dumps(summ)  # must not raise (no numpy types, no NaN)
    assert "NaN" not in text
    assert summ["at_times"][2]["survival"] is None  # 5 years is beyond follow-up (R: not printed)
    assert summ["conf_type"] == "log"


def test_survival_report_from_endpoint_frame_matches_r(lung):
    """Same lung numbers through the endpoints-frame bridge (time already in days)."""
    import json

    from outcomes.survival import survival_report

    frame = lung.rename(columns={"time": "os_days", "status": "os_event"})
    rep = survival_report(frame, "os", group_col="sex", unit="days", landmarks_years=(1,))
    json.dumps(rep)
    assert rep["conf_type"] == "log" and rep["unit"] == "days"
    assert rep["groups"]["1"]["median"]["median"] == 270
    assert rep["groups"]["2"]["median"]["lower"] == 348
    assert round(rep["logrank"]["chisq"], 4) == 10.3267
    overall = survival_report(frame, "os", unit="days", landmarks_years=(1,))
    one_year = overall["groups"]["all"]["at_times"][0]
    assert (round(one_year["survival"], 3), round(one_year["lower"], 3), round(one_year["upper"], 3)) == (0.409, 0.345, 0.486)
    months = survival_report(frame, "os", unit="months")
    assert months["groups"]["all"]["median"]["median"] == pytest.approx(310 / 30.4375)
