"""IPTW weighted by registry covariates, on GBSG2 imported through the registry CSV with its covariates (the data and
import of test_covariate_analyses.py): ``time`` / ``cens`` as OS from diagnosis, age from the birth date.

R 4.2.2, survival 3.5-3 (run on this machine with ``make r-reference``; the test needs no R), on lifelines'
``load_gbsg2()`` written to CSV::

    g <- read.csv("gbsg2.csv"); g$tr <- as.integer(g$horTh == "yes")
    g$menostat <- factor(g$menostat, levels = c("Pre", "Post")); g$tgrade <- factor(g$tgrade, levels = c("I", "II", "III"))
    m <- glm(tr ~ tsize + menostat + tgrade + pnodes + age, family = binomial, data = g)
    #  (Intercept) -2.30942473619814  tsize -0.00228417287319  menostatPost 0.83282904773778
    #  tgradeII -0.17901308213518  tgradeIII -0.37436759883723  pnodes 0.00793992839255  age 0.02661835259566
    e <- fitted(m); p1 <- mean(g$tr); g$w <- ifelse(g$tr == 1, p1 / e, (1 - p1) / (1 - e))
    # sum w 686.476421719, min 0.559047822751, max 2.66539190235; Kish ESS no 418.869258109, yes 202.147339309
    fit <- survfit(Surv(time, cens) ~ horTh, data = g, weights = w)
    summary(fit, times = c(365.25, 730.5, 1826.25))
    #  horTh=no : n.risk 382.0178379522 284.5097717361 63.0972351575
    #             surv   0.901000352807 0.727620811975 0.424007842520
    #             std.err 0.0145461858707 0.0223427642718 0.0310783974092
    #             lower  0.872936697533 0.685121511468 0.367268415721  upper 0.929966214104 0.772756419347 0.489512963333
    #  horTh=yes: n.risk 219.8778714433 176.8402210790 65.3288536441
    #             surv   0.936444728024 0.774439160944 0.595492250204
    #             std.err 0.0194570315711 0.0308783793050 0.0384828276499
    print(fit)  # medians no 1525 (1280, 1814), yes 2030 (1975, NA)
    cx <- coxph(Surv(time, cens) ~ tr, data = g, weights = w, robust = TRUE, ties = "breslow")
    #  coef -0.394653353048, robust se 0.137639253628, exp(coef) 95 % CI 0.514571207 - 0.882598066, rscore 8.77190434312
"""

import numpy as np
import pytest

from outcomes import services

from .test_covariate_analyses import gbsg2, gbsg2_registry  # noqa: F401 - the GBSG2 registry fixture

IPTW_TERMS = "gbsg2.tsize,gbsg2.menostat,gbsg2.tgrade,gbsg2.pnodes,age"


def test_iptw_weighted_by_registry_covariates_matches_r(gbsg2):  # noqa: F811
    cohort, _ = gbsg2
    body = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="gbsg2.horth",
                            iptw_covariates=IPTW_TERMS).to_dict()
    iptw = body["methods"]["iptw"]
    # the shared design: numeric covariates as values, categorical ones as dummies against the dictionary's first
    # level (menostat Pre, tgrade I), the same columns the Cox model would use
    assert iptw["covariates"] == ["gbsg2.tsize", "gbsg2.menostat=Post", "gbsg2.tgrade=II", "gbsg2.tgrade=III",
                                  "gbsg2.pnodes", "age_years"]
    assert iptw["covariate_labels"][:3] == ["gbsg2.tsize (per mm)", "gbsg2.menostat: Post (vs Pre)",
                                            "gbsg2.tgrade: II (vs I)"]
    coef = iptw["propensity_coef"]
    np.testing.assert_allclose(
        [coef[k] for k in ["(Intercept)", *iptw["covariates"]]],
        [-2.30942473619814, -0.00228417287319, 0.83282904773778, -0.17901308213518, -0.37436759883723,
         0.00793992839255, 0.02661835259566], atol=1e-9)
    assert iptw["treatment"] == "yes vs no" and iptw["n"] == 686
    assert (iptw["weight_min"], iptw["weight_max"]) == (pytest.approx(0.559047822751, abs=1e-9),
                                                        pytest.approx(2.66539190235, abs=1e-9))
    groups = {g["label"]: g for g in iptw["groups"]}
    assert sum(g["sum_weights"] for g in groups.values()) == pytest.approx(686.476421719, abs=1e-8)
    assert groups["no"]["effective_n"] == pytest.approx(418.869258109, abs=1e-7)
    assert groups["yes"]["effective_n"] == pytest.approx(202.147339309, abs=1e-7)
    r = {
        "no": {"weighted_n_risk": [382.0178379522, 284.5097717361, 63.0972351575],
               "survival": [0.901000352807, 0.727620811975, 0.424007842520],
               "std_err": [0.0145461858707, 0.0223427642718, 0.0310783974092],
               "lower": [0.872936697533, 0.685121511468, 0.367268415721],
               "upper": [0.929966214104, 0.772756419347, 0.489512963333]},
        "yes": {"weighted_n_risk": [219.8778714433, 176.8402210790, 65.3288536441],
                "survival": [0.936444728024, 0.774439160944, 0.595492250204],
                "std_err": [0.0194570315711, 0.0308783793050, 0.0384828276499]},
    }
    for label, cols in r.items():
        rows = groups[label]["at_times"]
        assert [row["years"] for row in rows] == [1, 2, 5]
        for col, expected in cols.items():
            np.testing.assert_allclose([row[col] for row in rows], expected, atol=1e-9, err_msg=f"{label} {col}")
    assert [groups[k]["median"][c] for k in ("no", "yes") for c in ("median", "lower", "upper")] == \
        [1525, 1280, 1814, 2030, 1975, None]
    assert iptw["hazard_ratio"] == pytest.approx(np.exp(-0.394653353048), rel=1e-9)
    assert iptw["hr_se"] == pytest.approx(0.137639253628, abs=1e-9)
    assert (iptw["hr_lower"], iptw["hr_upper"]) == (pytest.approx(0.514571207, abs=1e-9),
                                                    pytest.approx(0.882598066, abs=1e-9))
    assert iptw["robust_score"] == pytest.approx(8.77190434312, abs=1e-8)
    # the covariates used are described from the data dictionary
    assert {"gbsg2.tsize", "gbsg2.tgrade", "gbsg2.horth"} <= {c["key"] for c in body["covariates"]}


@pytest.mark.parametrize("value, says", [
    ("gbsg2.nope", "gbsg2.nope"),               # not in the dictionary
    ("gbsg2.tsize,colour", "colour"),           # neither a term nor a covariate key
    ("nope.tsize", "nope.tsize"),               # no such registry
    ("gbsg2.horth", "grouping"),                # the grouping itself
])
def test_bad_iptw_covariates_are_a_400_naming_the_field(client, users, value, says):
    gbsg2_registry()
    client.force_login(users["researcher"])
    resp = client.get("/api/outcomes/survival/", {"endpoint": "os", "group_by": "gbsg2.horth",
                                                  "iptw_covariates": value})
    assert resp.status_code == 400, resp.content
    assert says in " ".join(resp.json()["iptw_covariates"])


def test_iptw_by_a_registry_covariate_through_the_api(client, users, gbsg2):  # noqa: F811
    client.force_login(users["researcher"])
    body = client.get("/api/outcomes/survival/", {"site": "breast", "endpoint": "os", "time_zero": "diagnosis",
                                                  "group_by": "gbsg2.horth", "iptw_covariates": IPTW_TERMS,
                                                  "points": "0"}).json()
    iptw = body["methods"]["iptw"]
    assert iptw["robust_score"] == pytest.approx(8.77190434312, abs=1e-8)
    assert iptw["covariates"][0] == "gbsg2.tsize"
    page = client.get("/outcomes/analysis/", {"site": "breast", "endpoint": "os", "time_zero": "diagnosis",
                                               "group_by": "gbsg2.horth", "iptw_covariates": ["gbsg2.tsize", "age"]})
    html = page.content.decode()
    assert page.status_code == 200 and 'id="iptw"' in html
    assert "balanced on gbsg2.tsize (per mm), Age (per year)" in html  # the form offers the covariates
