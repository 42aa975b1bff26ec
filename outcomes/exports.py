"""De-identified research exports: one row per patient (endpoints + covariates) and a long table of assessments.

What leaves the server: no names, MRN, birth date or free text (notes, override reasons, cause-of-death detail,
treated-site labels); a stable pseudonymous ID per patient (``pseudo_id`` = "RP-" + HMAC-SHA256 of the MRN keyed by
``settings.RADPATH_PSEUDONYM_KEY``, 16 hex characters) and per course ("RX-" + HMAC of the course id); every date as
a whole-day offset from the patient's time zero (``<column>_day``; time zero = start of RT or diagnosis, recorded
in the ``time_zero`` column and in the metadata); age in completed years at time zero (90 = 90 or older). Registry
covariates the cohort has values for are one column each (``<registry>.<variable>``: numbers, or the categorical
level), their data-dictionary entries in the metadata; they hold no dates, and a text level that reads like prose
(more than four words) is dropped as free text like any other column.
Formats: CSV, Parquet (pyarrow) and JSON (``{"meta": ..., "rows": [...]}``). In CSV, a text cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with a single quote (OWASP "CSV injection"), so a
spreadsheet shows it as text instead of running it as a formula; numbers (negative day offsets) are left alone, and
Parquet and JSON carry the data unchanged.

Every table covers at least ``RADPATH_MIN_COHORT`` patients and, for researchers, passes the release ledger
(``outcomes.disclosure``).

Before any bytes are produced the frames are checked for every identifier value of the cohort's patients (MRNs,
names, birth dates, as whole cells or word tokens); a hit refuses the export (``ExportLeak``).

The analysis bundle (:func:`analysis_bundle`, ``exports/analysis.zip`` with the survival analysis' parameters) is
one ZIP of the analysis as run: ``analysis.json`` (the API's result, curve points included), the Kaplan-Meier figure
(``km.png``, ``km.svg``), the Cox forest plot of the fitted model's terms and strata (``forest.png``,
``forest.svg``) and ``manifest.json`` + ``README.txt`` saying what each file shows and how it was computed. Without
a fitted Cox model (too few events, a fit that failed, no finite ratio) there is no forest plot and the manifest and
README say why. It holds aggregates only (no row per patient) and covers exactly the patient sets the analysis
released (its minimum cohort and ledger checks: the bundle releases nothing more).
"""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from workflow.errors import RuleViolation
from workflow.models import Patient

from . import covariates, deidentify, disclosure
from .cohorts import as_cohort
from .models import FollowUpAssessment
from .services import cohort_patient_ids, endpoint_frame, unit_assessments

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet", "json": "application/json"}
TABLES = ("patients", "assessments", "toxicity", "timing", "dvh")

PATIENT_COLUMNS = [
    "mrn", "course_id", "birth_date", "time_zero", "time_zero_date", "sex", "site", "radiotherapy", "intent", "technique",
    "total_dose_gy", "fractions", "surgery", "chemotherapy", "multimodal", "trial_arm", "grade3_toxicity",
    "best_response", "current_status", "diagnosis_date", "rt_start", "rt_end", "first_progression_date",
    "recurrence_date", "death_date", "death_cause", "last_contact_date",
    "os_days", "os_months", "os_event", "pfs_days", "pfs_months", "pfs_event", "pfs_event_type",
    "lc_days", "lc_months", "lc_event", "ttr_days", "ttr_months", "ttr_event",
]
ASSESSMENT_COLUMNS = [
    "course_id", "date", "kind", "imaging", "criteria", "target_sum_mm", "nadir_mm", "change_from_baseline_pct",
    "change_from_nadir_pct", "target_response", "derived_response", "override_response", "response",
    "disease_status", "non_target", "new_lesions", "failure_site", "vital_status", "last_known_alive",
]


class ExportLeak(Exception):
    """An identifier value was found in an export frame; nothing is written."""


def _secret():
    return settings.RADPATH_PSEUDONYM_KEY


def identified_frames(courses, time_zero="rt_start"):
    """(patients, assessments) frames WITH identifiers, the input of ``deidentified_frames``."""
    df = endpoint_frame(courses, time_zero)
    if "grade3_toxicity" not in df.columns:
        cols = [c for c in PATIENT_COLUMNS if c != "grade3_toxicity"]
    else:
        cols = list(PATIENT_COLUMNS)
    if not df.empty:  # registry covariates the cohort has values for, one column each (<registry>.<variable>)
        variables = covariates.all_variables()
        covariates.add_columns(df, variables)
        cols += [v.key for v in variables if df[v.key].notna().any()]
    patients = df[[c for c in cols if c in df.columns]].copy() if not df.empty else pd.DataFrame(columns=cols)
    patients["time_zero"] = time_zero
    # each row's course's assessments, then those of the patients without radiotherapy (outside any course)
    rows = list(
        FollowUpAssessment.objects.active().filter(unit_assessments(df))
        .order_by(F("course_id").asc(nulls_last=True), "patient_id", "date", "pk")
        .values_list("patient_id", *ASSESSMENT_COLUMNS)
    )
    a = pd.DataFrame.from_records(rows, columns=["patient_id", *ASSESSMENT_COLUMNS])
    a["course_id"] = a["course_id"].astype("Int64")
    t0 = dict(zip(df["patient_id"], df["time_zero_date"]))
    mrn = dict(zip(df["patient_id"], df["mrn"]))
    a.insert(0, "mrn", a["patient_id"].map(mrn))
    a.insert(2, "time_zero_date", pd.to_datetime(a["patient_id"].map(t0)))
    a = a.drop(columns="patient_id")
    for c in ("date", "last_known_alive"):
        a[c] = pd.to_datetime(a[c])
    for c in ("target_response", "derived_response", "override_response", "response", "disease_status", "failure_site"):
        a[c] = a[c].replace("", None)
    return patients, a


def deidentified_frames(courses, time_zero="rt_start"):
    """(patients, assessments, meta): both frames pseudonymised, dates as day offsets, identifiers dropped."""
    patients, assessments = identified_frames(courses, time_zero)
    secret = _secret()
    p = deidentify.deidentify_frame(patients, secret, id_col="mrn", time_zero_col="time_zero_date",
                                    birth_col="birth_date", extra_id_cols=["course_id"])
    a = deidentify.deidentify_frame(assessments, secret, id_col="mrn", time_zero_col="time_zero_date", birth_col=None,
                                    extra_id_cols=["course_id"])
    p.frame.rename(columns={"course_id": "pseudo_course_id"}, inplace=True)
    a.frame.rename(columns={"course_id": "pseudo_course_id"}, inplace=True)
    check_no_identifiers([p.frame, a.frame], patients["mrn"].tolist())
    meta = {
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "time_zero": time_zero,
        "time_zero_label": "start of radiotherapy" if time_zero == "rt_start" else "date of diagnosis",
        "dates": "whole days from time zero (<column>_day)",
        "age": "completed years at time zero, 90 = 90 or older",
        "pseudonym": "HMAC-SHA256 keyed by the server secret, 16 hex (RP- patient, RX- course)",
        "unit": "one row per patient (earliest course in the cohort; a patient without radiotherapy: no course, "
                "empty pseudo_course_id and RT columns, radiotherapy = no)",
        "n_patients": int(len(p.frame)),
        "n_assessments": int(len(a.frame)),
        "dropped_columns": sorted(set(p.dropped_columns) | set(a.dropped_columns)),
        "covariates": {v.key: covariates.describe_variable(v) for v in covariates.all_variables()
                       if v.key in p.frame.columns},
    }
    return p.frame, a.frame, meta


def _identifier_values(mrns):
    vals = set()
    for mrn, given, family, birth in Patient.objects.filter(mrn__in=list(mrns)).values_list(
        "mrn", "given_name", "family_name", "birth_date"
    ).iterator(chunk_size=5000):
        vals.update(v.strip().lower() for v in (mrn, given, family) if v and len(v.strip()) >= 2)
        if birth is not None:
            vals.add(birth.isoformat())
    return vals


def check_no_identifiers(frames, mrns):
    """Refuse (``ExportLeak``) if any cell or word token equals a patient's MRN, name or birth date."""
    needles = _identifier_values(mrns)
    if not needles:
        return
    for frame in frames:
        for col in frame.columns:
            if str(col).lower() in needles:
                raise ExportLeak(f"column name {col!r} is an identifier value")
            s = frame[col]
            if s.dtype.kind not in "OSU" and str(s.dtype) not in ("string", "category"):
                continue
            for v in pd.unique(s.dropna().astype(str).str.lower()):
                if v in needles or any(tok in needles for tok in re.split(r"[^a-z0-9-]+", v) if tok):
                    raise ExportLeak(f"column {col!r} holds an identifier value")


def _jsonable(frame):
    out = frame.astype(object).where(frame.notna(), None)
    return out.to_dict(orient="records")


TIMING_DATE_COLUMNS = ("consult_on", "sim_on", "plan_approved_on", "first_fraction_on")


def timing_frame(courses, with_patients=False):
    """Care-path timing of the cohort, de-identified: pseudonymous course IDs, no calendar dates (month kept).
    ``with_patients``: also return the patient ids the rows are about (for the minimum cohort and the ledger)."""
    from workflow.carepaths.models import CarePath
    from workflow.carepaths.services import carepath_timing_frame
    from workflow.models import Course

    frame = carepath_timing_frame(CarePath.objects.active().filter(course__in=courses))
    secret = _secret()
    frame.insert(1, "pseudo_course_id", [deidentify.pseudonym(f"course:{c}", secret, prefix="RX-") for c in frame["course_id"]])
    out = frame.drop(columns=["course_id", *TIMING_DATE_COLUMNS])
    if not with_patients:
        return out
    ids = Course.objects.filter(pk__in=[int(c) for c in frame["course_id"]]).values_list("patient_id", flat=True)
    return out, np.unique(np.fromiter(ids, dtype=np.int64))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_formula(value):
    """OWASP CSV-injection defence: a string starting like a spreadsheet formula gets a leading single quote."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_safe(frame):
    """A copy of ``frame`` whose text cells (and column names) cannot start a formula; numeric columns untouched."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype.kind in "OSU" or str(out[col].dtype) in ("string", "category"):
            out[col] = out[col].astype(object).map(escape_formula)
    out.columns = [escape_formula(str(c)) for c in out.columns]
    return out


def render(frame, meta, fmt):
    """Bytes of one table in ``fmt`` (csv / parquet / json); CSV text cells are formula-escaped."""
    if fmt == "csv":
        return csv_safe(frame).to_csv(index=False).encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        table_meta = {k: str(v) for k, v in meta.items()}
        frame.attrs = {}
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"radpath": json.dumps(table_meta).encode()})
        pq.write_table(table, buf)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps({"meta": meta, "rows": _jsonable(frame)}, default=str).encode("utf-8")
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")


def export(courses, *, table="patients", fmt="csv", time_zero="rt_start", user=None):
    """(bytes, content_type, filename) of a de-identified table.

    Refused (``disclosure.CohortTooSmall``) below ``RADPATH_MIN_COHORT`` patients or, for a researcher ``user``,
    when the release ledger finds it would single out patients against that user's earlier releases.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {', '.join(TABLES)}")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if table == "toxicity":
        from .services import toxicity_analysis

        result = toxicity_analysis(as_cohort(courses).courses, user=user)
        frame = result["rates"]
        meta = {
            "generated_at": timezone.now().isoformat(timespec="seconds"),
            "table": table,
            "unit": "one row per CTCAE term and phase (acute: to 90 days after RT; late: after), cohort aggregates",
            "n_courses": result["n_courses"],
            "cumulative_incidence_grade3": dict(zip(result["cumulative_incidence"]["times_months"], result["cumulative_incidence"]["grade3"])),
            "cumulative_incidence_method": result["cumulative_incidence"]["method"],
        }
        stamp = timezone.localdate().strftime("%Y%m%d")
        return render(frame, meta, fmt), FORMATS[fmt], f"radpath-toxicity-{stamp}.{fmt}"
    if table == "dvh":
        from .ntcp_services import dvh_export_frame

        frame, meta = dvh_export_frame(as_cohort(courses).courses)
        stamp = timezone.localdate().strftime("%Y%m%d")
        return render(frame, meta, fmt), FORMATS[fmt], f"radpath-dvh-{stamp}.{fmt}"
    if table == "timing":
        frame, patient_ids = timing_frame(as_cohort(courses).courses, with_patients=True)
        disclosure.check_cohort_size(len(np.unique(patient_ids)), "The care-path cohort")
        disclosure.record_release(user, [patient_ids], kind="export:timing")
        meta = {
            "generated_at": timezone.now().isoformat(timespec="seconds"),
            "table": table,
            "unit": "one row per course on a care path: working days between pathway steps, on-time rates",
            "n_courses": int(len(frame)),
        }
        stamp = timezone.localdate().strftime("%Y%m%d")
        return render(frame, meta, fmt), FORMATS[fmt], f"radpath-timing-{stamp}.{fmt}"
    patient_ids = cohort_patient_ids(courses, time_zero=time_zero)
    disclosure.check_cohort_size(len(patient_ids))
    patients, assessments, meta = deidentified_frames(courses, time_zero)
    disclosure.record_release(user, [patient_ids], kind=f"export:{table}")
    frame = patients if table == "patients" else assessments
    meta = {**meta, "table": table}
    stamp = timezone.localdate().strftime("%Y%m%d")
    return render(frame, meta, fmt), FORMATS[fmt], f"radpath-{table}-{time_zero}-{stamp}.{fmt}"


# ---------------------------------------------------------------------------------------------------------------
# Analysis bundle: the analysis as run, its figures and what they show
# ---------------------------------------------------------------------------------------------------------------

FIGURE_FORMATS = ("png", "svg")


def _forest_section(result, body):
    """The manifest entry of the forest plot: the model it shows, or why there is none."""
    from .services import forest_title

    if not result.cox:
        return {"included": False, "files": [], "reason": result.cox_error or "No Cox model was fitted."}
    cox = body["cox"]
    drawn = [bool(np.all(np.isfinite([t.hazard_ratio, t.hr_lower, t.hr_upper])) and t.hr_lower > 0)
             for t in result.cox.terms]  # the rows figures.forest_figure can draw
    return {
        "included": True,
        "files": [f"forest.{fmt}" for fmt in FIGURE_FORMATS],
        "title": forest_title(result),
        "shows": (f"Hazard ratio of each term of the fitted Cox model ({cox['ties']} ties) as a square on its 95 % "
                  "Wald confidence interval, log x axis, dashed no-effect line at 1; written right of each line: "
                  "HR (lower-upper) to 2 decimals and the Wald p value to 3 (below 0.001: p < 0.001). First term "
                  "on top. Categorical terms are dummies against their reference level, numeric ones per unit. A "
                  "term without a finite ratio or CI (drawn: false) is listed here but not drawn."),
        "terms": [{**{k: t.get(k) for k in ("covariate", "label", "hazard_ratio", "hr_lower", "hr_upper", "p_value")},
                   "drawn": d} for t, d in zip(cox["terms"], drawn)],
        "strata": list(result.cox_strata),
        "n": cox["n"], "events": cox["events"],
    }


def _readme(body, manifest):
    forest = manifest["forest_plot"]
    lines = [
        "RadPath analysis bundle (de-identified aggregates; no row per patient)",
        f"Generated {manifest['generated_at']}; {body['endpoint_label']}, time zero "
        f"{'start of radiotherapy' if body['time_zero'] == 'rt_start' else 'date of diagnosis'}, "
        f"{body['n_patients']} patient(s) analysed.",
        "",
        "Files",
    ]
    lines += [f"- {name}: {desc}" for name, desc in manifest["files"].items()]
    lines += ["", "Forest plot"]
    if forest["included"]:
        lines.append(f"- {forest['title']}.")
        lines.append(f"- {forest['shows']}")
        lines += [f"  {t['label']}: HR {t['hazard_ratio']:.2f} ({t['hr_lower']:.2f}-{t['hr_upper']:.2f})"
                  if t["drawn"] else f"  {t['label']}: not drawn (no finite hazard ratio or CI)"
                  for t in forest["terms"]]
    else:
        lines.append(f"- Not included: {forest['reason']}")
    lines += ["", "Methods",
              f"- Kaplan-Meier, 95 % CI: {body['ci_method']}.",
              f"- Median: {body['median_method']}."]
    if body.get("cox"):
        lines.append(f"- Cox proportional hazards ({body['cox']['ties']} ties); proportional-hazards check per term: "
                     f"Grambsch-Therneau test on scaled Schoenfeld residuals ({body['cox']['ph_transform']} "
                     "transform, R cox.zph).")
    for name, block in body["methods"].items():
        if isinstance(block, dict) and block.get("method"):
            lines.append(f"- {name}: {block['method']}.")
    if body["notes"]:
        lines += ["", "Notes"] + [f"- {n}" for n in body["notes"]]
    lines += ["", f"Disclosure: {manifest['disclosure']}", ""]
    return "\n".join(lines)


def analysis_bundle(result, *, cohort=None, parameters=None):
    """(bytes, content_type, filename): ZIP of an ``AnalysisResult`` (module docstring), run by
    ``services.analyze``, whose minimum cohort and release ledger checks cover everything in it."""
    from . import services

    body = result.to_dict(include_points=True)
    if cohort is not None:
        body["cohort"] = cohort
    files = {}
    for fmt in FIGURE_FORMATS:
        files[f"km.{fmt}"] = services.km_figure(result, fmt=fmt)
    forest_error = None
    if result.cox:
        try:
            for fmt in FIGURE_FORMATS:
                files[f"forest.{fmt}"] = services.forest_figure(result, fmt=fmt)
        except RuleViolation as exc:  # a fitted model without a finite ratio: said, not omitted
            forest_error = str(exc)
            files = {k: v for k, v in files.items() if not k.startswith("forest.")}
    groups = "per group shown" if result.group_by else "of the whole cohort"
    descriptions = {
        "analysis.json": "the analysis result as the API returns it (/api/outcomes/survival/), curve points included: "
                         "times in days, medians, survival at 1, 2 and 5 years, numbers at risk, log-rank, Cox model, "
                         "the further methods chosen, notes",
        "km.png": f"Kaplan-Meier curves {groups} with 95 % CI bands and the number at risk (PNG, 150 dpi)",
        "km.svg": "the same Kaplan-Meier figure as SVG (text kept as text)",
    }
    if "forest.png" in files:
        descriptions["forest.png"] = "forest plot of the Cox model's hazard ratios with 95 % CIs (PNG, 150 dpi)"
        descriptions["forest.svg"] = "the same forest plot as SVG (labels and hazard ratios as text)"
    descriptions["manifest.json"] = "this list, the parameters and what the forest plot shows (or why it is absent)"
    descriptions["README.txt"] = "the same in words, with the methods"
    manifest = {
        "generated_at": timezone.now().isoformat(timespec="seconds"),
        "kind": "analysis",
        "endpoint": result.endpoint,
        "time_zero": result.time_zero,
        "group_by": result.group_by or None,
        "parameters": dict(parameters or {}),
        "cohort": cohort,
        "n_patients": result.n_patients,
        "files": descriptions,
        "forest_plot": _forest_section(result, body),
        "disclosure": (f"every figure and table covers at least {disclosure.min_cohort()} patients (RADPATH_MIN_COHORT) "
                       "and the same patient sets as the analysis (groups below the minimum are left out of the "
                       "curves, log-rank and Cox model); they were checked against and recorded in the release "
                       "ledger with the analysis."),
    }
    if forest_error:
        manifest["forest_plot"] = {"included": False, "files": [], "reason": forest_error}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("README.txt", _readme(body, manifest))
        zf.writestr("manifest.json", json.dumps(manifest, indent=2, default=str))
        zf.writestr("analysis.json", json.dumps(body, default=str))
        for name, data in files.items():
            zf.writestr(name, data)
    stamp = timezone.localdate().strftime("%Y%m%d")
    return buf.getvalue(), "application/zip", f"radpath-analysis-{result.endpoint}-{result.time_zero}-{stamp}.zip"
