"""NTCP library (outcomes.ntcp): LKB and logistic models against hand-computed values and the published model
files, DVH handling (differential, pooling, bin-wise EQD2), maximum-likelihood refits with profile-likelihood
intervals on simulated cohorts, and the validation statistics (Brier, DeLong AUC, calibration by decile)."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from outcomes import ntcp
from planning.engine import dvh as edvh

ROOT = Path(__file__).resolve().parents[2]


def phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def uniform(dose, volume_cc=1000.0):
    return ntcp.DVH(np.array([float(dose)]), np.array([1.0]), volume_cc)


# ---------------------------------------------------------------------------------------------- hand-computed

@pytest.mark.parametrize("n", [0.09, 0.5, 0.87, 1.0])
def test_uniform_dose_at_td50_gives_one_half_for_any_volume_parameter(n):
    h = uniform(24.5)
    assert h.geud(n) == pytest.approx(24.5)
    assert float(ntcp.lkb(h.geud(n), 24.5, 0.18)) == pytest.approx(0.5)


def test_geud_with_n_one_is_the_mean_dose_and_smaller_n_weights_hot_bins():
    h = ntcp.DVH(np.array([10.0, 30.0]), np.array([0.5, 0.5]))
    assert h.geud(1.0) == pytest.approx(h.mean()) == pytest.approx(20.0)
    assert h.geud(0.5) == pytest.approx(math.sqrt(0.5 * 100 + 0.5 * 900))  # 22.36 Gy
    assert h.geud(0.05) == pytest.approx(30.0 * 0.5**0.05)  # (0.5 30^20)^0.05 = 29.0: n -> 0 tends to the maximum


def test_lkb_hand_value_burman_lung():
    # gEUD 30 Gy, TD50 24.5 Gy, m 0.18: z = 5.5 / 4.41 = 1.2472, Phi(z) = 0.8938
    assert float(ntcp.lkb(30.0, 24.5, 0.18)) == pytest.approx(phi(5.5 / 4.41), abs=1e-12)
    assert float(ntcp.lkb(30.0, 24.5, 0.18)) == pytest.approx(0.8938, abs=1e-4)


def test_logistic_forms_agree_where_the_parameters_correspond():
    # QUANTEC lung b0 = -3.87, b1 = 0.126 /Gy  <=>  D50 = 30.71 Gy, gamma50 = b1 D50 / 4 = 0.9675
    d50, g50 = 3.87 / 0.126, 0.126 * (3.87 / 0.126) / 4
    x = np.linspace(0, 60, 13)
    assert np.allclose(ntcp.logistic_b(x, -3.87, 0.126), ntcp.logistic_d50(x, d50, g50))
    assert float(ntcp.logistic_b(d50, -3.87, 0.126)) == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ published models

def test_model_file_entries_are_complete_and_name_real_ctcae_terms():
    terms = {}
    with open(ROOT / "workflow" / "data" / "ctcae_v5.csv", newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if len(row) > 3:
                terms[row[2]] = row[3].split()
    models = ntcp.load_models()
    assert len(models) >= 4
    for m in models:
        assert m.citation and m.source and m.verified_against and m.population
        assert m.endpoint_term in terms and str(m.endpoint_grade) in terms[m.endpoint_term]
        assert m.correction == "eqd2" and m.alpha_beta_gy == 3.0


def test_quantec_mean_lung_dose_model_gives_the_quoted_risks():
    m = ntcp.get_model("pneumonitis_quantec_mld")
    # QUANTEC's lung guidance: MLD <= 20 Gy keeps symptomatic pneumonitis at about 20 %
    assert float(m.probability(20.0)) == pytest.approx(1 / (1 + math.exp(3.87 - 0.126 * 20)), abs=1e-12)
    assert float(m.probability(20.0)) == pytest.approx(0.206, abs=1e-3)
    assert m.d50 == pytest.approx(30.71, abs=0.01)


def test_pycerr_rectal_model_file_example():
    """pyCERR's ROE 'Rectal bleeding (grade 2+).json' (LKBFn, D50 76.9, m 0.13, n 0.09, a/b 3, 2 Gy standard):
    NTCP = 0.5 (1 + erf((gEUD - D50) / (m D50 sqrt 2)))."""
    m = ntcp.get_model("rectal_bleeding_quantec_lkb")
    assert (m.parameters["td50"], m.parameters["m"], m.parameters["n"]) == (76.9, 0.13, 0.09)
    # 40 % of the rectum at 70 Gy, 60 % at 40 Gy, in 2 Gy fractions (EQD2 = physical)
    h = ntcp.DVH(np.array([40.0, 70.0]), np.array([0.6, 0.4]))
    geud = (0.6 * 40 ** (1 / 0.09) + 0.4 * 70 ** (1 / 0.09)) ** 0.09
    expected = 0.5 * (1 + math.erf((geud - 76.9) / (0.13 * 76.9 * math.sqrt(2))))
    pred = m.predict(h, n_fractions=35)  # 70 Gy / 35 fx = 2 Gy at the hot bin, 40 Gy / 35 fx = 1.14 Gy in the cold one
    hot = 70 * (2 + 3) / 5
    cold = 40 * (40 / 35 + 3) / 5
    geud_eqd2 = (0.6 * cold ** (1 / 0.09) + 0.4 * hot ** (1 / 0.09)) ** 0.09
    assert pred["value"] == pytest.approx(geud_eqd2)
    assert pred["ntcp"] == pytest.approx(0.5 * (1 + math.erf((geud_eqd2 - 76.9) / (0.13 * 76.9 * math.sqrt(2)))))
    # gEUD ~ 70 x 0.4^0.09 = 64.48 Gy (the hot 40 % dominates), z = (64.5 - 76.9) / 10.0 = -1.24
    assert geud == pytest.approx(64.48, abs=0.01) and expected == pytest.approx(0.107, abs=1e-3)
    assert pred["ntcp"] == pytest.approx(expected, abs=1e-3)  # the hot bin is in 2 Gy fractions: EQD2 changes little


def test_pycerr_appelt_model_file_example():
    """pyCERR's 'Pneumonitis (Appelt).json' without risk factors: NTCP = 1 / (1 + exp(4 g50 (1 - MLD / D50)))."""
    m = ntcp.get_model("pneumonitis_appelt_mld")
    assert (m.parameters["d50"], m.parameters["gamma50"]) == (34.4, 1.19)
    assert float(m.probability(20.0)) == pytest.approx(1 / (1 + math.exp(4 * 1.19 * (1 - 20 / 34.4))))
    assert float(m.probability(20.0)) == pytest.approx(0.1200, abs=1e-4)  # 4.76 x 0.4186 = 1.993, 1 / (1 + e^1.993)


# -------------------------------------------------------------------------------------------------------- DVH

def test_differential_dvh_from_the_engine_cumulative_dvh_keeps_the_mean():
    rng = np.random.default_rng(3)
    doses = rng.gamma(4.0, 5.0, 20000)
    h = edvh.cumulative_dvh("Lung", doses, 0.064, bin_gy=0.25)
    d = ntcp.DVH.from_cumulative(h.dose_gy, h.volume_pct, h.volume_cc)
    assert d.fraction.sum() == pytest.approx(1.0)
    assert d.mean() == pytest.approx(doses.mean(), abs=0.125)  # within half a bin
    assert d.v(20.0) == pytest.approx(100 * np.mean(doses >= 20.0), abs=0.5)


def test_eqd2_is_applied_bin_by_bin():
    assert uniform(50.0).eqd2(25, 3.0).mean() == pytest.approx(50.0)  # 2 Gy fractions: unchanged
    assert uniform(20.0).eqd2(5, 3.0).mean() == pytest.approx(28.0)  # 4 Gy x 5: 20 (4 + 3) / 5
    h = ntcp.DVH(np.array([5.0, 20.0]), np.array([0.5, 0.5])).eqd2(5, 3.0)
    # each bin on its own: 5 (1 + 3) / 5 = 4 and 28, mean 16; converting the mean (12.5 Gy) would give 12.5 (2.5 + 3) / 5 = 13.75
    assert h.mean() == pytest.approx(16.0)


def test_pooling_left_and_right_lung_weights_by_volume():
    left, right = uniform(5.0, 1000.0), uniform(25.0, 3000.0)
    both = ntcp.pool([left, right])
    assert both.mean() == pytest.approx(20.0) and both.volume_cc == 4000.0
    m = ntcp.get_model("pneumonitis_quantec_mld")
    assert m.structures_for(["PTV", "Lung L (contralateral)", "Lung R (ipsilateral)", "Heart"]) == [
        "Lung L (contralateral)", "Lung R (ipsilateral)"]
    assert m.structures_for(["Lungs", "Lung L", "Cord"]) == ["Lungs"]  # the whole organ when it is contoured
    assert m.structures_for(["Rectum", "Bladder"]) == []
    for whole in ("Lung_GTV", "Lungs-GTV", "LUNG_TOTAL", "Total Lung", "Lungs - GTV"):
        assert m.structures_for(["Lung_L", whole, "Lung_R"]) == [whole]
    assert m.structures_for(["LUNG_L", "Lung_R", "Lung Left-GTV"]) == ["LUNG_L", "Lung_R", "Lung Left-GTV"]


# ------------------------------------------------------------------------------------------------------ fits

def _simulate(rng, n, prob):
    x = rng.uniform(0.0, 50.0, n)
    return x, (rng.random(n) < prob(x)).astype(int)


def test_logistic_fit_recovers_known_parameters_and_profile_intervals_cover_them():
    covered = {"d50": 0, "gamma50": 0}
    reps = 20
    for seed in range(reps):
        rng = np.random.default_rng(100 + seed)
        x, y = _simulate(rng, 300, lambda d: ntcp.logistic_d50(d, 28.0, 1.1))
        fit = ntcp.fit_logistic(x, y)
        for name, truth in (("d50", 28.0), ("gamma50", 1.1)):
            lo, hi = fit.ci[name]
            assert lo is not None and hi is not None and lo < fit.estimate[name] < hi
            covered[name] += lo <= truth <= hi
    assert covered["d50"] >= 16 and covered["gamma50"] >= 16  # nominal 95 %: 19 of 20 expected

    rng = np.random.default_rng(7)
    x, y = _simulate(rng, 2000, lambda d: ntcp.logistic_d50(d, 28.0, 1.1))
    fit = ntcp.fit_logistic(x, y)
    assert fit.estimate["d50"] == pytest.approx(28.0, rel=0.05) and fit.estimate["gamma50"] == pytest.approx(1.1, rel=0.15)
    # the profile bound really is where the log-likelihood has dropped by 3.841 / 2
    lo = fit.ci["d50"][0]
    from scipy import optimize

    prof = -optimize.minimize_scalar(lambda g: ntcp._nll(ntcp.logistic_d50(x, lo, g), y), bounds=(0.01, 10), method="bounded").fun
    assert fit.log_likelihood - prof == pytest.approx(3.841 / 2, abs=0.01)


def test_lkb_fit_on_dvhs_recovers_td50_and_m():
    rng = np.random.default_rng(11)
    dvhs, ys = [], []
    for _ in range(500):
        hot = rng.uniform(0.1, 0.6)
        d = ntcp.DVH(np.array([rng.uniform(0, 10), rng.uniform(20, 70)]), np.array([1 - hot, hot]))
        dvhs.append(d)
        ys.append(int(rng.random() < float(ntcp.lkb(d.geud(0.87), 24.5, 0.18))))
    fit = ntcp.fit_lkb(dvhs, np.array(ys), n=0.87)
    assert fit.estimate["td50"] == pytest.approx(24.5, rel=0.08) and fit.estimate["m"] == pytest.approx(0.18, rel=0.35)
    for name, truth in (("td50", 24.5), ("m", 0.18)):
        assert fit.ci[name][0] <= truth <= fit.ci[name][1]


def test_lkb_fit_with_free_volume_parameter_recovers_n():
    rng = np.random.default_rng(21)
    dvhs, ys = [], []
    for _ in range(300):
        hot = rng.uniform(0.05, 0.7)
        d = ntcp.DVH(np.array([rng.uniform(0, 15), rng.uniform(15, 60)]), np.array([1 - hot, hot]))
        dvhs.append(d)
        ys.append(int(rng.random() < float(ntcp.lkb(d.geud(0.5), 30.0, 0.25))))
    fit = ntcp.fit_lkb(dvhs, np.array(ys))
    assert fit.names == ("td50", "m", "n")
    for name, truth in (("td50", 30.0), ("m", 0.25), ("n", 0.5)):
        lo, hi = fit.ci[name]
        assert lo <= truth <= hi and fit.estimate[name] == pytest.approx(truth, rel=0.25)
    assert fit.ci["n"][1] < 1.0  # the data reject a mean-dose (n = 1) organ


def test_vx_metric_logistic_model():
    m = ntcp.Model.from_dict({"id": "v20", "name": "V20 logistic", "endpoint": {"term": "Pneumonitis", "grade": 2},
                              "organ": "Lungs", "structures": {"whole": "^lungs$"}, "form": "logistic", "metric": "V20",
                              "parameters": {"b0": -4.0, "b1": 0.1}, "fractionation": {"correction": "none"}})
    h = ntcp.DVH(np.array([5.0, 19.9, 20.0, 45.0]), np.array([0.4, 0.3, 0.2, 0.1]))
    pred = m.predict(h, n_fractions=30)
    assert pred["value"] == pytest.approx(30.0)  # V20 = 20 % + 10 %
    assert pred["ntcp"] == pytest.approx(1 / (1 + math.exp(4.0 - 3.0)))
    with pytest.raises(ValueError, match="needs parameters"):
        ntcp.Model.from_dict({"id": "x", "name": "x", "endpoint": {"term": "Pneumonitis", "grade": 2}, "organ": "Lungs",
                              "structures": {"whole": "^lungs$"}, "form": "lkb", "metric": "gEUD", "parameters": {"td50": 30}})


def test_fit_refuses_a_cohort_without_both_outcomes():
    with pytest.raises(ValueError, match="with and without"):
        ntcp.fit_logistic([10.0, 20.0, 30.0], [0, 0, 0])


# --------------------------------------------------------------------------------------------- validation

def test_auc_is_mann_whitney_and_delong_variance_matches_the_structural_components():
    rng = np.random.default_rng(5)
    y = (rng.random(80) < 0.35).astype(int)
    p = np.round(np.clip(0.3 + 0.25 * y + rng.normal(0, 0.2, 80), 0, 1), 1)  # rounded: ties
    res = ntcp.auc_delong(p, y)
    pos, neg = p[y == 1], p[y == 0]
    u = stats.mannwhitneyu(pos, neg).statistic
    assert res["auc"] == pytest.approx(u / (len(pos) * len(neg)))

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    v10 = np.array([np.mean([psi(a, b) for b in neg]) for a in pos])
    v01 = np.array([np.mean([psi(a, b) for a in pos]) for b in neg])
    var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
    assert res["se"] == pytest.approx(math.sqrt(var))
    assert res["ci95"][0] < res["auc"] < res["ci95"][1]


def test_brier_and_calibration_by_decile():
    assert ntcp.brier([0.2, 0.8, 0.5], [0, 1, 1]) == pytest.approx((0.04 + 0.04 + 0.25) / 3)
    p = np.linspace(0.005, 0.995, 100)
    y = (np.arange(100) % 10 < np.arange(100) // 10).astype(int)  # decile k (0-based) has k events of 10
    cal = ntcp.calibration_by_decile(p, y)
    assert [g["n"] for g in cal] == [10] * 10
    assert [g["events"] for g in cal] == list(range(10))
    assert cal[0]["predicted"] == pytest.approx(p[:10].mean())
    lo, hi = cal[5]["observed_ci95"]
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)  # Wilson 5/10


def test_dose_response_bins():
    x = np.array([2.0, 4.0, 12.0, 14.0, 16.0, 22.0])
    y = np.array([0, 0, 0, 1, 0, 1])
    bins = ntcp.dose_response_bins(x, y, ntcp.dose_edges(x, 10.0))
    assert [(b["from_gy"], b["n"], b["events"]) for b in bins] == [(0.0, 2, 0), (10.0, 3, 1), (20.0, 1, 1)]
