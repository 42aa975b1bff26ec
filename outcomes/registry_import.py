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

The file is streamed, never held in memory: validation reads it twice, the import once per record type, inserting
in batches with their audit history rows (``outcomes.bulk.insert``: multi-row INSERTs; courses in bulk, their
derived outcomes computed in a few queries per 2,000 courses by ``services.derive_registry_outcomes``). Uploads above ``RADPATH_MAX_UPLOAD_MB`` are refused (HTTP 413). Registry responses were not derived here (no measurements), so they are stored as the assessment's
override with the reason "recorded in historical registry"; the derived response stays NE.
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

from .bulk import insert
from .covariates import parse_value, registry_by_code
from .models import (
    AssessmentKind,
    CauseOfDeath,
    CourseOutcome,
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


class _Row:
    def __init__(self, line, data, errors):
        self.line, self.data, self.errors = line, data, errors
        self.flagged = set()

    def get(self, name):
        return (self.data.get(name) or "").strip()

    def err(self, name, msg):
        self.flagged.add(name)
        self.errors.append(RowError(self.line, name, msg))

    def date(self, name, required=False):
        v = self.get(name)
        if not v:
            if required:
                self.err(name, "required")
            return None
        try:
            return dt.date.fromisoformat(v)
        except ValueError:
            self.err(name, f"'{_shown(v)}' is not a date (YYYY-MM-DD)")
            return None

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


def _model_errors(row, obj, exclude, rename=None):
    """The model's own validation, reported on the row (fields already flagged on this line are skipped)."""
    flagged = set(row.flagged)
    try:
        obj.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        for f, msgs in exc.message_dict.items():
            name = (rename or {}).get(f, f)
            if name in flagged:
                continue
            for m in msgs:
                row.err(name, m)


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


def _rows(source, errors, check_header=False, dictionary=None, registry_code=None):
    """``_Row`` per record, streamed; unreadable text or CSV becomes one error on the line where it happened.
    ``dictionary``: the registry's variables by column name (extra columns it declares are accepted)."""
    with _text(source) as stream:
        reader = csv.DictReader(stream)
        try:
            header = [h.strip() for h in (reader.fieldnames or [])]
        except (UnicodeDecodeError, csv.Error) as exc:
            errors.append(RowError(1, "file", "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"unreadable CSV: {exc}"))
            return
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
        reader.fieldnames = header
        while True:
            try:
                data = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                errors.append(RowError(reader.line_num + 1, "file", "not UTF-8 text"))
                return
            except csv.Error as exc:
                errors.append(RowError(reader.line_num, "file", f"unreadable CSV: {exc}"))
                return
            yield _Row(reader.line_num, data, errors)


def _patient_objects(row, check=True):
    p = Patient(mrn=row.get("mrn"), given_name=row.get("given_name"), family_name=row.get("family_name"),
                birth_date=row.date("birth_date"), sex=row.choice("sex", SEXES, Sex.UNKNOWN))
    if check:  # the import builds the objects of rows validation already checked
        _model_errors(row, p, exclude=[])
    d = Diagnosis(site=row.choice("site", SITES), diagnosed_on=row.date("diagnosed_on"),
                  histology=row.get("histology"), stage=row.get("stage"))
    if p.birth_date and d.diagnosed_on and d.diagnosed_on < p.birth_date:
        row.err("diagnosed_on", "before the date of birth")
    treatments = []
    surgery = row.choice("surgery", SURGERIES)
    if surgery:
        treatments.append(Treatment(kind=TreatmentKind.SURGERY, surgery_type=surgery,
                                    start_date=row.date("surgery_date", required=True)))
    if row.get("chemotherapy"):
        treatments.append(Treatment(kind=TreatmentKind.CHEMOTHERAPY, agent=row.get("chemotherapy"),
                                    start_date=row.date("chemotherapy_date", required=True)))
    if row.get("trial_arm"):
        treatments.append(Treatment(kind=TreatmentKind.TRIAL, agent="registry trial", trial_arm=row.get("trial_arm"),
                                    start_date=d.diagnosed_on))
    return p, d, treatments


def _course_object(row, check=True):
    ref = row.get("course_ref")
    total, n = row.dose("total_dose_gy"), row.count("fractions")
    c = Course(intent=row.choice("intent", INTENTS), technique=row.choice("technique", TECHNIQUES),
               treated_site=row.get("treated_site"), total_dose_gy=total, fractions_planned=n,
               dose_per_fraction_gy=(total / n).quantize(Decimal("0.01")) if total and n else None,
               status=CourseStatus.COMPLETED, name=f"Registry {ref}"[:80])
    start, end = row.date("rt_start"), row.date("rt_end")
    if start and end and end < start:
        row.err("rt_end", "before rt_start")
    if check and all(v is not None for v in (c.intent, c.technique, total, n)) and row.get("treated_site"):
        _model_errors(row, c, exclude=["patient", "diagnosis"], rename={"dose_per_fraction_gy": "total_dose_gy"})
    c.completed_on = end
    return c, start, end


def _followup_fields(row):
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


def _covariate_values(row, rtype, dictionary):
    """[(variable, number, level)] of the row's covariate cells (blank = no value). A patient-level variable
    belongs on the patient row, a course-level one on the course row; values are checked against the dictionary."""
    out = []
    for name, var in dictionary.items():
        text = row.get(name)
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
        self.course_mrn_lines = {}  # mrn of a course row without (yet) a patient row -> [lines]
        self.existing = set()  # MRNs of patients already in RadPath that rows refer to
        self.existing_courses = {}  # (mrn, ref) -> (course_id, patient_id) or None
        self.registry, self.dictionary = None, {}
        self.unknown_followup_mrns = {}  # mrn of a course-less follow-up not in the file -> not in RadPath either
        self.has_course = {}  # mrn -> has an RT course (file or RadPath), for course-less follow-ups
        self.patient_followups = set()  # MRNs with follow-up rows outside any course


def validate(source, registry=None):
    """Stream the file twice (rows, then follow-ups against the courses and deaths it lists) and return the plan, or
    raise ``RegistryImportError`` with the first ``MAX_ERRORS_LISTED`` problems and their count. ``registry``
    (a ``Registry`` or its code): extra columns its data dictionary declares are imported as covariates."""
    errors = _Errors()
    plan = _Plan()
    registry, dictionary = _dictionary(registry)
    plan.registry, plan.dictionary = registry, dictionary
    today = dt.date.today()
    for row in _rows(source, errors, check_header=True, dictionary=dictionary,
                     registry_code=registry.code if registry else None):
        rtype = row.get("record_type")
        if rtype not in RECORD_TYPES:
            row.err("record_type", f"'{_shown(rtype)}' is not one of {', '.join(RECORD_TYPES)}")
            continue
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
            p, _d, _t = _patient_objects(row)
            plan.patients[mrn] = (row.line, p.birth_date)
            plan.course_mrn_lines.pop(mrn, None)
        elif rtype == "course":
            ref = row.get("course_ref")
            key = (mrn, ref)
            if key in plan.courses:
                row.err("course_ref", f"course {_shown(ref)} of {_shown(mrn)} already listed on line {plan.courses[key][0]}")
                continue
            if mrn and mrn not in plan.patients:
                plan.course_mrn_lines.setdefault(mrn, []).append(row.line)
            _c, start, _end = _course_object(row)
            plan.courses[key] = (row.line, start)
        elif rtype == "followup":
            f = _followup_fields(row)
            if f["date"] and f["date"] > today:
                row.err("date", "in the future")
        elif rtype == "death":
            if mrn in plan.deaths:
                row.err("mrn", f"second death for {_shown(mrn)} (line {plan.deaths[mrn][0]})")
                continue
            row.choice("cause", CAUSES, CauseOfDeath.UNKNOWN)
            plan.deaths[mrn] = (row.line, row.date("date"))
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
    courses_of = {}
    for (mrn, _ref), (line, start) in plan.courses.items():
        courses_of.setdefault(mrn, []).append((line, start))
    for mrn, (line, date) in plan.deaths.items():
        if mrn and mrn not in plan.patients and mrn not in plan.existing:
            errors.append(RowError(line, "mrn", f"no patient {_shown(mrn)} in this file or in RadPath"))
        birth = plan.patients.get(mrn, (None, None))[1]
        if date and birth and date < birth:
            errors.append(RowError(line, "date", "before the date of birth"))
        for c_line, start in courses_of.get(mrn, []):
            if date and start and date < start:
                errors.append(RowError(line, "date", f"before the start of RT on {start} (line {c_line})"))
    # second pass: follow-ups against the courses and deaths of the whole file
    for row in _rows(source, _Errors()):
        if row.get("record_type") != "followup":
            continue
        mrn, ref = row.get("mrn"), row.get("course_ref")
        key = (mrn, ref)
        quiet = _Row(row.line, row.data, [])
        date, alive = quiet.date("date"), quiet.date("last_known_alive")
        if not ref and mrn:  # the follow-up of a patient without radiotherapy
            _check_patient_followup(plan, row.line, mrn, courses_of, errors)
        if key not in plan.courses and ref:
            if key not in plan.existing_courses:
                plan.existing_courses[key] = Course.objects.filter(patient__mrn=mrn, name=f"Registry {ref}").values_list(
                    "pk", "patient_id").first()
            if plan.existing_courses[key] is None:
                errors.append(RowError(row.line, "course_ref", f"no course {_shown(ref)} for {_shown(mrn)} in this file or in RadPath"))
        c = plan.courses.get(key)
        if c and c[1] and date and date < c[1] - dt.timedelta(days=365):
            errors.append(RowError(row.line, "date", "more than a year before the course's rt_start"))
        d = plan.deaths.get(mrn)
        if d and d[1] and date and date > d[1]:
            errors.append(RowError(row.line, "date", f"after the patient's death on {d[1]} (line {d[0]})"))
        if d and d[1] and alive and alive > d[1]:
            errors.append(RowError(row.line, "last_known_alive", f"after the patient's death on {d[1]}"))
    errors.raise_if_any()
    return plan


def _check_patient_followup(plan, line, mrn, courses_of, errors):
    """A follow-up row without ``course_ref``: its patient must be in the file or in RadPath and have no RT course
    (a patient with one is followed up on it); RadPath's courses are asked for once per patient."""
    if mrn not in plan.patients and mrn not in plan.existing:
        if mrn not in plan.unknown_followup_mrns:
            plan.unknown_followup_mrns[mrn] = not Patient.objects.filter(mrn=mrn).exists()
        if plan.unknown_followup_mrns[mrn]:
            errors.append(RowError(line, "mrn", f"no patient {_shown(mrn)} in this file or in RadPath"))
            return
        plan.existing.add(mrn)
    if mrn not in plan.has_course:
        plan.has_course[mrn] = bool(courses_of.get(mrn)) or Course.objects.filter(
            patient__mrn=mrn, voided_at__isnull=True).exists()
    if plan.has_course[mrn]:
        errors.append(RowError(line, "course_ref", f"required: patient {_shown(mrn)} has an RT course; name it "
                                                   "(a blank course_ref is the follow-up of a patient without radiotherapy)"))
    else:
        plan.patient_followups.add(mrn)


def _bulk(model, objs, user):
    """Insert a batch with its audit history rows (the ``+`` rows ``bulk_create_with_history`` would write),
    returning the objects with their pks (``outcomes.bulk.insert``)."""
    return insert(model, objs, history_user=user)


def _of_type(source, rtype):
    for row in _rows(source, _Errors()):
        if row.get("record_type") == rtype:
            yield row


def _batched(rows, n=BATCH):
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def import_registry(source, *, user=None, registry=None):
    """Validate then import a registry CSV (``str``, ``bytes``, a file object or an upload) in one transaction;
    ``registry`` (a ``Registry`` or its code) makes the columns of its data dictionary importable covariates.

    Streamed: validation reads the file twice row by row keeping one small tuple per patient, course and death;
    the import reads it once per record type and inserts in batches of ``BATCH`` (``bulk_create`` with history
    rows), so memory does not grow with the number of follow-up rows. Any error: nothing is written.
    """
    plan = validate(source, registry)
    dictionary = plan.dictionary
    summary = ImportSummary()
    with transaction.atomic():
        patient_ids, diagnosis_ids = {}, {}
        for rows in _batched(_of_type(source, "patient")):
            built = [(row.get("mrn"), *_patient_objects(_Row(row.line, row.data, []), check=False)) for row in rows]
            pats = _bulk(Patient, [p for _m, p, _d, _t in built], user)
            for (mrn, _p, d, _t), p in zip(built, pats):
                patient_ids[mrn] = p.pk
                d.patient_id = p.pk
            diags = _bulk(Diagnosis, [d for _m, _p, d, _t in built], user)
            treatments = []
            for (mrn, _p, _d, ts), d in zip(built, diags):
                diagnosis_ids[mrn] = d.pk
                for t in ts:
                    t.patient_id, t.diagnosis_id = patient_ids[mrn], d.pk
                    treatments.append(t)
            _bulk(Treatment, treatments, user)
            if dictionary:
                values = [CovariateValue(variable=var, patient_id=patient_ids[row.get("mrn")], number=num, level=lvl)
                          for row in rows
                          for var, num, lvl in _covariate_values(_Row(row.line, row.data, []), "patient", dictionary)]
                _bulk(CovariateValue, values, user)
                summary.covariate_values += len(values)
            summary.patients += len(pats)
        for chunk in _chunks(plan.existing):
            for mrn, pk in Patient.objects.filter(mrn__in=chunk).values_list("mrn", "pk"):
                patient_ids[mrn] = pk
        course_ids, new_courses = {}, {}
        for rows in _batched(_of_type(source, "course")):
            built = []
            for row in rows:
                mrn, ref = row.get("mrn"), row.get("course_ref")
                c, start, end = _course_object(_Row(row.line, row.data, []), check=False)
                c.patient_id = patient_ids[mrn]
                if mrn in diagnosis_ids:
                    c.diagnosis_id = diagnosis_ids[mrn]
                else:
                    c.diagnosis = Diagnosis.objects.filter(patient_id=c.patient_id).order_by("-diagnosed_on").first()
                built.append((mrn, ref, c, start, end))
            # bulk, without post_save: a course's care path starts on post_save, but a completed (registry) course
            # gets none (``workflow.carepaths.needs_path``), so there is nothing to start
            courses = _bulk(Course, [c for _m, _r, c, _s, _e in built], user)
            for (mrn, ref, _c, start, end), c in zip(built, courses):
                course_ids[(mrn, ref)] = (c.pk, c.patient_id)
                new_courses[c.pk] = (c.patient_id, start, end)  # its CourseOutcome comes with its derivation
            if dictionary:
                values = [CovariateValue(variable=var, patient_id=patient_ids[row.get("mrn")],
                                         course_id=course_ids[(row.get("mrn"), row.get("course_ref"))][0],
                                         number=num, level=lvl)
                          for row in rows
                          for var, num, lvl in _covariate_values(_Row(row.line, row.data, []), "course", dictionary)]
                _bulk(CovariateValue, values, user)
                summary.covariate_values += len(values)
            summary.courses += len(rows)
        course_ids.update({k: v for k, v in plan.existing_courses.items() if v is not None})
        followed = set()
        for rows in _batched(_of_type(source, "followup")):
            objs = []
            for row in rows:
                f = _followup_fields(_Row(row.line, row.data, []))
                if row.get("course_ref"):
                    course_id, patient_id = course_ids[(row.get("mrn"), row.get("course_ref"))]
                else:  # a patient without radiotherapy
                    course_id, patient_id = None, patient_ids[row.get("mrn")]
                followed.add(patient_id)
                derived = registry_followup_fields(f["response"]) if f["kind"] == AssessmentKind.FOLLOWUP else {}
                objs.append(FollowUpAssessment(
                    patient_id=patient_id, course_id=course_id, kind=f["kind"], date=f["date"], imaging=f["imaging"],
                    failure_site=f["failure_site"], last_known_alive=f["last_known_alive"],
                    override_response=f["response"], override_reason=REGISTRY_REASON if f["response"] else "",
                    override_by=user if f["response"] else None, **derived,
                ))
            _bulk(FollowUpAssessment, objs, user)
            summary.followups += len(objs)
        for rows in _batched(_of_type(source, "death")):
            objs = []
            for row in rows:
                quiet = _Row(row.line, row.data, [])
                patient_id = patient_ids[row.get("mrn")]
                followed.add(patient_id)
                objs.append(Death(patient_id=patient_id, date=quiet.date("date"),
                                  cause=quiet.choice("cause", CAUSES, CauseOfDeath.UNKNOWN)))
            _bulk(Death, objs, user)
            summary.deaths += len(objs)
        derive_registry_outcomes(new_courses)
        # patients without radiotherapy (no course in the file or in RadPath): their outcome row, new or recomputed
        with_course = {pid for pid, _s, _e in new_courses.values()}
        new_patients = [pid for mrn, pid in patient_ids.items() if mrn in plan.patients and pid not in with_course]
        derive_registry_patient_outcomes(new_patients)
        for mrn in plan.existing:
            pid = patient_ids.get(mrn)
            if pid is not None and pid not in with_course and (pid in followed):
                recompute_patient_outcome(Patient(pk=pid))
        touched = set(new_courses)
        # courses already in RadPath whose follow-up or last contact this file changed: recomputed one by one
        for chunk in _chunks(followed):
            for pk in Course.objects.filter(patient_id__in=chunk).values_list("pk", flat=True):
                if pk not in new_courses:
                    recompute_course(Course(pk=pk))
                    touched.add(pk)
        summary.course_ids = sorted(touched)
    return summary

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
