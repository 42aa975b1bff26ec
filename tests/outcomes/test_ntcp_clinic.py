"""NTCP in the clinic: a plan's predicted risk from its stored DVH on the review page (at approval), the
researchers' predicted-vs-observed cohort (page, API, de-identified DVH export) and the demo's dose-response."""

import csv
import datetime as dt
import io
import math
import random
from decimal import Decimal

import numpy as np
import pytest
from django.utils import timezone

from outcomes import ntcp, ntcp_demo, ntcp_services
from planning import services as plan_services
from planning.models import GeometrySource, Plan, PlanMethod, PlanStatus, StructureDose
from tests.conftest import PASSWORD, make_course
from workflow.models import Course, Diagnosis, Patient, ToxicityEvent
from workflow.pathway.scheduling import book_course

pytestmark = pytest.mark.django_db
TODAY = dt.date(2027, 6, 2)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def login(client, user):
    assert client.login(username=user.username, password=PASSWORD)
    return client


def quantec(mld_eqd2):
    return 1 / (1 + math.exp(3.87 - 0.126 * mld_eqd2))


def eqd2_25(d):
    """EQD2 (a/b 3 Gy) of a uniform lung dose d given in 25 fractions."""
    return d * (d / 25 + 3) / 5


def meso_course(patient, fractions=25):
    dx = Diagnosis.objects.create(patient=patient, site="pleural_mesothelioma", histology="Epithelioid", diagnosed_on=dt.date(2026, 6, 1))
    return make_course(patient, dx, fractions=fractions, dose=Decimal("2.00"))


def test_plan_page_shows_ntcp_from_the_stored_dvh_at_approval(client, patient, users):
    """Mesothelioma phantom, dose 5 Gy in the contralateral lung and 25 Gy in the ipsilateral one, 25 fractions:
    lungs pooled by volume, each bin in EQD2 (a/b 3): 5 Gy -> 5 (0.2 + 3) / 5 = 3.2 Gy, 25 Gy -> 25 (1 + 3) / 5 = 20 Gy."""
    course = meso_course(patient)
    plan = Plan.objects.create(course=course, version=1, method=PlanMethod.INVERSE, geometry_source=GeometrySource.PHANTOM,
                               phantom="mesothelioma", grid_mm=10.0, gantry_angles=[0.0], prescription_gy=50.0, fractions=25,
                               status=PlanStatus.RUNNING, created_by=users["physicist"])
    geo = plan_services.load_geometry(plan)
    dose = np.zeros(geo.grid.shape, np.float32)
    dose[geo.primary_target.mask] = 50.0
    dose[geo.structures["Lung L (contralateral)"].mask] = 5.0
    dose[geo.structures["Lung R (ipsilateral)"].mask] = 25.0
    plan_services.store_result(plan, geo, dose)
    plan.status = PlanStatus.DONE
    plan.save()
    vl = StructureDose.objects.get(plan=plan, name="Lung L (contralateral)").volume_cc
    vr = StructureDose.objects.get(plan=plan, name="Lung R (ipsilateral)").volume_cc
    expected_mld = (vl * 3.2 + vr * 20.0) / (vl + vr)

    rows = {r["model_id"]: r for r in ntcp_services.plan_ntcp(plan)}
    assert set(rows) == {"pneumonitis_quantec_mld", "pneumonitis_lkb_seppenwoolde", "pneumonitis_lkb_burman", "pneumonitis_appelt_mld"}
    q = rows["pneumonitis_quantec_mld"]
    assert q["structures"] == ["Lung L (contralateral)", "Lung R (ipsilateral)"]
    assert q["value"] == pytest.approx(expected_mld, abs=0.1)  # the DVH bins are 0.13 Gy wide
    assert q["ntcp"] == pytest.approx(quantec(expected_mld), abs=0.005)
    assert q["mean_physical_gy"] == pytest.approx((vl * 5 + vr * 25) / (vl + vr), abs=0.1)

    c = login(client, users["oncologist"])
    html = c.get(f"/planning/plans/{plan.pk}/").content.decode()
    assert 'id="ntcp"' in html and "Approve plan" in html  # beside the approval form
    assert f"{q['ntcp_pct']:.1f} %" in html and "Pneumonitis grade &gt;= 2" in html
    assert html.index('id="ntcp"') < html.index('id="review-form"')
    c.post(f"/planning/plans/{plan.pk}/approve/", {"comment": "Lung risk accepted"})
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.APPROVED
    assert f"{q['ntcp_pct']:.1f} %" in c.get(f"/planning/plans/{plan.pk}/").content.decode()


# ------------------------------------------------------------------------------------------------ cohort

def _finished_course(n, site, lung_gy, fractions=25, status="completed", with_plan=True, structure="Lungs"):
    patient = Patient.objects.create(mrn=f"NT{n:04d}", given_name="Nora", family_name=f"Tcp{n}", birth_date=dt.date(1950, 1, 1 + n % 27), sex="F")
    dx = Diagnosis.objects.create(patient=patient, site=site, histology="x", diagnosed_on=dt.date(2026, 1, 5))
    course = make_course(patient, dx, fractions=fractions, dose=Decimal("2.00"))
    if status:
        Course.objects.filter(pk=course.pk).update(status=status, completed_on=dt.date(2026, 9, 1) if status == "completed" else None)
    if with_plan:
        plan = Plan.objects.create(course=course, version=1, prescription_gy=2.0 * fractions, fractions=fractions,
                                   status=PlanStatus.APPROVED, approved_at=timezone.now(), phantom="spine")
        StructureDose.objects.create(plan=plan, name=structure, kind="oar", volume_cc=3000.0, metrics={"Dmean": lung_gy},
                                     dvh_dose_gy=[0.0, lung_gy - 0.1, lung_gy + 0.1], dvh_volume_pct=[100.0, 100.0, 0.0])
    return Course.objects.get(pk=course.pk)


def _event(course, term="Pneumonitis", grade=2, **kw):
    return ToxicityEvent.objects.create(course=course, term=term, grade=grade, grade_date=dt.date(2026, 11, 1),
                                        onset_date=dt.date(2026, 11, 1), worst_grade=grade, worst_grade_date=dt.date(2026, 11, 1), **kw)


@pytest.fixture
def cohort(db):
    doses = [4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0, 40.0]  # uniform lungs, 25 fractions
    observed = [0, 0, 0, 1, 0, 0, 1, 1, 0, 1]
    courses = [_finished_course(i, "lung", d) for i, d in enumerate(doses)]
    for c, y in zip(courses, observed):
        if y:
            _event(c, grade=3 if c is courses[-1] else 2)
    _event(courses[0], grade=1)  # grade 1: not the endpoint
    _event(courses[1], grade=2, baseline=True)  # present before RT: not counted
    voided = _event(courses[2], grade=2)
    voided.void(reason="entered on the wrong patient")
    _event(courses[4], term="Cough", grade=2)  # another term
    _finished_course(20, "lung", 30.0, status="on_treatment")  # outcome not yet observable
    _finished_course(21, "prostate", 30.0)  # outside the model's population sites
    _finished_course(22, "lung", 30.0, with_plan=False)  # no plan, no DVH
    _finished_course(23, "lung", 30.0, structure="Rectum")  # no lungs in the plan
    empty = _finished_course(24, "lung", 30.0)  # a lung structure without voxels: no DVH to read
    StructureDose.objects.filter(plan__course=empty).update(dvh_volume_pct=[0.0, 0.0, 0.0], volume_cc=0.0)
    return doses, observed


def test_cohort_predicted_vs_observed(cohort):
    doses, observed = cohort
    res = ntcp_services.cohort_analysis(Course.objects.all(), "pneumonitis_quantec_mld")
    p = np.array([quantec(eqd2_25(d)) for d in doses])
    y = np.array(observed)
    assert (res["n"], res["events"]) == (10, 4)
    assert res["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-4)
    pairs = [(a, b) for a in p[y == 1] for b in p[y == 0]]
    assert res["auc"]["auc"] == pytest.approx(sum(a > b for a, b in pairs) / len(pairs))  # 19 / 24
    assert res["auc"]["auc"] == pytest.approx(19 / 24)
    assert [g["n"] for g in res["calibration"]] == [1] * 10
    # EQD2 means 2.5, 5.3, 8.3, 11.6, 15.2, 19.0, 23.1, 27.4, 32.0, 36.8 Gy in 5 Gy bins
    assert [(b["from_gy"], b["n"], b["events"]) for b in res["dose_response"]] == [
        (0.0, 1, 0), (5.0, 2, 0), (10.0, 1, 1), (15.0, 2, 0), (20.0, 1, 1), (25.0, 1, 1), (30.0, 1, 0), (35.0, 1, 1)]
    fit = res["fit"]
    assert fit["n"] == 10 and fit["events"] == 4 and fit["parameters"]["d50"]["estimate"] > 0
    lo, hi = fit["parameters"]["d50"]["ci95"]
    assert lo is None or lo < fit["parameters"]["d50"]["estimate"]
    every = ntcp_services.cohort_analysis(Course.objects.all(), "pneumonitis_quantec_mld", sites=[])
    assert every["n"] == 11  # the prostate course's plan has lungs too


def test_cohort_page_api_and_permissions(client, cohort, users):
    c = login(client, users["researcher"])
    html = c.get("/outcomes/ntcp/").content.decode()
    assert 'id="ntcp-summary"' in html and "10 course(s), 4 with Pneumonitis grade &gt;= 2" in html
    assert f"{19 / 24:.3f}" in html and "NT0001" not in html and "Tcp1" not in html
    for url in ("/outcomes/ntcp/calibration.png", "/outcomes/ntcp/dose-response.png?model=pneumonitis_lkb_seppenwoolde"):
        r = c.get(url)
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    body = c.get("/api/outcomes/ntcp/?model=pneumonitis_appelt_mld").json()
    assert body["model"]["parameters"] == {"d50": 34.4, "gamma50": 1.19} and body["n"] == 10
    r = c.get("/api/outcomes/ntcp/?model=no-such-model")
    assert r.status_code == 400 and "model" in r.json()
    assert c.get("/outcomes/ntcp/?model=no-such-model").status_code == 400
    r = c.get("/api/outcomes/ntcp/?site=atlantis")
    assert r.status_code == 400 and "site" in r.json()
    # A researcher gets neither the one prostate course (below RADPATH_MIN_COHORT) nor all 11 courses after the 10
    # thoracic ones (their difference would be that one patient); an oncologist, with identified access, gets both.
    for site in ("prostate", "all"):
        r = c.get(f"/api/outcomes/ntcp/?site={site}")
        assert r.status_code == 400 and "cohort" in r.json(), site
    assert c.get("/api/outcomes/ntcp/?models=1").json()["models"][0]["citation"]
    c.logout()
    o = login(client, users["oncologist"])
    assert o.get("/api/outcomes/ntcp/?site=all").json()["n"] == 11
    assert o.get("/api/outcomes/ntcp/?site=prostate").status_code == 400, "below the minimum cohort for every role"
    o.logout()
    t = login(client, users["therapist"])
    assert t.get("/outcomes/ntcp/").status_code == 403 and t.get("/api/outcomes/ntcp/").status_code == 403
    client.logout()
    assert client.get("/api/outcomes/ntcp/").status_code in (401, 403)


def test_dvh_export_is_deidentified_one_row_per_course(client, cohort, users):
    c = login(client, users["researcher"])
    r = c.get("/api/outcomes/exports/dvh.csv")
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert len(rows) == 14  # every course with an approved plan (the on-treatment one too), one row each
    text = r.content.decode()
    assert "NT00" not in text and "Tcp" not in text and "1950-01" not in text
    by_dose = {float(row["lungs_dmean_gy"]): row for row in rows if row.get("lungs_dmean_gy")}
    row = by_dose[40.0]
    assert row["pseudo_id"].startswith("RP-") and row["pseudo_course_id"].startswith("RX-")
    assert row["pneumonitis_worst_grade"] == "3" and row["rectal_hemorrhage_worst_grade"] == "0" and row["grade3_toxicity"] == "yes"
    assert float(row["ntcp_pneumonitis_quantec_mld"]) == pytest.approx(quantec(eqd2_25(40.0)), abs=1e-3)  # EQD2 36.8 Gy
    assert float(row["lungs_v20_pct"]) == 100.0 and "os_days" in row and "age_at_time_zero" in row
    assert by_dose[4.0]["pneumonitis_worst_grade"] == "1"
    c.logout()
    assert login(client, users["therapist"]).get("/api/outcomes/exports/dvh.csv").status_code == 403


# -------------------------------------------------------------------------------------------------- demo

def test_demo_pneumonitis_follows_the_dose_response(clinic, users):
    """Thoracic courses at a low (4 Gy in 5 fractions: EQD2 3.0 Gy, NTCP 3 %) and a high lung dose (35 Gy in 5:
    EQD2 70 Gy, NTCP 99 %): the demo draws pneumonitis from each plan's NTCP, reproducibly."""
    entries = []
    for i in range(24):
        high = i % 2 == 1
        course = _finished_course(100 + i, "pleural_mesothelioma", 35.0 if high else 4.0, fractions=5, status=None)
        book_course(course, dt.date(2026, 8, 3) + dt.timedelta(days=7 * (i % 4)), allow_past=True)
        Course.objects.filter(pk=course.pk).update(status="completed", completed_on=dt.date(2026, 9, 30))
        entries.append({"course": Course.objects.get(pk=course.pk), "site": "pleural_mesothelioma", "high": high})
    prostate = _finished_course(200, "prostate", 35.0, fractions=5)
    entries.append({"course": prostate, "site": "prostate", "high": True})

    from django.db import transaction

    snapshots = []
    for _ in range(2):
        sid = transaction.savepoint()
        counts = ntcp_demo.seed(rng=random.Random(5), today=TODAY, users=users, courses=entries)
        events = ToxicityEvent.objects.filter(term="Pneumonitis")
        snapshots.append(sorted(events.values_list("course_id", "worst_grade", "onset_date")))
        high = {e["course"].pk for e in entries if e["high"] and e["site"] != "prostate"}
        hit = {cid for cid, *_ in snapshots[-1]}
        # 12 draws at 99 % and 12 at 3 %: P(fewer than 10 high) and P(more than 3 low) are both below 1e-3
        assert counts["courses"] == 24 and len(hit & high) >= 10 and len(hit - high) <= 3
        assert prostate.pk not in hit
        assert all(onset > dt.date(2026, 9, 30) for _, _, onset in snapshots[-1])
        assert all(g >= 2 for _, g, _ in snapshots[-1])
        res = ntcp_services.cohort_analysis(Course.objects.all(), ntcp_demo.DEMO_MODEL)
        assert res["n"] == 24 and res["auc"]["auc"] > 0.8
        transaction.savepoint_rollback(sid)
    assert snapshots[0] == snapshots[1] and snapshots[0]

