"""Bulk import of historical registry data from one CSV file: patients, courses, follow-ups and deaths.

Format: a header row, then one record per line; ``record_type`` says which kind, and each kind uses its columns
(others left blank). Every row names the patient by ``mrn``; courses are named per patient by ``course_ref``.

============  ==============================================================================================
record_type   columns (* = required)
============  ==============================================================================================
patient       mrn*, site*, diagnosed_on*, given_name, family_name, birth_date, sex (M/F/O/U), histology,
              stage, surgery (pd/epp/crs_hipec/pericardiectomy/other), surgery_date, chemotherapy (agent),
              chemotherapy_date, trial_arm, and the patient-level covariates of the registry's data dictionary
course        mrn*, course_ref*, intent*, technique*, treated_site*, total_dose_gy*, fractions*, rt_start*, rt_end,
              and the course-level covariates
followup      mrn*, course_ref, date*, imaging (CT/MRI/PET-CT/XRAY; blank = contact only), response
              (CR/PR/SD/PD/NE as recorded by the registry), failure_site (local/regional/distant),
              last_known_alive
death         mrn*, date*, cause (disease/treatment/other_cancer/other/unknown)
============  ==============================================================================================

Required is what an analysis needs, per record type: a patient its identifier (``mrn``), the diagnosis site and
date (cohort filter; time zero ``diagnosis``); names and birth date are optional (de-identified registries have
none: nothing is invented; without a birth date the age is unknown and such patients are left out of a Cox model
with an age term, which the analysis notes say). A course is a radiotherapy course: ``rt_start`` is time zero
``rt_start`` and the prescription (intent, technique, site, dose, fractions) is the course record itself. A
patient without radiotherapy has no course row: nothing is invented; their follow-up rows leave ``course_ref``
blank and are the patient's (analysed from diagnosis, ``outcomes.cohorts``). A patient with a course in the file or
in RadPath must name it on every follow-up row. A follow-up needs its date, a death its date. Extra columns are refused unless the chosen registry's data
dictionary declares them (``outcomes.covariates``); their values are checked against it (unit range, levels) by
line and column.

Rules: all rows are validated first; every problem is reported with its line number (the header is line 1) and
field (the first ``MAX_ERRORS_LISTED`` = 100 by line, with the total count); a file with any error imports nothing.
A valid file is imported in one transaction. Dates are ISO (YYYY-MM-DD); doses are plain decimals (``50.4``: NaN,
Infinity, signs and exponents such as ``1e309`` are refused), fractions whole numbers.

The file is streamed, never held in memory (``csv.reader``, one list of cells per row, no dict):

1. Validation reads it once, checking each row on its own (and against the models' own rules: ``_ModelChecks``
   gives ``full_clean``'s messages without a ``full_clean`` per row) and keeping one small tuple per patient,
   course and death (``_Plan``); follow-ups are summarised per course and patient (``_FollowUpPlan``) and checked
   against the courses and deaths of the whole file from that summary. Only a file where some follow-up fails such
   a check is read a second time, to list each one by line.
2. The import (one transaction) reads it once for the patients, once for the courses, once for the follow-ups
   and deaths, whatever the row order; each pass parses only its rows (filtered on ``record_type`` first) into
   compact tuples and writes them ``BATCH`` at a time with their audit history rows (``outcomes.bulk.insert_rows``:
   multi-row INSERTs of tuples, no model instances, on PostgreSQL one UNNEST per batch). Follow-up rows are
   handled apart (``_FollowUpPlan``, ``_followup_row``, ``_write_followups``).
3. The courses' derived outcomes, and those of the new patients without radiotherapy, are computed in a few
   queries per 2,000 (``services.derive_registry_outcomes``, ``derive_registry_patient_outcomes``); courses and
   patients already in RadPath that gained a follow-up or death are recomputed one by one.

Uploads above ``RADPATH_MAX_UPLOAD_MB`` are refused (HTTP 413). Registry responses were not derived here (no
measurements), so they are stored as the assessment's override with the reason "recorded in historical
registry"; the derived response stays NE. A death for a patient RadPath already records as dead is refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import transaction

from workflow.models import (
    Course,
    CourseStatus,
    Diagnosis,
    DiseaseSite,
    ImagingModality,
    Intent,
    Patient,
    Sex,
    SurgeryType,
    Technique,
    Treatment,
    TreatmentKind,
)
from workflow.params import in_window, latest_date, window_message

from .bulk import insert_rows
from .covariates import parse_value, registry_by_code
from .models import (
    AssessmentKind,
    CauseOfDeath,
    CovariateValue,
    Death,
    FailureSite,
    FollowUpAssessment,
    Registry,
    Response,
)
from .services import (
    REGISTRY_REASON,
    derive_registry_outcomes,
    derive_registry_patient_outcomes,
    recompute_course,
    recompute_patient_outcome,
    registry_followup_fields,
)

RECORD_TYPES = ("patient", "course", "followup", "death")
REQUIRED = {
    # what an analysis needs: the identifier, the site and diagnosis date (cohort and time zero); names and birth
    # date are not invented when a registry has none (no birth date: age unknown, left out of age terms)
    "patient": ("mrn", "site", "diagnosed_on"),
    "course": ("mrn", "course_ref", "intent", "technique", "treated_site", "total_dose_gy", "fractions", "rt_start"),
    "followup": ("mrn", "date"),  # course_ref: blank for a patient without radiotherapy
    "death": ("mrn", "date"),
}
COLUMNS = sorted({c for cols in REQUIRED.values() for c in cols} | {
    "record_type", "given_name", "family_name", "birth_date", "sex", "histology", "stage", "surgery", "surgery_date", "chemotherapy", "chemotherapy_date",
    "trial_arm", "rt_end", "imaging", "response", "failure_site", "last_known_alive", "cause",
})


@dataclass
class RowError:
    line: int
    field: str
    message: str

    def to_dict(self):
        return {"line": self.line, "field": self.field, "message": self.message}

    def __str__(self):
        return f"line {self.line}, {self.field}: {self.message}"


class RegistryImportError(Exception):
    """The file was refused; ``errors``: the first ``MAX_ERRORS_LISTED`` problems by line, ``total``: how many."""

    def __init__(self, errors, total=None):
        self.errors = errors
        self.total = len(errors) if total is None else total
        super().__init__(f"{self.total} error(s); nothing imported. " + "; ".join(str(e) for e in errors[:5]))

    def to_dict(self):
        return {"detail": "Nothing imported.", "error_count": self.total, "errors_listed": len(self.errors),
                "errors": [e.to_dict() for e in self.errors]}


MAX_ERRORS_LISTED = 100
# Choice values, computed once (``TextChoices.values`` rebuilds its list on every access: per row, that dominated)
SEXES, SITES, SURGERIES = tuple(Sex.values), tuple(DiseaseSite.values), tuple(SurgeryType.values)
INTENTS, TECHNIQUES, IMAGING = tuple(Intent.values), tuple(Technique.values), tuple(ImagingModality.values)
RESPONSES, FAILURE_SITES = tuple(Response.values), tuple(v for v in FailureSite.values if v)
CAUSES = tuple(CauseOfDeath.values)
# Free text is held to its model field's length (PostgreSQL refuses longer; SQLite would store it)
TEXT_MAX = {"histology": Diagnosis._meta.get_field("histology").max_length,
            "stage": Diagnosis._meta.get_field("stage").max_length,
            "agent": Treatment._meta.get_field("agent").max_length,
            "trial_arm": Treatment._meta.get_field("trial_arm").max_length}
# A registry course is named "Registry <course_ref>" (how a later file's follow-ups find it): the reference may be
# no longer than the name leaves, or two references would share one truncated name.
COURSE_NAME_PREFIX = "Registry "
COURSE_NAME_MAX = Course._meta.get_field("name").max_length
COURSE_REF_MAX = COURSE_NAME_MAX - len(COURSE_NAME_PREFIX)


def max_upload_bytes():
    """``settings.RADPATH_MAX_UPLOAD_MB`` in bytes (default 100 MB)."""
    from django.conf import settings

    return int(getattr(settings, "RADPATH_MAX_UPLOAD_MB", 100)) * 1024 * 1024


def upload_too_large(content_length=None, upload=None):
    """The message refusing an upload above the limit (HTTP 413), or None. Checked on the declared
    ``Content-Length`` before the body is parsed, and on the received file's size."""
    limit = max_upload_bytes()
    try:
        declared = int(content_length or 0)
    except ValueError:
        declared = 0
    size = max(declared, getattr(upload, "size", 0) or 0)
    if size > limit:
        return f"The upload is {size / 2**20:.1f} MB; the limit is {limit // 2**20} MB (RADPATH_MAX_UPLOAD_MB)."
    return None


BATCH = 1000
_DECIMAL = re.compile(r"^\d{1,4}(\.\d{1,3})?$")
_INTEGER = re.compile(r"^\d{1,3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # what ``workflow.params.has_control_characters`` refuses
_MEMO_SIZE = 10_000  # distinct entries a validation memo holds before it starts afresh
DATE_LABELS = {"diagnosed_on": "Diagnosis date", "surgery_date": "Surgery date",
               "chemotherapy_date": "Chemotherapy date", "rt_start": "RT start", "rt_end": "RT end",
               "last_known_alive": "Last known alive"}


class _Errors:
    """Every problem counted; only the ``MAX_ERRORS_LISTED`` first by (line, field) kept, so a file of bad rows
    costs no more memory (nor response body) than a file with a hundred."""

    def __init__(self, keep=MAX_ERRORS_LISTED):
        self.keep, self.total, self._items = keep, 0, []

    def append(self, error):
        self.total += 1
        self._items.append(error)
        if len(self._items) > 10 * self.keep:
            self._trim()

    def _trim(self):
        self._items.sort(key=lambda e: (e.line, e.field))
        del self._items[self.keep:]

    def on_line(self, line):
        return {e.field for e in self._items if e.line == line}

    def __bool__(self):
        return self.total > 0

    def raise_if_any(self):
        if self.total:
            self._trim()
            raise RegistryImportError(list(self._items), self.total)


@dataclass
class ImportSummary:
    patients: int = 0
    courses: int = 0
    followups: int = 0
    deaths: int = 0
    covariate_values: int = 0
    course_ids: list = field(default_factory=list)

    def to_dict(self):
        out = {"patients": self.patients, "courses": self.courses, "followups": self.followups, "deaths": self.deaths}
        if self.covariate_values:
            out["covariate_values"] = self.covariate_values
        return out


def _shown(v, n=40):
    return v if len(v) <= n else v[:n] + "..."


class _Index(dict):
    """The header: column name -> position (a repeated name: its last position, as ``csv.DictReader``)."""

    __slots__ = ("_covariates",)

    def covariates(self, dictionary):
        """``[(name, variable, position)]`` of the dictionary's variables the header has, in dictionary order."""
        got = getattr(self, "_covariates", None)
        if got is None or got[0] is not dictionary:
            self._covariates = got = (dictionary, [(n, v, self[n]) for n, v in dictionary.items() if n in self])
        return got[1]


class _Row:
    """One CSV record: its line, its cells (``csv.reader``'s list) and the header's column positions."""

    __slots__ = ("line", "cells", "index", "errors", "flagged", "latest")

    def __init__(self, line, cells, index, errors, latest=None):
        self.line, self.cells, self.index, self.errors = line, cells, index, errors
        self.flagged = ()
        self.latest = latest or latest_date()  # the window's end, computed once per file (it reads the clock)

    def get(self, name):
        """The stripped cell of column ``name``; "" when the file has no such column or the row is short."""
        i = self.index.get(name)
        if i is None or i >= len(self.cells):
            return ""
        return self.cells[i].strip()

    def err(self, name, msg):
        if not self.flagged:
            self.flagged = set()
        self.flagged.add(name)
        self.errors.append(RowError(self.line, name, msg))

    def date(self, name, required=False):
        """An ISO date in the clinic's window (``workflow.params``; the birth date's window is ``Patient``'s own
        check, with its message)."""
        v = self.get(name)
        if not v:
            if required:
                self.err(name, "required")
            return None
        try:
            day = dt.date.fromisoformat(v)
        except ValueError:
            self.err(name, f"'{_shown(v)}' is not a date (YYYY-MM-DD)")
            return None
        if name != "birth_date" and not in_window(day, self.latest):
            self.err(name, window_message(DATE_LABELS.get(name, "Date")))
            return None
        return day

    def text(self, name, max_length):
        """Free text of at most ``max_length`` characters (the model field's), refused with the message of Django's
        own ``MaxLengthValidator``."""
        v = self.get(name)
        if len(v) > max_length:
            try:
                MaxLengthValidator(max_length)(v)
            except ValidationError as exc:
                self.err(name, exc.messages[0])
        return v

    def choice(self, name, allowed, default=None):
        v = self.get(name)
        if not v:
            return default
        if v not in allowed:
            self.err(name, f"'{_shown(v)}' is not one of {', '.join(allowed)}")
            return default
        return v

    def dose(self, name):
        """A dose in Gy written as a plain decimal (50.4): NaN, Infinity, signs, exponents (1e309) are refused."""
        v = self.get(name)
        if not v:
            return None
        if not _DECIMAL.match(v):
            self.err(name, f"'{_shown(v)}' is not a dose in Gy written as a plain number (e.g. 50.4); "
                           "NaN, Infinity, signs and exponents are refused")
            return None
        d = Decimal(v)
        if d <= 0:
            self.err(name, "must be greater than 0 Gy")
            return None
        return d

    def count(self, name):
        v = self.get(name)
        if not v:
            return None
        if not _INTEGER.match(v) or int(v) < 1:
            self.err(name, f"'{_shown(v)}' is not a whole number of at least 1")
            return None
        return int(v)


def _report(row, message_dict, rename=None):
    """A model's ``ValidationError.message_dict`` reported on the row (fields already flagged on it are skipped)."""
    flagged = set(row.flagged)
    for f, msgs in message_dict.items():
        name = (rename or {}).get(f, f)
        if name in flagged:
            continue
        for m in msgs:
            row.err(name, m)


def _full_clean(obj, exclude):
    """``obj.full_clean``'s problems as ``{field: [messages]}`` (empty when valid)."""
    try:
        obj.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        return exc.message_dict
    return {}


class _ModelChecks:
    """The models' own validation (``full_clean``: field validators and ``clean()``) of the objects a row becomes,
    without an instance and a ``full_clean`` per row, which was most of validation's time; the messages are the
    models' own.

    A course's validation depends only on the values set from its row (no patient, diagnosis or completion date is
    set when it is checked), so its result is memoised by those values as written (``50.4`` and ``50.40`` are
    different texts and may get different messages). A patient's checks are per field (``Patient.clean``: no
    control characters in the MRN and names, the birth-date window; the fields' blank and ``max_length`` rules):
    birth date and sex are memoised, the MRN and names are taken as valid without ``full_clean`` when non-blank
    (the MRN), within ``max_length`` and free of control characters; anything else gets the real ``full_clean`` of
    the row's patient, so its messages are exact."""

    def __init__(self):
        self.courses, self.patient_dates = {}, {}
        lengths = {f.name: f.max_length for f in Patient._meta.concrete_fields if f.max_length}
        self.mrn_max, self.given_max, self.family_max = lengths["mrn"], lengths["given_name"], lengths["family_name"]

    @staticmethod
    def _memo(memo, key, compute):
        got = memo.get(key)
        if got is None:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            got = memo[key] = compute()
        return got

    def patient(self, row, mrn, given, family, birth, sex):
        dated = self._memo(self.patient_dates, (birth, sex),
                           lambda: _full_clean(Patient(mrn="M", birth_date=birth, sex=sex), exclude=[]))
        if (not dated and 0 < len(mrn) <= self.mrn_max and len(given) <= self.given_max
                and len(family) <= self.family_max and not _CONTROL.search(mrn) and not _CONTROL.search(given)
                and not _CONTROL.search(family)):
            return
        p = Patient(mrn=mrn, given_name=given, family_name=family, birth_date=birth, sex=sex)
        _report(row, _full_clean(p, exclude=[]))

    def course(self, row, values, texts):
        """``values``: the Course fields set from the row; ``texts``: the row's cells they came from (the key)."""
        errors = self._memo(self.courses, texts,
                            lambda: _full_clean(Course(**values), exclude=["patient", "diagnosis"]))
        if errors:
            _report(row, errors, rename={"dose_per_fraction_gy": "total_dose_gy"})


@contextmanager
def _text(source):
    """A lazily read text stream over ``source``: a ``str``, ``bytes``, a text or binary file object, or a Django
    upload (a large one is a file on disk, opened by name). The file is never read into memory whole."""
    if isinstance(source, str):
        yield io.StringIO(source)
        return
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    path = getattr(source, "temporary_file_path", None)
    if path is not None:
        with open(path(), encoding="utf-8-sig", newline="") as f:
            yield f
        return
    f = getattr(source, "file", source)
    f.seek(0)
    if isinstance(f, io.TextIOBase):
        yield f
        return
    wrapper = io.TextIOWrapper(f, encoding="utf-8-sig", newline="")
    try:
        yield wrapper
    finally:
        wrapper.detach()  # leave the caller's file open for the next pass


def _rows(source, errors, check_header=False, dictionary=None, registry_code=None, types=None):
    """``_Row`` per record, streamed; unreadable text or CSV becomes one error on the line where it happened.
    ``dictionary``: the registry's variables by column name (extra columns it declares are accepted); ``types``:
    only the records of these types. Read as ``csv.DictReader`` would (blank lines skipped; a repeated column
    name: its last cell), without a dict per row."""
    with _text(source) as stream:
        reader = csv.reader(stream)
        try:
            first = next(reader, None)
        except (UnicodeDecodeError, csv.Error) as exc:
            errors.append(RowError(1, "file", "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"unreadable CSV: {exc}"))
            return
        header = [h.strip() for h in (first or [])]
        if check_header:
            if "record_type" not in header:
                errors.append(RowError(1, "record_type", "missing column (header row)"))
                return
            unknown = [h for h in header if h not in COLUMNS and h not in (dictionary or {})]
            if unknown:
                where = (f"the data dictionary of registry '{registry_code}'" if registry_code is not None
                         else "a registry's data dictionary")
                errors.append(RowError(1, unknown[0], f"unknown column(s): {', '.join(_shown(u) for u in unknown[:20])}. "
                                       f"To import a covariate, declare it in {where} (admin: Outcomes > Registry "
                                       "variables, or POST /api/outcomes/registries/<code>/variables/ with name, "
                                       "level, kind, unit/range or levels, description) and import with that "
                                       "registry chosen (registry=<code>)"))
        elif "record_type" not in header:
            return
        index = _Index((h, i) for i, h in enumerate(header))
        at = index["record_type"]
        latest = latest_date()
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                errors.append(RowError(reader.line_num + 1, "file", "not UTF-8 text"))
                return
            except csv.Error as exc:
                errors.append(RowError(reader.line_num, "file", f"unreadable CSV: {exc}"))
                return
            if cells and (types is None or (at < len(cells) and cells[at].strip() in types)):
                yield _Row(reader.line_num, cells, index, errors, latest)


# --- One function per record type: a row's values, checked (errors on the row) -----------------------------------
# Validation calls them with ``checks`` (the models' own validation too) and keeps only what later rows are checked
# against (``_Plan``); the import calls them again on the same, valid, rows for the values it inserts.

def _patient_record(row, checks=None):
    """``(mrn, given_name, family_name, birth_date, sex, site, diagnosed_on, histology, stage, treatments)``, with
    ``treatments`` a list of ``(kind, surgery_type, agent, trial_arm, start_date)``."""
    mrn, given, family = row.get("mrn"), row.get("given_name"), row.get("family_name")
    birth, sex = row.date("birth_date"), row.choice("sex", SEXES, Sex.UNKNOWN)
    if checks is not None:
        checks.patient(row, mrn, given, family, birth, sex)
    site, diagnosed_on = row.choice("site", SITES), row.date("diagnosed_on")
    if birth and diagnosed_on and diagnosed_on < birth:
        row.err("diagnosed_on", "before the date of birth")
    treatments = []
    surgery = row.choice("surgery", SURGERIES)
    if surgery:
        treatments.append((TreatmentKind.SURGERY, surgery, "", "", _after_birth(row, "surgery_date", birth)))
    chemo = row.text("chemotherapy", TEXT_MAX["agent"])
    if chemo:
        treatments.append((TreatmentKind.CHEMOTHERAPY, "", chemo, "", _after_birth(row, "chemotherapy_date", birth)))
    arm = row.text("trial_arm", TEXT_MAX["trial_arm"])
    if arm:
        treatments.append((TreatmentKind.TRIAL, "", "registry trial", arm, diagnosed_on))
    return (mrn, given, family, birth, sex, site, diagnosed_on, row.text("histology", TEXT_MAX["histology"]),
            row.text("stage", TEXT_MAX["stage"]), treatments)


def _after_birth(row, name, birth):
    """The row's required date ``name``, refused when before the patient's birth date."""
    day = row.date(name, required=True)
    if day and birth and day < birth:
        row.err(name, "before the date of birth")
    return day


def _course_record(row, checks=None):
    """``(mrn, course_ref, intent, technique, treated_site, total_dose_gy, fractions, dose_per_fraction_gy, name,
    rt_start, rt_end)``; the dose per fraction is the total over the fractions to 0.01 Gy."""
    ref = row.text("course_ref", COURSE_REF_MAX)
    total, n = row.dose("total_dose_gy"), row.count("fractions")
    intent, technique = row.choice("intent", INTENTS), row.choice("technique", TECHNIQUES)
    site = row.get("treated_site")
    per_fraction = (total / n).quantize(Decimal("0.01")) if total and n else None
    name = f"{COURSE_NAME_PREFIX}{ref}"
    start, end = row.date("rt_start"), row.date("rt_end")
    if start and end and end < start:
        row.err("rt_end", "before rt_start")
    if checks is not None and all(v is not None for v in (intent, technique, total, n)) and site:
        checks.course(row, {"intent": intent, "technique": technique, "treated_site": site, "total_dose_gy": total,
                            "fractions_planned": n, "dose_per_fraction_gy": per_fraction,
                            "status": CourseStatus.COMPLETED, "name": name[:COURSE_NAME_MAX]},
                      (intent, technique, site, row.get("total_dose_gy"), n, name))
    return (row.get("mrn"), ref, intent, technique, site, total, n, per_fraction, name, start, end)


def _followup_fields(row):
    """A follow-up row's own values, checked: an imaging follow-up (a response needs its imaging) or a contact."""
    imaging = row.choice("imaging", IMAGING)
    resp = row.choice("response", RESPONSES)
    if resp and not imaging:
        row.err("imaging", "a response needs the imaging it was read from")
    return {
        "date": row.date("date"), "imaging": imaging or "none", "response": resp or "",
        "failure_site": row.choice("failure_site", FAILURE_SITES, ""),
        "last_known_alive": row.date("last_known_alive"),
        "kind": AssessmentKind.FOLLOWUP if imaging else AssessmentKind.CONTACT,
    }


def _death_record(row):
    """``(mrn, date, cause)``."""
    cause = row.choice("cause", CAUSES, CauseOfDeath.UNKNOWN)
    return row.get("mrn"), row.date("date"), cause


def _covariate_values(row, rtype, dictionary):
    """[(variable, number, level)] of the row's covariate cells (blank = no value). A patient-level variable
    belongs on the patient row, a course-level one on the course row; values are checked against the dictionary."""
    out = []
    cells = row.cells
    for name, var, i in row.index.covariates(dictionary):
        if i >= len(cells):
            continue
        text = cells[i].strip()
        if not text:
            continue
        if rtype != var.level:
            row.err(name, f"{var.get_level_display().split(' (')[0].lower()}-level variable: give it on the "
                          f"{var.level} row")
            continue
        try:
            number, level = parse_value(var, text)
        except ValueError as exc:
            row.err(name, str(exc))
            continue
        out.append((var, number, level))
    return out


def _dictionary(registry):
    """``(registry, {column: variable})`` for a ``Registry``, its code, or None (no covariates)."""
    if registry is None or registry == "":
        return None, {}
    if not isinstance(registry, Registry):
        registry = registry_by_code(registry)
    return registry, {v.name: v for v in registry.variables.select_related("registry")}


def _chunks(items, n=BATCH):
    items = list(items)
    for i in range(0, len(items), n):
        yield items[i:i + n]


class _Plan:
    """What validation learnt, compactly: one small tuple per patient, course and death (not per row)."""

    def __init__(self):
        self.patients = {}  # mrn -> (line, birth_date)
        self.courses = {}  # (mrn, ref) -> (line, rt_start)
        self.deaths = {}  # mrn -> (line, date)
        self.radpath_deaths = {}  # mrn -> date: RadPath's live death of a patient the file follows up
        self.course_mrn_lines = {}  # mrn of a course row without (yet) a patient row -> [lines]
        self.existing = set()  # MRNs of patients already in RadPath that rows refer to
        self.existing_courses = {}  # (mrn, ref) -> (course_id, patient_id) or None
        self.registry, self.dictionary = None, {}
        self.followups = _FollowUpPlan()


class _FollowUpPlan:
    """Follow-up rows, summarised for the checks against the whole file (one entry per course and per patient, not
    per row): a follow-up's course must exist (in the file or RadPath), it may not be more than a year before the
    course's start, and neither its date nor its last-known-alive date may be after the patient's death."""

    def __init__(self):
        self.first = {}  # (mrn, ref) -> the earliest follow-up date of that course (None: no valid date)
        self.last = {}  # mrn -> (latest follow-up date, latest last-known-alive date)
        self.without_course = set()  # MRNs with follow-up rows without course_ref (a patient without radiotherapy)
        self.refused = set()  # of those: MRNs unknown, or of a patient who has an RT course
        self.unknown = set()  # of those: MRNs neither in the file nor in RadPath

    def note(self, row, plan, today):
        """Check one follow-up row on its own and remember what the whole-file checks need."""
        f = _followup_fields(row)
        date, alive = f["date"], f["last_known_alive"]
        if date and date > today:
            row.err("date", "in the future")
        mrn, ref = row.get("mrn"), row.get("course_ref")
        if not ref and mrn:
            self.without_course.add(mrn)
        key = (mrn, ref)
        first = self.first.get(key)
        if first is None or (date and date < first):
            self.first[key] = date or first
        last, last_alive = self.last.get(mrn, (None, None))
        if date and (last is None or date > last):
            last = date
        if alive and (last_alive is None or alive > last_alive):
            last_alive = alive
        self.last[mrn] = (last, last_alive)

    def any_problem(self, plan):
        """Whether some follow-up row fails a whole-file check (then ``errors`` lists each one by line). Looks up
        the courses follow-ups name that are not in the file (one query per course), for the import too."""
        problem = self._check_without_course(plan)
        for (mrn, ref), first in self.first.items():
            key = (mrn, ref)
            if key not in plan.courses and ref:
                if key not in plan.existing_courses:
                    plan.existing_courses[key] = Course.objects.filter(
                        patient__mrn=mrn, name=f"{COURSE_NAME_PREFIX}{ref}").values_list("pk", "patient_id").first()
                problem = problem or plan.existing_courses[key] is None
            c = plan.courses.get(key)
            if c and c[1] and first and first < c[1] - dt.timedelta(days=365):
                problem = True
        in_radpath = [m for m in self.last if m not in plan.patients and m not in plan.deaths]
        for chunk in _chunks(in_radpath):
            plan.radpath_deaths.update(Death.objects.filter(patient__mrn__in=chunk, voided_at__isnull=True)
                                       .values_list("patient__mrn", "date"))
        for mrn, (last, alive) in self.last.items():
            d = self._death(plan, mrn)
            if d and ((last and last > d[0]) or (alive and alive > d[0])):
                problem = True
        return problem

    @staticmethod
    def _death(plan, mrn):
        """``(date, where)`` of the patient's death in the file (``where``: its line) or in RadPath, or None."""
        d = plan.deaths.get(mrn)
        if d and d[1]:
            return d[1], f"line {d[0]}"
        if mrn in plan.radpath_deaths:
            return plan.radpath_deaths[mrn], "recorded in RadPath"
        return None

    def _check_without_course(self, plan):
        """The patients of follow-up rows without ``course_ref`` must be in the file or in RadPath (then they are
        the import's ``existing`` patients too) and have no RT course in either; the others go to ``refused``."""
        mrns = self.without_course
        if not mrns:
            return False
        known = mrns & plan.existing  # RadPath's patients validation already looked up
        for chunk in _chunks(mrns - known - set(plan.patients)):
            known.update(Patient.objects.filter(mrn__in=chunk).values_list("mrn", flat=True))
        with_course = {mrn for mrn, _ref in plan.courses}
        for chunk in _chunks(known):
            with_course.update(Course.objects.filter(patient__mrn__in=chunk, voided_at__isnull=True)
                               .values_list("patient__mrn", flat=True))
        plan.existing.update(known)
        self.unknown = mrns - known - set(plan.patients)
        self.refused = self.unknown | (mrns & with_course)
        return bool(self.refused)

    def report(self, source, plan, errors):
        """Second pass, only when ``any_problem``: each follow-up row failing a whole-file check, by line."""
        for row in _rows(source, _Errors(), types=("followup",)):
            mrn, ref = row.get("mrn"), row.get("course_ref")
            key = (mrn, ref)
            quiet = _Row(row.line, row.cells, row.index, [], row.latest)
            date, alive = quiet.date("date"), quiet.date("last_known_alive")
            if not ref and mrn in self.refused:
                if mrn in self.unknown:
                    errors.append(RowError(row.line, "mrn", f"no patient {_shown(mrn)} in this file or in RadPath"))
                else:
                    errors.append(RowError(row.line, "course_ref", f"required: patient {_shown(mrn)} has an RT course; "
                                           "name it (a blank course_ref is the follow-up of a patient without "
                                           "radiotherapy)"))
            if key not in plan.courses and ref and plan.existing_courses.get(key) is None:
                errors.append(RowError(row.line, "course_ref", f"no course {_shown(ref)} for {_shown(mrn)} in this file or in RadPath"))
            c = plan.courses.get(key)
            if c and c[1] and date and date < c[1] - dt.timedelta(days=365):
                errors.append(RowError(row.line, "date", "more than a year before the course's rt_start"))
            d = self._death(plan, mrn)
            if d and date and date > d[0]:
                errors.append(RowError(row.line, "date", f"after the patient's death on {d[0]} ({d[1]})"))
            if d and alive and alive > d[0]:
                errors.append(RowError(row.line, "last_known_alive", f"after the patient's death on {d[0]} ({d[1]})"))


def _refuse_nul(row):
    """NUL in any cell is refused on its column (PostgreSQL cannot store it in text)."""
    names = {i: name for name, i in row.index.items()}
    for i, cell in enumerate(row.cells):
        if "\x00" in cell:
            row.err(names.get(i, f"column {i + 1}"), "NUL characters are not allowed.")


def validate(source, registry=None):
    """Stream the file once and return the plan, or raise ``RegistryImportError`` with the first
    ``MAX_ERRORS_LISTED`` problems and their count. Follow-ups are checked against the courses and deaths of the
    whole file from a summary per course and patient; only a file where one fails is read a second time, to list
    those rows by line. ``registry`` (a ``Registry`` or its code): extra columns its data dictionary declares are
    imported as covariates."""
    errors = _Errors()
    plan = _Plan()
    registry, dictionary = _dictionary(registry)
    plan.registry, plan.dictionary = registry, dictionary
    checks = _ModelChecks()
    today = dt.date.today()
    for row in _rows(source, errors, check_header=True, dictionary=dictionary,
                     registry_code=registry.code if registry else None):
        rtype = row.get("record_type")
        if rtype not in RECORD_TYPES:
            row.err("record_type", f"'{_shown(rtype)}' is not one of {', '.join(RECORD_TYPES)}")
            continue
        if "\x00" in "".join(row.cells):
            _refuse_nul(row)
        for col in REQUIRED[rtype]:
            if not row.get(col):
                row.err(col, "required")
        if dictionary:
            _covariate_values(row, rtype, dictionary)
        mrn = row.get("mrn")
        if rtype == "patient":
            if mrn in plan.patients:
                row.err("mrn", f"patient {_shown(mrn)} already listed on line {plan.patients[mrn][0]}")
                continue
            p = _patient_record(row, checks)
            plan.patients[mrn] = (row.line, p[3])
            plan.course_mrn_lines.pop(mrn, None)
        elif rtype == "course":
            ref = row.get("course_ref")
            key = (mrn, ref)
            if key in plan.courses:
                row.err("course_ref", f"course {_shown(ref)} of {_shown(mrn)} already listed on line {plan.courses[key][0]}")
                continue
            if mrn and mrn not in plan.patients:
                plan.course_mrn_lines.setdefault(mrn, []).append(row.line)
            c = _course_record(row, checks)
            plan.courses[key] = (row.line, c[9])
        elif rtype == "followup":
            plan.followups.note(row, plan, today)
        elif rtype == "death":
            if mrn in plan.deaths:
                row.err("mrn", f"second death for {_shown(mrn)} (line {plan.deaths[mrn][0]})")
                continue
            _m, date, _cause = _death_record(row)
            plan.deaths[mrn] = (row.line, date)
    if errors.total and not plan.patients and not plan.courses and errors.on_line(1) & {"record_type", "file"}:
        errors.raise_if_any()  # no header or not a CSV: nothing else to say
    # patients already in RadPath: refused as duplicates, accepted as the owner of other rows
    referred = set(plan.course_mrn_lines) | {m for m in plan.deaths if m not in plan.patients}
    for chunk in _chunks(set(plan.patients) | referred):
        plan.existing.update(Patient.objects.filter(mrn__in=chunk).values_list("mrn", flat=True))
    for mrn in sorted(plan.existing & set(plan.patients)):
        errors.append(RowError(plan.patients[mrn][0], "mrn", f"patient {_shown(mrn)} already exists in RadPath"))
    for mrn, lines in plan.course_mrn_lines.items():
        if mrn not in plan.existing:
            for line in lines:
                errors.append(RowError(line, "mrn", f"no patient {_shown(mrn)} in this file or in RadPath"))
    # a death for a patient already in RadPath who has one (one live death per patient)
    dead = [m for m in plan.deaths if m in plan.existing and m not in plan.patients]
    for chunk in _chunks(dead):
        for mrn, date in Death.objects.filter(patient__mrn__in=chunk, voided_at__isnull=True).values_list(
                "patient__mrn", "date"):
            errors.append(RowError(plan.deaths[mrn][0], "mrn", f"second death for {_shown(mrn)}: RadPath already "
                                                               f"records one on {date}"))
    courses_of = {}
    for (mrn, _ref), (line, start) in plan.courses.items():
        courses_of.setdefault(mrn, []).append((line, start))
    for mrn, courses in courses_of.items():
        birth = plan.patients.get(mrn, (None, None))[1]
        for c_line, start in courses:
            if birth and start and start < birth:
                errors.append(RowError(c_line, "rt_start", "before the date of birth"))
    for mrn, (line, date) in plan.deaths.items():
        if mrn and mrn not in plan.patients and mrn not in plan.existing:
            errors.append(RowError(line, "mrn", f"no patient {_shown(mrn)} in this file or in RadPath"))
        birth = plan.patients.get(mrn, (None, None))[1]
        if date and birth and date < birth:
            errors.append(RowError(line, "date", "before the date of birth"))
        for c_line, start in courses_of.get(mrn, []):
            if date and start and date < start:
                errors.append(RowError(line, "date", f"before the start of RT on {start} (line {c_line})"))
    if plan.followups.any_problem(plan):
        plan.followups.report(source, plan, errors)
    errors.raise_if_any()
    plan.followups = None
    return plan


class _Import:
    """The import of a validated file, read once for its patients, once for its courses and once for its
    follow-ups and deaths (whatever their order in the file, every row's patient or course id is then known when
    it is written; a pass parses only its own rows). Rows are parsed again (they are valid) into compact tuples,
    buffered per record type and written ``BATCH`` at a time (``outcomes.bulk.insert_rows``: multi-row INSERTs
    with their audit history rows), so every INSERT but a type's last has the same length."""

    PASSES = (("patient",), ("course",), ("followup", "death"))

    def __init__(self, plan, user):
        self.plan, self.user, self.dictionary = plan, user, plan.dictionary
        self.summary = ImportSummary()
        self.patient_ids, self.diagnosis_ids = {}, {}  # mrn -> id
        self.course_ids = {}  # (mrn, ref) -> (course_id, patient_id)
        self.new_courses = {}  # course_id -> (patient_id, rt_start, rt_end): derived after the import
        self.followed = set()  # patient ids with a new follow-up or death (their other courses are recomputed)
        self.patients, self.courses, self.followups, self.deaths = [], [], [], []
        self.quiet = _Errors()
        self.user_id = getattr(user, "pk", None)

    def run(self, source):
        plan = self.plan
        for chunk in _chunks(plan.existing):
            self.patient_ids.update(Patient.objects.filter(mrn__in=chunk).values_list("mrn", "pk"))
        self.course_ids.update({k: v for k, v in plan.existing_courses.items() if v is not None})
        for types in self.PASSES:
            self._pass(source, types)
        derive_registry_outcomes(self.new_courses)
        # a new course of a patient already in RadPath may carry that patient's baseline logged outside any course
        # (``services.carried_baseline``), which the bulk derivation does not read: those courses one by one
        known = {self.patient_ids[m] for m in plan.existing if m in self.patient_ids}
        carrying = set(FollowUpAssessment.objects.active().filter(
            patient_id__in=known, course__isnull=True, kind=AssessmentKind.BASELINE,
        ).values_list("patient_id", flat=True)) if known else set()
        for cid, (pid, _start, _end) in self.new_courses.items():
            if pid in carrying:
                recompute_course(Course(pk=cid))
        # patients without radiotherapy: the file's new ones get their outcome row; RadPath's are recomputed
        with_course = {pid for pid, _start, _end in self.new_courses.values()}
        new = {self.patient_ids[m] for m in plan.patients}
        derive_registry_patient_outcomes(new - with_course)
        for pid in sorted(self.followed - new):
            recompute_patient_outcome(Patient(pk=pid))
        touched = set(self.new_courses)
        # courses already in RadPath whose follow-up or last contact this file changed: recomputed one by one
        for chunk in _chunks(self.followed):
            for pk in Course.objects.filter(patient_id__in=chunk).values_list("pk", flat=True):
                if pk not in self.new_courses:
                    recompute_course(Course(pk=pk))
                    touched.add(pk)
        self.summary.course_ids = sorted(touched)
        return self.summary

    def _pass(self, source, types):
        dictionary = self.dictionary
        writers = {"patient": (self.patients, self._write_patients), "course": (self.courses, self._write_courses),
                   "followup": (self.followups, lambda batch: _write_followups(self, batch)),
                   "death": (self.deaths, self._write_deaths)}
        for row in _rows(source, self.quiet, types=types):
            rtype = row.get("record_type")
            if rtype == "patient":
                self.patients.append((_patient_record(row),
                                      _covariate_values(row, "patient", dictionary) if dictionary else ()))
            elif rtype == "course":
                self.courses.append((_course_record(row),
                                     _covariate_values(row, "course", dictionary) if dictionary else ()))
            elif rtype == "followup":
                self.followups.append(_followup_row(row))
            else:
                self.deaths.append(_death_record(row))
            buffer, write = writers[rtype]
            if len(buffer) >= BATCH:
                write(buffer)
                buffer.clear()
        for rtype in types:
            buffer, write = writers[rtype]
            if buffer:
                write(buffer)
                buffer.clear()

    def _insert(self, model, attnames, rows):
        return insert_rows(model, attnames, rows, history_user=self.user)

    def _covariates(self, values):
        """``values``: ``(variable, patient_id, course_id, number, level)``."""
        if values:
            self._insert(CovariateValue, ("variable_id", "patient_id", "course_id", "number", "level"),
                         [(v.pk, p, c, num, lvl) for v, p, c, num, lvl in values])
            self.summary.covariate_values += len(values)

    def _write_patients(self, batch):
        pids = self._insert(Patient, ("mrn", "given_name", "family_name", "birth_date", "sex"),
                            [p[:5] for p, _cov in batch])
        dids = self._insert(Diagnosis, ("patient_id", "site", "diagnosed_on", "histology", "stage"),
                            [(pid, *p[5:9]) for (p, _cov), pid in zip(batch, pids)])
        treatments, values = [], []
        for (p, cov), pid, did in zip(batch, pids, dids):
            mrn = p[0]
            self.patient_ids[mrn], self.diagnosis_ids[mrn] = pid, did
            treatments += [(pid, did, *t) for t in p[9]]
            values += [(var, pid, None, num, lvl) for var, num, lvl in cov]
        self._insert(Treatment, ("patient_id", "diagnosis_id", "kind", "surgery_type", "agent", "trial_arm",
                                 "start_date"), treatments)
        self._covariates(values)
        self.summary.patients += len(batch)

    def _diagnosis_of(self, mrn, patient_id):
        """The new diagnosis of the file's patient; for a patient already in RadPath, their latest one."""
        if mrn not in self.diagnosis_ids:
            d = Diagnosis.objects.filter(patient_id=patient_id).order_by("-diagnosed_on").values_list("pk", flat=True)
            self.diagnosis_ids[mrn] = d.first()
        return self.diagnosis_ids[mrn]

    def _write_courses(self, batch):
        rows = []
        for c, _cov in batch:
            mrn, _ref, intent, technique, site, total, n, per_fraction, name, _start, end = c
            pid = self.patient_ids[mrn]
            rows.append((pid, self._diagnosis_of(mrn, pid), intent, technique, site, total, n, per_fraction,
                         CourseStatus.COMPLETED, name, end))
        # without post_save: a course's care path starts on post_save, but a completed (registry) course gets none
        # (``workflow.carepaths.needs_path``), so there is nothing to start
        cids = self._insert(Course, ("patient_id", "diagnosis_id", "intent", "technique", "treated_site",
                                     "total_dose_gy", "fractions_planned", "dose_per_fraction_gy", "status", "name",
                                     "completed_on"), rows)
        values = []
        for (c, cov), row, cid in zip(batch, rows, cids):
            pid = row[0]
            self.course_ids[(c[0], c[1])] = (cid, pid)
            self.new_courses[cid] = (pid, c[9], c[10])  # its CourseOutcome comes with its derivation
            values += [(var, pid, cid, num, lvl) for var, num, lvl in cov]
        self._covariates(values)
        self.summary.courses += len(batch)

    def _write_deaths(self, batch):
        rows = []
        for mrn, date, cause in batch:
            pid = self.patient_ids[mrn]
            self.followed.add(pid)
            rows.append((pid, date, cause))
        self._insert(Death, ("patient_id", "date", "cause"), rows)
        self.summary.deaths += len(rows)


# --- Follow-up rows in the import: kept apart (the row's values, then the batch written against its courses) ------

FOLLOWUP_COLUMNS = ("patient_id", "course_id", "kind", "date", "imaging", "failure_site", "last_known_alive",
                    "override_response", "override_reason", "override_by_id", "derived_response", "response",
                    "disease_status")


def _followup_row(row):
    """``(mrn, course_ref, fields)`` of a valid follow-up row (``fields``: ``_followup_fields``)."""
    return row.get("mrn"), row.get("course_ref"), _followup_fields(row)


def _write_followups(imp, batch):
    """Insert a batch of follow-ups on their courses (new in this file or already in RadPath). A recorded response
    is stored as the assessment's override, with the reason ``REGISTRY_REASON``, by the importing user; the
    derived fields are ``registry_followup_fields``' (a recurrence is found later, over the course's sequence);
    a contact (no imaging) has none."""
    rows = []
    blank = ("", "", "")
    for mrn, ref, f in batch:
        if ref:
            course_id, patient_id = imp.course_ids[(mrn, ref)]
        else:  # a patient without radiotherapy: the follow-up is the patient's
            course_id, patient_id = None, imp.patient_ids[mrn]
        imp.followed.add(patient_id)
        resp = f["response"]
        if f["kind"] == AssessmentKind.FOLLOWUP:
            d = registry_followup_fields(resp)
            derived = (d["derived_response"], d["response"], d["disease_status"])
        else:
            derived = blank
        rows.append((patient_id, course_id, f["kind"], f["date"], f["imaging"], f["failure_site"],
                     f["last_known_alive"], resp, REGISTRY_REASON if resp else "", imp.user_id if resp else None,
                     *derived))
    imp._insert(FollowUpAssessment, FOLLOWUP_COLUMNS, rows)
    imp.summary.followups += len(rows)


def import_registry(source, *, user=None, registry=None):
    """Validate then import a registry CSV (``str``, ``bytes``, a file object or an upload) in one transaction;
    ``registry`` (a ``Registry`` or its code) makes the columns of its data dictionary importable covariates.

    Streamed: validation reads the file once (twice when a follow-up fails a whole-file check) keeping one small
    tuple per patient, course and death; the import reads it once more (once per record type when rows come
    before the patient or course they refer to) and inserts in batches of ``BATCH`` rows with their history rows,
    so memory does not grow with the number of follow-up rows. Any error: nothing is written.
    """
    plan = validate(source, registry)
    with transaction.atomic():
        return _Import(plan, user).run(source)


def template_csv():
    """A header line and one example row per record type (offered as a download on the import page)."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerow({"record_type": "patient", "mrn": "R0001", "given_name": "Jane", "family_name": "Doe", "birth_date": "1950-02-03",
                "sex": "F", "site": "pleural_mesothelioma", "diagnosed_on": "2019-01-10", "histology": "Epithelioid",
                "surgery": "pd", "surgery_date": "2019-02-20", "chemotherapy": "cisplatin/pemetrexed",
                "chemotherapy_date": "2019-04-01"})
    w.writerow({"record_type": "course", "mrn": "R0001", "course_ref": "1", "intent": "adjuvant", "technique": "IMRT",
                "treated_site": "Left hemithorax", "total_dose_gy": "50.4", "fractions": "28", "rt_start": "2019-07-01",
                "rt_end": "2019-08-08"})
    w.writerow({"record_type": "followup", "mrn": "R0001", "course_ref": "1", "date": "2019-11-01", "imaging": "CT",
                "response": "PR"})
    w.writerow({"record_type": "death", "mrn": "R0001", "date": "2021-05-02", "cause": "disease"})
    return out.getvalue()
