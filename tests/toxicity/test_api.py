"""Side-effect API: vocabulary, logging with validation, regrade/resolve/history, hold decision, review worklist."""

import datetime as dt

import pytest
from django.utils import timezone

from tests.workflow_api.conftest import api, booked_course  # noqa: F401
from workflow.toxicity import services as tox
from workflow.models import CourseHold, ToxicityEvent

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.toxicity.urls")]


def test_ctcae_terms_are_searchable(api):
    r = api("therapist").get("/api/ctcae-terms/", {"search": "nause"})
    assert r.status_code == 200 and r.json()[0]["term"] == "Nausea" and r.json()[0]["grades"] == [1, 2, 3]
    assert len(api("oncologist").get("/api/ctcae-terms/").json()) == 837
    r = api("oncologist").get("/api/ctcae-terms/10035742/")
    assert r.json()["descriptions"]["3"].startswith("Severe")
    assert api("oncologist").get("/api/ctcae-terms/1/").status_code == 404


def test_log_event_validates_grade_and_role(api, booked_course):
    start = tox.course_start(booked_course)
    body = {"course": booked_course.pk, "term": "nausea", "grade": 4, "onset_date": str(start)}
    r = api("oncologist").post("/api/toxicity-events/", body, format="json")
    assert r.status_code == 400 and "not allowed for Nausea" in r.json()["grade"][0]
    assert api("therapist").post("/api/toxicity-events/", {**body, "grade": 1}, format="json").status_code == 403
    r = api("oncologist").post("/api/toxicity-events/", {**body, "grade": 2, "attribution": "probable"}, format="json")
    assert r.status_code == 201, r.json()
    data = r.json()
    assert (data["term"], data["grade"], data["worst_grade"], data["phase"], data["recorded_by"]) == ("Nausea", 2, 2, "acute", "oncologist")
    assert data["grade_description"].startswith("Eating less")
    r = api("oncologist").post("/api/toxicity-events/", {**body, "grade": 1, "onset_date": str(start - dt.timedelta(days=3))}, format="json")
    assert r.status_code == 400 and "baseline" in r.json()["onset_date"][0]
    listing = api("therapist").get("/api/toxicity-events/", {"course": booked_course.pk}).json()
    assert listing["count"] == 1
    assert api("researcher").get("/api/toxicity-events/").status_code == 403


def test_regrade_resolve_history_and_void(api, booked_course):
    start = tox.course_start(booked_course)
    onc = api("oncologist")
    ev = onc.post("/api/toxicity-events/", {"course": booked_course.pk, "term": "Fatigue", "grade": 1, "onset_date": str(start)}, format="json").json()
    r = onc.post(f"/api/toxicity-events/{ev['id']}/regrade/", {"grade": 2, "on_date": str(start + dt.timedelta(days=2))}, format="json")
    assert r.status_code == 200 and r.json()["worst_grade"] == 2
    r = onc.post(f"/api/toxicity-events/{ev['id']}/regrade/", {"grade": 4}, format="json")
    assert r.status_code == 400 and "grade" in r.json()
    r = onc.post(f"/api/toxicity-events/{ev['id']}/resolve/", {"resolved_date": str(start + dt.timedelta(days=5))}, format="json")
    assert r.status_code == 200 and r.json()["resolved_date"] == str(start + dt.timedelta(days=5))
    hist = onc.get(f"/api/toxicity-events/{ev['id']}/history/").json()
    assert [h["grade"] for h in hist] == [1, 2] and hist[1]["by"] == "oncologist"
    r = onc.delete(f"/api/toxicity-events/{ev['id']}/?reason=wrong patient")
    assert r.status_code == 200 and ToxicityEvent.objects.get(pk=ev["id"]).is_voided
    assert onc.get("/api/toxicity-events/").json()["count"] == 0


def test_grade_3_hold_blocks_delivery_until_decision(api, booked_course):
    start = tox.course_start(booked_course)
    onc, ther = api("oncologist"), api("therapist")
    r = onc.post("/api/toxicity-events/", {"course": booked_course.pk, "term": "Pneumonitis", "grade": 3, "onset_date": str(start), "serious": True}, format="json")
    assert r.status_code == 201 and r.json()["action_taken"] == "held"
    holds = ther.get("/api/toxicity-holds/", {"open": "true"}).json()["results"]
    assert len(holds) == 1 and holds[0]["is_open"] and holds[0]["course"] == booked_course.pk
    fraction = booked_course.fractions.filter(status="scheduled").order_by("number").first()
    r = ther.post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json")
    assert r.status_code == 400 and "Toxicity hold" in r.json()["detail"]
    assert ther.post(f"/api/toxicity-holds/{holds[0]['id']}/decision/", {"decision": "resume"}, format="json").status_code == 403
    r = onc.post(f"/api/toxicity-holds/{holds[0]['id']}/decision/", {"decision": "modify"}, format="json")
    assert r.status_code == 400 and "note" in r.json()
    r = onc.post(f"/api/toxicity-holds/{holds[0]['id']}/decision/", {"decision": "resume", "note": "Steroids"}, format="json")
    assert r.status_code == 200 and r.json()["decided_by"] == "oncologist" and not r.json()["is_open"]
    assert onc.post(f"/api/toxicity-holds/{holds[0]['id']}/decision/", {"decision": "stop", "note": "x"}, format="json").status_code == 409
    r = ther.post(f"/api/fractions/{fraction.pk}/deliver/", {}, format="json")
    assert r.status_code in (200, 201), r.json()
    assert not CourseHold.objects.filter(decision="").exists()


def due_today(course):
    """The reviews after review 1 whose fraction (5k) is booked today: due today, not yet delivered. The course is
    booked from a Monday three weeks ago, so fraction 15 falls on today when a clinic holiday came in between."""
    from workflow.pathway.scheduling import local_day

    today = timezone.localdate()
    return [f.number // 5 for f in course.fractions.filter(status="scheduled").order_by("number")
            if f.number % 5 == 0 and f.number > 5 and local_day(f.starts_at) == today]


def test_review_worklist_and_complete(api, booked_course, therapist):
    from workflow.pathway.delivery import deliver_fraction

    today = timezone.localdate()
    for f in booked_course.fractions.filter(status="scheduled").order_by("number")[:6]:
        deliver_fraction(f, user=therapist)
    later = due_today(booked_course)
    rows = api("oncologist").get("/api/weekly-reviews/worklist/").json()
    # 6 delivered: review 1 (fraction 5) is overdue, review 2 waits for fraction 10
    assert [(r["number"], r["status"]) for r in rows] == [(1, "overdue")] + [(k, "due") for k in later]
    assert rows[0]["mrn"] == booked_course.patient.mrn
    r = api("therapist").post("/api/weekly-reviews/complete/", {"course": booked_course.pk, "number": 1, "findings": "ok"}, format="json")
    assert r.status_code == 403
    r = api("oncologist").post("/api/weekly-reviews/complete/", {"course": booked_course.pk, "number": 1, "findings": "G1 fatigue"}, format="json")
    assert r.status_code == 201 and r.json()["review_date"] == str(today)
    r = api("oncologist").post("/api/weekly-reviews/complete/", {"course": booked_course.pk, "number": 1, "findings": "again"}, format="json")
    assert r.status_code == 409
    assert [r["number"] for r in api("oncologist").get("/api/weekly-reviews/worklist/").json()] == later
    assert api("oncologist").get("/api/weekly-reviews/worklist/", {"date": "bad"}).status_code == 400
    assert api("therapist").get("/api/weekly-reviews/", {"course": booked_course.pk}).json()["count"] == 1


def test_cohort_analysis_endpoint(api, booked_course, oncologist):
    start = tox.course_start(booked_course)
    tox.log_event(booked_course, term="Pneumonitis", grade=3, onset_date=start + dt.timedelta(days=2), user=oncologist)
    tox.log_event(booked_course, term="Fatigue", grade=2, onset_date=start, user=oncologist)
    r = api("oncologist").get("/api/toxicity-events/analysis/")
    assert r.status_code == 200
    body = r.json()
    assert body["n_courses"] == 1
    rates = {row["term"]: row for row in body["rates"]["acute"]}
    assert rates["Pneumonitis"]["n_grade_ge3"] == 1 and rates["Fatigue"]["n_grade_ge2"] == 1 and rates["Fatigue"]["n_grade_ge3"] == 0
    assert body["cumulative_incidence"]["cif"][-1] == 1.0 and body["cumulative_incidence"]["at"]["90"] == 1.0
    assert api("researcher").get("/api/toxicity-events/analysis/").status_code == 403
    assert api("oncologist").get("/api/toxicity-events/analysis/", {"technique": "SBRT"}).json()["n_courses"] == 0


def test_schema_with_the_side_effect_api_generates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    text = (tmp_path / "schema.yaml").read_text()
    assert "/api/toxicity-events/{id}/regrade/" in text and "/api/toxicity-holds/{id}/decision/" in text
    assert "/api/weekly-reviews/worklist/" in text and "/api/ctcae-terms/" in text
