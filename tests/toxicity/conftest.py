import datetime as dt
from decimal import Decimal

import pytest

from tests.conftest import make_course
from workflow.pathway.delivery import clear_for_treatment
from workflow.pathway.scheduling import book_course, local_datetime

START = dt.date(2027, 3, 1)  # a Monday
LATER = local_datetime(dt.date(2027, 9, 1), dt.time(12, 0))


@pytest.fixture
def treated(clinic, patient, diagnosis, oncologist):
    """A cleared 10-fraction thoracic IMRT course booked from Monday 1 March 2027."""
    course = make_course(patient, diagnosis, fractions=10, dose=Decimal("2.00"))
    book_course(course, START, allow_past=True)
    clear_for_treatment(course, user=oncologist)
    course.refresh_from_db()
    return course
