"""The OpenAPI schema documents what the API sends (issue 13); schemathesis checks it end to end in tests/api_contract."""

import re

import jsonschema
import pytest

from workflow.openapi import PARTIAL_TIME_PATTERN


@pytest.fixture
def schema(api):
    return api("oncologist").get("/api/schema/?format=json").json()


def resolve(schema, node):
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def body_schema(schema, path, method="get", code="200", ctype="application/json"):
    return resolve(schema, schema["paths"][path][method]["responses"][code]["content"][ctype]["schema"])


@pytest.mark.django_db
def test_every_operation_documents_its_errors(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"400", "401", "403", "404"} <= codes, (method, path, codes)
            if method in ("post", "put", "patch", "delete"):
                assert {"405", "409"} <= codes, (method, path, codes)


@pytest.mark.django_db
def test_plain_lists_are_not_documented_as_paginated(schema):
    for path, method, code in [("/api/toxicity-events/{id}/history/", "get", "200"), ("/api/weekly-reviews/worklist/", "get", "200"),
                               ("/api/courses/{id}/followups/", "post", "201")]:
        assert body_schema(schema, path, method, code)["type"] == "array", path


@pytest.mark.django_db
def test_plan_sub_resources_have_their_own_bodies(schema):
    assert set(body_schema(schema, "/api/planning/plans/{id}/status/")["required"]) >= {"progress_pct", "finished"}
    assert "structures" in body_schema(schema, "/api/planning/plans/{id}/dose/")["properties"]
    assert "rows" in body_schema(schema, "/api/planning/plans/{id}/reirradiation/")["properties"]
    assert "application/zip" in schema["paths"]["/api/planning/plans/{id}/dicom/"]["get"]["responses"]["200"]["content"]


@pytest.mark.django_db
def test_nullable_blank_and_time_fields_match_real_values(schema, api, clinic):
    components = schema["components"]["schemas"]
    machine = api("oncologist").get(f"/api/machines/{clinic['linac1'].pk}/").json()
    assert machine["opens_at"] == "07:00:00"
    assert re.match(PARTIAL_TIME_PATTERN, machine["opens_at"])
    jsonschema.validate(machine, {**components["Machine"], "components": schema["components"]})
    assert components["Plan"]["properties"]["approved_by"]["nullable"] is True
    for name in ("assignee", "completed_by", "days_late"):
        assert components["CareTask"]["properties"][name]["nullable"] is True
    # A derived response not yet known is "" (blank choice), documented beside the enum.
    response = components["Assessment"]["properties"]["response"]
    assert {"type": "string", "enum": [""]} in response["oneOf"]
