"""RMST, competing risks (cumulative incidence, Gray's test, Fine-Gray) against R; no R needed at test time.

Data files (tests/data/, written out of R 4.2.2 on this project's machine):

* ``pbc312.csv``: the 312 randomised patients of the Mayo PBC trial, ``survival::pbc[1:312, c("id", "time",
  "status", "trt")]`` (status 2 = death; trt 1 = D-penicillamine, 2 = placebo), written with ``write.csv``.
* ``cmprsk_test.csv``: the simulated data of cmprsk's own regression test (``tests/test.R`` of the CRAN package),
  regenerated with the RNG that test uses::

      RNGversion("1.6.2"); set.seed(2)
      ss <- rexp(100); gg <- factor(sample(1:3, 100, replace=TRUE), 1:3, c("a","b","c"))
      cc <- sample(0:2, 100, replace=TRUE); strt <- sample(1:2, 100, replace=TRUE)
      dd <- data.frame(ss=abs(rnorm(100)))
      cv <- matrix(sample(0:1, 3*100, replace=TRUE), ncol=3); cv[c(1,10,20)] <- NA
      # columns ss, ss2 = dd$ss, gg, cc, strt, cv1..cv3 (times printed with 17 significant digits)

  The expected cuminc / crr numbers are the ones printed in cmprsk's saved test output ``tests/test.Rout.save``
  (cmprsk is not packaged for Debian, so it is not run here; our CIFs reproduce its printed 7 digits, which also
  proves the data were regenerated exactly).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from outcomes.competing import cumulative_incidence, cumulative_incidence_by_group, fine_gray, gray_test
from outcomes.rmst import max_tau, rmst, rmst_by_group, rmst_compare

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def pbc():
    d = pd.read_csv(DATA / "pbc312.csv")
    assert len(d) == 312 and int((d["status"] == 2).sum()) == 125
    d["years"] = d["time"] / 365.25
    d["death"] = (d["status"] == 2).astype(int)
    return d


@pytest.fixture(scope="module")
def crdata():
    d = pd.read_csv(DATA / "cmprsk_test.csv")
    assert len(d) == 100
    return d


# ------------------------------------------------------------------------------------------ RMST


def test_rmst_per_arm_matches_r_print_survfit_rmean(pbc):
    """R (run here)::

        fit <- survfit(Surv(time/365.25, status==2) ~ trt, data=pbc[1:312,])
        print(fit, rmean=10, digits=7)
        #         n events   rmean* se(rmean)
        # trt=1 158     65 7.146493 0.2827748
        # trt=2 154     60 7.283416 0.2954781
        print(survfit(Surv(time/365.25, status==2) ~ 1, data=pbc[1:312,]), rmean=10, digits=7)
        # 312 125 7.208579 0.2047032
    """
    arms = rmst_by_group(pbc["years"], pbc["death"], pbc["trt"], tau=10)
    assert (arms["1"].n, arms["1"].events, arms["2"].n, arms["2"].events) == (158, 65, 154, 60)
    assert arms["1"].rmst == pytest.approx(7.146493, abs=5e-7)
    assert arms["1"].se == pytest.approx(0.2827748, abs=5e-8)
    assert arms["2"].rmst == pytest.approx(7.283416, abs=5e-7)
    assert arms["2"].se == pytest.approx(0.2954781, abs=5e-8)
    overall = rmst(pbc["years"], pbc["death"], tau=10)
    assert (overall.rmst, overall.se) == (pytest.approx(7.208579, abs=5e-7), pytest.approx(0.2047032, abs=5e-8))
    assert overall.rmtl == pytest.approx(10 - 7.208579, abs=5e-7)


def test_rmst_contrasts_match_survrm2(pbc):
    """survRM2 vignette ("Comparing two survival curves using the restricted mean survival time"), ``rmst2(time,
    status, arm, tau=10)`` on the same 312 PBC patients, arm = 1 for D-penicillamine: "the difference in RMST
    (the first row of the Between-group contrast block) was -0.137 years", per-arm RMST 7.146 (se 0.283) and
    7.283 (0.295). The contrasts are rmst2's rules (difference +- z sqrt(v1 + v0); ratios on the log scale with
    var log R = v1/R1^2 + v0/R0^2), evaluated here on R's printed per-arm rmean and se (test above).
    """
    from scipy.stats import norm

    arms = rmst_by_group(pbc["years"], pbc["death"], pbc["trt"], tau=10)
    cmp = rmst_compare(arms["1"], arms["2"])
    a1, a0 = cmp.arm1, cmp.arm0
    assert (round(a1.rmst, 3), round(a1.se, 3), round(a0.rmst, 3), round(a0.se, 3)) == (7.146, 0.283, 7.283, 0.295)
    assert round(cmp.difference.estimate, 3) == -0.137
    r1, s1, r0, s0, z = 7.146493, 0.2827748, 7.283416, 0.2954781, norm.ppf(0.975)
    se_d = np.hypot(s1, s0)
    d = cmp.difference
    np.testing.assert_allclose([d.estimate, d.lower, d.upper, d.p_value],
                               [r1 - r0, r1 - r0 - z * se_d, r1 - r0 + z * se_d, 2 * norm.sf(abs(r1 - r0) / se_d)],
                               atol=2e-6)
    se_lr = np.hypot(s1 / r1, s0 / r0)
    r = cmp.ratio
    np.testing.assert_allclose([r.estimate, r.lower, r.upper], [r1 / r0, r1 / r0 * np.exp(-z * se_lr),
                                                                r1 / r0 * np.exp(z * se_lr)], rtol=1e-6)
    l1, l0 = 10 - r1, 10 - r0
    se_ll = np.hypot(s1 / l1, s0 / l0)
    m = cmp.rmtl_ratio
    np.testing.assert_allclose([m.estimate, m.lower, m.upper], [l1 / l0, l1 / l0 * np.exp(-z * se_ll),
                                                                l1 / l0 * np.exp(z * se_ll)], rtol=1e-6)
    assert d.lower < 0 < d.upper and r.lower < 1 < r.upper  # no difference between the arms, as published
    assert cmp.to_dict()["difference"]["measure"] == "RMST difference"


def test_rmst_refuses_tau_beyond_follow_up(pbc):
    limit = max_tau(pbc["years"], pbc["trt"])
    assert limit == pytest.approx(min(pbc.loc[pbc.trt == 1, "years"].max(), pbc.loc[pbc.trt == 2, "years"].max()))
    with pytest.raises(ValueError, match="beyond the last follow-up"):
        rmst_by_group(pbc["years"], pbc["death"], pbc["trt"], tau=limit + 0.5)


def test_rmst_without_censoring_is_the_mean_of_truncated_times():
    t = np.array([1.0, 2.0, 4.0, 7.0, 9.0])
    res = rmst(t, np.ones(5), tau=5)
    assert res.rmst == pytest.approx(np.minimum(t, 5).mean())


# ------------------------------------------------------------------------------ competing risks


def test_cumulative_incidence_matches_cmprsk_cuminc(crdata):
    """cmprsk test.Rout.save, ``print(xx <- cuminc(ss, cc))`` at times 1..5::

        1 1 0.2352861 0.3287068 0.4247898 0.4247898 0.4247898   var 0.002062112 0.002957844 0.004170634 ...
        1 2 0.2567862 0.3931580 0.4631781 0.4911861 0.4911861   var 0.002190305 0.003273248 0.004004514 0.004369940
    """
    times = [1, 2, 3, 4, 5]
    one = cumulative_incidence(crdata["ss"], crdata["cc"], cause=1).at(times)
    two = cumulative_incidence(crdata["ss"], crdata["cc"], cause=2).at(times)
    np.testing.assert_allclose([r["cif"] for r in one], [0.2352861, 0.3287068, 0.4247898, 0.4247898, 0.4247898],
                               atol=5e-8)
    np.testing.assert_allclose([r["std_err"] ** 2 for r in one],
                               [0.002062112, 0.002957844, 0.004170634, 0.004170634, 0.004170634], atol=5e-10)
    np.testing.assert_allclose([r["cif"] for r in two], [0.2567862, 0.3931580, 0.4631781, 0.4911861, 0.4911861],
                               atol=5e-8)
    np.testing.assert_allclose([r["std_err"] ** 2 for r in two],
                               [0.002190305, 0.003273248, 0.004004514, 0.004369940, 0.004369940], atol=5e-10)
    # CIF(cause 1) + CIF(cause 2) + KM = 1 at every time (Aalen-Johansen identity)
    from outcomes.survival import kaplan_meier, survival_at
    km = kaplan_meier(crdata["ss"], (crdata["cc"] > 0).astype(int))
    for r1, r2, s in zip(one, two, survival_at(km, times)):
        if s.survival is not None:
            assert r1["cif"] + r2["cif"] + s.survival == pytest.approx(1.0, abs=1e-12)


def test_cumulative_incidence_by_group_matches_cmprsk(crdata):
    """``cuminc(ss, cc, gg, strt)`` estimates and variances (NA after a group's last follow-up)::

        a 1 0.1311269 0.2699184 0.3420625 0.3420625 0.3420625   var 0.003922836 0.009113464 0.012507959 ...
        b 1 0.2176471 0.2615686        NA        NA        NA   var 0.005528913 0.006916070 NA
        c 1 0.3816280 0.4889137 0.5723581        NA        NA   var 0.009854126 0.012351948 0.015575726
    """
    g = cumulative_incidence_by_group(crdata["ss"], crdata["cc"], crdata["gg"], cause=1)
    at = {k: v.at([1, 2, 3, 4, 5]) for k, v in g.items()}
    np.testing.assert_allclose([r["cif"] for r in at["a"]], [0.1311269, 0.2699184, 0.3420625, 0.3420625, 0.3420625],
                               atol=5e-8)
    assert [r["cif"] for r in at["b"]][2:] == [None, None, None]
    np.testing.assert_allclose([r["cif"] for r in at["b"]][:2], [0.2176471, 0.2615686], atol=5e-8)
    np.testing.assert_allclose([r["std_err"] ** 2 for r in at["c"][:3]], [0.009854126, 0.012351948, 0.015575726],
                               atol=5e-10)
    one = g["a"].at([2])[0]
    assert one["lower"] < one["cif"] < one["upper"]


@pytest.mark.parametrize(
    "time_col, subset, expected",
    [
        # print(xx <- cuminc(dd$ss, cc, gg, strt))
        ("ss2", None, [(1.214132, 0.5449473, 2), (3.269462, 0.1950048, 2)]),
        # print(xx <- cuminc(ss, cc, gg, strt))
        ("ss", None, [(3.393977, 0.1832345, 2), (1.989511, 0.3698139, 2)]),
        # print(xx <- cuminc(ssd, ccd, gg2, strtd, subset = gg != 'b'))
        ("ss", "no_b", [(3.5151549, 0.06080997, 1), (0.1400145, 0.70826655, 1)]),
    ],
)
def test_gray_test_matches_cmprsk(crdata, time_col, subset, expected):
    d = crdata if subset is None else crdata[crdata["gg"] != "b"]
    for cause, (stat, p, df) in zip((1, 2), expected):
        res = gray_test(d[time_col], d["cc"], d["gg"], cause=cause, strata=d["strt"])
        assert res.df == df
        assert res.statistic == pytest.approx(stat, abs=5e-6)
        assert res.p_value == pytest.approx(p, abs=5e-7)
        assert res.stratified


def test_gray_test_without_events_of_the_cause_says_so():
    res = gray_test([1, 2, 3, 4], [2, 0, 2, 0], ["a", "a", "b", "b"], cause=1)
    assert res.statistic is None and res.p_value is None and "no event of cause 1" in res.note


def test_fine_gray_matches_cmprsk_crr_and_survival_finegray(crdata):
    """Coefficients: cmprsk test.Rout.save ``crr(ss, cc, cv)`` -> -0.29130 -0.06346 -0.47510 (crr's own SEs
    0.3698 0.3566 0.3544 include a censoring-estimation term, hence ~0.002 apart from the robust ones below), and
    ``crr(ss, cc, cv[,1])`` -> -0.1753 (se 0.354).
    R's survival (run here, 3.5-3)::

        d <- na.omit(transform(read.csv("cmprsk_test.csv"), id = seq_len(100)))
        d$ev <- factor(d$cc, 0:2, c("censor", "one", "two"))
        fg <- finegray(Surv(ss, ev) ~ ., data = d, etype = "one")
        fit <- coxph(Surv(fgstart, fgstop, fgstatus) ~ cv1 + cv2 + cv3, weights = fgwt, data = fg,
                     ties = "breslow", cluster = id)
        # coef   -0.29132505562 -0.06345633266 -0.47511118582
        # robust  0.3699913186   0.3567117935   0.3551790540
        # naive   0.3752033547   0.3627625403   0.3709624974      loglik -124.4797694
        # ~ cv1: coef -0.1752852898, robust 0.3536972414, naive 0.3615681670
    """
    res = fine_gray(crdata, "ss", "cc", ["cv1", "cv2", "cv3"], cause=1)
    assert res.converged and res.n == 97  # 3 rows with a missing covariate dropped, as R
    coef = [t.coef for t in res.terms]
    np.testing.assert_allclose(coef, [-0.29132505562, -0.06345633266, -0.47511118582], atol=1e-8)
    np.testing.assert_allclose(coef, [-0.29130, -0.06346, -0.47510], atol=5e-5)  # crr's printed digits
    np.testing.assert_allclose([t.se for t in res.terms], [0.3699913186, 0.3567117935, 0.3551790540], atol=1e-8)
    np.testing.assert_allclose([t.se_model for t in res.terms], [0.3752033547, 0.3627625403, 0.3709624974],
                               atol=1e-8)
    np.testing.assert_allclose([t.se for t in res.terms], [0.3698, 0.3566, 0.3544], atol=1e-3)
    assert res.log_likelihood == pytest.approx(-124.4797694, abs=1e-6)
    one = fine_gray(crdata, "ss", "cc", ["cv1"]).terms[0]
    assert (one.coef, one.se, one.se_model) == (pytest.approx(-0.1752852898, abs=1e-8),
                                                pytest.approx(0.3536972414, abs=1e-8),
                                                pytest.approx(0.3615681670, abs=1e-8))
    assert one.shr == pytest.approx(np.exp(one.coef))


def test_fine_gray_without_competing_events_is_the_breslow_cox_model(crdata):
    """No competing event: the subdistribution hazard is the ordinary hazard, so Fine-Gray = Cox (Breslow)."""
    from lifelines import CoxPHFitter  # lifelines has no Breslow option; compare with our own Newton on the data

    d = crdata.dropna().copy()
    d["single"] = (d["cc"] > 0).astype(int)
    fg = fine_gray(d, "ss", "single", ["cv1", "cv2"], cause=1)
    cph = CoxPHFitter().fit(d[["ss", "single", "cv1", "cv2"]], "ss", "single")  # Efron; no ties in rexp data
    np.testing.assert_allclose([t.coef for t in fg.terms], cph.params_.to_numpy(), atol=1e-6)
    np.testing.assert_allclose([t.se_model for t in fg.terms], cph.standard_errors_.to_numpy(), atol=1e-6)
