"""De-identification for research exports: keyed pseudonyms, day offsets, age at time zero, and a
column filter that drops direct identifiers and free text.

Pure functions; no Django. The server secret is passed in by the caller (from settings / the
environment); it is never stored in the output.

* Pseudonymous ID: ``HMAC-SHA256(secret, id)`` (RFC 2104 / FIPS 198-1), hex, truncated (default 16
  hex characters = 64 bits), prefixed. Stable for the same secret, not reversible without it, and
  unlike a plain hash it cannot be rebuilt by hashing a list of MRNs.
* Dates become whole-day offsets from the patient's time zero (RT start by default), so intervals
  are kept and calendar dates are not exported.
* Age in completed years at time zero; ages of 90 and above are reported as 90 (HIPAA Safe Harbor,
  45 CFR 164.514(b)(2)(i)(C), aggregates ages over 89).
* :func:`deidentify_frame` drops columns whose name marks a direct identifier (names, MRN, birth
  date, contact details, national / insurance numbers) and free-text columns (by name, or any
  text column whose values look like prose), unless explicitly allowed. :func:`scan_for_identifiers`
  checks an exported frame for any known identifier value; the export should refuse to write a
  file when it finds one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

MIN_SECRET_BYTES = 16
AGE_CAP = 90

# Column-name patterns of direct identifiers (matched case-insensitively on the whole name, with
# separators normalised to "_").
IDENTIFIER_PATTERNS = (
    r"(first|last|given|family|middle|maiden|full|patient|sur)?_?names?",
    r"surname",
    r"initials",
    r"mrn|medical_record(_number)?|hospital_number|record_number|chart_number",
    r"(birth|dob|date_of_birth|birth_date|birthdate|birthday)",
    r"ssn|social_security(_number)?|nhs(_number)?|national_id|insurance(_number|_id)?|passport(_number)?",
    r"(street_)?address(_line)?_?\d?|street|city|postcode|post_code|zip(_code)?",
    r"e?_?mail(_address)?|phone(_number)?|telephone|mobile|fax",
    r"ip_address|device_serial|url",
    r"next_of_kin|kin_name|guardian|emergency_contact|relative_name|contact_name|contact_phone",
)
FREE_TEXT_PATTERNS = (
    r".*(note|notes|comment|comments|free_text|freetext|text|narrative|remark|remarks|description|reason)s?",
)
_ID_RE = re.compile("|".join(f"(?:{p})" for p in IDENTIFIER_PATTERNS))
_TEXT_RE = re.compile("|".join(f"(?:{p})" for p in FREE_TEXT_PATTERNS))


def _norm_col(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def is_identifier_column(name: str) -> bool:
    """True if the column name denotes a direct identifier (see ``IDENTIFIER_PATTERNS``)."""
    return _ID_RE.fullmatch(_norm_col(name)) is not None


def is_free_text_column(name: str, values: pd.Series | None = None, max_words: int = 4) -> bool:
    """True for free-text columns: by name, or text values with more than ``max_words`` words."""
    if _TEXT_RE.fullmatch(_norm_col(name)):
        return True
    if values is None or values.dtype.kind not in "OSU":
        return False
    s = values.dropna()
    s = s[s.map(lambda v: isinstance(v, str))]
    if s.empty:
        return False
    return bool((s.str.split().str.len() > max_words).any())


def _secret_bytes(secret: str | bytes) -> bytes:
    b = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(b) < MIN_SECRET_BYTES:
        raise ValueError(f"pseudonymisation secret must be at least {MIN_SECRET_BYTES} bytes")
    return b


def pseudonym(identifier: object, secret: str | bytes, length: int = 16, prefix: str = "RP-") -> str:
    """Stable keyed pseudonym: ``prefix + HMAC-SHA256(secret, str(identifier).strip())[:length]``."""
    if identifier is None or (isinstance(identifier, float) and np.isnan(identifier)):
        raise ValueError("cannot pseudonymise a missing identifier")
    if not 8 <= length <= 64:
        raise ValueError("length must be 8..64 hex characters")
    mac = hmac.new(_secret_bytes(secret), str(identifier).strip().encode("utf-8"), hashlib.sha256)
    return prefix + mac.hexdigest()[:length]


def pseudonymize_series(ids: pd.Series, secret: str | bytes, length: int = 16, prefix: str = "RP-") -> pd.Series:
    """:func:`pseudonym` for every value (each distinct value hashed once)."""
    key = _secret_bytes(secret)
    uniq = pd.unique(ids.dropna())
    mapping = {
        u: prefix + hmac.new(key, str(u).strip().encode("utf-8"), hashlib.sha256).hexdigest()[:length] for u in uniq
    }
    return ids.map(mapping)


def age_in_years(birth_date, reference_date, cap: int | None = AGE_CAP):
    """Completed years between ``birth_date`` and ``reference_date`` (scalars or Series).

    Birthday not yet reached in the reference year -> one year less. With ``cap``, ages >= cap are
    reported as ``cap`` (Safe Harbor: "90 or older").
    """
    b = pd.to_datetime(pd.Series(birth_date) if not isinstance(birth_date, pd.Series) else birth_date)
    r = pd.to_datetime(pd.Series(reference_date) if not isinstance(reference_date, pd.Series) else reference_date)
    if len(r) == 1 and len(b) > 1:
        r = pd.Series([r.iloc[0]] * len(b), index=b.index)
    r.index = b.index
    before_bday = (r.dt.month < b.dt.month) | ((r.dt.month == b.dt.month) & (r.dt.day < b.dt.day))
    age = r.dt.year - b.dt.year - before_bday.astype(int)
    age = age.astype("Int64")
    if cap is not None:
        age = age.where(age.isna() | (age < cap), cap)
    if not isinstance(birth_date, pd.Series) and len(age) == 1:
        v = age.iloc[0]
        return None if pd.isna(v) else int(v)
    return age


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")


def _is_date_column(s: pd.Series) -> bool:
    """Datetime dtype, or an object column whose values are all date objects or ISO date strings."""
    import datetime as dt

    if pd.api.types.is_datetime64_any_dtype(s):
        return True
    if s.dtype == object:
        vals = s.dropna()
        if vals.empty:
            return False
        return bool(vals.map(lambda v: isinstance(v, (dt.date, pd.Timestamp)) or (isinstance(v, str) and _ISO_DATE.match(v.strip()) is not None)).all())
    return False


def dates_to_offsets(df: pd.DataFrame, time_zero_col: str, date_cols: Sequence[str] | None = None) -> pd.DataFrame:
    """Replace each date column ``c`` by ``c + '_day'`` = whole days since the row's time zero.

    ``date_cols=None`` converts every date-like column. The time-zero column itself is removed.
    """
    out = df.copy()
    t0 = pd.to_datetime(out[time_zero_col])
    cols = [c for c in (date_cols if date_cols is not None else out.columns) if c != time_zero_col]
    for c in cols:
        if date_cols is None and not _is_date_column(out[c]):
            continue
        pos = out.columns.get_loc(c)
        offsets = (pd.to_datetime(out[c]) - t0).dt.days.astype("Int64")
        out = out.drop(columns=[c])
        out.insert(pos, f"{c}_day", offsets)
    return out.drop(columns=[time_zero_col])


class IdentifierLeakError(ValueError):
    """An export still contains an identifier value; ``hits`` = (column, row, value) triples."""

    def __init__(self, message: str, hits: list):
        super().__init__(message)
        self.hits = hits


@dataclass
class DeidentifiedExport:
    frame: pd.DataFrame
    dropped_columns: list[str]
    converted_date_columns: list[str]
    time_zero: str
    pseudonym_column: str
    notes: list[str] = field(default_factory=list)


def deidentify_frame(
    df: pd.DataFrame,
    secret: str | bytes,
    id_col: str = "patient_id",
    time_zero_col: str = "rt_start",
    birth_col: str | None = "birth_date",
    allow_columns: Iterable[str] = (),
    pseudonym_length: int = 16,
    extra_id_cols: Iterable[str] = (),
    known_identifiers: Iterable[object] | None = None,
) -> DeidentifiedExport:
    """Research-export frame without direct identifiers.

    1. ``id_col`` -> ``pseudo_id`` (keyed HMAC pseudonym); ``extra_id_cols`` (e.g. course ids) are
       pseudonymised too.
    2. ``age_at_time_zero`` from ``birth_col`` (whole years, capped at 90), then the birth date is
       dropped.
    3. Every date column -> day offset from ``time_zero_col`` (``<col>_day``).
    4. Identifier columns (by name) and free-text columns (by name or content) are dropped unless
       listed in ``allow_columns``. Columns dropped are reported.
    5. With ``known_identifiers`` (names, MRNs, birth dates of the exported patients) the result is
       scanned with :func:`scan_for_identifiers` and :class:`IdentifierLeakError` is raised on any
       hit, so a leaking export is blocked rather than written.
    """
    allow = set(allow_columns)
    out = df.copy()
    dropped: list[str] = []
    notes: list[str] = []
    if id_col not in out.columns or time_zero_col not in out.columns:
        raise KeyError(f"need columns {id_col!r} and {time_zero_col!r}")
    out.insert(0, "pseudo_id", pseudonymize_series(out[id_col], secret, pseudonym_length))
    out = out.drop(columns=[id_col])
    dropped.append(id_col)
    for c in extra_id_cols:
        out[c] = pseudonymize_series(out[c], secret, pseudonym_length, prefix="RX-")
        allow.add(c)
    if birth_col and birth_col in out.columns:
        out.insert(1, "age_at_time_zero", age_in_years(out[birth_col], out[time_zero_col]))
        out = out.drop(columns=[birth_col])
        dropped.append(birth_col)
    date_cols = [c for c in out.columns if c != time_zero_col and c not in allow and _is_date_column(out[c])]
    out = dates_to_offsets(out, time_zero_col, date_cols)
    for c in list(out.columns):
        if c in ("pseudo_id", "age_at_time_zero") or c in allow:
            continue
        if is_identifier_column(c):
            dropped.append(c)
            out = out.drop(columns=[c])
        elif is_free_text_column(c, out[c]):
            dropped.append(c)
            notes.append(f"free-text column {c!r} dropped")
            out = out.drop(columns=[c])
    if known_identifiers is not None:
        hits = scan_for_identifiers(out, known_identifiers)
        if hits:
            cols = sorted({h[0] for h in hits})
            raise IdentifierLeakError(f"identifier values found in exported column(s): {', '.join(cols)}", hits)
    return DeidentifiedExport(out, dropped, date_cols, time_zero_col, "pseudo_id", notes)


def scan_for_identifiers(df: pd.DataFrame, identifier_values: Iterable[object], min_length: int = 3) -> list[tuple[str, int, str]]:
    """Find any identifier value inside any cell (as a case-insensitive substring) or column name.

    ``identifier_values``: names, MRNs, birth dates (date objects are also searched as ISO text)...
    Values shorter than ``min_length`` characters are ignored (too many false hits). Returns
    ``(column, row_position, value)`` triples; an empty list means clean.
    """
    import datetime as dt

    needles = set()
    for v in identifier_values:
        if v is None:
            continue
        if isinstance(v, (dt.date, pd.Timestamp)):
            needles.add(pd.Timestamp(v).strftime("%Y-%m-%d"))
            needles.add(pd.Timestamp(v).strftime("%d/%m/%Y"))
            needles.add(pd.Timestamp(v).strftime("%m/%d/%Y"))
            needles.add(pd.Timestamp(v).strftime("%Y%m%d"))
        else:
            s = str(v).strip()
            if len(s) >= min_length:
                needles.add(s)
    needles_l = [n.lower() for n in needles]
    hits: list[tuple[str, int, str]] = []
    for c in df.columns:
        for n in needles_l:
            if n in str(c).lower():
                hits.append((str(c), -1, n))
        col = df[c]
        if pd.api.types.is_datetime64_any_dtype(col):
            text = col.dt.strftime("%Y-%m-%d")
        else:
            text = col.astype(str)
        text = text.str.lower()
        for n in needles_l:
            found = np.flatnonzero(text.str.contains(n, regex=False, na=False).to_numpy())
            hits.extend((str(c), int(i), n) for i in found)
    return hits
