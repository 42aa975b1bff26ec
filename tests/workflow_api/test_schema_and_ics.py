"""The OpenAPI schema and docs, and the iCalendar export."""

import icalendar
import pytest
from django.core.management import call_command

from .conftest import first_scheduled


@pytest.mark.django_db
def test_schema_lists_every_resource_and_action(api):
    response = api("therapist").get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/patients/",
        "/api/diagnoses/",
        "/api/treatments/",
        "/api/courses/",
        "/api/simulations/",
        "/api/fractions/",
        "/api/machines/",
        "/api/closures/",
        "/api/downtimes/",
        "/api/followups/",
        "/api/courses/{id}/schedule/",
        "/api/courses/{id}/clear/",
        "/api/courses/{id}/stop/",
        "/api/courses/{id}/progress/",
        "/api/fractions/{id}/deliver/",
        "/api/fractions/{id}/miss/",
        "/api/fractions/{id}/move/",
        "/api/patients/{id}/calendar/",
    ]:
        assert path in paths, path
    assert "delete" not in paths["/api/fractions/{id}/"]


def test_schema_generates_without_warnings(tmp_path):
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))
    assert (tmp_path / "schema.yaml").read_text().startswith("openapi:")


@pytest.mark.django_db
def test_docs_page(api):
    r = api("therapist").get("/api/docs/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "cdn.jsdelivr" not in html and "unpkg" not in html and "@latest" not in html


def test_docs_are_served_offline_from_the_package(api):
    """swagger-ui comes from drf-spectacular-sidecar's static files: every script and stylesheet of /api/docs/ is
    a local static file that exists, so the page works without internet."""
    import re

    from django.contrib.staticfiles import finders

    html = api("therapist").get("/api/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
    assert any("swagger-ui-bundle.js" in a for a in assets) and any("swagger-ui.css" in a for a in assets)
    for asset in assets:
        assert asset.startswith("/static/"), asset
        assert finders.find(asset[len("/static/"):]), asset


def test_no_template_loads_anything_from_another_site():
    """No page pulls code, fonts or styles from the internet (offline clinics; no unpinned code beside patient data)."""
    import re
    from pathlib import Path

    from django.conf import settings

    pattern = re.compile(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', re.I)
    found = [str(p) for p in Path(settings.BASE_DIR, "templates").rglob("*.html") if pattern.search(p.read_text())]
    assert found == []


def _events(content):
    cal = icalendar.Calendar.from_ical(content)
    return [c for c in cal.walk("VEVENT")]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/patients/{pk}/calendar.ics", "/patients/{pk}/calendar.ics"])
def test_calendar_export_lists_the_fractions(api, booked_course, patient, url):
    response = api("therapist").get(url.format(pk=patient.pk))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/calendar")
    events = _events(response.content)
    fractions = [e for e in events if str(e["UID"]).startswith("fraction-")]
    assert len(fractions) == 25
    first = first_scheduled(booked_course)
    event = next(e for e in fractions if str(e["UID"]) == f"fraction-{first.pk}@radpath")
    assert event.decoded("dtstart") == first.starts_at
    assert "fraction 1 of 25" in str(event["SUMMARY"]) and str(event["LOCATION"]) == "Linac 1"


@pytest.mark.django_db
def test_calendar_includes_simulation_and_followups(api, patient, clinic, oncologist):
    import datetime as dt
    from decimal import Decimal

    from tests.conftest import make_course
    from workflow.pathway import delivery, scheduling

    from .conftest import future_monday, past_monday

    course = make_course(patient, fractions=1, dose=Decimal("8.00"), technique="3DCRT", intent="palliative")
    scheduling.book_simulation(course, scheduling.local_datetime(future_monday(), dt.time(8, 0)), clinic["ct"])
    delivery.clear_for_treatment(course, user=oncologist)
    scheduling.book_course(course, past_monday(), allow_past=True)
    delivery.deliver_fraction(first_scheduled(course), user=oncologist)

    events = _events(api("scheduler").get(f"/api/patients/{patient.pk}/calendar.ics").content)
    kinds = sorted({str(e["UID"]).split("-")[0] for e in events})
    assert kinds == ["followup", "fraction", "simulation"]
    assert sum(str(e["UID"]).startswith("followup-") for e in events) == course.followup_visits.count()
