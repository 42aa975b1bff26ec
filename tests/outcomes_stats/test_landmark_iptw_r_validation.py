"""Landmark analysis and IPTW-weighted Kaplan-Meier / Cox against R's survival (3.5-3, run on this machine with
``make r-reference``); the tests need no R.

Data (tests/data/, written out of R):

* ``jasa.csv``: Stanford heart transplant waiting list, ``survival::jasa``: futime = fu.date - accept.dt,
  fustat, wait = tx.date - accept.dt (NA = never transplanted).
* ``gbsg.csv``: German Breast Cancer Study Group 2, ``survival::gbsg[, c("rfstime", "status", "hormon", "age",
  "meno", "size", "nodes")]`` (686 patients; hormon = tamoxifen, not randomised in this cohort).
* lung: ``lifelines.datasets.load_lung()`` (= ``survival::lung`` with status recoded 0/1).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines.datasets import load_lung

from outcomes.iptw import iptw_analysis, logistic_regression, propensity_weights, weighted_kaplan_meier
from outcomes.landmark import landmark_analysis
from outcomes.survival import median_survival, survival_at

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def gbsg():
    d = pd.read_csv(DATA / "gbsg.csv")
    assert len(d) == 686
    return d


def test_landmark_by_transplant_status_matches_r():
    """R::

        d <- data.frame(futime = as.numeric(jasa$fu.date - jasa$accept.dt), fustat = jasa$fustat,
                        wait = as.numeric(jasa$tx.date - jasa$accept.dt))
        lm <- subset(d, futime >= 30); lm$grp <- ifelse(!is.na(lm$wait) & lm$wait <= 30, "yes", "no")
        survdiff(Surv(futime - 30, fustat) ~ grp, data = lm)
        #  grp=no  44 30 28.88331   grp=yes 35 22 23.11669   Chisq= 0.1 on 1 df, p= 0.754248  ((O-E)^2/V 0.097996197)
        survfit(Surv(futime - 30, fustat) ~ grp, data = lm)
        #  grp=no 44 30 188 (79, 644)   grp=yes 35 22 312 (50, NA)
    """
    j = pd.read_csv(DATA / "jasa.csv")
    res = landmark_analysis(j["futime"], j["fustat"], 30, group_event_times=j["wait"])
    assert (res.n_total, res.n_at_risk) == (103, 79)
    assert res.excluded_events + res.excluded_censored == 103 - 79
    lr = res.logrank
    assert lr.groups == ["no", "yes"] and lr.n == [44, 35] and lr.observed == [30, 22]
    np.testing.assert_allclose(lr.expected, [28.88331, 23.11669], atol=5e-6)
    assert lr.chisq == pytest.approx(0.097996197, abs=5e-9)
    assert lr.p_value == pytest.approx(0.754248, abs=5e-7)
    no, yes = median_survival(res.curves["no"]), median_survival(res.curves["yes"])
    assert (no.median, no.lower, no.upper) == (188, 79, 644)
    assert (yes.median, yes.lower, yes.upper) == (312, 50, None)
    # a transplant after day 30 does not put the patient in "yes" (no immortal-time bias)
    late = j[(j["futime"] >= 30) & (j["wait"] > 30)]
    assert len(late) > 0 and res.curves["no"].n == 44


def test_landmark_with_baseline_groups_matches_r_on_lung():
    """R::

        sl <- subset(lung, time >= 180); sl$status <- sl$status - 1
        survdiff(Surv(time - 180, status) ~ sex, data = sl)  # 89/64/55.576899, 71/39/47.423101, p= 0.0942275
        survfit(Surv(time - 180, status) ~ sex, data = sl)   # sex=1 207 (149, 280); sex=2 293 (191, 507)
        summary(..., times = 365)  # sex=1: n.risk 17, n.event 51, 0.29109127 se 0.05624054 (0.19932972, 0.42509531)
    """
    lung = load_lung()
    res = landmark_analysis(lung["time"], lung["status"], 180, groups=lung["sex"])
    assert res.n_at_risk == 160 and res.group_rule == "baseline group"
    assert res.logrank.observed == [64, 39]
    np.testing.assert_allclose(res.logrank.expected, [55.576899, 47.423101], atol=5e-7)
    assert res.logrank.p_value == pytest.approx(0.0942275, abs=5e-8)
    m1, m2 = median_survival(res.curves["1"]), median_survival(res.curves["2"])
    assert (m1.median, m1.lower, m1.upper, m2.median, m2.lower, m2.upper) == (207, 149, 280, 293, 191, 507)
    (s,) = survival_at(res.curves["1"], [365])
    assert (s.n_risk, s.n_event) == (17, 51)
    np.testing.assert_allclose([s.survival, s.std_err, s.lower, s.upper],
                               [0.29109127, 0.05624054, 0.19932972, 0.42509531], atol=5e-9)
    out = res.to_dict([365])
    assert out["groups"]["1"]["at_times"][0]["n_risk"] == 17 and out["landmark"] == 180


def test_landmark_without_anyone_at_risk_is_refused():
    with pytest.raises(ValueError, match="no patient is still at risk"):
        landmark_analysis([10, 20], [1, 0], 30)


def test_propensity_model_matches_r_glm(gbsg):
    """R: ``coef(glm(hormon ~ age + meno + size + nodes, family = binomial, data = gbsg))`` ->
    -2.526734155092 0.027570498334 0.821930336316 -0.002816257805 0.005339458972; stabilised weights sum
    686.487282463, range 0.572116361 - 2.302852681; Kish ESS (sum w)^2/sum w^2: 419.9099104 (hormon 0),
    203.5485729 (hormon 1)."""
    ps = propensity_weights(gbsg, "hormon", ["age", "meno", "size", "nodes"])
    np.testing.assert_allclose(list(ps.coef.values()),
                               [-2.526734155092, 0.027570498334, 0.821930336316, -0.002816257805, 0.005339458972],
                               atol=1e-10)
    assert ps.converged
    assert ps.weights.sum() == pytest.approx(686.487282463, abs=1e-8)
    assert (ps.weights.min(), ps.weights.max()) == (pytest.approx(0.572116361, abs=1e-9),
                                                    pytest.approx(2.302852681, abs=1e-9))
    beta, ok = logistic_regression(np.zeros((4, 0)), np.array([0.0, 1, 1, 1]))
    assert ok and beta[0] == pytest.approx(np.log(3))  # intercept-only model: logit of the proportion


def test_iptw_weighted_km_and_cox_match_r(gbsg):
    """R::

        g$w <- ifelse(g$hormon == 1, p1 / e, (1 - p1) / (1 - e))     # e = fitted(glm above), p1 = mean(hormon)
        summary(survfit(Surv(rfstime, status) ~ hormon, data = g, weights = w), times = c(365, 1000, 2000))
        #  hormon=0: n.risk 381.33633895 210.49412990 38.49907632; surv 0.8998846978 0.6174228080 0.4064349216
        #            std.err 0.01470264625 0.02515722857 0.03302741045; lower 0.8715245471 0.5700329997 0.3465942180
        #  hormon=1: surv 0.9410246738 0.7284755722 0.5426354658; std.err 0.01793882881 0.03216156085 0.04540658979
        #  (robust = FALSE: std.err 0.01453853765 0.02442711166 0.03132284228 for hormon=0)
        print(fit)  # medians hormon=0 1525 (1280, 1814), hormon=1 2030 (1975, NA)
        cx <- coxph(Surv(rfstime, status) ~ hormon, data = g, weights = w, robust = TRUE, ties = "breslow")
        # coef -0.4180414406, robust se 0.1364449783, naive se 0.1248436002, rscore 9.9959660788
    """
    res = iptw_analysis(gbsg, "rfstime", "status", "hormon", ["age", "meno", "size", "nodes"])
    c0, c1 = res.curves["0"], res.curves["1"]
    rows0, rows1 = c0.at([365, 1000, 2000]), c1.at([365, 1000, 2000])
    np.testing.assert_allclose([r["weighted_n_risk"] for r in rows0], [381.33633895, 210.49412990, 38.49907632],
                               atol=1e-7)
    np.testing.assert_allclose([r["survival"] for r in rows0], [0.8998846978, 0.6174228080, 0.4064349216], atol=1e-10)
    np.testing.assert_allclose([r["std_err"] for r in rows0], [0.01470264625, 0.02515722857, 0.03302741045],
                               atol=1e-10)
    np.testing.assert_allclose([r["lower"] for r in rows0], [0.8715245471, 0.5700329997, 0.3465942180], atol=1e-9)
    np.testing.assert_allclose([r["survival"] for r in rows1], [0.9410246738, 0.7284755722, 0.5426354658], atol=1e-10)
    np.testing.assert_allclose([r["std_err"] for r in rows1], [0.01793882881, 0.03216156085, 0.04540658979],
                               atol=1e-10)
    # raw numbers at risk are the plain counts, beside the weighted ones
    arm0 = gbsg[gbsg["hormon"] == 0]
    assert [r["raw_n_risk"] for r in rows0] == [int((arm0["rfstime"] >= t).sum()) for t in (365, 1000, 2000)]
    assert (c0.effective_n, c1.effective_n) == (pytest.approx(419.9099104, abs=1e-6),
                                                pytest.approx(203.5485729, abs=1e-6))
    m0, m1 = median_survival(c0.km), median_survival(c1.km)
    assert (m0.median, m0.lower, m0.upper, m1.median, m1.lower, m1.upper) == (1525, 1280, 1814, 2030, 1975, None)
    assert res.hazard_ratio == pytest.approx(np.exp(-0.4180414406), rel=1e-9)
    assert res.hr_se == pytest.approx(0.1364449783, abs=1e-9)
    assert res.robust_score == pytest.approx(9.9959660788, abs=1e-8)
    assert res.treatment == "1 vs 0" and res.to_dict([365])["groups"]["1"]["at_times"][0]["weighted_n_risk"] > 0
    greenwood = weighted_kaplan_meier(arm0["rfstime"], arm0["status"], res_weights(gbsg)[gbsg["hormon"] == 0],
                                      robust=False)
    np.testing.assert_allclose([r["std_err"] for r in greenwood.at([365, 1000, 2000])],
                               [0.01453853765, 0.02442711166, 0.03132284228], atol=1e-10)


def res_weights(gbsg):
    return propensity_weights(gbsg, "hormon", ["age", "meno", "size", "nodes"]).weights


def test_unit_weights_give_the_ordinary_km(gbsg):
    from outcomes.survival import kaplan_meier

    wk = weighted_kaplan_meier(gbsg["rfstime"], gbsg["status"], np.ones(len(gbsg)), robust=False)
    km = kaplan_meier(gbsg["rfstime"], gbsg["status"])
    np.testing.assert_allclose(wk.km.survival, km.survival)
    np.testing.assert_allclose(wk.km.std_err, km.std_err)
    assert wk.effective_n == pytest.approx(686)


def test_iptw_needs_two_groups(gbsg):
    with pytest.raises(ValueError, match="exactly two groups"):
        iptw_analysis(gbsg.assign(g3=gbsg["meno"] + gbsg["hormon"] * 2), "rfstime", "status", "g3", ["age"])
