"""Covariates: a registry's data dictionary, extra CSV columns imported against it, and its API and audit trail."""

import csv
import io

import pytest
from django.core.exceptions import ValidationError

from outcomes.models import CovariateValue, Registry, RegistryVariable
from outcomes.registry_import import COLUMNS, RegistryImportError, import_registry
from workflow.models import Patient


def csv_text(rows, extra=()):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS + list(extra), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return out.getvalue()


@pytest.fixture
def registry(db):
    reg = Registry.objects.create(code="brc", name="Breast cohort")
    RegistryVariable.objects.create(registry=reg, name="tsize", kind="numeric", unit="mm", minimum=0, maximum=200,
                                    description="Tumour size")
    RegistryVariable.objects.create(registry=reg, name="tgrade", kind="categorical", levels=["I", "II", "III"],
                                    description="Tumour grade")
    RegistryVariable.objects.create(registry=reg, name="boost_gy", level="course", kind="numeric", unit="Gy",
                                    minimum=0, maximum=30, description="Boost dose")
    return reg


def rows(n=2, **over):
    out = []
    for i in range(1, n + 1):
        mrn = f"B{i}"
        out.append({"record_type": "patient", "mrn": mrn, "given_name": "Ann", "family_name": f"Case{i}",
                    "birth_date": "1950-01-01", "sex": "F", "site": "breast", "diagnosed_on": "2019-01-10",
                    "tsize": str(10 * i), "tgrade": "II", **over.get("patient", {})})
        out.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "adjuvant", "technique": "3DCRT",
                    "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25", "rt_start": "2019-03-01",
                    "boost_gy": "10", **over.get("course", {})})
    return out


EXTRA = ("tsize", "tgrade", "boost_gy")


def test_declared_columns_import_as_values_of_their_level(oncologist, registry):
    summary = import_registry(csv_text(rows(), EXTRA), user=oncologist, registry="brc")
    assert summary.to_dict() == {"patients": 2, "courses": 2, "followups": 0, "deaths": 0, "covariate_values": 6}
    p2 = Patient.objects.get(mrn="B2")
    tsize = CovariateValue.objects.get(variable__name="tsize", patient=p2)
    assert (tsize.number, tsize.level, tsize.course_id) == (20.0, "", None)
    assert CovariateValue.objects.get(variable__name="tgrade", patient=p2).level == "II"
    boost = CovariateValue.objects.get(variable__name="boost_gy", patient=p2)
    assert boost.course.patient_id == p2.pk and boost.number == 10.0
    assert tsize.history.count() == 1 and tsize.history.first().history_user == oncologist  # audited


def test_bad_values_are_refused_by_line_and_column_and_nothing_imported(oncologist, registry):
    bad = rows(3)
    bad[0]["tsize"] = "12e3"        # line 2: not a plain number
    bad[2]["tsize"] = "250"         # line 4: above the maximum
    bad[4]["tgrade"] = "IV"         # line 6: not a level
    bad[3]["tsize"] = "5"           # line 5: a patient-level variable on a course row
    bad[5]["boost_gy"] = "-1"       # line 7: below the minimum
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(bad, EXTRA), user=oncologist, registry=registry)
    got = {(e.line, e.field): e.message for e in exc.value.errors}
    assert set(got) == {(2, "tsize"), (4, "tsize"), (5, "tsize"), (6, "tgrade"), (7, "boost_gy")}
    assert "not a number" in got[(2, "tsize")]
    assert got[(4, "tsize")] == "250 is above the maximum 200 mm of the data dictionary"
    assert got[(6, "tgrade")] == "'IV' is not one of the levels I, II, III"
    assert "give it on the patient row" in got[(5, "tsize")]
    assert "below the minimum 0 Gy" in got[(7, "boost_gy")]
    assert not Patient.objects.exists() and not CovariateValue.objects.exists()


def test_unknown_column_is_refused_with_how_to_declare_it(oncologist, registry):
    text = csv_text(rows(1), EXTRA + ("hormone",))
    for reg in (None, "brc"):
        with pytest.raises(RegistryImportError) as exc:
            import_registry(text, user=oncologist, registry=reg)
        (err,) = [e for e in exc.value.errors if e.line == 1]
        assert err.field == ("tsize" if reg is None else "hormone")
        assert "unknown column(s)" in err.message and "declare it in" in err.message
        assert "registry=<code>" in err.message
    assert not Patient.objects.exists()


def test_dictionary_rules(registry):
    with pytest.raises(ValidationError) as exc:
        RegistryVariable(registry=registry, name="stage", kind="categorical", levels=["I"], description="x").full_clean()
    assert "levels" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        RegistryVariable(registry=registry, name="age", kind="numeric", description="x").full_clean()
    assert "name" in exc.value.message_dict  # an analysis term, reserved
    with pytest.raises(ValidationError) as exc:
        RegistryVariable(registry=registry, name="x1", kind="numeric", minimum=5, maximum=1, description="x").full_clean()
    assert "maximum" in exc.value.message_dict


def test_dictionary_api_read_for_researchers_write_for_importers_audited(client, users, registry):
    client.force_login(users["researcher"])
    body = client.get("/api/outcomes/registries/brc/").json()
    assert [v["key"] for v in body["variables"]] == ["brc.boost_gy", "brc.tgrade", "brc.tsize"]
    assert client.post("/api/outcomes/registries/brc/variables/", {"name": "er", "kind": "numeric",
                                                                    "description": "x"}).status_code == 403
    client.force_login(users["oncologist"])
    resp = client.post("/api/outcomes/registries/brc/variables/",
                       {"name": "menostat", "kind": "categorical", "levels": ["Pre", "Post"], "description": "Menopause"},
                       content_type="application/json")
    assert resp.status_code == 201, resp.content
    assert resp.json()["key"] == "brc.menostat"
    resp = client.post("/api/outcomes/registries/brc/variables/",
                       {"name": "grade2", "kind": "categorical", "levels": ["only"], "description": "x"},
                       content_type="application/json")
    assert resp.status_code == 400 and "levels" in resp.json()
    resp = client.post("/api/outcomes/registries/brc/variables/",
                       {"name": "menostat", "kind": "numeric", "description": "x"}, content_type="application/json")
    assert resp.status_code == 400 and "name" in resp.json()
    resp = client.patch("/api/outcomes/registries/brc/variables/menostat/", {"description": "Menopausal status"},
                        content_type="application/json")
    assert resp.status_code == 200, resp.content
    v = RegistryVariable.objects.get(registry=registry, name="menostat")
    assert [h.description for h in v.history.order_by("history_date")] == ["Menopause", "Menopausal status"]
    assert v.history.first().history_user == users["oncologist"]
    assert client.delete("/api/outcomes/registries/brc/variables/menostat/").status_code == 405
    assert client.get("/api/outcomes/registries/nope/variables/").status_code == 404


def test_a_variable_with_values_keeps_its_kind_and_levels_in_use(client, users, oncologist, registry):
    import_registry(csv_text(rows(), EXTRA), user=oncologist, registry="brc")
    client.force_login(users["oncologist"])
    resp = client.patch("/api/outcomes/registries/brc/variables/tgrade/", {"levels": ["I", "III"]},
                        content_type="application/json")
    assert resp.status_code == 400 and "II" in resp.json()["levels"][0]
    resp = client.patch("/api/outcomes/registries/brc/variables/tsize/", {"maximum": 15},
                        content_type="application/json")
    assert resp.status_code == 400 and "20" in resp.json()["maximum"][0]
    resp = client.patch("/api/outcomes/registries/brc/variables/tsize/", {"kind": "categorical", "levels": ["a", "b"]},
                        content_type="application/json")
    assert resp.status_code == 400 and "kind" in resp.json()
    assert client.patch("/api/outcomes/registries/brc/variables/tgrade/", {"levels": ["I", "II", "III", "IV"]},
                        content_type="application/json").status_code == 200


def test_upload_with_the_registry_chosen_through_api_and_page(client, users, registry):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(users["oncologist"])
    data = csv_text(rows(), EXTRA).encode()
    resp = client.post("/api/outcomes/import/", {"file": SimpleUploadedFile("r.csv", data), "registry": "nope"})
    assert resp.status_code == 400 and "registry" in resp.json()
    resp = client.post("/api/outcomes/import/", {"file": SimpleUploadedFile("r.csv", data)})
    assert resp.status_code == 400 and resp.json()["errors"][0]["field"] == "tsize"
    resp = client.post("/api/outcomes/import/", {"file": SimpleUploadedFile("r.csv", data), "registry": "brc"})
    assert resp.status_code == 201 and resp.json()["covariate_values"] == 6
    page = client.get("/outcomes/import/").content.decode()
    assert "<code>tgrade</code>" in page and "I, II, III (reference I)" in page
    assert 'name="registry"' in page


def test_dictionary_is_edited_in_the_admin_with_history_and_no_delete(admin_client, registry):
    page = admin_client.get(f"/admin/outcomes/registry/{registry.pk}/change/")
    assert page.status_code == 200 and "tgrade" in page.content.decode()
    v = RegistryVariable.objects.get(registry=registry, name="tgrade")
    resp = admin_client.post(f"/admin/outcomes/registryvariable/{v.pk}/change/", {
        "registry": registry.pk, "name": "tgrade", "level": "patient", "kind": "categorical", "unit": "",
        "minimum": "", "maximum": "", "levels": '["I", "II", "III", "IV"]', "description": "Tumour grade (WHO)"})
    assert resp.status_code == 302, resp.content.decode()[:2000]
    v.refresh_from_db()
    assert v.levels == ["I", "II", "III", "IV"] and v.history.count() == 2
    bad = admin_client.post(f"/admin/outcomes/registryvariable/{v.pk}/change/", {
        "registry": registry.pk, "name": "tgrade", "level": "patient", "kind": "categorical", "unit": "",
        "minimum": "", "maximum": "", "levels": '["I"]', "description": "x"})
    assert bad.status_code == 200 and "at least two levels" in bad.content.decode()
    assert admin_client.get(f"/admin/outcomes/registryvariable/{v.pk}/delete/").status_code == 403
    assert admin_client.get(f"/admin/outcomes/registryvariable/{v.pk}/history/").status_code == 200
