"""The admin shows every workflow model with its history, and clinical records cannot be deleted there."""

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client

from workflow.models import Patient


@pytest.fixture
def admin_client_(db):
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("boss", "boss@example.org", "pw-boss-123")
    client = Client()
    client.force_login(user)
    return client, user


def test_every_workflow_model_is_registered():
    models = [m for m in apps.get_app_config("workflow").get_models() if not m._meta.model_name.startswith("historical")]
    assert models and all(admin.site.is_registered(m) for m in models)


@pytest.mark.django_db
def test_patient_admin_has_history_and_no_delete(admin_client_, patient):
    client, user = admin_client_
    assert client.get("/admin/workflow/patient/").status_code == 200
    assert client.get(f"/admin/workflow/patient/{patient.pk}/change/").status_code == 200
    assert client.get(f"/admin/workflow/patient/{patient.pk}/history/").status_code == 200
    assert client.post(f"/admin/workflow/patient/{patient.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Patient.objects.filter(pk=patient.pk).exists()
    assert "delete_selected" not in client.get("/admin/workflow/patient/").content.decode()


@pytest.mark.django_db
def test_admin_void_action_voids_and_audits(admin_client_, patient):
    client, user = admin_client_
    response = client.post("/admin/workflow/patient/", {"action": "void_selected", "_selected_action": [patient.pk]})
    assert response.status_code == 302
    patient.refresh_from_db()
    assert patient.is_voided and patient.voided_by == user
    assert patient.history.latest().history_user == user


@pytest.mark.django_db
def test_every_changelist_and_change_page_renders(admin_client_, booked_course):
    client, user = admin_client_
    for model in apps.get_app_config("workflow").get_models():
        if model._meta.model_name.startswith("historical"):
            continue
        base = f"/admin/workflow/{model._meta.model_name}/"
        assert client.get(base).status_code == 200, base
        obj = model._default_manager.first()
        if obj is not None:
            assert client.get(f"{base}{obj.pk}/change/").status_code == 200, base
            assert client.get(f"{base}{obj.pk}/history/").status_code in (200, 404), base
