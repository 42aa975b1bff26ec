"""Toxicity: worst grade, acute/late split (90 days after RT end), cohort rates, Aalen-Johansen CIF."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from outcomes.toxicity_stats import (
    aalen_johansen,
    cohort_rates,
    competing_risk_data,
    wilson_ci,
    worst_grade_per_course,
)

RT0, RT1 = dt.date(2025, 1, 6), dt.date(2025, 2, 14)  # RT end + 90 days = 2025-05-15


@pytest.fixture
def cohort():
    courses = pd.DataFrame({"course_id": ["A", "B", "C", "D"], "rt_start": [RT0] * 4, "rt_end": [RT1] * 4})
    events = pd.DataFrame(
        [
            ("A", "Esophagitis", 2, "2025-01-20"),
            ("A", "Esophagitis", 3, "2025-02-01"),  # worst acute esophagitis for A = 3
            ("A", "Pneumonitis", 2, "2025-05-15"),  # day 90 after RT end: still acute
            ("A", "Pneumonitis", 3, "2025-05-16"),  # day 91: late
            ("B", "Fatigue", 1, "2025-01-10"),
            ("B", "Esophagitis", 2, "2025-02-10"),
            ("B", "Dyspnea", 2, "2025-01-02"),  # before RT start: baseline, excluded
            ("C", "Pneumonitis", 2, "2025-09-01"),
        ],
        columns=["course_id", "term", "grade", "onset_date"],
    )
    return courses, events


def test_worst_grade_and_acute_late_boundary(cohort):
    courses, events = cohort
    w = worst_grade_per_course(events, courses)
    get = lambda c, t, p: w[(w.course_id == c) & (w.term == t) & (w.phase == p)]["worst_grade"].tolist()
    assert get("A", "Esophagitis", "acute") == [3]
    assert get("A", "Pneumonitis", "acute") == [2]
    assert get("A", "Pneumonitis", "late") == [3]
    assert get("A", "Pneumonitis", "any") == [3]
    assert get("C", "Pneumonitis", "late") == [2]
    assert get("B", "Dyspnea", "any") == []  # baseline symptom


def test_cohort_rates_use_all_courses_as_denominator(cohort):
    courses, events = cohort
    w = worst_grade_per_course(events, courses)
    r = cohort_rates(w, n_courses=len(courses), phase="any").set_index("term")
    # esophagitis: A grade 3, B grade 2 -> >=2: 2/4, >=3: 1/4
    assert r.loc["Esophagitis", ["n_grade_ge2", "n_grade_ge3"]].tolist() == [2, 1]
    assert r.loc["Esophagitis", "rate_grade_ge2"] == 0.5
    assert r.loc["Pneumonitis", "rate_grade_ge3"] == 0.25
    assert r.loc["Fatigue", "n_grade_ge2"] == 0
    acute = cohort_rates(w, 4, phase="acute").set_index("term")
    assert acute.loc["Pneumonitis", "n_grade_ge3"] == 0


@pytest.mark.parametrize(
    "k,n,expected",
    [((81), 263, (0.2553, 0.3662)), (15, 148, (0.0624, 0.1605)), (0, 20, (0.0, 0.1611)), (1, 29, (0.0061, 0.1718))],
)
def test_wilson_interval_matches_newcombe_1998(k, n, expected):
    """Newcombe RG, Stat Med 1998;17:857-872, Table II, method 3 (Wilson score, no continuity
    correction): 81/263 -> 0.2553-0.3662, 15/148 -> 0.0624-0.1605, 0/20 -> 0-0.1611, 1/29 -> 0.0061-0.1718."""
    lo, hi = wilson_ci(k, n)
    assert (round(lo, 4), round(hi, 4)) == expected


def test_grade_out_of_range_rejected(cohort):
    courses, _ = cohort
    with pytest.raises(ValueError):
        worst_grade_per_course(pd.DataFrame([("A", "Nausea", 6, "2025-01-20")], columns=["course_id", "term", "grade", "onset_date"]), courses)


def test_aalen_johansen_hand_calculation():
    """Five courses (days from RT start, outcome):
    2 grade>=3 toxicity, 3 death, 4 censored, 5 toxicity, 6 censored.

    t=2: n=5, 1 tox  -> CIF_tox = 1 x 1/5 = 0.2;           all-cause S = 4/5 = 0.8
    t=3: n=4, 1 death -> CIF_death = 0.8 x 1/4 = 0.2;        S = 0.8 x 3/4 = 0.6
    t=4: censored (n drops to 2)
    t=5: n=2, 1 tox  -> CIF_tox = 0.2 + 0.6 x 1/2 = 0.5;    S = 0.3
    Naive 1 - KM with deaths censored would give 1 - (4/5)(1/2)... = 0.6 (overestimate).
    """
    ci = aalen_johansen([2, 3, 4, 5, 6], [1, 2, 0, 1, 0])
    assert ci.at([1, 2, 3, 4.9, 5, 10]) == pytest.approx([0, 0.2, 0.2, 0.2, 0.5, 0.5])
    assert ci.cif_competing[-1] == pytest.approx(0.2)
    assert ci.method == "Aalen-Johansen"


def test_aalen_johansen_matches_lifelines_on_untied_data():
    from lifelines import AalenJohansenFitter

    rng = np.random.default_rng(7)
    t = rng.permutation(np.arange(1, 61)).astype(float)
    codes = rng.choice([0, 1, 2], 60, p=[0.4, 0.35, 0.25])
    ours = aalen_johansen(t, codes)
    ajf = AalenJohansenFitter(calculate_variance=False).fit(t, codes, event_of_interest=1)
    ref = ajf.cumulative_density_.iloc[:, 0]
    np.testing.assert_allclose(ours.at(ref.index.to_numpy()), ref.to_numpy(), atol=1e-12)


def test_competing_risk_data_codes():
    courses = pd.DataFrame(
        {
            "course_id": ["A", "B", "C", "D"],
            "rt_start": ["2025-01-01"] * 4,
            "death_date": [None, "2025-03-01", "2025-06-01", None],
            "last_followup_date": ["2025-12-31", None, None, "2025-10-01"],
        }
    )
    events = pd.DataFrame(
        [("A", 3, "2025-02-01"), ("B", 2, "2025-02-01"), ("C", 4, "2025-04-01"), ("D", 3, "2024-12-20")],
        columns=["course_id", "grade", "onset_date"],
    )
    cr = competing_risk_data(courses, events).set_index("course_id")
    assert cr.loc["A"].tolist() == [31, 1]  # grade 3 on day 31
    assert cr.loc["B"].tolist() == [59, 2]  # only grade 2, died day 59 -> competing
    assert cr.loc["C"].tolist() == [90, 1]  # grade 4 before death
    assert cr.loc["D"].tolist() == [273, 0]  # pre-RT event ignored, censored


def test_undated_event_counts_only_under_any(cohort):
    courses, _ = cohort
    ev = pd.DataFrame([("D", "Dermatitis radiation", 3, None)], columns=["course_id", "term", "grade", "onset_date"])
    w = worst_grade_per_course(ev, courses)
    assert w[["phase", "worst_grade"]].values.tolist() == [["any", 3]]
