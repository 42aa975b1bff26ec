"""Care-path API and pages: worklists per role, completing a step (its role only), board, timing."""

import datetime as dt

import pytest
from rest_framework.test import APIClient

from tests.carepaths.conftest import restart, task
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.carepaths.urls")]
MONDAY = dt.date(2026, 3, 2)  # in the past, so tasks can be completed "today"; no US holiday in March 2026
TODAY = dt.date(2026, 3, 11)  # Wednesday


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def at_physics(path_course, users):
    restart(path_course, MONDAY, {"consult": MONDAY, "simulation": dt.date(2026, 3, 3), "contouring": dt.date(2026, 3, 4),
                                  "planning": dt.date(2026, 3, 5)}, users)
    return path_course  # physics check opened Thu 5 March, due Fri 6 March: 3 working days late on Wed 11


def test_worklist_endpoint_lists_a_roles_open_tasks_by_urgency(at_physics, users):
    res = api(users["physicist"]).get("/api/carepath-tasks/worklist/", {"date": TODAY.isoformat()})
    assert res.status_code == 200
    (row,) = res.data["overdue"]
    assert row["code"] == "physics_check" and row["days_late"] == 3 and row["urgency"] == "overdue" and row["blocks_treatment"]
    assert row["patient"]["mrn"] == "MRN0001" and res.data["due_today"] == [] and res.data["upcoming"] == []
    res = api(users["physicist"]).get("/api/carepath-tasks/worklist/", {"date": "2026-03-06"})
    assert [r["code"] for r in res.data["due_today"]] == ["physics_check"] and res.data["overdue"] == []
    res = api(users["therapist"]).get("/api/carepath-tasks/worklist/", {"date": TODAY.isoformat()})
    assert all(not res.data[k] for k in ("overdue", "due_today", "upcoming", "on_hold"))
    res = api(users["oncologist"]).get("/api/carepath-tasks/worklist/", {"role": "physicist", "date": TODAY.isoformat()})
    assert [r["code"] for r in res.data["overdue"]] == ["physics_check"]
    assert api(users["researcher"]).get("/api/carepath-tasks/worklist/").status_code == 403


def test_complete_action_needs_the_steps_role(at_physics, users):
    physics = task(at_physics, "physics_check")
    url = f"/api/carepath-tasks/{physics.pk}/complete/"
    res = api(users["dosimetrist"]).post(url, {}, format="json")
    assert res.status_code == 403
    assert task(at_physics, "physics_check").status == "open"
    res = api(users["physicist"]).post(url, {"note": "MU check within 2%"}, format="json")
    assert res.status_code == 200 and res.data["status"] == "done" and res.data["completed_by"] == "physicist"
    assert api(users["physicist"]).post(url, {}, format="json").status_code == 409
    assert task(at_physics, "plan_approval").status == "open"


def test_hold_skip_reassign_actions(at_physics, users):
    physics = task(at_physics, "physics_check")
    client = api(users["physicist"])
    res = client.post(f"/api/carepath-tasks/{physics.pk}/hold/", {}, format="json")
    assert res.status_code == 400 and "reason" in res.data
    res = client.post(f"/api/carepath-tasks/{physics.pk}/hold/", {"reason": "Linac QA failed"}, format="json")
    assert res.status_code == 200 and res.data["status"] == "on_hold" and res.data["urgency"] == "on_hold"
    assert client.post(f"/api/carepath-tasks/{physics.pk}/release/").data["status"] == "open"
    res = client.post(f"/api/carepath-tasks/{physics.pk}/reassign/", {"to_user": users["therapist"].pk}, format="json")
    assert res.status_code == 400 and "to_user" in res.data
    res = api(users["dosimetrist"]).post(f"/api/carepath-tasks/{physics.pk}/skip/", {"reason": "x"}, format="json")
    assert res.status_code == 403
    res = client.post(f"/api/carepath-tasks/{physics.pk}/skip/", {"reason": "Second check done externally"}, format="json")
    assert res.status_code == 200 and res.data["status"] == "skipped"


def test_paths_board_timing_and_templates_endpoints(at_physics, users):
    client = api(users["oncologist"])
    res = client.get("/api/carepaths/", {"course": at_physics.pk})
    (path,) = res.data["results"]
    assert path["current"] == "physics_check" and [t["code"] for t in path["tasks"]][:2] == ["consult", "simulation"]
    res = client.get("/api/carepaths/board/", {"date": TODAY.isoformat()})
    cards = {c["code"]: c["cards"] for c in res.data["columns"]}
    assert [c["course"] for c in cards["physics_check"]] == [at_physics.pk] and cards["physics_check"][0]["blocked"]
    assert res.data["overdue"] == 1
    res = client.get("/api/carepaths/timing/")
    (row,) = res.data["courses"]
    assert row["consult_to_sim"] == 1 and row["month"] == "2026-03" and res.data["months"][0]["courses"] == 1
    assert res.data["steps"]["consult"]["rate"] == 1.0
    res = client.get("/api/carepath-templates/")
    codes = {t["code"] for t in res.data["results"]}
    assert codes == {"curative-imrt-vmat", "palliative", "sbrt", "iort", "reirradiation"}
    assert client.get("/api/schema/").status_code == 200


def test_worklist_page_and_completing_from_it(client, at_physics, users):
    client.login(username="physicist", password=PASSWORD)
    page = client.get("/carepaths/worklist/", {"date": TODAY.isoformat()})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Physics plan check" in html and "3 working days late" in html and "Blocks treatment" in html
    physics = task(at_physics, "physics_check")
    res = client.post(f"/carepaths/tasks/{physics.pk}/complete/", {"next": "/carepaths/worklist/"})
    assert res.status_code == 302 and res["Location"] == "/carepaths/worklist/"
    assert task(at_physics, "physics_check").status == "done"
    client.logout()
    client.login(username="therapist", password=PASSWORD)
    approval = task(at_physics, "plan_approval")
    client.post(f"/carepaths/tasks/{approval.pk}/complete/")
    assert task(at_physics, "plan_approval").status == "open"  # not the therapist's step


def test_board_and_path_pages(client, at_physics, users):
    client.login(username="scheduler", password=PASSWORD)
    page = client.get("/carepaths/board/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="path-{at_physics.carepath.pk}"' in html and 'data-step="physics_check"' in html
    assert 'src="/carepaths/board/timing.png"' in html and "timing-table" in html
    chart = client.get("/carepaths/board/timing.png")
    assert chart.status_code == 200 and chart["Content-Type"] == "image/png" and chart.content[:8] == b"\x89PNG\r\n\x1a\n"
    detail = client.get(f"/carepaths/{at_physics.carepath.pk}/")
    assert detail.status_code == 200 and "Physics plan check" in detail.content.decode()
    client.logout()
    client.login(username="researcher", password=PASSWORD)
    assert client.get("/carepaths/board/").status_code == 403
    assert client.get("/carepaths/worklist/").status_code == 403


def _patients_on_paths(n):
    from tests.carepaths.conftest import make_course
    from workflow.models import Patient

    for i in range(n):
        p = Patient.objects.create(mrn=f"Q{i:03d}", given_name="Pat", family_name=f"Queue{i:03d}", birth_date=dt.date(1960, 1, 1), sex="M")
        make_course(p, fractions=5)


@pytest.mark.parametrize("url", ["/carepaths/worklist/", "/carepaths/board/"])
def test_worklist_and_board_queries_do_not_grow_with_patients(client, templates, users, url, django_assert_max_num_queries):
    """Twelve patients at their consult: the oncologist's worklist and the board take a fixed number of queries
    (a query per row once made the worklist ask for the user's roles 54 times)."""
    _patients_on_paths(12)
    client.force_login(users["oncologist"])
    with django_assert_max_num_queries(14):
        page = client.get(url)
    html = page.content.decode()
    assert page.status_code == 200 and all(f"Queue{i:03d}" in html for i in range(12))
