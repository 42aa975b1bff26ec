"""More published R ``survival`` output (AML maintenance trial, Miller 1981; R's ``aml`` data) and the
median rules of R's ``quantile.survfit``.

AML values were generated with R 4.5.2 / survival 3.8.9 and published as test fixtures in the
GitHub repository Cameron-Lyons/survival (``test/r_expected_values.json``):

* Maintained arm (time 9, 13, 13+, 18, 23, 28+, 31, 34, 45+, 48, 161+): survfit ``conf.type="log"``
  at the event times 9, 13, 18, 23, 31, 34, 48 ->
  survival 0.90909, 0.81818, 0.71591, 0.61364, 0.49091, 0.36818, 0.18409;
  lower 0.75413, 0.61925, 0.48843, 0.37687, 0.25486, 0.15488, 0.035918;
  upper 1, 1, 1, 0.99916, 0.94558, 0.87526, 0.94353. Median 31 (maintained), 23 (non-maintained).
* ``survfit(Surv(time, status) ~ x, data = aml)`` prints medians with CI
  ``x=Maintained 11 7 31 18 NA`` and ``x=Nonmaintained 12 11 23 8 NA`` (reproduced in several R
  tutorials, e.g. "Survival of the Fittest" and a Spanish GLM course, found via code search).
* survdiff by arm: observed 7 / 11, expected 10.689 / 7.311, chisq 3.3964, p 0.06534.
* coxph (Efron): coef 0.91553 for non-maintained vs maintained.
"""

import numpy as np
import pandas as pd
import pytest

from outcomes.survival import cox_ph, kaplan_meier, logrank_test, median_survival, survival_at

MAINT_T = [9, 13, 13, 18, 23, 28, 31, 34, 45, 48, 161]
MAINT_E = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0]
NONM_T = [5, 5, 8, 8, 12, 16, 23, 27, 30, 33, 43, 45]
NONM_E = [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1]


def test_aml_maintained_curve_and_log_ci_match_r():
    km = kaplan_meier(MAINT_T, MAINT_E)
    ev = [9, 13, 18, 23, 31, 34, 48]
    got = survival_at(km, ev)
    np.testing.assert_allclose([g.survival for g in got],
                               [0.90909090909, 0.81818181818, 0.71590909091, 0.61363636364, 0.49090909091,
                                0.36818181818, 0.18409090909], atol=1e-10)
    np.testing.assert_allclose([g.std_err for g in got],
                               [0.086678417204, 0.11629129983, 0.13966497056, 0.15263233103, 0.16419326722,
                                0.16266888583, 0.15349274579], atol=1e-10)
    np.testing.assert_allclose([g.lower for g in got],
                               [0.75413384508, 0.6192489874, 0.48842628742, 0.3768670595, 0.2548599512,
                                0.1548771179, 0.035917898489], atol=1e-10)
    np.testing.assert_allclose([g.upper for g in got],
                               [1, 1, 1, 0.99915760023, 0.9455849552, 0.87526067814, 0.94352576947], atol=1e-10)
    assert median_survival(km).median == 31


def test_aml_medians_with_ci_match_r_print():
    m = median_survival(kaplan_meier(MAINT_T, MAINT_E))
    assert (m.median, m.lower, m.upper) == (31, 18, None)
    n = median_survival(kaplan_meier(NONM_T, NONM_E))
    # the upper band is NA where S reaches 0 (t = 45): R's upper limit is NA, not 45
    assert (n.median, n.lower, n.upper) == (23, 8, None)


def test_aml_nonmaintained_zero_survival_has_no_ci():
    km = kaplan_meier(NONM_T, NONM_E)
    assert km.survival[-1] == 0
    assert np.isnan(km.lower[-1]) and np.isnan(km.upper[-1])  # R: NA
    assert km.to_dict()["lower"][-1] is None


def test_aml_logrank_and_cox_match_r():
    t = MAINT_T + NONM_T
    e = MAINT_E + NONM_E
    g = ["Maintained"] * 11 + ["Nonmaintained"] * 12
    lr = logrank_test(t, e, g)
    assert lr.observed == [7, 11]
    assert lr.expected == pytest.approx([10.6893359923, 7.3106640077], abs=1e-8)
    assert lr.chisq == pytest.approx(3.396388699, abs=1e-8)
    assert lr.p_value == pytest.approx(0.065339322041, abs=1e-9)
    df = pd.DataFrame({"time": t, "status": e, "nonmaintained": [0] * 11 + [1] * 12})
    cox = cox_ph(df, "time", "status", ["nonmaintained"])
    assert cox.terms[0].coef == pytest.approx(0.91553257501, abs=1e-5)
    assert cox.terms[0].hazard_ratio == pytest.approx(2.4981053262, abs=1e-4)


def test_median_midpoint_when_curve_sits_exactly_at_half():
    # 4 deaths at 1,2,3,4: S = .75, .5, .25, 0 -> R median = (2 + 3) / 2 = 2.5 (the sample median)
    assert median_survival(kaplan_meier([1, 2, 3, 4], [1, 1, 1, 1])).median == 2.5
    # flat at 0.5 until the end of follow-up (censored at 3 and 4): midpoint of [2, last time 4] = 3,
    # the end-of-curve rule in R's quantile.survfit source (survival 3.x, R/quantile.survfit.R)
    assert median_survival(kaplan_meier([1, 2, 3, 4], [1, 1, 0, 0])).median == 3.0
    # first crossing below 0.5 without an exact flat: the event time
    assert median_survival(kaplan_meier([1, 2, 3], [1, 1, 1])).median == 2


def test_median_not_reached_is_none():
    km = kaplan_meier([5, 10, 20, 30, 40], [1, 0, 0, 0, 0])
    med = median_survival(km)
    assert med.median is None and med.upper is None
    assert med.to_dict()["median"] is None


def test_invalid_event_coding_is_rejected():
    with pytest.raises(ValueError, match="0 = censored"):
        kaplan_meier([1, 2, 3], [1, 2, 2])  # R's 1/2 coding must be converted first


def test_three_group_logrank_matches_lifelines():
    from lifelines.datasets import load_lung
    from lifelines.statistics import multivariate_logrank_test

    lung = load_lung().dropna(subset=["ph.ecog"])
    lung = lung[lung["ph.ecog"] < 3]
    ours = logrank_test(lung["time"], lung["status"], lung["ph.ecog"])
    ref = multivariate_logrank_test(lung["time"], lung["ph.ecog"], lung["status"])
    assert ours.df == 2
    assert ours.chisq == pytest.approx(ref.test_statistic, rel=1e-10)


def test_events_at_requested_times_are_per_interval_as_in_r():
    """R's ``summary(survfit(Surv(time, status) ~ 1, lung), times = c(365.25, 730.5, 182.625))`` reports n.event
    per interval between the (sorted) requested times, not cumulatively. Checked against a direct count of the
    deaths in each interval of the data, and against R's published one-year row (121 deaths by 365.25 days)."""
    from lifelines.datasets import load_lung

    lung = load_lung().dropna(subset=["time", "status"])
    km = kaplan_meier(lung["time"], lung["status"])
    half, one, two = survival_at(km, [182.625, 365.25, 730.5])
    dead = lung["status"] == 1

    def deaths(lo, hi):
        return int((dead & (lung["time"] > lo) & (lung["time"] <= hi)).sum())

    assert one.n_event == deaths(182.625, 365.25)
    assert half.n_event + one.n_event == 121  # R: 121 events by one year
    assert (half.n_event, two.n_event) == (deaths(0, 182.625), deaths(365.25, 730.5))
    # order of the request does not change the intervals: they follow increasing time
    shuffled = {s.time: s.n_event for s in survival_at(km, [730.5, 182.625, 365.25])}
    assert shuffled == {182.625: half.n_event, 365.25: one.n_event, 730.5: two.n_event}


def test_logrank_without_events_says_why_instead_of_a_zero_statistic():
    t = np.array([5.0, 8.0, 12.0, 3.0, 9.0, 14.0])
    e = np.zeros(6)
    g = np.array(["a", "a", "a", "b", "b", "b"])
    res = logrank_test(t, e, g)
    assert res.chisq is None and res.p_value is None and res.df == 0
    assert "no events" in res.note
    assert res.observed == [0.0, 0.0]
    # one event, but only group "a" is at risk at its time: the groups still cannot be compared
    late = logrank_test(np.array([1.0, 2.0, 3.0, 10.0]), np.array([0, 0, 0, 1]), np.array(["b", "b", "a", "a"]))
    assert late.chisq is None and "cannot be compared" in late.note
    # with information the statistic is computed and there is no note
    ok = logrank_test(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 1, 1, 1]), np.array(["a", "b", "a", "b"]))
    assert ok.note is None and ok.df == 1 and ok.chisq > 0
