"""De-identification: keyed pseudonyms (HMAC-SHA256), day offsets, age at time zero, identifier scan."""

import datetime as dt
import hashlib
import hmac

import pandas as pd
import pytest

from outcomes.deidentify import (
    age_in_years,
    deidentify_frame,
    is_identifier_column,
    pseudonym,
    scan_for_identifiers,
)

SECRET = "test-secret-0123456789abcdef"


def test_pseudonym_is_keyed_stable_and_truncated():
    p = pseudonym("MRN-004211", SECRET)
    assert p == pseudonym(" MRN-004211 ", SECRET)  # stable, whitespace-insensitive
    assert p.startswith("RP-") and len(p) == 3 + 16
    expected = hmac.new(SECRET.encode(), b"MRN-004211", hashlib.sha256).hexdigest()[:16]
    assert p == "RP-" + expected
    assert p != pseudonym("MRN-004211", SECRET + "x")  # depends on the key
    assert p[3:] != hashlib.sha256(b"MRN-004211").hexdigest()[:16]  # not a plain hash
    with pytest.raises(ValueError):
        pseudonym("MRN-004211", "short")


def test_pseudonym_matches_rfc4231_hmac_sha256_vector():
    """RFC 4231 (HMAC-SHA256 test vectors), test case 1: key = 0x0b repeated 20 bytes, data "Hi There"
    -> b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7; our pseudonym is the
    first 16 (or 64) hex digits of it."""
    key = b"\x0b" * 20
    assert pseudonym("Hi There", key) == "RP-b0344c61d8db3853"
    full = "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert pseudonym("Hi There", key, length=64, prefix="") == full


def test_age_in_completed_years_and_cap():
    assert age_in_years(dt.date(1960, 5, 10), dt.date(2025, 5, 9)) == 64  # day before birthday
    assert age_in_years(dt.date(1960, 5, 10), dt.date(2025, 5, 10)) == 65
    assert age_in_years(dt.date(1960, 2, 29), dt.date(2025, 2, 28)) == 64
    assert age_in_years(dt.date(1930, 1, 1), dt.date(2025, 6, 1)) == 90  # 95 -> "90 or older"
    assert age_in_years(dt.date(1930, 1, 1), dt.date(2025, 6, 1), cap=None) == 95


def test_identifier_column_names():
    for c in ["name", "First Name", "last_name", "MRN", "date_of_birth", "DOB", "email", "phone_number", "address"]:
        assert is_identifier_column(c), c
    for c in ["grade", "term", "os_days", "histology", "stage", "sex", "dose_gy"]:
        assert not is_identifier_column(c), c


@pytest.fixture
def raw():
    return pd.DataFrame(
        {
            "patient_id": ["MRN-004211", "MRN-009876"],
            "mrn": ["MRN-004211", "MRN-009876"],
            "first_name": ["Margarethe", "Jonas"],
            "last_name": ["Vandersloot", "Okonkwo-Baptiste"],
            "birth_date": [dt.date(1951, 3, 14), dt.date(1967, 11, 2)],
            "rt_start": [dt.date(2024, 2, 5), dt.date(2024, 6, 17)],
            "death_date": [dt.date(2025, 1, 10), None],
            "histology": ["epithelioid", "biphasic"],
            "clinical_notes": ["Wife Margarethe calls about pain", "short"],
            "plan_comment": ["ok", "ok"],
            "summary": ["patient lives alone on the farm near the river", "n/a"],
            "os_event": [1, 0],
        }
    )


def test_exported_frame_contains_no_identifier_value(raw):
    exp = deidentify_frame(raw, SECRET)
    out = exp.frame
    identifiers = []
    for col in ("patient_id", "mrn", "first_name", "last_name", "birth_date", "rt_start", "death_date"):
        identifiers.extend(raw[col].dropna().tolist())
    assert scan_for_identifiers(out, identifiers) == []
    assert scan_for_identifiers(out.astype(str), identifiers) == []
    # the scan itself catches a leak
    leaked = out.assign(x=["Vandersloot", ""])
    assert scan_for_identifiers(leaked, identifiers)[0][0] == "x"
    assert scan_for_identifiers(raw, identifiers)  # the raw frame is full of them
    # what remains
    assert list(out.columns) == ["pseudo_id", "age_at_time_zero", "death_date_day", "histology", "os_event"]
    assert out["age_at_time_zero"].tolist() == [72, 56]
    assert out["death_date_day"].iloc[0] == (dt.date(2025, 1, 10) - dt.date(2024, 2, 5)).days
    assert pd.isna(out["death_date_day"].iloc[1])
    assert out["pseudo_id"].tolist() == [pseudonym("MRN-004211", SECRET), pseudonym("MRN-009876", SECRET)]
    assert {"mrn", "first_name", "last_name", "birth_date", "clinical_notes", "plan_comment", "summary"} <= set(exp.dropped_columns)
    assert exp.time_zero == "rt_start"


def test_allowlisted_column_is_kept(raw):
    exp = deidentify_frame(raw, SECRET, allow_columns=["plan_comment"])
    assert "plan_comment" in exp.frame.columns


def test_iso_date_strings_are_converted_too():
    df = pd.DataFrame({"patient_id": ["X1"], "rt_start": ["2024-02-05"], "progression_date": ["2024-08-01"],
                       "next_of_kin": ["Ada Lovelace"], "stage": ["III"]})
    out = deidentify_frame(df, SECRET, birth_col=None).frame
    assert list(out.columns) == ["pseudo_id", "progression_date_day", "stage"]
    assert out["progression_date_day"].iloc[0] == 178
    assert scan_for_identifiers(out, ["X1", "Ada Lovelace", dt.date(2024, 8, 1), dt.date(2024, 2, 5)]) == []


def test_export_is_blocked_when_an_identifier_survives(raw):
    from outcomes.deidentify import IdentifierLeakError

    known = raw["last_name"].tolist() + raw["mrn"].tolist()
    deidentify_frame(raw, SECRET, known_identifiers=known)  # clean -> no error
    leaky = raw.assign(diagnosis_code=["C45.0 Vandersloot", "C45.0"])  # surname pasted into a coded field
    with pytest.raises(IdentifierLeakError) as exc:
        deidentify_frame(leaky, SECRET, known_identifiers=known)
    assert exc.value.hits[0][0] == "diagnosis_code"
