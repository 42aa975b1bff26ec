"""Locked records (issue #13): a started course's prescription changes only through an audited amendment, and
identity links (patient, course) never move, through the API."""

import datetime as dt
from decimal import Decimal

import pytest

from tests.conftest import make_course
from workflow.pathway import delivery
from workflow.models import Course, Diagnosis, Patient, PrescriptionAmendment, Treatment

pytestmark = pytest.mark.django_db


def deliver(course, n, user):
    for _ in range(n):
        fraction = course.fractions.filter(status="scheduled").order_by("starts_at").first()
        delivery.deliver_fraction(fraction, user=user)
    course.refresh_from_db()


@pytest.fixture
def other_patient():
    return Patient.objects.create(mrn="MRN0002", given_name="Ben", family_name="Other", birth_date=dt.date(1950, 1, 2))


@pytest.fixture
def started(booked_course, therapist):
    deliver(booked_course, 2, therapist)
    assert booked_course.status == "on_treatment"
    return booked_course


def test_patch_of_started_course_to_one_fraction_is_409_naming_the_field(api, started):
    response = api("oncologist").patch(f"/api/courses/{started.pk}/", {"fractions_planned": 1, "total_dose_gy": "2.00"}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "prescription_locked"
    assert "total_dose_gy" in body or "fractions_planned" in body
    started.refresh_from_db()
    assert (started.fractions_planned, started.total_dose_gy) == (25, Decimal("50.00"))


def test_completed_course_prescription_cannot_be_replaced(api, course, oncologist):
    Course.objects.filter(pk=course.pk).update(status="completed")
    body = {"total_dose_gy": "70.00", "fractions_planned": 35, "dose_per_fraction_gy": "2.00"}
    response = api("oncologist").put(
        f"/api/courses/{course.pk}/",
        dict(body, patient=course.patient_id, intent="adjuvant", technique="IMRT", treated_site="Left hemithorax"),
        format="json",
    )
    assert response.status_code == 409 and response.json()["total_dose_gy"]
    # and an amendment of a finished course is refused too
    response = api("oncologist").post(f"/api/courses/{course.pk}/amend/", dict(body, reason="typo"), format="json")
    assert response.status_code == 409 and response.json()["code"] == "course_closed"
    course.refresh_from_db()
    assert course.total_dose_gy == Decimal("50.00") and course.fractions_planned == 25


def test_name_of_started_course_is_still_editable(api, started):
    response = api("oncologist").patch(f"/api/courses/{started.pk}/", {"name": "Phase 1"}, format="json")
    assert response.status_code == 200
    started.refresh_from_db()
    assert started.name == "Phase 1"


def test_booked_course_fraction_count_changes_only_by_amendment(api, booked_course):
    response = api("oncologist").patch(f"/api/courses/{booked_course.pk}/", {"fractions_planned": 28, "total_dose_gy": "56.00"}, format="json")
    assert response.status_code == 409 and response.json()["fractions_planned"]


def test_course_of_unbooked_planned_course_is_freely_edited(api, course):
    response = api("oncologist").patch(
        f"/api/courses/{course.pk}/", {"fractions_planned": 28, "total_dose_gy": "50.40", "dose_per_fraction_gy": "1.80"}, format="json"
    )
    assert response.status_code == 200, response.json()




def test_amendment_to_more_fractions_books_them_after_the_last(api, started):
    last_before = started.fractions.filter(status="scheduled").order_by("-starts_at").first()
    response = api("oncologist").post(
        f"/api/courses/{started.pk}/amend/",
        {"reason": "Boost to 60 Gy after MDT", "fractions_planned": 30, "dose_per_fraction_gy": "2.00"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["after_total_dose_gy"], body["after_fractions"], body["after_dose_per_fraction_gy"]) == ("60.00", 30, "2.00")
    assert (body["delivered_fractions"], body["fractions_added"], body["fractions_cancelled"]) == (2, 5, 0)
    started.refresh_from_db()
    assert started.total_dose_gy == Decimal("60.00") and started.fractions_planned == 30
    live = started.fractions.filter(status__in=["scheduled", "delivered"]).order_by("starts_at")
    assert [f.number for f in live] == list(range(1, 31))
    added = live.filter(starts_at__gt=last_before.starts_at)
    assert added.count() == 5 and not any(f.is_makeup for f in added)
    assert delivery.course_progress(started).remaining_fractions == 28
    record = PrescriptionAmendment.objects.get(course=started)
    assert record.amended_by.username == "oncologist" and record.reason == "Boost to 60 Gy after MDT"
    listed = api("therapist").get(f"/api/courses/{started.pk}/amendments/").json()
    assert [(a["before_fractions"], a["after_fractions"], a["amended_by"]) for a in listed] == [(25, 30, "oncologist")]
    assert started.history.first().history_user.username == "oncologist"


def test_amendment_to_fewer_fractions_cancels_the_last_and_frees_the_machine(api, started):
    last = started.fractions.filter(status="scheduled").order_by("-starts_at").first()
    response = api("oncologist").post(
        f"/api/courses/{started.pk}/amend/",
        {"reason": "Toxicity: stop at 40 Gy", "fractions_planned": 20, "dose_per_fraction_gy": "2.00"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["fractions_cancelled"] == 5
    last.refresh_from_db()
    assert last.status == "cancelled" and not last.slots.exists()
    assert started.fractions.filter(status="scheduled").count() == 18
    started.refresh_from_db()
    assert started.total_dose_gy == Decimal("40.00")


def test_amendment_below_delivered_count_is_refused(api, started):
    response = api("oncologist").post(
        f"/api/courses/{started.pk}/amend/", {"reason": "x", "fractions_planned": 1, "dose_per_fraction_gy": "2.00"}, format="json"
    )
    assert response.status_code == 400 and "2 fractions are already delivered" in response.json()["fractions_planned"][0]
    assert not PrescriptionAmendment.objects.exists()
    assert started.fractions.filter(status="scheduled").count() == 23


def test_amendment_to_the_delivered_count_completes_the_course(api, started):
    response = api("oncologist").post(
        f"/api/courses/{started.pk}/amend/", {"reason": "Patient declines further RT", "fractions_planned": 2, "dose_per_fraction_gy": "2.00"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    started.refresh_from_db()
    assert started.status == "completed" and started.total_dose_gy == Decimal("4.00")
    assert not started.fractions.filter(status="scheduled").exists()


def test_amendment_needs_a_reason_and_an_oncologist(api, started):
    url = f"/api/courses/{started.pk}/amend/"
    assert api("oncologist").post(url, {"reason": " ", "fractions_planned": 30}, format="json").status_code == 400
    for role in ("therapist", "scheduler", "physicist"):
        assert api(role).post(url, {"reason": "x", "fractions_planned": 30}, format="json").status_code == 403
    assert not PrescriptionAmendment.objects.exists()


def test_amendment_total_not_n_times_d_names_the_total(api, started):
    response = api("oncologist").post(
        f"/api/courses/{started.pk}/amend/", {"reason": "x", "fractions_planned": 26, "total_dose_gy": "40.00"}, format="json"
    )
    # 40 / 26 = 1.54 Gy; 26 x 1.54 = 40.04 Gy misses 40 Gy by more than 0.01 Gy
    assert response.status_code == 400 and "total_dose_gy" in response.json()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_course_never_moves_to_another_patient(api, started, other_patient, method):
    body = {"patient": other_patient.pk}
    if method == "put":
        body.update(intent="adjuvant", technique="IMRT", treated_site="Left hemithorax", total_dose_gy="50.00",
                    fractions_planned=25, dose_per_fraction_gy="2.00", diagnosis=None)
    response = getattr(api("oncologist"), method)(f"/api/courses/{started.pk}/", body, format="json")
    assert response.status_code == 400 and "patient" in response.json()
    started.refresh_from_db()
    assert started.patient_id != other_patient.pk


def test_unstarted_course_never_moves_either(api, course, other_patient):
    response = api("oncologist").patch(f"/api/courses/{course.pk}/", {"patient": other_patient.pk}, format="json")
    assert response.status_code == 400 and "patient" in response.json()


def test_course_cannot_take_another_patients_diagnosis(api, course, other_patient):
    theirs = Diagnosis.objects.create(patient=other_patient, site="lung", diagnosed_on=dt.date(2026, 1, 5))
    response = api("oncologist").patch(f"/api/courses/{course.pk}/", {"diagnosis": theirs.pk}, format="json")
    assert response.status_code == 400 and "diagnosis" in response.json()


def test_diagnosis_and_treatment_never_move(api, diagnosis, other_patient):
    response = api("oncologist").patch(f"/api/diagnoses/{diagnosis.pk}/", {"patient": other_patient.pk}, format="json")
    assert response.status_code == 400 and "patient" in response.json()
    diagnosis.refresh_from_db()
    assert diagnosis.patient.mrn == "MRN0001"
    treatment = Treatment.objects.create(patient=diagnosis.patient, diagnosis=diagnosis, kind="chemotherapy", agent="Cis/pem",
                                         start_date=dt.date(2026, 6, 10))
    response = api("oncologist").patch(f"/api/treatments/{treatment.pk}/", {"patient": other_patient.pk}, format="json")
    assert response.status_code == 400 and "patient" in response.json()


def test_follow_up_visit_never_moves_to_another_course(api, course, other_patient, oncologist):
    from workflow.models import FollowUpVisit

    visit = FollowUpVisit.objects.create(course=course, due_date=dt.date(2027, 1, 4), label="6 weeks")
    elsewhere = make_course(other_patient)
    response = api("oncologist").patch(f"/api/followups/{visit.pk}/", {"course": elsewhere.pk}, format="json")
    assert response.status_code == 400 and "course" in response.json()
    visit.refresh_from_db()
    assert visit.course_id == course.pk


def test_admin_edit_of_a_started_course_is_refused_on_the_field(started):
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.org", "pw-boss-123"))
    url = f"/admin/workflow/course/{started.pk}/change/"
    form = client.get(url).context["adminform"].form
    data = {name: form.initial.get(name) for name in form.fields}
    data = {k: ("" if v is None else v) for k, v in data.items()}
    data.update(total_dose_gy="2.00", fractions_planned="1", dose_per_fraction_gy="2.00", patient=started.patient_id,
                twice_daily="", plan_approved="on")
    response = client.post(url, {k: v for k, v in data.items() if v is not False})
    assert response.status_code == 200
    assert "prescription amendment" in response.context["adminform"].form.errors["total_dose_gy"][0]
    started.refresh_from_db()
    assert started.fractions_planned == 25


def test_simulation_visit_never_moves_to_another_course(api, course, clinic, other_patient):
    from workflow.pathway import scheduling

    visit = scheduling.book_simulation(course, scheduling.local_datetime(dt.date(2027, 3, 2), dt.time(9, 0)), clinic["ct"])
    elsewhere = make_course(other_patient)
    response = api("scheduler").patch(f"/api/simulations/{visit.pk}/", {"course": elsewhere.pk}, format="json")
    assert response.status_code == 400 and "course" in response.json()
    assert api("scheduler").patch(f"/api/simulations/{visit.pk}/", {"immobilisation": "Wing board"}, format="json").status_code == 200
    visit.refresh_from_db()
    assert visit.course_id == course.pk and visit.immobilisation == "Wing board"


def test_new_dose_per_fraction_withdraws_the_clearance_until_a_new_approval(api, started):
    assert started.plan_approved
    response = api("oncologist").post(
        f"/api/courses/{started.pk}/amend/",
        {"reason": "Lower dose per fraction after pneumonitis risk review", "fractions_planned": 28, "dose_per_fraction_gy": "1.80"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["clearance_withdrawn"] is True and body["after_total_dose_gy"] == "50.40"
    started.refresh_from_db()
    assert not started.plan_approved and started.status == "on_treatment"
    nxt = started.fractions.filter(status="scheduled").order_by("starts_at").first()
    refused = api("therapist").post(f"/api/fractions/{nxt.pk}/deliver/", {}, format="json")
    assert refused.status_code == 400 and "not cleared" in refused.json()["detail"]
