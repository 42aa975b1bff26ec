"""iCalendar (RFC 5545) export of a patient's appointments: simulation, treatment fractions and follow-up visits.

Voided and cancelled appointments are left out; missed fractions stay in (marked CANCELLED) so the patient's
calendar shows what happened. Times are exported in UTC, which every calendar client converts to local time;
follow-up visits are all-day events on their due date (the exact slot is booked by the imaging department).
"""

import datetime as dt

from django.utils import timezone
from icalendar import Calendar, Event

from .models import AppointmentStatus, FollowUpStatus, FollowUpVisit, Fraction, SimulationVisit

PRODID = "-//RadPath//Care pathway//EN"
UID_DOMAIN = "radpath"


def _event(uid, summary, start, end=None, *, location="", description="", status="CONFIRMED"):
    event = Event()
    event.add("uid", f"{uid}@{UID_DOMAIN}")
    event.add("dtstamp", timezone.now())
    event.add("summary", _plain(summary))
    event.add("dtstart", start)
    if end is not None:
        event.add("dtend", end)
    if location:
        event.add("location", _plain(location))
    if description:
        event.add("description", _plain(description))
    event.add("status", status)
    return event


def patient_calendar(patient):
    """The patient's appointments as an ``icalendar.Calendar``."""
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", f"Radiotherapy appointments {_plain(patient.mrn)}")

    simulations = (
        SimulationVisit.objects.active()
        .filter(course__patient=patient)
        .exclude(status=AppointmentStatus.CANCELLED)
        .select_related("machine", "course")
    )
    for visit in simulations:
        cal.add_component(
            _event(
                f"simulation-{visit.pk}",
                f"Radiotherapy planning scan ({visit.get_modality_display()} simulation)",
                visit.starts_at,
                visit.ends_at,
                location=visit.machine.name,
                description=f"{visit.course.treated_site}. Immobilisation: {visit.immobilisation or 'none'}.",
            )
        )

    fractions = (
        Fraction.objects.active()
        .filter(course__patient=patient)
        .exclude(status=AppointmentStatus.CANCELLED)
        .select_related("machine", "course")
        .order_by("starts_at")
    )
    for fraction in fractions:
        course = fraction.course
        missed = fraction.status == AppointmentStatus.MISSED
        summary = f"Radiotherapy {course.treated_site}: fraction {fraction.number} of {course.fractions_planned}"
        if missed:
            summary += " (missed)"
        cal.add_component(
            _event(
                f"fraction-{fraction.pk}",
                summary,
                fraction.starts_at,
                fraction.ends_at,
                location=fraction.machine.name,
                description=f"{course.dose_per_fraction_gy} Gy, {course.get_technique_display()}",
                status="CANCELLED" if missed else "CONFIRMED",
            )
        )

    followups = (
        FollowUpVisit.objects.active()
        .filter(course__patient=patient)
        .exclude(status=FollowUpStatus.CANCELLED)
        .select_related("course")
    )
    for visit in followups:
        cal.add_component(
            _event(
                f"followup-{visit.pk}",
                f"Follow-up {visit.get_modality_display()} ({visit.label})",
                visit.due_date,
                visit.due_date + dt.timedelta(days=1),
                description=f"Follow-up after radiotherapy to {visit.course.treated_site}",
                status="TENTATIVE" if visit.status == FollowUpStatus.PROPOSED else "CONFIRMED",
            )
        )
    return cal


def patient_calendar_bytes(patient):
    return patient_calendar(patient).to_ical()


def calendar_filename(patient):
    """``radpath-<MRN>.ics``; the caller sanitises it for the header (``workflow.downloads``)."""
    return f"radpath-{patient.mrn}.ics"


def _plain(text):
    """Record text for a calendar property with control characters (CR, LF, NUL...) replaced by spaces."""
    return "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in str(text))
