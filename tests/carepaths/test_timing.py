"""Pathway timing on hand-checked cases (March 2027 has no US federal holiday; working days are Mon-Fri)."""

import datetime as dt

import pandas as pd
import pytest

from tests.carepaths.conftest import restart
from tests.carepaths.conftest import make_course
from workflow.carepaths import services as carepaths
from workflow.models import Patient

pytestmark = pytest.mark.django_db
D = dt.date


def _patient(i):
    return Patient.objects.create(mrn=f"T{i:04d}", given_name="Tim", family_name=f"Ing{i}", birth_date=D(1960, 1, 1))


@pytest.fixture
def timed(templates, users):
    a = make_course(_patient(1))
    restart(a, D(2027, 3, 1), {
        "consult": D(2027, 3, 1), "simulation": D(2027, 3, 4), "contouring": D(2027, 3, 9),  # contouring due 8 Mar: late
        "planning": D(2027, 3, 9), "physics_check": D(2027, 3, 10), "plan_approval": D(2027, 3, 10), "first_fraction": D(2027, 3, 12),
    }, users)
    b = make_course(_patient(2))
    restart(b, D(2027, 3, 1), {
        "consult": D(2027, 3, 1), "simulation": D(2027, 3, 2), "contouring": D(2027, 3, 2), "planning": D(2027, 3, 2),
        "physics_check": D(2027, 3, 2), "plan_approval": D(2027, 3, 12), "first_fraction": D(2027, 3, 15),
    }, users)
    c = make_course(_patient(3))
    restart(c, D(2027, 4, 1), {"consult": D(2027, 4, 1), "simulation": D(2027, 4, 6)}, users)
    return a, b, c


def test_course_timing_by_hand(timed):
    a, b, c = timed
    t = carepaths.course_timing(a.carepath)
    # consult Mon 1 -> sim Thu 4: 2, 3, 4 March = 3 working days
    assert (t["consult_to_sim"], t["consult_to_sim_calendar_days"]) == (3, 3)
    # sim Thu 4 -> approval Wed 10: 5, 8, 9, 10 = 4 working days (6 calendar days over a weekend)
    assert (t["sim_to_plan_approval"], t["sim_to_plan_approval_calendar_days"]) == (4, 6)
    # sim Thu 4 -> first fraction Fri 12: 5, 8, 9, 10, 11, 12 = 6 working days
    assert (t["sim_to_first_fraction"], t["sim_to_first_fraction_calendar_days"]) == (6, 8)
    # 7 steps done; contouring (opened 4 Mar, due 2 working days later = 8 Mar, done 9 Mar) was late
    assert (t["tasks_measured"], t["tasks_on_time"]) == (7, 6) and t["on_time_rate"] == pytest.approx(6 / 7)
    assert t["steps_on_time"]["contouring"] is False and t["steps_on_time"]["first_fraction"] is True
    assert carepaths.course_timing(b.carepath)["sim_to_first_fraction"] == 9  # Tue 2 -> Mon 15
    tc = carepaths.course_timing(c.carepath)
    assert tc["consult_to_sim"] == 3 and tc["sim_to_plan_approval"] is None  # Thu 1 Apr -> Tue 6 Apr: 2, 5, 6


def test_timing_frame_and_monthly_summary(timed):
    frame = carepaths.carepath_timing_frame()
    assert list(frame["month"]) == ["2027-03", "2027-03", "2027-04"]
    assert {"clinic", "course_id", "template", "consult_to_sim", "sim_to_plan_approval", "sim_to_first_fraction", "on_time_rate"} <= set(frame.columns)
    assert not {"mrn", "patient", "given_name", "family_name"} & set(frame.columns)  # research export: no identifiers
    assert pd.isna(frame.loc[2, "sim_to_plan_approval"])
    summary = carepaths.timing_summary(frame).set_index("month")
    march = summary.loc["2027-03"]
    assert march["courses"] == 2
    # consult->sim [3, 1]: median 2, p90 = 1 + 0.9 * (3 - 1) = 2.8 (linear interpolation)
    assert (march["consult_to_sim_median"], march["consult_to_sim_p90"]) == (2.0, pytest.approx(2.8))
    # sim->approval [4, 8]: median 6, p90 7.6; sim->first fraction [6, 9]: median 7.5, p90 8.7
    assert (march["sim_to_plan_approval_median"], march["sim_to_plan_approval_p90"]) == (6.0, pytest.approx(7.6))
    assert (march["sim_to_first_fraction_median"], march["sim_to_first_fraction_p90"]) == (7.5, pytest.approx(8.7))
    assert march["on_time_rate"] == pytest.approx(13 / 14)
    april = summary.loc["2027-04"]
    assert april["consult_to_sim_n"] == 1 and april["consult_to_sim_median"] == 3.0 and april["sim_to_plan_approval_n"] == 0
    rates = carepaths.step_on_time_rates(frame)
    assert rates["contouring"] == (1, 2, 0.5) and rates["consult"] == (3, 3, 1.0)
    png = carepaths.timing_chart_png(carepaths.timing_summary(frame))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_timing_frame_is_pure_and_takes_a_subset(timed):
    a, _, _ = timed
    before = a.carepath.tasks.order_by("pk").values_list("status", "updated_at")
    before = list(before)
    frame = carepaths.carepath_timing_frame([a.carepath], clinic="Test clinic")
    assert len(frame) == 1 and frame.loc[0, "clinic"] == "Test clinic" and frame.loc[0, "course_id"] == a.pk
    assert list(a.carepath.tasks.order_by("pk").values_list("status", "updated_at")) == before
    empty = carepaths.carepath_timing_frame([])
    assert len(empty) == 0 and "sim_to_first_fraction" in empty.columns


def test_timing_reaches_the_research_export_de_identified(timed, client, settings):
    """Researchers get pathway timing in the export: intervals kept, course IDs pseudonymous, no calendar dates."""
    settings.RADPATH_MIN_COHORT = 1  # a two-course fixture; the minimum cohort is tested in tests/outcomes/test_disclosure.py
    import csv
    import io

    from django.contrib.auth.models import Group, User

    researcher = User.objects.create_user("res-timing", password="pw")
    researcher.groups.add(Group.objects.get(name="researcher"))
    client.force_login(researcher)
    resp = client.get("/api/outcomes/exports/timing.csv")
    assert resp.status_code == 200
    rows = list(csv.DictReader(io.StringIO(resp.content.decode())))
    assert len(rows) == 3
    assert all(r["pseudo_course_id"].startswith("RX-") for r in rows)
    assert "course_id" not in rows[0] and "sim_on" not in rows[0]
    first = next(r for r in rows if r["sim_to_first_fraction"] and float(r["sim_to_first_fraction"]) == 6)  # course a, by hand above
    assert float(first["sim_to_plan_approval"]) == 4 and first["month"] == "2027-03"
    assert "2027-03-04" not in resp.content.decode()
