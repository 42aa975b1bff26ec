"""Registry import at registry scale: streamed (bounded memory on a 20 MB file), errors capped at 100 with a count,
uploads capped by size (413), and doses that are not plain finite numbers refused with line and field."""

import csv
import datetime as dt
import io
import tracemalloc

import pytest
from django.test import Client

from outcomes.models import CourseOutcome, FollowUpAssessment
from outcomes.registry_import import COLUMNS, MAX_ERRORS_LISTED, RegistryImportError, import_registry
from tests.conftest import PASSWORD
from workflow.models import Course, Patient

from .test_registry_import import GOOD, csv_text

pytestmark = pytest.mark.urls("tests.outcomes.urls")


def write_registry(out, patients, followups_per_course, bad_dose_last=None):
    """A registry of ``patients`` (one course each) and ``followups_per_course`` contacts per course, written row by
    row; ``bad_dose_last`` puts that dose on the last course row."""
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    start = dt.date(2010, 1, 4)
    for i in range(patients):
        mrn = f"S{i:06d}"
        w.writerow({"record_type": "patient", "mrn": mrn, "given_name": "Given", "family_name": f"Family{i}",
                    "birth_date": "1950-05-01", "sex": "F", "site": "lung", "diagnosed_on": "2009-12-01"})
    for i in range(patients):
        dose = bad_dose_last if (bad_dose_last and i == patients - 1) else "60"
        w.writerow({"record_type": "course", "mrn": f"S{i:06d}", "course_ref": "1", "intent": "curative", "technique": "IMRT",
                    "treated_site": "Thorax", "total_dose_gy": dose, "fractions": "30", "rt_start": start.isoformat()})
    for k in range(followups_per_course):
        day = (start + dt.timedelta(days=30 + 7 * k)).isoformat()
        for i in range(patients):
            w.writerow({"record_type": "followup", "mrn": f"S{i:06d}", "course_ref": "1", "date": day, "last_known_alive": day})


def login(user):
    c = Client()
    assert c.login(username=user.username, password=PASSWORD)
    return c


@pytest.mark.parametrize("field,value", [
    ("total_dose_gy", "NaN"), ("total_dose_gy", "Infinity"), ("total_dose_gy", "-inf"), ("total_dose_gy", "-0"),
    ("total_dose_gy", "1e309"), ("total_dose_gy", "0"), ("total_dose_gy", "5e1"), ("fractions", "NaN"), ("fractions", "-0"),
    ("fractions", "1e309"),
])
def test_non_finite_or_signed_numbers_are_refused_with_line_and_field(oncologist, field, value):
    rows = [dict(r) for r in GOOD]
    rows[1][field] = value  # the course row: line 3
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(rows), user=oncologist)
    assert [(e.line, e.field) for e in exc.value.errors] == [(3, field)], exc.value.errors
    assert Patient.objects.count() == 0 and Course.objects.count() == 0


def test_errors_are_capped_with_their_count_and_nothing_imported(oncologist):
    rows = [dict(r) for r in GOOD]
    rows += [{"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": f"2020-02-{1 + i % 28:02d}x"} for i in range(450)]
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(rows), user=oncologist)
    assert exc.value.total == 450 and len(exc.value.errors) == MAX_ERRORS_LISTED
    assert [e.line for e in exc.value.errors] == list(range(7, 107))  # the first hundred, by line
    assert Patient.objects.count() == 0
    f = io.BytesIO(csv_text(rows).encode())
    f.name = "reg.csv"
    r = login(oncologist).post("/api/outcomes/import/", {"file": f})
    body = r.json()
    assert r.status_code == 400 and body["error_count"] == 450 and body["errors_listed"] == 100 and len(body["errors"]) == 100
    assert len(r.content) < 20_000 and body["errors"][0] == {"line": 7, "field": "date", "message": "'2020-02-01x' is not a date (YYYY-MM-DD)"}
    f.seek(0)
    page = login(oncologist).post("/outcomes/import/", {"file": f})
    assert page.status_code == 200 and b"450 problems: nothing was imported" in page.content
    assert b"The first 100 by line are listed." in page.content


def test_upload_above_the_limit_is_refused_with_413(oncologist, settings):
    settings.RADPATH_MAX_UPLOAD_MB = 1
    data = io.StringIO()
    write_registry(data, patients=50, followups_per_course=480)
    f = io.BytesIO(data.getvalue().encode())
    assert 1.1 * 2**20 < len(f.getvalue()) < 2 * 2**20
    f.name = "reg.csv"
    c = login(oncologist)
    r = c.post("/api/outcomes/import/", {"file": f})
    assert r.status_code == 413 and "RADPATH_MAX_UPLOAD_MB" in r.json()["file"][0]
    f.seek(0)
    page = c.post("/outcomes/import/", {"file": f})
    assert page.status_code == 413 and b"the limit is 1 MB" in page.content
    assert Patient.objects.count() == 0


def test_a_20_mb_registry_is_validated_in_bounded_memory(oncologist, tmp_path):
    """20 MB (about 300,000 rows) with one bad dose on the last course: every row is read, the file is refused, and
    the traced peak stays far below the file's size (the whole text, or its rows as dicts, would be several times
    it); nothing is written."""
    path = tmp_path / "registry.csv"
    with open(path, "w", newline="") as out:
        write_registry(out, patients=2000, followups_per_course=160, bad_dose_last="NaN")
    size = path.stat().st_size
    assert 20 * 2**20 < size < 23 * 2**20
    tracemalloc.start()
    try:
        with open(path, "rb") as f:
            with pytest.raises(RegistryImportError) as exc:
                import_registry(f, user=oncologist)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [(e.line, e.field) for e in exc.value.errors] == [(4001, "total_dose_gy")]
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {size / 2**20:.1f} MiB file"
    assert Patient.objects.count() == 0


def test_a_valid_upload_spooled_to_disk_imports_in_batches(oncologist, settings):
    """0.8 MB, spooled to a temporary file (above FILE_UPLOAD_MAX_MEMORY_SIZE, lowered here to 256 KB): 100 patients
    with 120 follow-ups each, imported in one transaction with their history rows."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 2**18
    data = io.StringIO()
    write_registry(data, patients=100, followups_per_course=120)
    raw = data.getvalue().encode()
    assert len(raw) > 2**18
    f = io.BytesIO(raw)
    f.name = "reg.csv"
    r = login(oncologist).post("/api/outcomes/import/", {"file": f})
    assert r.status_code == 201, r.content[:500]
    assert r.json() == {"patients": 100, "courses": 100, "followups": 12000, "deaths": 0}
    assert FollowUpAssessment.objects.count() == 12000 and FollowUpAssessment.history.count() == 12000
    out = CourseOutcome.objects.get(course__patient__mrn="S000042")
    assert out.last_contact_date == dt.date(2010, 1, 4) + dt.timedelta(days=30 + 7 * 119)
    assert Patient.history.filter(history_user=oncologist).count() == 100
