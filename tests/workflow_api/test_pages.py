"""Server-rendered pages: who may see them, today's list, deliver/miss buttons, scheduling and downtime forms."""

import datetime as dt
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import make_course
from workflow.pathway import scheduling
from workflow.models import Closure, Downtime, SimulationVisit, Treatment

from .conftest import first_scheduled, future_monday, past_monday


@pytest.mark.django_db
def test_login_page_and_redirect_for_anonymous():
    client = Client()
    assert client.get("/accounts/login/").status_code == 200
    response = client.get("/treatment/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_login_with_password(users):
    from tests.conftest import PASSWORD

    client = Client()
    response = client.post("/accounts/login/", {"username": "therapist", "password": PASSWORD}, follow=True)
    assert response.status_code == 200
    assert b"Today&#x27;s treatment list" in response.content or b"Today's treatment list" in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/treatment/", "/patients/", "/patients/{patient}/", "/courses/{course}/", "/patients/{patient}/calendar.ics", "/courses/{course}/schedule/", "/downtime/new/"])
def test_researcher_gets_403_on_identified_pages(web, patient, course, url):
    assert web("researcher").get(url.format(patient=patient.pk, course=course.pk)).status_code == 403


@pytest.mark.django_db
def test_home_page_links_per_role(web):
    therapist = web("therapist").get("/").content.decode()
    assert reverse("treatment-list") in therapist and reverse("downtime-new") not in therapist
    physicist = web("physicist").get("/").content.decode()
    assert reverse("downtime-new") in physicist
    researcher = web("researcher").get("/").content.decode()
    assert "No identified data" in researcher and reverse("patient-list") not in researcher


@pytest.mark.django_db
def test_treatment_list_shows_the_days_fractions_per_machine(web, booked_course, patient, clinic):
    fraction = first_scheduled(booked_course)
    day = scheduling.local_day(fraction.starts_at)
    other = make_course(patient, treated_site="Spine T10", technique="3DCRT", fractions=5, dose=Decimal("4.00"))
    scheduling.book_course(other, day + dt.timedelta(days=1), machine=clinic["linac3"], allow_past=True)

    html = web("therapist").get(f"/treatment/?date={day}").content.decode()
    assert f'id="fraction-{fraction.pk}"' in html
    assert "1/25" in html and "Ada Pleura" in html
    assert "Spine T10" not in html  # the other course starts the next day
    assert html.index("Linac 1") < html.index(f'id="fraction-{fraction.pk}"')
    assert "Delivered" in html and "Missed" in html


@pytest.mark.django_db
def test_treatment_list_shows_closure_and_downtime_banners(web, clinic, users):
    day = future_monday(4)
    Closure.objects.create(date=day, reason="Staff training day")
    Downtime.objects.create(
        machine=clinic["linac2"],
        starts_at=scheduling.local_datetime(day, dt.time(7)),
        ends_at=scheduling.local_datetime(day, dt.time(10)),
        reason="Magnetron replacement",
    )
    html = web("therapist").get(f"/treatment/?date={day}").content.decode()
    assert "Clinic closed" in html and "Staff training day" in html
    assert "Linac 2 down" in html and "Magnetron replacement" in html


@pytest.mark.django_db
def test_deliver_button_records_delivery(web, booked_course, therapist):
    fraction = first_scheduled(booked_course)
    day = scheduling.local_day(fraction.starts_at)
    response = web("therapist").post(
        reverse("fraction-deliver", args=[fraction.pk]), {"next": f"/treatment/?date={day}"}, follow=True
    )
    assert response.status_code == 200
    fraction.refresh_from_db()
    assert fraction.status == "delivered" and fraction.delivered_by == therapist
    assert "fraction 1 delivered" in response.content.decode()


@pytest.mark.django_db
def test_deliver_button_shows_the_service_error(web, course, clinic):
    scheduling.book_course(course, past_monday(), allow_past=True)
    fraction = first_scheduled(course)
    response = web("therapist").post(reverse("fraction-deliver", args=[fraction.pk]), follow=True)
    assert "not cleared for treatment" in response.content.decode()
    fraction.refresh_from_db()
    assert fraction.status == "scheduled"


@pytest.mark.django_db
def test_missed_button_books_a_makeup(web, booked_course):
    fraction = first_scheduled(booked_course)
    response = web("therapist").post(reverse("fraction-miss", args=[fraction.pk]), {"reason": "Transport"}, follow=True)
    assert "make-up booked" in response.content.decode()
    fraction.refresh_from_db()
    assert fraction.status == "missed" and fraction.status_note == "Transport"
    assert booked_course.fractions.filter(is_makeup=True, status="scheduled").count() == 1


@pytest.mark.django_db
def test_page_actions_need_the_role(web, booked_course):
    fraction = first_scheduled(booked_course)
    assert web("scheduler").post(reverse("fraction-deliver", args=[fraction.pk])).status_code == 403
    assert web("therapist").post(reverse("course-stop", args=[booked_course.pk]), {"reason": "toxicity"}).status_code == 403
    assert web("therapist").get(reverse("treatment-list")).status_code == 200
    fraction.refresh_from_db()
    booked_course.refresh_from_db()
    assert fraction.status == "scheduled" and booked_course.status != "stopped"
    assert web("therapist").get(reverse("fraction-deliver", args=[fraction.pk])).status_code == 405


@pytest.mark.django_db
def test_schedule_form_books_the_course(web, course, clinic):
    url = reverse("course-schedule", args=[course.pk])
    assert web("scheduler").get(url).status_code == 200
    response = web("scheduler").post(url, {"start_date": str(future_monday()), "preferred_time": "10:00", "machine": clinic["linac2"].pk})
    assert response.status_code == 302 and response["Location"] == reverse("course-detail", args=[course.pk])
    assert course.fractions.filter(machine=clinic["linac2"]).count() == 25


@pytest.mark.django_db
def test_schedule_form_shows_the_field_error_and_books_nothing(web, course, clinic):
    response = web("scheduler").post(reverse("course-schedule", args=[course.pk]), {"start_date": "2020-01-06"})
    assert response.status_code == 200
    assert "past" in str(response.context["form"].errors["start_date"])
    assert not course.fractions.exists()


@pytest.mark.django_db
def test_downtime_form_reports_moves(web, course, clinic):
    scheduling.book_course(course, future_monday(), preferred_time=dt.time(9, 0), machine=clinic["linac1"])
    first = course.fractions.order_by("starts_at").first()
    day = scheduling.local_day(first.starts_at)
    response = web("scheduler").post(
        reverse("downtime-new"),
        {"machine": clinic["linac1"].pk, "starts_at": f"{day}T08:00", "ends_at": f"{day}T11:00", "reason": "Service"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Moved fractions (1)" in html and "Linac 2" in html
    first.refresh_from_db()
    assert first.machine == clinic["linac2"]


@pytest.mark.django_db
def test_patient_page_shows_the_whole_pathway(web, booked_course, patient, diagnosis, clinic):
    Treatment.objects.create(patient=patient, diagnosis=diagnosis, kind="surgery", surgery_type="pd", start_date=dt.date(2026, 7, 1))
    Treatment.objects.create(patient=patient, diagnosis=diagnosis, kind="chemotherapy", agent="Cisplatin/pemetrexed", start_date=dt.date(2026, 7, 20))
    scheduling.book_simulation(booked_course, scheduling.local_datetime(future_monday(), dt.time(8)), clinic["ct"])
    from workflow.pathway import delivery

    delivery.deliver_fraction(first_scheduled(booked_course), user=booked_course.plan_approved_by)
    scheduling.mark_missed(first_scheduled(booked_course), reason="Unwell")

    html = web("oncologist").get(reverse("patient-detail", args=[patient.pk])).content.decode()
    for text in ["Diagnosis: Pleural mesothelioma", "Pleurectomy/decortication", "Cisplatin/pemetrexed", "CT simulation",
                 "Radiotherapy: Left hemithorax", "Delivered 1 of 25", "missed 1"]:
        assert text in html, text
    assert html.index("Diagnosis: Pleural") < html.index("Pleurectomy") < html.index("Cisplatin")


@pytest.mark.django_db
def test_course_page_fractions_and_actions(web, booked_course):
    html = web("oncologist").get(reverse("course-detail", args=[booked_course.pk])).content.decode()
    assert html.count('class="status-scheduled"') == 25
    assert "Stop the course early" in html
    therapist_html = web("therapist").get(reverse("course-detail", args=[booked_course.pk])).content.decode()
    assert "Stop the course early" not in therapist_html


@pytest.mark.django_db
def test_oncologist_clears_and_stops_from_the_course_page(web, course, clinic):
    client = web("oncologist")
    client.post(reverse("course-clear", args=[course.pk]))
    course.refresh_from_db()
    assert course.plan_approved
    scheduling.book_course(course, future_monday())
    client.post(reverse("course-stop", args=[course.pk]), {"reason": "patient_choice", "note": "Declined"})
    course.refresh_from_db()
    assert course.status == "stopped" and not course.fractions.filter(status="scheduled").exists()


@pytest.mark.django_db
def test_simulation_form_books_a_visit(web, course, clinic):
    response = web("scheduler").post(
        reverse("course-simulation", args=[course.pk]),
        {"starts_at": f"{future_monday()}T09:00", "machine": clinic["ct"].pk, "duration_minutes": 30, "modality": "CT",
         "immobilisation": "Wing board", "skin_marks": "tattoos", "notes": ""},
    )
    assert response.status_code == 302
    visit = SimulationVisit.objects.get(course=course)
    assert visit.immobilisation == "Wing board"


@pytest.mark.django_db
def test_course_page_names_the_skipped_days_and_numbers_a_missed_appointment_apart(web, patient, clinic, users):
    """5 fractions from Mon 22 Nov 2027: Tue 23 (a closure) and Thu 25 (Thanksgiving) are skipped, with reasons.
    Fraction 2 missed: its number goes to the next live fraction, so the missed row reads "missed (was 2)" and
    exactly one live row is numbered 2 (there were two rows numbered 2)."""
    Closure.objects.create(date=dt.date(2027, 11, 23), reason="Linac upgrade")
    course = make_course(patient, fractions=5, dose=Decimal("4.00"))
    booking = scheduling.book_course(course, dt.date(2027, 11, 22), machine=clinic["linac1"], user=users["scheduler"])
    assert [scheduling.local_day(f.starts_at) for f in booking.fractions] == [
        dt.date(2027, 11, 22), dt.date(2027, 11, 24), dt.date(2027, 11, 26), dt.date(2027, 11, 29), dt.date(2027, 11, 30)]
    assert [(d, r) for d, r in scheduling.skipped_days(course)][0] == (dt.date(2027, 11, 23), "Linac upgrade")
    scheduling.mark_missed(booking.fractions[1], user=users["therapist"], reason="Patient unwell")
    html = web("oncologist").get(f"/courses/{course.pk}/").content.decode()
    assert "Tue 23 Nov: Linac upgrade" in html and "Thu 25 Nov: Thanksgiving" in html
    assert html.count("<td>missed (was 2)</td>") == 1
    import re

    numbers = re.findall(r'<tr class="status-(\w+)">\s*<td>([^<]+)', html)
    assert numbers == [("scheduled", "1"), ("missed", "missed (was 2)"), ("scheduled", "2"), ("scheduled", "3"),
                       ("scheduled", "4"), ("scheduled", "5 ")]  # the make-up, tagged after its number
