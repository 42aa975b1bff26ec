"""De-identification that holds: the bisection and differencing attacks on the research exports, run through the API
as a researcher, must not isolate a patient; minimum cohort, group suppression and month-granular filters.

The registry: 36 patients, RT starts 10 days apart from 2020-01-05 (three a month, the last on 2020-12-20), pleural
mesothelioma for the first 12 (RT January to April) and lung for the rest; patient 0 (the target, whose pseudonym the attacker is assumed to know) is the only
palliative course.
"""

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest
from django.conf import settings
from django.test import Client

from outcomes import disclosure
from outcomes.deidentify import pseudonym
from outcomes.models import CohortRelease
from outcomes.registry_import import import_registry
from tests.conftest import PASSWORD, make_user
from workflow.models import Patient

from .test_registry_import import csv_text

pytestmark = pytest.mark.urls("tests.outcomes.urls")

N = 36
FIRST = dt.date(2020, 1, 5)
EXPORT = "/api/outcomes/exports/patients.csv"


def rt_start(i):
    return FIRST + dt.timedelta(days=10 * i)


def rows():
    out = []
    for i in range(N):
        mrn = f"DISC{i:03d}"
        start = rt_start(i)
        out.append({"record_type": "patient", "mrn": mrn, "given_name": f"Given{i}", "family_name": f"Family{i}",
                    "birth_date": f"19{40 + i % 30:02d}-03-0{1 + i % 9}", "sex": "F" if i % 2 else "M",
                    "site": "pleural_mesothelioma" if i < 12 else "lung", "diagnosed_on": (start - dt.timedelta(days=60)).isoformat()})
        out.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "palliative" if i == 0 else "adjuvant",
                    "technique": "IMRT", "treated_site": "Thorax", "total_dose_gy": "50", "fractions": "25",
                    "rt_start": start.isoformat(), "rt_end": (start + dt.timedelta(days=35)).isoformat()})
        out.append({"record_type": "followup", "mrn": mrn, "course_ref": "1", "date": (start + dt.timedelta(days=90 + 7 * i)).isoformat(),
                    "imaging": "CT", "response": "PR"})
        if i % 3 == 0:
            out.append({"record_type": "death", "mrn": mrn, "date": (start + dt.timedelta(days=200 + 11 * i)).isoformat(), "cause": "disease"})
    return out


@pytest.fixture
def registry(oncologist):
    import_registry(csv_text(rows()), user=oncologist)
    return {p.mrn: p for p in Patient.objects.filter(mrn__startswith="DISC")}


@pytest.fixture
def researcher(users):
    return users["researcher"]


def login(user):
    c = Client()
    assert c.login(username=user.username, password=PASSWORD)
    return c


def pseudo(i):
    return pseudonym(f"DISC{i:03d}", settings.RADPATH_PSEUDONYM_KEY)


def released(client, params):
    """The pseudonyms of one export, or None when the server refuses it (any 4xx)."""
    r = client.get(EXPORT, params)
    if r.status_code != 200:
        assert r.status_code == 400, r.content
        return None
    return set(pd.read_csv(io.BytesIO(r.content))["pseudo_id"])


def bisect_rt_start(client, target, lo=dt.date(2019, 1, 1), hi=dt.date(2021, 12, 31)):
    """The attack of issue #13: the smallest ``rt_start_to`` whose export holds ``target`` (a refused export is
    taken to mean "not yet": too few patients). Returns (date, requests made)."""
    requests = 0
    while lo < hi:
        mid = lo + (hi - lo) // 2
        got = released(client, {"rt_start_to": mid.isoformat()})
        requests += 1
        if got is not None and target in got:
            hi = mid
        else:
            lo = mid + dt.timedelta(days=1)
    return lo, requests


def test_bisection_attack_recovers_the_exact_date_without_the_rules(registry, users, settings):
    """Control: the attack code works. Day filters (identified access) and no minimum cohort give the exact RT start
    of the target in a dozen requests, as issue #13 found; day offsets then give every date."""
    settings.RADPATH_MIN_COHORT = 1
    found, requests = bisect_rt_start(login(users["oncologist"]), pseudo(0))
    assert found == rt_start(0) == dt.date(2020, 1, 5) and requests <= 12


def test_bisection_attack_fails_for_a_researcher(registry, researcher):
    c = login(researcher)
    found, _ = bisect_rt_start(c, pseudo(0))
    assert found != rt_start(0)
    r = c.get(EXPORT, {"rt_start_to": "2020-01-05"})
    assert r.status_code == 400 and "rt_start_to" in r.json() and "month" in r.json()["rt_start_to"][0]
    r = c.get(EXPORT, {"diagnosed_from": "2019-11-05"})
    assert r.status_code == 400 and "diagnosed_from" in r.json()
    # a month-granular bisection: every month end and every month start, as far as the server answers
    months = pd.period_range("2019-12", "2020-11", freq="M")
    lower, upper = dt.date(1900, 1, 1), dt.date(2100, 1, 1)
    refusals = 0
    for m in months:
        got = released(c, {"rt_start_to": str(m)})
        if got is None:
            refusals += 1
        elif pseudo(0) in got:
            upper = min(upper, m.end_time.date())
        else:
            lower = max(lower, m.end_time.date() + dt.timedelta(days=1))
        got = released(c, {"rt_start_from": str(m)})
        if got is None:
            refusals += 1
        elif pseudo(0) in got:
            lower = max(lower, m.start_time.date())
        else:
            upper = min(upper, m.start_time.date() - dt.timedelta(days=1))
    assert refusals > 0 and lower <= rt_start(0) <= upper  # what the answers imply is true ...
    # ... and never narrower than the RT starts of RADPATH_MIN_COHORT patients
    inside = [i for i in range(N) if lower <= rt_start(i) <= upper]
    assert len(inside) >= disclosure.min_cohort() == 10


def test_differencing_attack_cannot_isolate_a_patient(registry, researcher):
    """Cohorts differing by one patient (site; intent; month windows), and chains of three, are refused so that set
    algebra on everything the researcher got never leaves fewer than 10 patients."""
    c = login(researcher)
    queries = [
        {},  # all 36
        {"intent": "adjuvant"},  # all but the target: refused
        {"site": "pleural_mesothelioma"},  # 12 with the target (RT Jan-Apr)
        {"site": "pleural_mesothelioma", "intent": "adjuvant"},  # those 12 but the target: refused
        {"site": "lung"},  # 24 without: the complement of an earlier one, allowed
        {"rt_start_to": "2020-08"},  # 24 = pleural 12 + 12 lung (RT May-Aug): allowed
        {"rt_start_from": "2020-02", "rt_start_to": "2020-04"},  # 9: below the minimum
        {"rt_start_from": "2020-02", "rt_start_to": "2020-05"},  # 12, but January's 3 (with the target) would fall out
        {"rt_start_to": "2020-05"},  # 15 = pleural 12 + 3: refused
        {"rt_start_from": "2020-09"},  # 12 = lung minus RT May-Aug: allowed
    ]
    got = [released(c, q) for q in queries]
    assert [g is not None for g in got] == [True, False, True, False, True, True, False, False, False, True]
    r = c.get(EXPORT, {"intent": "adjuvant"})
    assert r.status_code == 400 and "cohort" in r.json() and "single out" in r.json()["cohort"][0]
    # the attacker's best: the atoms of the partition induced by every export it received
    sets = [g for g in got if g is not None]
    atoms = {}
    for p in set().union(*sets):
        atoms.setdefault(tuple(p in s for s in sets), set()).add(p)
    assert min(len(a) for a in atoms.values()) >= 10
    target_atom = next(a for a in atoms.values() if pseudo(0) in a)
    assert len(target_atom) == 12  # RT Jan-Apr, pleural: the target hides among 12
    # the analyses are ledgered too: a survival curve of "all but the target" is refused after the full cohort
    assert c.get("/api/outcomes/survival/", {"intent": "adjuvant"}).status_code == 400
    assert c.get("/api/outcomes/toxicity/", {"intent": "adjuvant"}).status_code == 400
    assert c.get("/api/outcomes/survival/", {"site": "lung"}).status_code == 200  # repeats a released set
    assert CohortRelease.objects.filter(user=researcher).count() == 5  # all, pleural, lung, Jan-Aug, Sep-Dec


def test_minimum_cohort_for_exports_analyses_and_toxicity(registry, users, settings):
    c = login(users["oncologist"])  # the minimum holds for every role's de-identified output
    small = {"rt_start_to": "2020-03"}  # 9 patients
    for url in (EXPORT, "/api/outcomes/exports/assessments.json", "/api/outcomes/exports/toxicity.csv", "/api/outcomes/survival/",
                "/api/outcomes/toxicity/", "/api/outcomes/swimmer.png", "/api/outcomes/survival/plot.png"):
        r = c.get(url, small)
        assert r.status_code == 400 and "at least 10" in r.json()["cohort"][0], url
    assert c.get(EXPORT, {"rt_start_to": "2020-04"}).status_code == 200  # 12
    assert c.get("/api/outcomes/survival/", {"rt_start_to": "2020-04"}).json()["n_patients"] == 12
    settings.RADPATH_MIN_COHORT = 13
    assert c.get(EXPORT, {"rt_start_to": "2020-04"}).status_code == 400
    page = c.get("/outcomes/analysis/", {"endpoint": "os", "time_zero": "rt_start", "conf_type": "log", "rt_start_to": "2020-04"})
    assert page.status_code == 200 and b"at least 13" in page.content


def test_small_groups_are_suppressed(registry, researcher):
    """group_by intent: 35 adjuvant and 1 palliative; the palliative group is not shown and its patient takes no
    part in the statistics."""
    c = login(researcher)
    body = c.get("/api/outcomes/survival/", {"group_by": "intent", "points": "0"}).json()
    assert [g["label"] for g in body["groups"]] == ["adjuvant"] and body["suppressed_groups"] == ["palliative"]
    assert body["n_patients"] == 35 and body["groups"][0]["n"] == 35 and body["logrank"] is None
    assert any("fewer than 10" in n for n in body["notes"])
    # grouping the same cohort by site would bring the suppressed patient back (all pleural minus pleural adjuvant)
    r = c.get("/api/outcomes/survival/", {"group_by": "site", "points": "0"})
    assert r.status_code == 400 and "single out" in r.json()["cohort"][0]
    two = login(make_user("researcher2", "researcher")).get("/api/outcomes/survival/", {"group_by": "site", "points": "0"}).json()
    assert sorted(g["n"] for g in two["groups"]) == [12, 24] and two["logrank"]["df"] == 1 and two["suppressed_groups"] == []


def test_analysis_page_filters_by_month(registry, researcher):
    c = login(researcher)
    base = {"endpoint": "os", "time_zero": "rt_start", "conf_type": "log"}
    page = c.get("/outcomes/analysis/", {**base, "rt_start_to": "2020-08"})
    assert page.status_code == 200 and b'type="month"' in page.content and b"24 patient(s)" in page.content
    page = c.get("/outcomes/analysis/", {**base, "rt_start_to": "2020-08-14"})  # a day: refused under its field
    assert page.status_code == 400 and b"patient(s)" not in page.content
    assert b"RT start to (month): researchers filter dates by month" in page.content


def test_month_and_year_filters_cover_whole_periods():
    assert disclosure.parse_filter_date("rt_start_to", "2020-02") == dt.date(2020, 2, 29)
    assert disclosure.parse_filter_date("rt_start_from", "2020-02", month_only=True) == dt.date(2020, 2, 1)
    assert disclosure.parse_filter_date("diagnosed_to", "2019") == dt.date(2019, 12, 31)
    assert disclosure.parse_filter_date("rt_start_from", "2020-02-10") == dt.date(2020, 2, 10)
    with pytest.raises(disclosure.RuleViolation) as exc:
        disclosure.parse_filter_date("rt_start_from", "2020-02-10", month_only=True)
    assert exc.value.field == "rt_start_from"
    with pytest.raises(disclosure.RuleViolation):
        disclosure.parse_filter_date("rt_start_to", "2020-13")


def test_atoms_of_released_sets():
    a, b, c = np.arange(0, 20), np.arange(0, 19), np.arange(10, 30)
    assert disclosure.small_atoms([a, c], 10) == []  # {0..9}, {10..19}, {20..29}
    assert disclosure.small_atoms([a, b], 10) == [1]  # {19}
    assert disclosure.small_atoms([a, b, c], 10) == [1, 9]  # {19} (a and c, not b), {10..18} (all three)
