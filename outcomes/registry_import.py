"""Bulk import of historical registry data from one CSV file: patients, courses, follow-ups and deaths.

Format: a header row, then one record per line; ``record_type`` says which kind, and each kind uses its columns
(others left blank). Every row names the patient by ``mrn``; courses are named per patient by ``course_ref``.

============  ==============================================================================================
record_type   columns (* = required)
============  ==============================================================================================
patient       mrn*, given_name*, family_name*, birth_date*, sex (M/F/O/U), site*, diagnosed_on*, histology,
              stage, surgery (pd/epp/crs_hipec/pericardiectomy/other), surgery_date, chemotherapy (agent),
              chemotherapy_date, trial_arm
course        mrn*, course_ref*, intent*, technique*, treated_site*, total_dose_gy*, fractions*, rt_start*, rt_end
followup      mrn*, course_ref*, date*, imaging (CT/MRI/PET-CT/XRAY; blank = contact only), response
              (CR/PR/SD/PD/NE as recorded by the registry), failure_site (local/regional/distant),
              last_known_alive
death         mrn*, date*, cause (disease/treatment/other_cancer/other/unknown)
============  ==============================================================================================

Rules: all rows are validated first; every problem is reported with its line number (the header is line 1) and
field; a file with any error imports nothing. A valid file is imported in one transaction. Dates are ISO
(YYYY-MM-DD). Registry responses were not derived here (no measurements), so they are stored as the assessment's
override with the reason "recorded in historical registry"; the derived response stays NE.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

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

from .models import AssessmentKind, CauseOfDeath, CourseOutcome, Death, FailureSite, FollowUpAssessment, Response
from .services import REGISTRY_REASON, recompute_course

RECORD_TYPES = ("patient", "course", "followup", "death")
REQUIRED = {
    "patient": ("mrn", "given_name", "family_name", "birth_date", "site", "diagnosed_on"),
    "course": ("mrn", "course_ref", "intent", "technique", "treated_site", "total_dose_gy", "fractions", "rt_start"),
    "followup": ("mrn", "course_ref", "date"),
    "death": ("mrn", "date"),
}
COLUMNS = sorted({c for cols in REQUIRED.values() for c in cols} | {
    "record_type", "sex", "histology", "stage", "surgery", "surgery_date", "chemotherapy", "chemotherapy_date",
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
    def __init__(self, errors):
        self.errors = errors
        super().__init__(f"{len(errors)} error(s); nothing imported. " + "; ".join(str(e) for e in errors[:5]))


@dataclass
class ImportSummary:
    patients: int = 0
    courses: int = 0
    followups: int = 0
    deaths: int = 0
    course_ids: list = field(default_factory=list)

    def to_dict(self):
        return {"patients": self.patients, "courses": self.courses, "followups": self.followups, "deaths": self.deaths}


class _Row:
    def __init__(self, line, data, errors):
        self.line, self.data, self.errors = line, data, errors

    def get(self, name):
        return (self.data.get(name) or "").strip()

    def err(self, name, msg):
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
            self.err(name, f"'{v}' is not a date (YYYY-MM-DD)")
            return None

    def choice(self, name, allowed, default=None):
        v = self.get(name)
        if not v:
            return default
        if v not in allowed:
            self.err(name, f"'{v}' is not one of {', '.join(allowed)}")
            return default
        return v


def _model_errors(row, obj, exclude, rename=None):
    """The model's own validation, reported on the row (fields already flagged on this line are skipped)."""
    flagged = {e.field for e in row.errors if e.line == row.line}
    try:
        obj.full_clean(exclude=exclude, validate_unique=False)
    except ValidationError as exc:
        for f, msgs in exc.message_dict.items():
            name = (rename or {}).get(f, f)
            if name in flagged:
                continue
            for m in msgs:
                row.err(name, m)


def parse(text):
    """Validate every row; return the planned records, or raise ``RegistryImportError`` listing all problems."""
    errors = []
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "record_type" not in header:
        raise RegistryImportError([RowError(1, "record_type", "missing column (header row)")])
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        errors.append(RowError(1, unknown[0], f"unknown column(s): {', '.join(unknown)}"))
    reader.fieldnames = header
    patients, courses, followups, deaths = {}, {}, [], {}
    rows = []
    for data in reader:
        rows.append(_Row(reader.line_num, data, errors))
    existing = {p.mrn: p for p in Patient.objects.filter(mrn__in={r.get("mrn") for r in rows if r.get("mrn")})}
    for row in rows:
        rtype = row.get("record_type")
        if rtype not in RECORD_TYPES:
            row.err("record_type", f"'{rtype}' is not one of {', '.join(RECORD_TYPES)}")
            continue
        for col in REQUIRED[rtype]:
            if not row.get(col):
                row.err(col, "required")
        mrn = row.get("mrn")
        if rtype == "patient":
            if mrn in patients:
                row.err("mrn", f"patient {mrn} already listed on line {patients[mrn]['line']}")
                continue
            if mrn in existing:
                row.err("mrn", f"patient {mrn} already exists in RadPath")
                continue
            p = Patient(mrn=mrn, given_name=row.get("given_name"), family_name=row.get("family_name"),
                        birth_date=row.date("birth_date"), sex=row.choice("sex", Sex.values, Sex.UNKNOWN))
            _model_errors(row, p, exclude=["birth_date"] if p.birth_date is None else [])
            d = Diagnosis(site=row.choice("site", DiseaseSite.values), diagnosed_on=row.date("diagnosed_on"),
                          histology=row.get("histology"), stage=row.get("stage"))
            if p.birth_date and d.diagnosed_on and d.diagnosed_on < p.birth_date:
                row.err("diagnosed_on", "before the date of birth")
            treatments = []
            surgery = row.choice("surgery", SurgeryType.values)
            if surgery:
                treatments.append(Treatment(kind=TreatmentKind.SURGERY, surgery_type=surgery,
                                            start_date=row.date("surgery_date", required=True)))
            if row.get("chemotherapy"):
                treatments.append(Treatment(kind=TreatmentKind.CHEMOTHERAPY, agent=row.get("chemotherapy"),
                                            start_date=row.date("chemotherapy_date", required=True)))
            if row.get("trial_arm"):
                treatments.append(Treatment(kind=TreatmentKind.TRIAL, agent="registry trial", trial_arm=row.get("trial_arm"),
                                            start_date=d.diagnosed_on))
            patients[mrn] = {"line": row.line, "patient": p, "diagnosis": d, "treatments": treatments}
        elif rtype == "course":
            ref = row.get("course_ref")
            key = (mrn, ref)
            if key in courses:
                row.err("course_ref", f"course {ref} of {mrn} already listed on line {courses[key]['line']}")
                continue
            if mrn and mrn not in patients and mrn not in existing:
                row.err("mrn", f"no patient {mrn} in this file or in RadPath")
            try:
                total = Decimal(row.get("total_dose_gy")) if row.get("total_dose_gy") else None
            except InvalidOperation:
                row.err("total_dose_gy", f"'{row.get('total_dose_gy')}' is not a number")
                total = None
            try:
                n = int(row.get("fractions")) if row.get("fractions") else None
            except ValueError:
                row.err("fractions", f"'{row.get('fractions')}' is not a whole number")
                n = None
            c = Course(intent=row.choice("intent", Intent.values), technique=row.choice("technique", Technique.values),
                       treated_site=row.get("treated_site"), total_dose_gy=total, fractions_planned=n,
                       dose_per_fraction_gy=(total / n).quantize(Decimal("0.01")) if total and n else None,
                       status=CourseStatus.COMPLETED, name=f"Registry {ref}"[:80])
            start, end = row.date("rt_start"), row.date("rt_end")
            if start and end and end < start:
                row.err("rt_end", "before rt_start")
            if all(v is not None for v in (c.intent, c.technique, total, n)) and row.get("treated_site"):
                _model_errors(row, c, exclude=["patient", "diagnosis"], rename={"dose_per_fraction_gy": "total_dose_gy"})
            c.completed_on = end
            courses[key] = {"line": row.line, "course": c, "mrn": mrn, "rt_start": start, "rt_end": end}
        elif rtype == "followup":
            imaging = row.choice("imaging", ImagingModality.values)
            resp = row.choice("response", Response.values)
            if resp and not imaging:
                row.err("imaging", "a response needs the imaging it was read from")
            followups.append({
                "line": row.line, "mrn": mrn, "ref": row.get("course_ref"), "date": row.date("date"),
                "imaging": imaging or "none", "response": resp or "",
                "failure_site": row.choice("failure_site", [v for v in FailureSite.values if v], ""),
                "last_known_alive": row.date("last_known_alive"),
                "kind": AssessmentKind.FOLLOWUP if imaging else AssessmentKind.CONTACT,
            })
        elif rtype == "death":
            if mrn in deaths:
                row.err("mrn", f"second death for {mrn} (line {deaths[mrn]['line']})")
                continue
            deaths[mrn] = {"line": row.line, "date": row.date("date"),
                           "cause": row.choice("cause", CauseOfDeath.values, CauseOfDeath.UNKNOWN)}
    # Cross-row checks.
    existing_courses = {}
    for f in followups:
        key = (f["mrn"], f["ref"])
        if key not in courses and f["ref"]:
            if key not in existing_courses:
                existing_courses[key] = Course.objects.filter(patient__mrn=f["mrn"], name=f"Registry {f['ref']}").first()
            if existing_courses[key] is None:
                errors.append(RowError(f["line"], "course_ref", f"no course {f['ref']} for {f['mrn']} in this file or in RadPath"))
        c = courses.get(key)
        if c and c["rt_start"] and f["date"] and f["date"] < c["rt_start"] - dt.timedelta(days=365):
            errors.append(RowError(f["line"], "date", "more than a year before the course's rt_start"))
        d = deaths.get(f["mrn"])
        if d and d["date"] and f["date"] and f["date"] > d["date"]:
            errors.append(RowError(f["line"], "date", f"after the patient's death on {d['date']} (line {d['line']})"))
        if d and d["date"] and f["last_known_alive"] and f["last_known_alive"] > d["date"]:
            errors.append(RowError(f["line"], "last_known_alive", f"after the patient's death on {d['date']}"))
    for mrn, d in deaths.items():
        if mrn and mrn not in patients and mrn not in existing:
            errors.append(RowError(d["line"], "mrn", f"no patient {mrn} in this file or in RadPath"))
        p = patients.get(mrn)
        if p and d["date"] and p["patient"].birth_date and d["date"] < p["patient"].birth_date:
            errors.append(RowError(d["line"], "date", "before the date of birth"))
        for (cm, _ref), c in courses.items():
            if cm == mrn and c["rt_start"] and d["date"] and d["date"] < c["rt_start"]:
                errors.append(RowError(d["line"], "date", f"before the start of RT on {c['rt_start']} (line {c['line']})"))
    today = dt.date.today()
    for f in followups:
        if f["date"] and f["date"] > today:
            errors.append(RowError(f["line"], "date", "in the future"))
    if errors:
        errors.sort(key=lambda e: (e.line, e.field))
        raise RegistryImportError(errors)
    return {"patients": patients, "courses": courses, "followups": followups, "deaths": deaths,
            "existing": existing, "existing_courses": existing_courses}


def import_registry(source, *, user=None):
    """Validate then import a registry CSV (``str``, ``bytes`` or a file object) in one transaction."""
    if hasattr(source, "read"):
        source = source.read()
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise RegistryImportError([RowError(1, "file", "not UTF-8 text")]) from exc
    plan = parse(source)
    summary = ImportSummary()
    with transaction.atomic():
        pats = dict(plan["existing"])
        for mrn, item in plan["patients"].items():
            p = item["patient"]
            p._history_user = user
            p.save()
            d = item["diagnosis"]
            d.patient = p
            d._history_user = user
            d.save()
            item["diagnosis_saved"] = d
            for t in item["treatments"]:
                t.patient, t.diagnosis = p, d
                t._history_user = user
                t.save()
            pats[mrn] = p
            summary.patients += 1
        course_objs = dict(plan["existing_courses"])
        for (mrn, ref), item in plan["courses"].items():
            c = item["course"]
            c.patient = pats[mrn]
            c.diagnosis = plan["patients"][mrn]["diagnosis_saved"] if mrn in plan["patients"] else (
                c.patient.diagnoses.order_by("-diagnosed_on").first())
            c._history_user = user
            c.save()
            CourseOutcome.objects.create(course=c, patient=c.patient, rt_start_recorded=item["rt_start"],
                                         rt_end_recorded=item["rt_end"])
            course_objs[(mrn, ref)] = c
            summary.courses += 1
        for f in plan["followups"]:
            c = course_objs[(f["mrn"], f["ref"])]
            a = FollowUpAssessment(
                patient=c.patient, course=c, kind=f["kind"], date=f["date"], imaging=f["imaging"],
                failure_site=f["failure_site"], last_known_alive=f["last_known_alive"],
                override_response=f["response"], override_reason=REGISTRY_REASON if f["response"] else "",
                override_by=user if f["response"] else None,
            )
            a._history_user = user
            a.save()
            summary.followups += 1
        for mrn, d in plan["deaths"].items():
            death = Death(patient=pats[mrn], date=d["date"], cause=d["cause"])
            death._history_user = user
            death.save()
            summary.deaths += 1
        touched = {c.pk: c for c in course_objs.values() if c is not None}
        for mrn in set(plan["deaths"]) | {f["mrn"] for f in plan["followups"]}:
            for c in Course.objects.filter(patient=pats[mrn]):
                touched[c.pk] = c
        for c in touched.values():
            recompute_course(c)
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
