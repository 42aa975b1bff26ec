"""Covariates in analyses, validated against R on GBSG2 imported through the registry CSV with its covariates.

Data: the German Breast Cancer Study Group 2 trial (Schumacher et al. 1994, J Clin Oncol 12:2086; R
``TH.data::GBSG2``), 686 patients, as shipped by lifelines (``load_gbsg2``, the same values). ``time`` is
recurrence-free survival in days and ``cens`` 1 = event; imported as a death at diagnosis + ``time`` (event) or a
last-contact row at diagnosis + ``time`` (censored), so RadPath's OS from diagnosis is R's ``Surv(time, cens)``.
Age enters through the birth date (completed years at diagnosis = ``age``); horTh, menostat, tsize, tgrade,
pnodes, progrec and estrec are the registry's covariates.

R 4 ``survival`` (coxph Efron ties, survfit log CI, survdiff), output as printed by R for this data:

* ``coxph(Surv(time, cens) ~ horTh + age + menostat + tsize + tgrade + pnodes + progrec + estrec)`` with
  treatment contrasts (tgrade a plain factor, levels I, II, III)::

                       coef  exp(coef)   se(coef)      z Pr(>|z|)
      horThyes     -0.3462784  0.7073155  0.1290747 -2.683 0.007301
      age          -0.0094592  0.9905854  0.0093006 -1.017 0.309126
      menostatPost  0.2584448  1.2949147  0.1834765  1.409 0.158954
      tsize         0.0077961  1.0078266  0.0039390  1.979 0.047794
      tgradeII      0.6361117  1.8891211  0.2492025  2.553 0.010693
      tgradeIII     0.7796542  2.1807181  0.2684801  2.904 0.003685
      pnodes        0.0487886  1.0499984  0.0074471  6.551  5.7e-11
      progrec      -0.0022172  0.9977852  0.0005735 -3.866 0.000111
      estrec        0.0001973  1.0001973  0.0004504  0.438 0.661307

  With TH.data's ordered tgrade (polynomial contrasts) the same fit prints tgrade.L 0.551299 and tgrade.Q
  -0.201091, as published in Hothorn & Everitt, *A Handbook of Statistical Analyses Using R* (ch. "Survival
  Analysis", GBSG2); L = b(III) / sqrt(2), Q = (b(III) - 2 b(II)) / sqrt(6) of the treatment-contrast fit.
* ``survfit(Surv(time, cens) ~ horTh)``: no 440, 205 events, median 1528 (1296, 1814); yes 246, 94, 2018 (1918, NA).
* ``survdiff(Surv(time, cens) ~ horTh)``: (O-E)^2/V 8.56 on 1 df, p = 0.003 (printed Chisq= 8.6).
* ``survfit(Surv(time, cens) ~ I(pnodes >= 4))``: FALSE 376, 119, median NA (2039, NA); TRUE 310, 180, 983 (859, 1280).
"""

import csv
import datetime as dt
import io
import math

import pytest

from outcomes import services
from outcomes.cohorts import CohortFilter
from outcomes.models import Registry, RegistryVariable
from outcomes.registry_import import COLUMNS, import_registry

D0 = dt.date(1984, 7, 1)
VARIABLES = [
    ("horth", "categorical", {"levels": ["no", "yes"]}, "Hormonal therapy"),
    ("menostat", "categorical", {"levels": ["Pre", "Post"]}, "Menopausal status"),
    ("tsize", "numeric", {"unit": "mm", "minimum": 0, "maximum": 200}, "Tumour size"),
    ("tgrade", "categorical", {"levels": ["I", "II", "III"]}, "Tumour grade"),
    ("pnodes", "numeric", {"unit": "nodes", "minimum": 0, "maximum": 100}, "Positive lymph nodes"),
    ("progrec", "numeric", {"unit": "fmol/l", "minimum": 0}, "Progesterone receptor"),
    ("estrec", "numeric", {"unit": "fmol/l", "minimum": 0}, "Oestrogen receptor"),
]
FULL_MODEL = ["gbsg2.horth", "age", "gbsg2.menostat", "gbsg2.tsize", "gbsg2.tgrade", "gbsg2.pnodes", "gbsg2.progrec",
              "gbsg2.estrec"]


def gbsg2_registry():
    reg = Registry.objects.create(code="gbsg2", name="German Breast Cancer Study Group 2",
                                  description="Schumacher et al. 1994; R TH.data::GBSG2")
    for name, kind, extra, desc in VARIABLES:
        RegistryVariable.objects.create(registry=reg, name=name, kind=kind, description=desc, **extra)
    return reg


def gbsg2_csv():
    from lifelines.datasets import load_gbsg2

    data = load_gbsg2()
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS + [v[0] for v in VARIABLES], lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(data.itertuples(index=False), start=1):
        mrn = f"GBSG{i:04d}"
        w.writerow({"record_type": "patient", "mrn": mrn, "given_name": "G", "family_name": f"Case{i}",
                    "birth_date": dt.date(D0.year - int(r.age), 1, 15).isoformat(), "sex": "F", "site": "breast",
                    "diagnosed_on": D0.isoformat(), "horth": r.horTh, "menostat": r.menostat, "tsize": r.tsize,
                    "tgrade": r.tgrade, "pnodes": r.pnodes, "progrec": r.progrec, "estrec": r.estrec})
        w.writerow({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "adjuvant", "technique": "3DCRT",
                    "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25",
                    "rt_start": (D0 + dt.timedelta(days=30)).isoformat()})
        end = (D0 + dt.timedelta(days=int(r.time))).isoformat()
        if int(r.cens) == 1:
            w.writerow({"record_type": "death", "mrn": mrn, "date": end, "cause": "disease"})
        else:
            w.writerow({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": end, "last_known_alive": end})
    return out.getvalue(), data


@pytest.fixture
def gbsg2(oncologist):
    gbsg2_registry()
    text, data = gbsg2_csv()
    summary = import_registry(text, user=oncologist, registry="gbsg2")
    assert summary.to_dict() == {"patients": 686, "courses": 686, "followups": 387, "deaths": 299,
                                 "covariate_values": 686 * 7}
    return CohortFilter.from_params({"site": "breast"}).queryset(), data


def test_cox_on_registry_covariates_matches_r_coxph(gbsg2):
    cohort, _ = gbsg2
    body = services.analyze(cohort, endpoint="os", time_zero="diagnosis", cox_terms=FULL_MODEL).to_dict()
    cox = body["cox"]
    assert (cox["n"], cox["events"]) == (686, 299)
    terms = {t["covariate"]: t for t in cox["terms"]}
    r = {  # coef, se(coef), Pr(>|z|) as R prints them
        "gbsg2.horth=yes": (-0.3462784, 0.1290747, 0.007301), "age_years": (-0.0094592, 0.0093006, 0.309126),
        "gbsg2.menostat=Post": (0.2584448, 0.1834765, 0.158954), "gbsg2.tsize": (0.0077961, 0.0039390, 0.047794),
        "gbsg2.tgrade=II": (0.6361117, 0.2492025, 0.010693), "gbsg2.tgrade=III": (0.7796542, 0.2684801, 0.003685),
        "gbsg2.pnodes": (0.0487886, 0.0074471, 5.7e-11), "gbsg2.progrec": (-0.0022172, 0.0005735, 0.000111),
        "gbsg2.estrec": (0.0001973, 0.0004504, 0.661307),
    }
    assert list(terms) == list(r)
    for name, (coef, se, p) in r.items():
        assert round(terms[name]["coef"], 7) == coef, name
        assert round(terms[name]["se"], 7) == se, name
        printed = repr(p)  # to the decimals R prints (5.7e-11: two significant digits)
        got = terms[name]["p_value"]
        assert (f"{got:.1e}" == printed) if "e" in printed else round(got, len(printed.split(".")[1])) == p, name
    # the published polynomial-contrast coefficients of the ordered tgrade, from the same fit
    b2, b3 = terms["gbsg2.tgrade=II"]["coef"], terms["gbsg2.tgrade=III"]["coef"]
    assert round(b3 / math.sqrt(2), 6) == 0.551299 and round((b3 - 2 * b2) / math.sqrt(6), 6) == -0.201091
    assert terms["gbsg2.tgrade=II"]["label"] == "gbsg2.tgrade: II (vs I)"
    assert terms["gbsg2.tsize"]["label"] == "gbsg2.tsize (per mm)"
    assert [c["key"] for c in body["covariates"]][:2] == ["gbsg2.estrec", "gbsg2.horth"]


def test_grouping_by_categorical_and_cut_numeric_covariates_match_r_survfit(gbsg2):
    cohort, data = gbsg2
    by_h = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="gbsg2.horth",
                            cox_terms="group").to_dict()
    got = {g["label"]: (g["n"], g["events"], g["median"]["median"], g["median"]["lower"], g["median"]["upper"])
           for g in by_h["groups"]}
    assert got == {"no": (440, 205, 1528, 1296, 1814), "yes": (246, 94, 2018, 1918, None)}
    assert round(by_h["logrank"]["chisq"], 2) == 8.56 and round(by_h["logrank"]["p_value"], 3) == 0.003
    assert [t["covariate"] for t in by_h["cox"]["terms"]] == ["gbsg2.horth=yes"]

    by_n = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="gbsg2.pnodes", group_cuts="4",
                            cox=False).to_dict()
    got = {g["label"]: (g["n"], g["events"], g["median"]["median"], g["median"]["lower"], g["median"]["upper"])
           for g in by_n["groups"]}
    assert got == {"< 4": (376, 119, None, 2039, None), ">= 4": (310, 180, 983, 859, 1280)}
    assert "Grouped by gbsg2.pnodes: cut-points 4 nodes (x < c vs x >= c)." in by_n["notes"]

    med = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="gbsg2.pnodes", group_cuts="median",
                           cox=False).to_dict()
    assert data.pnodes.median() == 3
    assert [g["label"] for g in med["groups"]] == ["< 3", ">= 3"]
    assert [g["n"] for g in med["groups"]] == [int((data.pnodes < 3).sum()), int((data.pnodes >= 3).sum())]
    assert any("median split at 3 nodes" in n for n in med["notes"])


def test_covariate_filters_select_the_patients_r_would(gbsg2):
    _, data = gbsg2
    post = CohortFilter.from_params({"site": "breast", "covariate": "gbsg2.menostat:Post"}).queryset()
    assert post.count() == int((data.menostat == "Post").sum()) == 396
    both = CohortFilter.from_params({"covariate": ["gbsg2.tsize:20..40", "gbsg2.tgrade:II,III"]}).queryset()
    expected = data[(data.tsize >= 20) & (data.tsize <= 40) & data.tgrade.isin(["II", "III"])]
    assert both.count() == len(expected)
    open_end = CohortFilter.from_params({"covariate": "gbsg2.progrec:..10"}).queryset()
    assert open_end.count() == int((data.progrec <= 10).sum())
    desc = CohortFilter.from_params({"covariate": ["gbsg2.tsize:20..40"]}).describe()
    assert desc["covariate"] == ["gbsg2.tsize:20..40"]


@pytest.mark.parametrize("params, field", [
    ({"covariate": "gbsg2.nodes:1..2"}, "covariate"),         # not in the dictionary
    ({"covariate": "gbsg2.tsize:40..20"}, "covariate"),       # backwards
    ({"covariate": "gbsg2.tsize:big"}, "covariate"),          # not a range
    ({"covariate": "gbsg2.tgrade:IV"}, "covariate"),          # not a level
    ({"group_by": "gbsg2.tsize"}, "group_cuts"),              # numeric grouping without cut-points
    ({"group_by": "gbsg2.tsize", "group_cuts": "30,20"}, "group_cuts"),
    ({"group_by": "gbsg2.tgrade", "group_cuts": "2"}, "group_cuts"),
    ({"group_by": "sex", "group_cuts": "2"}, "group_cuts"),
    ({"group_by": "gbsg2.nope"}, "group_by"),
    ({"cox_terms": "age,gbsg2.nope"}, "cox_terms"),
    ({"cox_terms": "age", "cox_strata": "gbsg2.tsize"}, "cox_strata"),  # numeric stratum
])
def test_bad_covariate_parameters_are_a_400_naming_the_field(client, users, params, field):
    gbsg2_registry()
    client.force_login(users["researcher"])
    resp = client.get("/api/outcomes/survival/", {"endpoint": "os", **params})
    assert resp.status_code == 400, resp.content
    assert field in resp.json()


def test_api_and_page_run_a_covariate_analysis_and_exports_carry_the_covariates(client, users, gbsg2):
    client.force_login(users["researcher"])
    q = {"endpoint": "os", "time_zero": "diagnosis", "site": "breast", "group_by": "gbsg2.tgrade",
         "cox_terms": "group,gbsg2.pnodes", "cox_strata": "gbsg2.horth", "covariate": "gbsg2.menostat:Pre,Post",
         "points": "0"}
    body = client.get("/api/outcomes/survival/", q).json()
    assert [g["label"] for g in body["groups"]] == ["I", "II", "III"]  # the dictionary's order
    assert [t["covariate"] for t in body["cox"]["terms"]] == ["gbsg2.tgrade=II", "gbsg2.tgrade=III", "gbsg2.pnodes"]
    assert body["cohort"]["covariate"] == ["gbsg2.menostat:Pre,Post"]

    page = client.get("/outcomes/analysis/", {**q, "cox_terms": ["group", "gbsg2.pnodes"]})
    html = page.content.decode()
    assert page.status_code == 200 and "gbsg2.tgrade: III (vs I)" in html
    assert '<option value="gbsg2.tgrade" selected>' in html  # the form offers the covariates

    resp = client.get("/api/outcomes/exports/patients.json", {"site": "breast", "time_zero": "diagnosis"})
    assert resp.status_code == 200
    rows = resp.json()["rows"]
    first = {k: v for k, v in rows[0].items() if k.startswith("gbsg2.")}
    assert set(first) == {"gbsg2." + v[0] for v in VARIABLES}
    _, data = gbsg2
    assert sorted(r["gbsg2.tsize"] for r in rows) == sorted(float(x) for x in data.tsize)
    assert "birth_date" not in rows[0] and "mrn" not in rows[0]


def test_the_methods_design_takes_a_numeric_covariate_as_its_value_and_a_categorical_one_as_dummies():
    """Fine-Gray and IPTW code their terms as the Cox model does: one column per numeric covariate (tumour size in mm
    stays a size, not a dummy per distinct value), one per non-reference level of a categorical one."""
    import pandas as pd

    df = pd.DataFrame({"gbsg2.tsize": [18.0, 25.0, 40.0, float("nan")],
                       "gbsg2.tgrade": ["I", "II", "III", "II"], "age_years": [50.0, 61.0, 45.0, 70.0]})
    data, covs = services._design(df, "", ["gbsg2.tsize", "gbsg2.tgrade", "age"])
    assert covs == ["gbsg2.tsize", "gbsg2.tgrade=II", "gbsg2.tgrade=III", "age_years"]
    assert data["gbsg2.tsize"].tolist()[:3] == [18.0, 25.0, 40.0] and pd.isna(data["gbsg2.tsize"].iloc[3])
    assert data["gbsg2.tgrade=III"].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_default_cox_model_says_when_sex_is_left_out(gbsg2):
    cohort, _ = gbsg2  # GBSG2: a breast cancer trial, every patient female
    body = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="gbsg2.horth").to_dict()
    assert [t["covariate"] for t in body["cox"]["terms"]] == ["gbsg2.horth=yes", "age_years"]
    assert "Cox model: sex is left out (every patient is F)." in body["notes"]
    chosen = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="gbsg2.horth",
                              cox_terms="group,age").to_dict()
    assert not any("sex is left out" in n for n in chosen["notes"])


@pytest.mark.parametrize("unit, step", [
    ("mm", "per mm"), ("nodes", "per node"), ("pack-years", "per pack-year"), ("days", "per day"),
    ("mass", "per mass"), ("ms", "per ms"), ("fmol/l", "per fmol/l"), ("mmHg", "per mmHg"), ("", "per unit"),
])
def test_a_hazard_ratio_is_per_one_of_the_unit(unit, step):
    """An HR of a numeric covariate is per one of its unit: a counted unit the dictionary writes as a plural word
    (nodes) is named in the singular; symbols and compound units are left as written."""
    from outcomes.covariates import per_unit

    assert per_unit(unit) == step
