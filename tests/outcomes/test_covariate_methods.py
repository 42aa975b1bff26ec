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


# ---------------------------------------------------------------------------------------------------------------
# The analysis bundle: the Cox forest plot in the research export
# ---------------------------------------------------------------------------------------------------------------

BUNDLE_QUERY = {"site": "breast", "endpoint": "os", "time_zero": "diagnosis", "group_by": "gbsg2.tgrade",
                "cox_terms": "group,gbsg2.pnodes", "cox_strata": "gbsg2.horth"}


def _bundle(resp):
    import io
    import zipfile

    assert resp.status_code == 200, resp.content[:300]
    assert resp["Content-Type"] == "application/zip" and "attachment" in resp["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_analysis_export_carries_the_forest_plot_of_the_chosen_cox_model(client, users, gbsg2):  # noqa: F811
    """R: ``coxph(Surv(time, cens) ~ tgrade + pnodes + strata(horTh), data = g)`` (tgrade levels I, II, III):
    exp(coef) (lower, upper) tgradeII 2.148617205 (1.323923851, 3.487025246), tgradeIII 2.773810827 (1.658030695,
    4.640460834), pnodes 1.056980823 (1.042962841, 1.071187214); p 1.963e-03, 1.02e-04, 4.1e-16. The bundle's
    forest plot is the figure of exactly that model: its SVG writes each term's label and HR (CI) as the API result
    gives them, and it is byte for byte the figure /survival/forest.svg draws for the same parameters."""
    import json

    client.force_login(users["researcher"])
    files = _bundle(client.get("/api/outcomes/exports/analysis.zip", BUNDLE_QUERY))
    assert set(files) == {"README.txt", "manifest.json", "analysis.json", "km.png", "km.svg", "forest.png",
                          "forest.svg"}
    api = client.get("/api/outcomes/survival/", BUNDLE_QUERY).json()
    terms = api["cox"]["terms"]
    assert [t["covariate"] for t in terms] == ["gbsg2.tgrade=II", "gbsg2.tgrade=III", "gbsg2.pnodes"]
    r = [(2.148617205, 1.323923851, 3.487025246), (2.773810827, 1.658030695, 4.640460834),
         (1.056980823, 1.042962841, 1.071187214)]
    for t, (hr, lo, hi) in zip(terms, r):
        assert (t["hazard_ratio"], t["hr_lower"], t["hr_upper"]) == (pytest.approx(hr, rel=1e-7),
                                                                     pytest.approx(lo, rel=1e-7),
                                                                     pytest.approx(hi, rel=1e-7))
    svg = files["forest.svg"].decode()
    assert svg.startswith("<?xml") and "<svg" in svg
    for t in terms:
        assert t["label"] in svg, t["label"]
        assert f"{t['hazard_ratio']:.2f} ({t['hr_lower']:.2f}–{t['hr_upper']:.2f})" in svg
    assert "2.15 (1.32–3.49), p = 0.002" in svg and "2.77 (1.66–4.64), p &lt; 0.001" in svg
    assert "gbsg2.tgrade: II (vs I)" in svg and "gbsg2.pnodes (per node)" in svg
    assert "stratified by gbsg2.horth" in svg and "n = 686, events = 299" in svg
    assert files["forest.png"][:8] == b"\x89PNG\r\n\x1a\n" and files["km.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert files["forest.svg"] == client.get("/api/outcomes/survival/forest.svg", BUNDLE_QUERY).content
    assert files["forest.png"] == client.get("/api/outcomes/survival/forest.png", BUNDLE_QUERY).content
    assert files["km.svg"] == client.get("/api/outcomes/survival/plot.svg", BUNDLE_QUERY).content

    manifest = json.loads(files["manifest.json"])
    forest = manifest["forest_plot"]
    assert forest["included"] and forest["files"] == ["forest.png", "forest.svg"]
    assert forest["strata"] == ["gbsg2.horth"] and (forest["n"], forest["events"]) == (686, 299)
    assert [(t["covariate"], t["label"], t["hazard_ratio"]) for t in forest["terms"]] == \
        [(t["covariate"], t["label"], t["hazard_ratio"]) for t in terms]
    assert "log x axis" in forest["shows"] and manifest["parameters"]["cox_strata"] == "gbsg2.horth"
    assert set(manifest["files"]) == set(files)
    analysis = json.loads(files["analysis.json"])
    assert analysis["cox"]["terms"] == terms and analysis["cohort"]["sites"] == ["breast"]
    assert [g["label"] for g in analysis["groups"]] == ["I", "II", "III"] and "curve" in analysis["groups"][0]
    readme = files["README.txt"].decode()
    assert "forest.svg" in readme and "gbsg2.tgrade: III (vs I): HR 2.77 (1.66-4.64)" in readme
    assert "stratified by gbsg2.horth" in readme and "Grambsch-Therneau" in readme
    assert not any(b"GBSG0001" in data or b"Case1" in data for data in files.values())  # no MRN, no name


def test_page_style_repeated_terms_give_the_same_forest_plot(client, users, gbsg2):  # noqa: F811
    """The analysis page links the forest plot with its form's query, which repeats ``cox_terms``: every term is
    kept (not only the last one)."""
    client.force_login(users["researcher"])
    repeated = {**BUNDLE_QUERY, "cox_terms": ["group", "gbsg2.pnodes"]}
    assert client.get("/api/outcomes/survival/forest.svg", repeated).content == \
        client.get("/api/outcomes/survival/forest.svg", BUNDLE_QUERY).content
    body = client.get("/api/outcomes/survival/", {**repeated, "points": "0"}).json()
    assert len(body["cox"]["terms"]) == 3


def test_analysis_export_without_a_cox_fit_says_why(client, users, gbsg2):  # noqa: F811
    """18 patients with tumours up to 10 mm have 4 events: too few for a Cox model on age (5 per covariate), so the
    bundle has no forest plot and its manifest and README say why."""
    import json

    client.force_login(users["researcher"])
    q = {"site": "breast", "endpoint": "os", "time_zero": "diagnosis", "covariate": "gbsg2.tsize:..10"}
    files = _bundle(client.get("/api/outcomes/exports/analysis.zip", q))
    assert "forest.png" not in files and "forest.svg" not in files and "km.svg" in files
    manifest = json.loads(files["manifest.json"])
    reason = "Too few events (4) for a Cox model with 1 covariate(s) (need 5 per covariate)."
    assert manifest["forest_plot"] == {"included": False, "files": [], "reason": reason}
    assert manifest["n_patients"] == 18 and set(manifest["files"]) == set(files)
    assert f"Not included: {reason}" in files["README.txt"].decode()
    assert json.loads(files["analysis.json"])["cox_error"] == reason


def test_analysis_export_releases_what_the_analysis_releases(client, users, gbsg2, settings):  # noqa: F811
    """The bundle is the analysis: it passes (and records) the same patient sets in the researcher's ledger, so after
    the analysis it records nothing new; below the minimum cohort it is refused like the analysis; other roles
    without research access get 403."""
    from outcomes.models import CohortRelease

    researcher = users["researcher"]
    client.force_login(researcher)
    assert client.get("/api/outcomes/survival/", BUNDLE_QUERY).status_code == 200
    after_analysis = sorted(CohortRelease.objects.filter(user=researcher).values_list("digest", "n_patients"))
    _, data = gbsg2
    # one set per tgrade group shown (I 81, II 444, III 161 patients)
    assert sorted(n for _, n in after_analysis) == sorted(data.tgrade.value_counts().tolist()) == [81, 161, 444]
    _bundle(client.get("/api/outcomes/exports/analysis.zip", BUNDLE_QUERY))
    assert sorted(CohortRelease.objects.filter(user=researcher).values_list("digest", "n_patients")) == after_analysis

    settings.RADPATH_MIN_COHORT = 700
    resp = client.get("/api/outcomes/exports/analysis.zip", BUNDLE_QUERY)
    assert resp.status_code == 400 and "cohort" in resp.json()
    client.force_login(users["therapist"])
    assert client.get("/api/outcomes/exports/analysis.zip", BUNDLE_QUERY).status_code == 403


def test_competing_risk_models_code_registry_covariates_as_the_cox_model(gbsg2):  # noqa: F811
    """Fine-Gray and the cause-specific Cox model take the Cox model's design: menostat against its dictionary's first
    level (Pre; sorted order would make Post the reference), labelled as in the Cox table. Every GBSG2 death is
    imported with cause 'disease', so nothing competes and the cause-specific model is the Cox model itself (R:
    ``coef(coxph(Surv(time, cens) ~ menostat + tsize))`` with levels Pre, Post: menostatPost 0.09374440332, tsize
    0.01507845952)."""
    cohort, _ = gbsg2
    body = services.analyze(cohort, endpoint="os", time_zero="diagnosis", competing=True,
                            cox_terms="gbsg2.menostat,gbsg2.tsize").to_dict()
    cox = {t["covariate"]: t for t in body["cox"]["terms"]}
    cs = {t["covariate"]: t for t in body["methods"]["competing"]["cause_specific"]["terms"]}
    fg = {t["covariate"]: t for t in body["methods"]["competing"]["fine_gray"]["terms"]}
    assert list(cox) == list(cs) == list(fg) == ["gbsg2.menostat=Post", "gbsg2.tsize"]
    for key in cox:
        assert cs[key]["coef"] == pytest.approx(cox[key]["coef"], abs=1e-9)
        assert cs[key]["label"] == fg[key]["label"] == cox[key]["label"]
    assert cox["gbsg2.menostat=Post"]["label"] == "gbsg2.menostat: Post (vs Pre)"
    assert (cs["gbsg2.menostat=Post"]["coef"], cs["gbsg2.tsize"]["coef"]) == (pytest.approx(0.09374440332, abs=1e-9),
                                                                            pytest.approx(0.01507845952, abs=1e-9))


def test_analysis_page_links_the_bundle_of_the_analysis_it_shows(client, users, gbsg2):  # noqa: F811
    """The page takes months and repeats list fields; its bundle link carries the API's days and every Cox term,
    so the ZIP is the analysis on the page (RMST to 12 months = 365.25 days, three Cox terms, the same forest)."""
    import html as htmllib
    import json
    import re

    client.force_login(users["researcher"])
    page = client.get("/outcomes/analysis/", {**BUNDLE_QUERY, "cox_terms": ["group", "gbsg2.pnodes"],
                                              "cox_strata": ["gbsg2.horth"], "rmst_tau_months": "12"})
    assert page.status_code == 200
    link = htmllib.unescape(re.search(r'href="([^"]+)" id="analysis-bundle"', page.content.decode())[1])
    assert link.startswith("/api/outcomes/exports/analysis.zip?")
    files = _bundle(client.get(link))
    analysis = json.loads(files["analysis.json"])
    assert analysis["methods"]["rmst"]["tau_days"] == 365.25
    assert [t["covariate"] for t in analysis["cox"]["terms"]] == ["gbsg2.tgrade=II", "gbsg2.tgrade=III",
                                                                   "gbsg2.pnodes"]
    assert files["forest.svg"] == client.get("/api/outcomes/survival/forest.svg", BUNDLE_QUERY).content


def test_bundle_says_which_terms_the_forest_plot_cannot_draw(gbsg2):  # noqa: F811
    """A term whose ratio is not finite (a separated covariate) is listed as not drawn; with no finite term at all
    there is no forest plot and the manifest says why."""
    import io
    import json
    import zipfile

    from outcomes import exports

    cohort, _ = gbsg2

    def bundle(result):
        data, ctype, name = exports.analysis_bundle(result)
        assert ctype == "application/zip" and name.startswith("radpath-analysis-os-diagnosis-")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {n: zf.read(n) for n in zf.namelist()}

    result = services.analyze(cohort, endpoint="os", time_zero="diagnosis", cox_terms=BUNDLE_QUERY["cox_terms"],
                              group_by="gbsg2.tgrade")
    result.cox.terms[1].hazard_ratio = result.cox.terms[1].hr_upper = float("inf")
    files = bundle(result)
    terms = json.loads(files["manifest.json"])["forest_plot"]["terms"]
    assert [t["drawn"] for t in terms] == [True, False, True]
    svg = files["forest.svg"].decode()
    assert "gbsg2.tgrade: II (vs I)" in svg and "gbsg2.tgrade: III (vs I)" not in svg
    assert "gbsg2.tgrade: III (vs I): not drawn (no finite hazard ratio or CI)" in files["README.txt"].decode()

    for t in result.cox.terms:
        t.hazard_ratio = float("inf")
    files = bundle(result)
    assert "forest.svg" not in files
    assert json.loads(files["manifest.json"])["forest_plot"] == {
        "included": False, "files": [], "reason": "The Cox model has no finite hazard ratio to plot."}
