"""Planning pages and REST API: roles, JSON inputs, progress/status, review page figures, approve over HTTP."""

import json

import pytest

from planning import services
from planning.models import Plan, PlanStatus
from tests.conftest import PASSWORD

from .conftest import FAST, make_done_plan

pytestmark = pytest.mark.urls("tests.planning.urls")


def login(client, user):
    client.login(username=user.username, password=PASSWORD)
    return client


def test_api_create_start_status_and_approve(client, cshape_course, users, immediate_tasks):
    c = login(client, users["physicist"])
    body = dict(FAST, course=cshape_course.pk, gantry_angles=[0, 72, 144, 216, 288], start=True)
    r = c.post("/api/planning/plans/", body, content_type="application/json")
    assert r.status_code == 201, r.content
    plan = r.json()
    assert plan["status"] == "done" and plan["version"] == 1 and len(plan["structures"]) == 3
    r = c.get(f"/api/planning/plans/{plan['id']}/status/")
    assert r.json()["status"] == "done" and r.json()["progress_pct"] == 100.0 and r.json()["finished"]
    # physicists may not approve; oncologists may not plan
    assert c.post(f"/api/planning/plans/{plan['id']}/approve/", {}, content_type="application/json").status_code == 403
    c.logout()
    c = login(client, users["oncologist"])
    assert c.post("/api/planning/plans/", body, content_type="application/json").status_code == 403
    r = c.post(f"/api/planning/plans/{plan['id']}/approve/", {"comment": "ok"}, content_type="application/json")
    assert r.status_code == 200 and r.json()["status"] == "approved" and r.json()["approved_by"] == "oncologist"
    assert c.post(f"/api/planning/plans/{plan['id']}/approve/", {}, content_type="application/json").status_code == 409
    c.logout()
    c = login(client, users["physicist"])
    r = c.patch(f"/api/planning/plans/{plan['id']}/", {"max_iterations": 5}, content_type="application/json")
    assert r.status_code == 400 and "frozen" in r.json()["detail"]
    r = c.post(f"/api/planning/plans/{plan['id']}/new-version/", {"max_iterations": 5}, content_type="application/json")
    assert r.status_code == 201 and r.json()["version"] == 2 and r.json()["status"] == "draft"
    r = c.get(f"/api/planning/plans/{plan['id']}/dose/")
    assert r.status_code == 200 and r.json()["plan"] == plan["id"]
    assert c.get(f"/api/planning/plans/{plan['id']}/dicom/").status_code == 200


def test_api_validation_names_the_field(client, cshape_course, users):
    c = login(client, users["physicist"])
    r = c.post("/api/planning/plans/", {"course": cshape_course.pk, "goals": [{"structure": "Moon", "metric": "Dmean", "comparison": "<=", "value": 1}]},
               content_type="application/json")
    assert r.status_code == 400 and "goals" in r.json() and "Moon" in r.json()["goals"][0]
    r = c.post("/api/planning/plans/", {"course": cshape_course.pk, "gantry_angles": []}, content_type="application/json")
    assert r.status_code == 201  # empty = default beams
    r = c.post("/api/planning/plans/", {"course": cshape_course.pk, "beamlet_mm": 0.1}, content_type="application/json")
    assert r.status_code == 400 and "beamlet_mm" in r.json()
    assert login(client, users["researcher"]).get("/api/planning/plans/").status_code == 403


def test_cancel_queued_over_api(client, cshape_course, users, db_tasks):
    c = login(client, users["physicist"])
    plan = c.post("/api/planning/plans/", dict(FAST, course=cshape_course.pk, start=True), content_type="application/json").json()
    assert plan["status"] == "queued"
    r = c.post(f"/api/planning/plans/{plan['id']}/cancel/")
    assert r.status_code == 200 and r.json()["status"] == "failed" and "Cancelled by physicist" in r.json()["failure_reason"]
    r = c.post(f"/api/planning/plans/{plan['id']}/retry/")
    assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["attempts"] == 2


def test_pages(client, cshape_course, users, immediate_tasks):
    c = login(client, users["physicist"])
    r = c.get(f"/planning/courses/{cshape_course.pk}/")
    assert r.status_code == 200 and b"New plan" in r.content and b"TG-119 C-shape" in r.content
    r = c.post(f"/planning/courses/{cshape_course.pk}/", {"method": "inverse", "geometry_source": "phantom", "phantom": "cshape",
                                                           "gantry_angles": "0, 120, 240", "beamlet_mm": "10", "grid_mm": "8",
                                                           "max_iterations": "20", "goals": "", "objectives": "", "start": "1"})
    plan = Plan.objects.get(course=cshape_course)
    assert r.status_code == 302 and r["Location"] == f"/planning/plans/{plan.pk}/" and plan.status == PlanStatus.DONE
    r = c.post(f"/planning/courses/{cshape_course.pk}/", {"goals": "[not json", "grid_mm": "8"})
    assert r.status_code == 200 and b"Not valid JSON" in r.content and Plan.objects.count() == 1
    r = c.get(f"/planning/plans/{plan.pk}/")
    html = r.content.decode()
    assert r.status_code == 200 and 'id="goals-table"' in html and 'id="slice-axial"' in html and 'id="beam-summary"' in html
    assert "Approve plan" not in html  # physicists plan, oncologists approve
    for url in (f"/planning/plans/{plan.pk}/dvh.png", f"/planning/plans/{plan.pk}/slice/axial/8.png",
                f"/planning/plans/{plan.pk}/slice/coronal/3.png", f"/planning/plans/{plan.pk}/slice/sagittal/99.png"):
        r = c.get(url)
        assert r.status_code == 200 and r["Content-Type"] == "image/png" and r.content[:4] == b"\x89PNG", url
    assert json.loads(c.get(f"/planning/plans/{plan.pk}/status.json").content)["status"] == "done"
    r = c.post(f"/planning/plans/{plan.pk}/approve/", follow=True)
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.DONE and b"does not allow" in r.content
    c.logout()
    c = login(client, users["oncologist"])
    html = c.get(f"/planning/plans/{plan.pk}/").content.decode()
    assert "Approve plan" in html
    c.post(f"/planning/plans/{plan.pk}/approve/", {"comment": "Fine"})
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.APPROVED
    r = c.get(f"/planning/plans/{plan.pk}/dicom.zip")
    assert r.status_code == 200 and r.content[:2] == b"PK"
    r = c.get(f"/planning/courses/{cshape_course.pk}/")
    assert b'id="dose-accumulation"' in r.content and b"0 of 25 fractions delivered" in r.content
    assert b"New plan" not in r.content  # oncologists approve, they do not plan


def test_import_page_refuses_garbage(client, cshape_course, users):
    from django.core.files.uploadedfile import SimpleUploadedFile

    c = login(client, users["physicist"])
    r = c.post(f"/planning/courses/{cshape_course.pk}/import/", {"files": [SimpleUploadedFile("x.dcm", b"garbage")]})
    assert r.status_code == 200 and b"Nothing was imported" in r.content and b"not a readable DICOM" in r.content
    assert login(client, users["oncologist"]).get(f"/planning/courses/{cshape_course.pk}/import/").status_code == 403


def test_reirradiation_on_review_page(client, clinic, cshape_course, users):
    plan = make_done_plan(cshape_course, users["physicist"])
    c = login(client, users["oncologist"])
    assert c.get(f"/planning/plans/{plan.pk}/").status_code == 200
    assert services.reirradiation_summary(plan)["earlier_courses"] == []


def test_dicom_import_over_api(client, cshape_course, users):
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    from planning import dicom_io

    plan = make_done_plan(cshape_course, users["physicist"])
    zipped = dicom_io.export_plan_zip(plan)
    c = login(client, users["dosimetrist"])
    r = c.post("/api/planning/dicom-imports/", {"course": cshape_course.pk, "name": "From TPS",
                                                 "files": [SimpleUploadedFile("plan.zip", zipped, "application/zip")]})
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["geometry"]["name"] == "From TPS" and body["plan"]["method"] == "external" and body["plan"]["status"] == "done"
    names = zipfile.ZipFile(io.BytesIO(zipped)).namelist()
    assert len(body["geometry"]["structures"]) == 3 and "RD.dcm" in names
    r = c.post("/api/planning/dicom-imports/", {"course": cshape_course.pk, "files": [SimpleUploadedFile("x.dcm", b"nope")]})
    assert r.status_code == 400 and "not a readable DICOM" in r.json()["files"][0]
    assert login(client, users["oncologist"]).post("/api/planning/dicom-imports/", {"course": cshape_course.pk}).status_code == 403
