"""Cohort toxicity on the analysis page, in the API and the export: rates and Aalen-Johansen incidence."""

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import Group, User

from outcomes import services, toxicity_analysis
from tests.conftest import make_course
from workflow.toxicity import services as toxicity
from workflow.models import Patient
from workflow.pathway.scheduling import book_course

pytestmark = pytest.mark.django_db
START = dt.date(2025, 3, 3)  # a Monday in the past: onsets must not be in the future


@pytest.fixture(autouse=True)
def small_cohorts_allowed(settings):
    """These tests check analysis and export content on a 4-patient registry; the minimum cohort, group suppression
    and release ledger are tested with a cohort above the minimum in tests/outcomes/test_disclosure.py."""
    settings.RADPATH_MIN_COHORT = 1


def day(n):
    return START + dt.timedelta(days=n)


@pytest.fixture
def cohort(clinic, oncologist):
    courses = []
    for i in range(4):
        p = Patient.objects.create(mrn=f"TOX{i}", given_name="T", family_name=f"Case{i}", birth_date=dt.date(1950, 1, 1))
        c = make_course(p, fractions=5)
        book_course(c, START, allow_past=True)
        courses.append(c)
    a, b, c, d = courses
    toxicity.log_event(a, term="Pneumonitis", grade=3, onset_date=day(30), user=oncologist)
    services.record_death(b.patient, user=oncologist, date=day(20), cause="other")
    toxicity.log_event(c, term="Fatigue", grade=2, onset_date=day(3), resolved_date=day(120), user=oncologist)
    toxicity.log_event(d, term="Nausea", grade=1, onset_date=day(2), resolved_date=day(150), user=oncologist)
    return courses


def test_cumulative_incidence_with_death_competing_on_a_hand_checked_case(cohort):
    """Day 20: 1 of 4 dies first (competing), S = 3/4. Day 30: 1 of the 3 at risk has grade 3 pneumonitis, so the
    incidence rises by 3/4 x 1/3 = 0.25. The other two are followed past 3 months (censored later)."""
    from workflow.models import Course

    result = services.toxicity_analysis(Course.objects.filter(pk__in=[c.pk for c in cohort]))
    assert result["n_courses"] == 4
    assert result["cumulative_incidence"]["grade3"][:1] == pytest.approx([0.25])
    rates = result["rates"].set_index(["term", "phase"])
    assert rates.loc[("Pneumonitis", "any"), "n_grade_ge3"] == 1
    assert rates.loc[("Pneumonitis", "any"), "rate_grade_ge3"] == pytest.approx(0.25)
    assert rates.loc[("Fatigue", "acute"), "n_grade_ge2"] == 1 and rates.loc[("Fatigue", "acute"), "n_grade_ge3"] == 0


def test_researcher_gets_toxicity_analysis_and_export_without_identifiers(cohort, client):
    researcher = User.objects.create_user("res", password="pw")
    researcher.groups.add(Group.objects.get(name="researcher"))
    client.force_login(researcher)
    body = client.get("/api/outcomes/toxicity/").json()
    assert body["n_courses"] >= 4
    assert any(r["term"] == "Pneumonitis" and r["n_grade_ge3"] == 1 for r in body["rates"])
    export = client.get("/api/outcomes/exports/toxicity.csv")
    assert export.status_code == 200
    text = export.content.decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {"term", "phase", "n_grade_ge3"} <= set(rows[0])
    assert "TOX" not in text and "Case" not in text
    page = client.get("/outcomes/analysis/?endpoint=os&time_zero=rt_start&conf_type=log")
    assert page.status_code == 200 and b"Cumulative incidence of grade" in page.content


def test_therapist_cannot_run_the_toxicity_analysis(cohort, client, therapist):
    client.force_login(therapist)
    assert client.get("/api/outcomes/toxicity/").status_code == 403


def test_toxicity_frame_reads_the_cohort_in_a_fixed_number_of_queries(cohort, oncologist, django_assert_max_num_queries):
    """Four courses or eight: the same handful of queries (it was five per course: 3 s on the demo's 422), and the
    same hand-checked incidence."""
    from workflow.models import Course

    for i in range(4, 8):
        p = Patient.objects.create(mrn=f"TOX{i}", given_name="T", family_name=f"Case{i}", birth_date=dt.date(1950, 1, 1))
        book_course(make_course(p, fractions=5), START, allow_past=True)
    with django_assert_max_num_queries(8):
        frame = toxicity_analysis.toxicity_frame(Course.objects.all())
    courses = frame.attrs["courses"].set_index("course_id")
    assert len(courses) == 8
    a, b = cohort[0], cohort[1]
    assert courses.loc[a.pk, "rt_start"].date() == START and courses.loc[a.pk, "rt_end"].date() == day(4)
    assert courses.loc[b.pk, "death_date"].date() == day(20)
    result = services.toxicity_analysis(Course.objects.all())
    # the four new courses are censored at their last fraction (day 4), before anything happens: still 3/4 x 1/3
    assert result["n_courses"] == 8 and result["cumulative_incidence"]["grade3"][:1] == pytest.approx([0.25])
