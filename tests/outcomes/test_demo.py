"""The demo clinic's synthetic outcomes look like the pleural mesothelioma seed literature (DOMAIN.md section 5)."""

import datetime as dt
import random

import pytest

from outcomes import demo, services
from outcomes.cohorts import CohortFilter
from outcomes.endpoints import DAYS_PER_MONTH
from outcomes.models import CourseOutcome, Death, FollowUpAssessment

TODAY = dt.date(2026, 11, 20)


@pytest.fixture
def seeded(users):
    users = dict(users)
    summary = demo.seed(rng=random.Random(20260611), today=TODAY, users=users, courses=[])
    return summary


def _summary(cohort, endpoint="os"):
    res = services.analyze(cohort, endpoint=endpoint)
    (g,) = res.to_dict()["groups"]
    return g


def test_demo_outcomes_match_the_seed_literature(seeded):
    assert seeded["deaths"] > 100 and seeded["assessments"] > 1000
    multimodal = CohortFilter.from_params({"site": "pleural_mesothelioma", "multimodal": "yes"}).queryset()
    g = _summary(multimodal)
    median_months = g["median"]["median"] / DAYS_PER_MONTH
    five_year = g["at_times"][2]["survival"]
    # literature: median OS 19-28 months after surgery + IMRT, 5-year OS ~28 % with IMRT + chemo + surgery
    assert 17 <= median_months <= 32, median_months
    assert 0.15 <= five_year <= 0.40, five_year
    pfs = _summary(multimodal, "pfs")
    pfs_months = pfs["median"]["median"] / DAYS_PER_MONTH
    assert 9 <= pfs_months <= 19, pfs_months  # literature 12-16 months
    overall = _summary(CohortFilter.from_params({"site": "pleural_mesothelioma"}).queryset())
    assert 0.08 <= overall["at_times"][2]["survival"] <= 0.25  # about 15 % overall
    # derived from mRECIST measurements, with recurrences after complete remission and deaths without progression
    assert FollowUpAssessment.objects.filter(criteria="mrecist1.1", derived_response="PR").exists()
    assert CourseOutcome.objects.exclude(recurrence_date=None).count() >= 5
    assert CourseOutcome.objects.filter(best_response="CR").count() >= 10
    assert not FollowUpAssessment.objects.filter(date__gt=TODAY).exists()
    for d in Death.objects.all()[:50]:
        assert not FollowUpAssessment.objects.filter(patient=d.patient, date__gt=d.date).exists()
    print(f"multimodal meso: median OS {median_months:.1f} mo, 5-y OS {five_year:.1%}, median PFS {pfs_months:.1f} mo; "
          f"all meso 5-y OS {overall['at_times'][2]['survival']:.1%}")


def test_demo_patients_without_radiotherapy_are_analysed_from_diagnosis(seeded):
    from outcomes.models import PatientOutcome

    assert seeded["patients_without_rt"] == demo.HISTORICAL_NO_RT == 30
    assert FollowUpAssessment.objects.filter(course__isnull=True, kind="followup").count() > 60
    assert PatientOutcome.objects.exclude(first_progression_date=None).count() >= 20  # ~90 % progress
    cohort = CohortFilter.from_params({"site": "pleural_mesothelioma"}).cohort()
    body = services.analyze(cohort, endpoint="os", time_zero="diagnosis", group_by="radiotherapy", cox=False).to_dict()
    groups = {g["label"]: g for g in body["groups"]}
    assert groups["no"]["n"] == 30 and groups["no"]["display"] == "No radiotherapy"
    median_months = groups["no"]["median"]["median"] / DAYS_PER_MONTH
    # chemotherapy alone: median OS about a year (CheckMate 743 chemotherapy arm 14.1 months)
    assert 9 <= median_months <= 22, median_months
    assert groups["yes"]["n"] == demo.HISTORICAL_MESO
