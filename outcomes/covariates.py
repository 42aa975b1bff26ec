"""Covariates: the variables a registry's data dictionary declares, their imported values, and their use in
analyses (filters, groupings, Cox terms) and exports.

A variable is named ``<registry code>.<name>`` in analyses and exports (``gbsg2.tsize``); ``name`` is its CSV
column. Numeric variables carry a unit and an optional allowed range; categorical ones a list of allowed levels,
the first being the reference level of their Cox dummies. Values are one row each in ``CovariateValue``
(``number`` or ``level``), indexed by variable, so one cohort column is one query fetched column-wise
(``outcomes.columnar``) and joined to the cohort frame in numpy.

Parameters (API query string and the analysis form):

* ``covariate=gbsg2.tsize:20..50`` (numeric, inclusive; ``20..`` or ``..50`` open-ended) or
  ``covariate=gbsg2.tgrade:II,III`` (categorical levels); repeat the parameter for several filters (all must hold).
* ``group_by=gbsg2.tgrade`` (categorical: one group per level); a numeric variable needs ``group_cuts``:
  cut-points ``group_cuts=3,10`` (groups ``< 3``, ``3 to < 10``, ``>= 10``) or ``group_cuts=median`` (the
  cohort's median m: ``< m`` and ``>= m``); what was done is stated in the notes.
* ``cox_terms=...,gbsg2.tsize,gbsg2.tgrade``: numeric as is (per unit), categorical as dummies against the
  reference level; ``cox_strata`` takes categorical variables. Patients without a value are left out of the Cox
  model (R's ``na.omit``) and counted in the notes.

Every malformed or unknown parameter is a ``RuleViolation`` naming its field (HTTP 400).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef

from workflow.errors import RuleViolation

from .columnar import fetch_columns
from .models import CovariateValue, Registry, RegistryVariable, VariableKind, VariableLevel

KEY = re.compile(r"^([a-z0-9_-]{1,40})\.([a-z][a-z0-9_]{0,39})$")
_NUMBER = re.compile(r"^-?\d{1,12}(\.\d{1,12})?$")
MAX_LEVELS = 50
# analysis names a variable may not take (they are the registry's own columns or analysis terms)
RESERVED = {"group", "age", "age_years", "sex", "site", "intent", "technique", "multimodal", "trial_arm",
            "grade3_toxicity", "record_type", "mrn", "course_ref"}


def reserved_names():
    from .registry_import import COLUMNS

    return RESERVED | set(COLUMNS)


def check_variable(v):
    """The data-dictionary rules of one variable (``RegistryVariable.clean``); raises ``ValidationError`` by field.
    A variable that already has values keeps its kind, the levels in use and a range holding every value."""
    errors = {}
    if v.name in reserved_names():
        errors["name"] = f"'{v.name}' is a column of the registry format or an analysis term; choose another name."
    levels = v.levels if isinstance(v.levels, list) else None
    if v.kind == VariableKind.CATEGORICAL:
        if levels is None or len(levels) < 2 or not all(isinstance(x, str) and x.strip() and len(x) <= 60 for x in levels):
            errors["levels"] = "A categorical variable needs at least two levels, each a non-empty text of up to 60 characters."
        elif len(set(levels)) != len(levels):
            errors["levels"] = "Each level may be listed once."
        elif len(levels) > MAX_LEVELS:
            errors["levels"] = f"At most {MAX_LEVELS} levels."
        if v.minimum is not None or v.maximum is not None or v.unit:
            errors["unit"] = "Unit and range are for numeric variables."
    elif v.kind == VariableKind.NUMERIC:
        if levels:
            errors["levels"] = "Levels are for categorical variables."
        for f in ("minimum", "maximum"):
            x = getattr(v, f)
            if x is not None and not math.isfinite(x):
                errors[f] = "Must be a finite number."
        if v.minimum is not None and v.maximum is not None and v.minimum > v.maximum:
            errors["maximum"] = "Below the minimum."
    if v.pk:
        old = RegistryVariable.objects.filter(pk=v.pk).values("kind", "level", "name").first()
        live = CovariateValue.objects.active().filter(variable_id=v.pk)
        if old and live.exists():
            if old["name"] != v.name:
                errors["name"] = "The variable has imported values: its name (the CSV column) cannot change."
            elif old["kind"] != v.kind or old["level"] != v.level:
                errors = {"kind": "The variable has imported values: its kind and level cannot change."}
            elif "levels" in errors or "minimum" in errors or "maximum" in errors:
                pass
            elif v.kind == VariableKind.CATEGORICAL:
                used = set(live.values_list("level", flat=True).distinct())
                missing = sorted(used - set(levels))
                if missing:
                    errors["levels"] = f"Level(s) {', '.join(missing)} have imported values and must stay."
            else:
                lo, hi = live.order_by("number").values_list("number", flat=True).first(), \
                    live.order_by("-number").values_list("number", flat=True).first()
                if v.minimum is not None and lo is not None and lo < v.minimum:
                    errors["minimum"] = f"An imported value ({lo:g}) is below this minimum."
                if v.maximum is not None and hi is not None and hi > v.maximum:
                    errors["maximum"] = f"An imported value ({hi:g}) is above this maximum."
    if errors:
        raise ValidationError(errors)


def describe_variable(v):
    out = {"key": v.key, "name": v.name, "registry": v.registry.code, "level": v.level, "kind": v.kind,
           "description": v.description}
    if v.kind == VariableKind.NUMERIC:
        out.update(unit=v.unit, minimum=v.minimum, maximum=v.maximum)
    else:
        out.update(levels=list(v.levels), reference_level=v.levels[0])
    return out


def parse_value(v, text):
    """``(number, level)`` of one CSV cell for variable ``v``, or ``ValueError`` with the message for the row."""
    if v.kind == VariableKind.NUMERIC:
        if not _NUMBER.match(text):
            raise ValueError(f"'{text[:40]}' is not a number written plainly (e.g. 12 or -0.5); NaN, Infinity and "
                             "exponents are refused")
        x = float(text)
        unit = f" {v.unit}" if v.unit else ""
        if v.minimum is not None and x < v.minimum:
            raise ValueError(f"{x:g} is below the minimum {v.minimum:g}{unit} of the data dictionary")
        if v.maximum is not None and x > v.maximum:
            raise ValueError(f"{x:g} is above the maximum {v.maximum:g}{unit} of the data dictionary")
        return x, ""
    if text not in v.levels:
        raise ValueError(f"'{text[:40]}' is not one of the levels {', '.join(v.levels)}")
    return None, text


def registry_by_code(code, field="registry"):
    code = (code or "").strip()
    reg = Registry.objects.filter(code=code).first() if code else None
    if reg is None:
        known = ", ".join(Registry.objects.values_list("code", flat=True)[:20]) or "none yet"
        raise RuleViolation(f"{field}: no registry '{code[:40]}' (known: {known}).", field=field)
    return reg


def is_key(text):
    return bool(text) and KEY.match(str(text)) is not None


def resolve(key, field):
    """The variable named ``<registry>.<name>``, or a ``RuleViolation`` naming ``field``."""
    m = KEY.match(str(key or "").strip())
    v = None
    if m:
        v = RegistryVariable.objects.select_related("registry").filter(registry__code=m[1], name=m[2]).first()
    if v is None:
        raise RuleViolation(f"{field}: '{str(key)[:60]}' is not a covariate (<registry>.<variable>, see "
                            "/api/outcomes/registries/).", field=field)
    return v


def all_variables():
    return list(RegistryVariable.objects.select_related("registry").order_by("registry__code", "name"))


# ------------------------------------------------------------------------------------------------------------
# Filters
# ------------------------------------------------------------------------------------------------------------


@dataclass
class CovariateFilter:
    variable: RegistryVariable
    low: float | None = None
    high: float | None = None
    levels: tuple = ()

    def describe(self):
        if self.variable.kind == VariableKind.NUMERIC:
            lo = "" if self.low is None else f"{self.low:g}"
            hi = "" if self.high is None else f"{self.high:g}"
            return f"{self.variable.key}:{lo}..{hi}"
        return f"{self.variable.key}:{','.join(self.levels)}"

    def apply(self, qs):
        values = CovariateValue.objects.filter(variable=self.variable, voided_at__isnull=True)
        if self.variable.level == VariableLevel.COURSE:
            values = values.filter(course=OuterRef("pk"))
        else:
            values = values.filter(patient=OuterRef("patient_id"), course__isnull=True)
        if self.variable.kind == VariableKind.NUMERIC:
            if self.low is not None:
                values = values.filter(number__gte=self.low)
            if self.high is not None:
                values = values.filter(number__lte=self.high)
        else:
            values = values.filter(level__in=self.levels)
        return qs.filter(Exists(values))


def parse_filter(text, field="covariate"):
    """``gbsg2.tsize:20..50`` / ``gbsg2.tgrade:II,III`` -> ``CovariateFilter`` (``RuleViolation`` naming field)."""
    key, sep, cond = str(text).strip().partition(":")
    v = resolve(key, field)
    if not sep or not cond.strip():
        raise RuleViolation(f"{field}: give a condition after the name, e.g. {v.key}:" +
                            ("10..50" if v.kind == VariableKind.NUMERIC else v.levels[0]), field=field)
    if v.kind == VariableKind.NUMERIC:
        lo, dots, hi = cond.partition("..")
        if not dots:
            raise RuleViolation(f"{field}: '{cond[:40]}' is not a range; write low..high, low.. or ..high.", field=field)
        bounds = []
        for part in (lo.strip(), hi.strip()):
            if part and not _NUMBER.match(part):
                raise RuleViolation(f"{field}: '{part[:40]}' is not a number.", field=field)
            bounds.append(float(part) if part else None)
        if bounds == [None, None]:
            raise RuleViolation(f"{field}: give at least one end of the range.", field=field)
        if None not in bounds and bounds[0] > bounds[1]:
            raise RuleViolation(f"{field}: the range {cond} runs backwards.", field=field)
        return CovariateFilter(v, low=bounds[0], high=bounds[1])
    levels = tuple(dict.fromkeys(x.strip() for x in cond.split(",") if x.strip()))
    bad = [x for x in levels if x not in v.levels]
    if bad or not levels:
        raise RuleViolation(f"{field}: {', '.join(bad) or 'no level'} not among the levels of {v.key} "
                            f"({', '.join(v.levels)}).", field=field)
    return CovariateFilter(v, levels=levels)


# ------------------------------------------------------------------------------------------------------------
# Columns for the analysis and export frames
# ------------------------------------------------------------------------------------------------------------


def add_columns(df, variables):
    """Add one column per variable (named by its key) to a cohort frame holding ``patient_id`` and ``course_id``:
    numbers as float (NaN = no value), levels as object (None = no value). One columnar query per variable."""
    for v in variables:
        if v.key in df.columns:
            continue
        course = v.level == VariableLevel.COURSE
        qs = CovariateValue.objects.filter(variable=v, voided_at__isnull=True, course__isnull=not course)
        numeric = v.kind == VariableKind.NUMERIC
        rows = fetch_columns(qs, {"owner": ("course_id" if course else "patient_id", "int"),
                                  "value": ("number", "float") if numeric else ("level", "text")})
        # a patient without radiotherapy has no course (<NA>): -1 matches no course-level value
        target = df["course_id" if course else "patient_id"].fillna(-1).to_numpy(np.int64)
        order = np.argsort(rows["owner"], kind="stable")
        owners, values = rows["owner"][order], rows["value"][order]
        pos = np.searchsorted(owners, target)
        pos_clip = np.minimum(pos, max(len(owners) - 1, 0))
        found = (pos < len(owners)) & (owners[pos_clip] == target) if len(owners) else np.zeros(len(target), bool)
        if numeric:
            col = np.full(len(target), np.nan)
            if len(owners):
                col[found] = values[pos_clip[found]]
        else:
            col = np.full(len(target), None, dtype=object)
            if len(owners):
                col[found] = values[pos_clip[found]]
        df[v.key] = col
    return df


# ------------------------------------------------------------------------------------------------------------
# Groupings
# ------------------------------------------------------------------------------------------------------------


def parse_cuts(text, v, field="group_cuts"):
    """``median`` or ascending cut-points ``3,10`` for a numeric grouping; None for a categorical one."""
    text = (text or "").strip() if isinstance(text, str) else ",".join(str(x) for x in (text or []))
    if v.kind == VariableKind.CATEGORICAL:
        if text:
            raise RuleViolation(f"{field}: {v.key} is categorical; its levels are the groups (no cut-points).",
                                field=field)
        return None
    if not text:
        raise RuleViolation(f"{field}: grouping by the numeric {v.key} needs cut-points (e.g. 3,10) or 'median'.",
                            field=field)
    if text == "median":
        return "median"
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or any(not _NUMBER.match(p) for p in parts):
        raise RuleViolation(f"{field}: '{text[:40]}' is not 'median' or comma-separated numbers.", field=field)
    cuts = [float(p) for p in parts]
    if any(b <= a for a, b in zip(cuts, cuts[1:])) or len(cuts) > 9:
        raise RuleViolation(f"{field}: cut-points must be increasing (at most 9).", field=field)
    return cuts


def group_values(series, v, cuts):
    """(labels per row (None = no value), order of the labels, note saying what was done)."""
    if v.kind == VariableKind.CATEGORICAL:
        return series.where(series.notna(), None), list(v.levels), None
    x = series.to_numpy(dtype=float)
    unit = f" {v.unit}" if v.unit else ""
    if cuts == "median":
        m = float(np.nanmedian(x)) if np.isfinite(x).any() else float("nan")
        cuts_used, how = [m], f"median split at {m:g}{unit} (the cohort's median): < {m:g} vs >= {m:g}"
    else:
        cuts_used, how = list(cuts), "cut-points " + ", ".join(f"{c:g}" for c in cuts) + f"{unit} (x < c vs x >= c)"
    labels = [f"< {cuts_used[0]:g}"]
    labels += [f"{a:g} to < {b:g}" for a, b in zip(cuts_used, cuts_used[1:])]
    labels.append(f">= {cuts_used[-1]:g}")
    idx = np.searchsorted(np.asarray(cuts_used), x, side="right")
    out = np.array([labels[i] for i in np.clip(idx, 0, len(labels) - 1)], dtype=object)
    out[~np.isfinite(x)] = None
    return pd.Series(out, index=series.index), labels, f"Grouped by {v.key}: {how}."


def cox_columns(df, v):
    """(design columns {name: values}, note) for a covariate term: numeric as is, categorical as 0/1 dummies of
    each level against the reference (the dictionary's first level); a level absent from the data takes none."""
    s = df[v.key]
    if v.kind == VariableKind.NUMERIC:
        return {v.key: s.astype(float)}
    present = set(s.dropna())
    cols = {}
    for lvl in v.levels[1:]:
        if lvl in present:
            cols[f"{v.key}={lvl}"] = (s == lvl).astype(float).where(s.notna())
    return cols


def term_label(covariate, variables):
    """``gbsg2.tgrade=II`` -> ``gbsg2.tgrade: II (vs I)``; ``gbsg2.tsize`` -> ``gbsg2.tsize (per mm)``."""
    key, _, lvl = covariate.partition("=")
    v = variables.get(key)
    if v is None:
        return None
    if lvl:
        return f"{key}: {lvl} (vs {v.levels[0]})"
    return f"{key} ({per_unit(v.unit)})"


_PLURAL_WORD = re.compile(r"^[a-z][a-z-]*[^s]s$")


def per_unit(unit):
    """A hazard ratio's step: ``per mm``; a counted unit written as a plural word is one of it (``nodes`` ->
    ``per node``, ``pack-years`` -> ``per pack-year``); ``per unit`` when the dictionary gives none."""
    if not unit:
        return "per unit"
    return f"per {unit[:-1] if _PLURAL_WORD.match(unit) else unit}"
