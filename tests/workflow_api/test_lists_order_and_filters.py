"""Every paginated list has a deterministic order, and every documented filter (``?patient=``, ``?status=``,
``?course=``) filters on every list whose records have that field."""

import warnings

import pytest
from django.core.paginator import UnorderedObjectListWarning
from rest_framework.exceptions import ValidationError
from django.test import RequestFactory
from django.urls import get_resolver
from rest_framework.request import Request

from planning.models import PlanStatus
from tests.conftest import make_course
from tests.planning.conftest import make_done_plan

pytestmark = pytest.mark.django_db
DOCUMENTED = ("patient", "status", "course")


def _list_views(patterns=None, prefix=""):
    for p in patterns if patterns is not None else get_resolver().url_patterns:
        if hasattr(p, "url_patterns"):
            yield from _list_views(p.url_patterns, prefix + str(p.pattern))
        else:
            actions = getattr(p.callback, "actions", None) or {}
            if actions.get("get") == "list":
                yield prefix + str(p.pattern), p.callback.cls


def _view(cls, user, query=""):
    request = Request(RequestFactory().get("/" + query))
    request.user = user
    return cls(request=request, format_kwarg=None, kwargs={}, action="list")


def _sql(cls, user, query=""):
    view = _view(cls, user, query)
    try:
        return str(view.filter_queryset(view.get_queryset()).query)
    except ValidationError:
        return "refused: the parameter is validated, so it is read"


def test_every_api_list_is_ordered_and_filters_what_the_readme_documents(users):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("root", password="x")
    views = [(route, cls) for route, cls in _list_views() if hasattr(cls, "get_queryset")]
    assert len(views) > 10
    missing = []
    for route, cls in views:
        qs = _view(cls, admin).get_queryset()
        assert qs.ordered, f"{route}: {cls.__name__} list has no order"
        unfiltered = _sql(cls, admin)
        for name in DOCUMENTED:
            field = next((f for f in qs.model._meta.concrete_fields if f.name == name), None)
            if field is None:
                continue
            value = field.choices[0][0] if field.choices else "1"
            if _sql(cls, admin, f"?{name}={value}") == unfiltered:
                missing.append(f"{route} ?{name}=")
    assert missing == [], f"documented filters ignored: {missing}"


def test_plans_filter_by_status(client, users, clinic, patient, settings, tmp_path):
    from planning import services
    from workflow.models import Diagnosis

    settings.MEDIA_ROOT = str(tmp_path)
    dx = Diagnosis.objects.create(patient=patient, site="other", histology="", diagnosed_on="2026-06-01")
    course = make_course(patient, dx, fractions=5, treated_site="Paraspinal")
    done = make_done_plan(course, users["physicist"])
    draft = services.create_plan(course, user=users["physicist"], grid_mm=8.0)
    client.force_login(users["physicist"])
    ids = lambda q: [p["id"] for p in client.get(f"/api/planning/plans/{q}").json()["results"]]  # noqa: E731
    assert ids("?status=done") == [done.pk]
    assert ids(f"?status={PlanStatus.DRAFT}") == [draft.pk]
    assert sorted(ids(f"?course={course.pk}")) == sorted([done.pk, draft.pk])
    r = client.get("/api/planning/plans/?status=nonsense")
    assert r.status_code == 400 and "status" in r.json()


def test_patient_list_pages_in_a_stable_order(client, users):
    from workflow.models import Patient

    for i, (family, given) in enumerate([("Zeller", "Ann"), ("Abbot", "Ben"), ("Abbot", "Ada"), ("Moor", "Cy")]):
        Patient.objects.create(mrn=f"M{i}", given_name=given, family_name=family, birth_date="1950-01-01", sex="F")
    client.force_login(users["oncologist"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnorderedObjectListWarning)
        page = client.get("/patients/").context["page"]
    assert [p.mrn for p in page.object_list] == ["M2", "M1", "M3", "M0"]
