"""Columnar fetch on the real database (SQLite here, PostgreSQL in CI): every kind, NULLs, odd dates and text."""

import datetime as dt

import numpy as np
import pytest
from django.db.models import Exists, F, OuterRef

from outcomes import columnar
from workflow.models import Diagnosis, Patient, Treatment

D = dt.date


@pytest.fixture
def registry(db):
    rows = [  # mrn, family name (text with separators), birth date, diagnosis date or None, surgery?
        ("C1", "O'Brien, Jr.", D(1931, 2, 28), D(2024, 2, 29), True),
        ("C2", "Nguyễn; Anh", D(1969, 12, 31), None, False),
        ("C3", "Smith|Jones", D(2000, 3, 1), D(1970, 1, 1), False),
    ]
    for mrn, family, born, diagnosed, surgery in rows:
        p = Patient.objects.create(mrn=mrn, given_name="G", family_name=family, birth_date=born, sex="F")
        if diagnosed:
            Diagnosis.objects.create(patient=p, site="lung", diagnosed_on=diagnosed)
        if surgery:
            Treatment.objects.create(patient=p, kind="surgery", surgery_type="lobectomy", start_date=D(2024, 4, 2))
    return rows


def test_every_kind_comes_back_aligned_with_nulls_as_missing(registry):
    surgery = Exists(Treatment.objects.filter(patient=OuterRef("pk"), kind="surgery"))
    out = columnar.fetch_columns(
        Patient.objects.order_by("mrn"),
        {"id": ("id", "int"), "mrn": ("mrn", "text"), "family": ("family_name", "text"), "born": ("birth_date", "date"),
         "diagnosed": ("diagnoses__diagnosed_on", "date"), "surgery": (surgery, "bool"), "id_float": (F("id") * 1.5, "float")},
    )
    by_mrn = {m: i for i, m in enumerate(out["mrn"])}
    assert set(by_mrn) == {"C1", "C2", "C3"}
    for mrn, family, born, diagnosed, surgery_done in registry:
        i = by_mrn[mrn]
        assert out["family"][i] == family
        assert out["born"][i] == np.datetime64(born)  # 1931 and 1969: before the epoch; 2024-02-29: a leap day
        if diagnosed is None:
            assert np.isnat(out["diagnosed"][i])
        else:
            assert out["diagnosed"][i] == np.datetime64(diagnosed)
        assert bool(out["surgery"][i]) is surgery_done
        assert out["id_float"][i] == pytest.approx(1.5 * Patient.objects.get(mrn=mrn).pk)
    assert out["born"].dtype == np.dtype("datetime64[D]") and out["surgery"].dtype == bool


@pytest.mark.parametrize("empty", [lambda: Patient.objects.filter(mrn="nobody"), lambda: Patient.objects.none()])
def test_empty_queryset_gives_empty_typed_arrays(registry, empty):
    out = columnar.fetch_columns(empty(), {"id": ("id", "int"), "born": ("birth_date", "date"), "mrn": ("mrn", "text")})
    assert [a.size for a in out.values()] == [0, 0, 0]
    assert out["born"].dtype == np.dtype("datetime64[D]")


def test_the_row_path_gives_the_same_arrays(registry):
    spec = {"id": ("id", "int"), "mrn": ("mrn", "text"), "born": ("birth_date", "date"), "dx": ("diagnoses__diagnosed_on", "date")}
    fast = columnar.fetch_columns(Patient.objects.order_by("pk"), spec)
    slow = columnar._fetch_rows(Patient.objects.order_by("pk"), spec)
    order_f, order_s = np.argsort(fast["id"]), np.argsort(slow["id"])
    for name in spec:  # as text, so NaT compares equal to NaT
        assert list(fast[name][order_f].astype(str)) == list(slow[name][order_s].astype(str))
    assert np.isnat(fast["dx"]).sum() == 1


def test_days_from_civil_matches_numpy_over_four_centuries():
    days = np.arange(-150_000, 150_000, 7)
    dates = days.astype("datetime64[D]").astype(object)
    y = np.array([d.year for d in dates])
    m = np.array([d.month for d in dates])
    dd = np.array([d.day for d in dates])
    assert np.array_equal(columnar.days_from_civil(y, m, dd), days)


def test_malformed_input_is_refused_not_misread():
    with pytest.raises(ValueError):
        columnar.decode_dates("2024-01-0", 1)
    with pytest.raises(ValueError):
        columnar.fetch_columns(Patient.objects.all(), {"born": ("birth_date", "date")})  # first column must be an int key
