"""Fixtures for the outcomes Django side: a course with recorded RT dates and helpers to log assessments."""

import datetime as dt

import pytest

from outcomes import services

D = dt.date


def target(lesion, value, organ="lung", is_node=False):
    return {"kind": "target", "lesion": lesion, "organ": organ, "is_node": is_node, "value_mm": value}


def pleural(site, level, value):
    return {"kind": "pleural", "lesion": site, "ct_level": level, "value_mm": value}


def log(course, user, date, values, kind="followup", **data):
    """Log an assessment with RECIST target lesions T1, T2 measured ``values``."""
    ms = [target(f"T{i + 1}", v) for i, v in enumerate(values)]
    return services.save_assessment(course=course, user=user, data={"kind": kind, "date": date, **data}, measurements=ms)


@pytest.fixture
def rt_course(course):
    services.set_recorded_rt_dates(course, D(2026, 6, 15), D(2026, 7, 20))
    return course
