"""Re-irradiation: cumulative EQD2 per organ over an earlier course and a new plan, hand-checked.

Earlier course: 5 x 4 Gy, core uniformly 20 Gy (4 Gy per fraction). New course: 5 x 4 Gy, core uniformly 15 Gy
(3 Gy per fraction). The core is a late-responding organ (alpha/beta 3 Gy by default):
  earlier EQD2 = 20 (4 + 3) / (2 + 3) = 28.0 Gy; new EQD2 = 15 (3 + 3) / (2 + 3) = 18.0 Gy; total 46.0 Gy.
Organ limits are read as EQD2 (tolerances are stated for 2 Gy fractions): "Core Dmax <= 20 Gy" is exceeded
(46 > 20), "Core Dmean <= 50 Gy" is met (46 < 50). With alpha/beta 2 Gy for the core: 20 x 6 / 4 + 15 x 5 / 4 = 30 + 18.75 = 48.75.
"""

import datetime as dt
from decimal import Decimal

import pytest

from planning import services
from tests.conftest import make_course
from workflow.pathway.delivery import deliver_fraction
from workflow.pathway.scheduling import book_course, local_datetime

from .conftest import make_done_plan

LATER = local_datetime(dt.date(2027, 9, 1), dt.time(12, 0))
GOALS = [
    {"structure": "PTV", "metric": "D95", "comparison": ">=", "value": 20},
    {"structure": "Core", "metric": "Dmax", "comparison": "<=", "value": 20},
    {"structure": "Core", "metric": "Dmean", "comparison": "<=", "value": 50},
]


def test_eqd2_formula():
    assert services.eqd2(60, 30, 3) == pytest.approx(60.0)
    assert services.eqd2(20, 5, 3) == pytest.approx(28.0)
    assert services.eqd2(8, 1, 10) == pytest.approx(8 * 18 / 12)
    assert services.alpha_beta_for("Spinal Cord") == 2.0 and services.alpha_beta_for("Core") == 3.0
    assert services.alpha_beta_for("PTV", "target") == 10.0
    assert services.alpha_beta_for("Core", overrides={"core": 1.5}) == 1.5


def _treated_course(patient, dx, users, start, n_deliver, core_gy):
    course = make_course(patient, dx, fractions=5, dose=Decimal("4.00"), treated_site=f"Spine {start}")
    fractions = book_course(course, start, allow_past=True).fractions
    plan = services.approve_plan(make_done_plan(course, users["physicist"], core_gy=core_gy, goals=GOALS), user=users["oncologist"])
    for f in fractions[:n_deliver]:
        deliver_fraction(f, user=users["therapist"], now=LATER)
    return course, plan


def test_cumulative_eqd2_hand_checked(clinic, cshape_course, users, settings):
    patient, dx = cshape_course.patient, cshape_course.diagnosis
    _treated_course(patient, dx, users, dt.date(2027, 3, 1), 5, core_gy=20.0)
    new_course = make_course(patient, dx, fractions=5, dose=Decimal("4.00"), treated_site="Spine re-irradiation", intent="reirradiation")
    plan = make_done_plan(new_course, users["physicist"], core_gy=15.0, goals=GOALS)
    summary = services.reirradiation_summary(plan)
    assert len(summary["earlier_courses"]) == 1
    core = next(r for r in summary["rows"] if r["name"] == "Core")
    assert core["alpha_beta"] == 3.0
    assert core["previous"]["Dmax"] == pytest.approx(28.0) and core["planned"]["Dmax"] == pytest.approx(18.0)
    assert core["total"]["Dmax"] == pytest.approx(46.0) and core["total"]["Dmean"] == pytest.approx(46.0)
    goals = {g["goal"]: g for g in core["goals"]}
    assert goals["Core Dmax <= 20 Gy"]["limit_eqd2"] == pytest.approx(20.0) and goals["Core Dmax <= 20 Gy"]["exceeded"]
    assert goals["Core Dmean <= 50 Gy"]["limit_eqd2"] == pytest.approx(50.0) and not goals["Core Dmean <= 50 Gy"]["exceeded"]
    assert core["exceeded"]
    # alpha/beta is configurable: per call, or per organ in settings.PLANNING_ALPHA_BETA
    core2 = next(r for r in services.reirradiation_summary(plan, alpha_beta={"Core": 2.0})["rows"] if r["name"] == "Core")
    assert core2["total"]["Dmax"] == pytest.approx(48.75)
    settings.PLANNING_ALPHA_BETA = {"Core": 2.0}
    core3 = next(r for r in services.reirradiation_summary(plan)["rows"] if r["name"] == "Core")
    assert core3["total"]["Dmax"] == pytest.approx(48.75)


def test_only_delivered_fractions_of_the_earlier_course_count(clinic, cshape_course, users):
    patient, dx = cshape_course.patient, cshape_course.diagnosis
    _treated_course(patient, dx, users, dt.date(2027, 3, 1), 3, core_gy=20.0)  # stopped after 3 of 5 fractions
    new_course = make_course(patient, dx, fractions=5, dose=Decimal("4.00"), treated_site="Spine re-irradiation")
    plan = make_done_plan(new_course, users["physicist"], core_gy=15.0, goals=GOALS)
    core = next(r for r in services.reirradiation_summary(plan)["rows"] if r["name"] == "Core")
    # 12 Gy in 3 x 4 Gy: 12 x 7 / 5 = 16.8 Gy EQD2
    assert core["previous"]["Dmax"] == pytest.approx(16.8) and core["total"]["Dmax"] == pytest.approx(34.8)
    assert [g["exceeded"] for g in core["goals"]] == [True, False]  # 34.8 > 20; 34.8 < 50
