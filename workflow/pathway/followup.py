"""Follow-up visits proposed when a course completes.

Default protocol (DOMAIN.md section 1.6, after e.g. NCCN surveillance practice): first imaging about 6 weeks after
the last fraction, then every 3 months for 2 years, every 6 months to year 5, yearly to year 10. A clinic sets its
own with ``RADPATH_FOLLOWUP_PROTOCOL``: a list of ``[label, days after the last fraction]``.
"""

import datetime as dt

from django.conf import settings
from django.db import transaction

from .models import FollowUpVisit, ImagingModality

DAYS_PER_MONTH = 30.4375
DEFAULT_PROTOCOL = (
    [("6 weeks", 42)]
    + [(f"{m} months", round(m * DAYS_PER_MONTH)) for m in range(3, 25, 3)]
    + [(f"{m} months", round(m * DAYS_PER_MONTH)) for m in range(30, 61, 6)]
    + [(f"{y} years", round(12 * y * DAYS_PER_MONTH)) for y in range(6, 11)]
)


def protocol():
    return [tuple(step) for step in getattr(settings, "RADPATH_FOLLOWUP_PROTOCOL", None) or DEFAULT_PROTOCOL]


def followup_schedule(end_date, steps=None):
    """(label, due date) for each protocol step after a course ending on ``end_date``."""
    return [(label, end_date + dt.timedelta(days=int(days))) for label, days in (steps or protocol())]


def propose_followups(course, *, user=None, steps=None):
    """Create the proposed follow-up visits for a completed course (idempotent: existing visits are kept)."""
    end = course.completed_on or course.stopped_on
    if end is None:
        return []
    existing = set(course.followup_visits.values_list("label", flat=True))
    created = []
    with transaction.atomic():
        for label, due in followup_schedule(end, steps):
            if label in existing:
                continue
            visit = FollowUpVisit(course=course, due_date=due, label=label, modality=ImagingModality.CT)
            visit._history_user = user
            visit.save()
            created.append(visit)
    return created
