"""Survival endpoints (OS, PFS, local control, time to recurrence) from a patient's dated data.

Pure functions; no Django. Three entry points that implement the same rules (tests check they agree):

* :func:`derive_endpoints` for one patient (plain dates and a list of assessment points);
* :func:`endpoints_frame` for a cohort from long pandas frames, vectorised with groupby (no Python
  loop per patient);
* :func:`endpoints_from_dates` for a cohort whose event dates (first progression, recurrence, ...) are
  already derived per patient, as the clinic stores them: array arithmetic only (the analyses, exports
  and the 100,000-patient benchmark).

Definitions (DOMAIN.md section 5; Punt CJA et al., J Natl Cancer Inst 2007;99:998-1003 for the
recurrence-type endpoints):

* Time zero: start of radiotherapy (``"rt_start"``, default) or date of diagnosis
  (``"diagnosis"``), chosen per call and recorded in every result.
* OS: time zero to death from any cause; alive patients are censored at the last date known
  alive = the latest of ``last_alive_date``, the last disease assessment and RT end (a patient seen
  on a date was alive on it).
* PFS: time zero to the first progression or recurrence (response ``PD``) or death, whichever comes
  first; a death without progression is a PFS event; otherwise censored at the last disease
  assessment without progression (time 0 if there is none).
* Local control (LC): time zero to the first ``PD`` flagged ``local=True`` (in-field failure);
  censored at death or at the last assessment.
* Time to recurrence (TTR): time zero to the first recurrence (``PD`` when the preceding evaluable
  response was ``CR``); deaths are censored (competing events are not TTR events).
* Assessments dated before time zero are ignored. Times are given in days and in months
  (days / 30.4375, i.e. 365.25 / 12).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

DAYS_PER_MONTH = 30.4375
TIME_ZERO_CHOICES = ("rt_start", "diagnosis")


@dataclass(frozen=True)
class AssessmentPoint:
    """A dated disease assessment with its (effective) response: CR / PR / SD / PD / NE."""

    date: dt.date
    response: str
    local: bool | None = None  # PD located in the irradiated field (local failure)


@dataclass
class PatientEndpoints:
    patient_id: str | None
    time_zero: str
    time_zero_date: dt.date | None
    os_days: float | None
    os_event: int | None
    pfs_days: float | None
    pfs_event: int | None
    pfs_event_type: str | None  # "progression" / "death" / None
    lc_days: float | None
    lc_event: int | None
    ttr_days: float | None
    ttr_event: int | None
    last_alive_date: dt.date | None
    issue: str | None = None

    @property
    def os_months(self) -> float | None:
        return None if self.os_days is None else self.os_days / DAYS_PER_MONTH

    @property
    def pfs_months(self) -> float | None:
        return None if self.pfs_days is None else self.pfs_days / DAYS_PER_MONTH

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("time_zero_date", "last_alive_date"):
            d[k] = d[k].isoformat() if d[k] else None
        for k in ("os", "pfs", "lc", "ttr"):
            days = d[f"{k}_days"]
            d[f"{k}_months"] = None if days is None else days / DAYS_PER_MONTH
        return d


def _days(a: dt.date, b: dt.date) -> float:
    return float((a - b).days)


def derive_endpoints(
    rt_start: dt.date | None,
    diagnosis_date: dt.date | None = None,
    rt_end: dt.date | None = None,
    death_date: dt.date | None = None,
    last_alive_date: dt.date | None = None,
    assessments: Sequence[AssessmentPoint] = (),
    time_zero: str = "rt_start",
    patient_id: str | None = None,
) -> PatientEndpoints:
    """OS, PFS, local control and time to recurrence for one patient (rules in the module docstring)."""
    if time_zero not in TIME_ZERO_CHOICES:
        raise ValueError(f"time_zero must be one of {TIME_ZERO_CHOICES}")
    t0 = rt_start if time_zero == "rt_start" else diagnosis_date
    empty = PatientEndpoints(patient_id, time_zero, t0, None, None, None, None, None, None, None, None, None, None)
    if t0 is None:
        empty.issue = f"no {time_zero} date"
        return empty
    if death_date is not None and death_date < t0:
        empty.issue = "death before time zero"
        return empty
    pts = sorted((a for a in assessments if a.date >= t0), key=lambda a: a.date)
    last_assess = pts[-1].date if pts else None
    alive_dates = [d for d in (last_alive_date, last_assess, rt_end) if d is not None]
    if death_date is not None:
        alive_dates = [d for d in alive_dates if d <= death_date]
    last_alive = max(alive_dates) if alive_dates else None

    # OS
    if death_date is not None:
        os_days, os_event = _days(death_date, t0), 1
    elif last_alive is not None:
        os_days, os_event = _days(max(last_alive, t0), t0), 0
    else:
        os_days, os_event = 0.0, 0

    first_pd = next((a.date for a in pts if a.response == "PD"), None)
    first_local = next((a.date for a in pts if a.response == "PD" and a.local), None)
    recurrence = None
    prev = None
    for a in pts:
        if a.response == "NE":
            continue
        if a.response == "PD" and prev == "CR":
            recurrence = a.date
            break
        prev = a.response

    # PFS: progression or death, whichever first
    candidates = [(d, kind) for d, kind in ((first_pd, "progression"), (death_date, "death")) if d is not None]
    if candidates:
        d, kind = min(candidates, key=lambda c: c[0])
        pfs_days, pfs_event, pfs_type = _days(d, t0), 1, kind
    else:
        pfs_days, pfs_event, pfs_type = (_days(last_assess, t0) if last_assess else 0.0), 0, None

    censor_lc = min(d for d in (death_date, last_assess) if d is not None) if (death_date or last_assess) else t0
    if first_local is not None:
        lc_days, lc_event = _days(first_local, t0), 1
    else:
        lc_days, lc_event = _days(censor_lc, t0), 0
    if recurrence is not None:
        ttr_days, ttr_event = _days(recurrence, t0), 1
    else:
        ttr_days, ttr_event = _days(censor_lc, t0), 0

    return PatientEndpoints(
        patient_id=patient_id,
        time_zero=time_zero,
        time_zero_date=t0,
        os_days=os_days,
        os_event=os_event,
        pfs_days=pfs_days,
        pfs_event=pfs_event,
        pfs_event_type=pfs_type,
        lc_days=lc_days,
        lc_event=lc_event,
        ttr_days=ttr_days,
        ttr_event=ttr_event,
        last_alive_date=last_alive,
    )


# --------------------------------------------------------------------------------------------
# Vectorised cohort version
# --------------------------------------------------------------------------------------------

PATIENT_COLUMNS = ("patient_id", "diagnosis_date", "rt_start", "rt_end", "death_date", "last_alive_date")
# per-patient dates derived from the assessments (stored per course by the clinic)
EVENT_DATE_COLUMNS = ("last_assessment_date", "first_progression_date", "first_local_failure_date", "recurrence_date")
ASSESSMENT_COLUMNS = ("patient_id", "date", "response")  # optional: "local"


def _to_dt(s: pd.Series) -> pd.Series:
    """Datetime view of a date column; columns already datetime64 pass through (no costly re-parse)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return s
    return pd.to_datetime(s, errors="coerce")


def endpoints_frame(
    patients: pd.DataFrame,
    assessments: pd.DataFrame | None = None,
    time_zero: str = "rt_start",
) -> pd.DataFrame:
    """One row per patient with OS / PFS / LC / TTR (days, months, event) from long frames.

    ``patients``: columns ``patient_id, diagnosis_date, rt_start, rt_end, death_date,
    last_alive_date`` (missing optional columns are treated as empty). ``assessments``: long frame
    ``patient_id, date, response`` (+ optional boolean ``local``), one row per assessment, effective
    responses (overrides applied). Vectorised: groupby min/max and a within-patient ``shift`` for
    recurrence; no per-patient Python loop. Output columns: ``patient_id, time_zero,
    time_zero_date, os_days, os_months, os_event, pfs_days, pfs_months, pfs_event, pfs_event_type,
    lc_days, lc_months, lc_event, ttr_days, ttr_months, ttr_event, last_alive_date, issue``.
    """
    if time_zero not in TIME_ZERO_CHOICES:
        raise ValueError(f"time_zero must be one of {TIME_ZERO_CHOICES}")
    p = patients.copy()
    for c in PATIENT_COLUMNS[1:]:
        p[c] = _to_dt(p[c]) if c in p.columns else pd.NaT
    p = p.set_index("patient_id")
    t0 = p["rt_start"] if time_zero == "rt_start" else p["diagnosis_date"]

    if assessments is None or assessments.empty:
        a = pd.DataFrame({"patient_id": pd.Series(dtype=p.index.dtype), "date": pd.Series(dtype="datetime64[ns]"),
                          "response": pd.Series(dtype=object), "local": pd.Series(dtype=bool)})
    else:
        a = assessments[[c for c in ("patient_id", "date", "response", "local") if c in assessments.columns]].copy()
        a["date"] = _to_dt(a["date"])
        if "local" not in a.columns:
            a["local"] = False
        a["local"] = a["local"].fillna(False).astype(bool)
    a = a.dropna(subset=["date"])
    a = a[a["date"] >= a["patient_id"].map(t0)]  # ignore pre-time-zero assessments (NaT t0 -> dropped)
    a = a.sort_values(["patient_id", "date"], kind="mergesort")

    g = a.groupby("patient_id", sort=False)["date"]
    last_assess = g.max()
    is_pd = a["response"].eq("PD")
    first_pd = a.loc[is_pd].groupby("patient_id", sort=False)["date"].min()
    first_local = a.loc[is_pd & a["local"]].groupby("patient_id", sort=False)["date"].min()
    ev = a.loc[a["response"].ne("NE")]
    prev = ev.groupby("patient_id", sort=False)["response"].shift()
    rec_rows = ev.loc[ev["response"].eq("PD") & prev.eq("CR")]
    recurrence = rec_rows.groupby("patient_id", sort=False)["date"].min()

    idx = p.index
    dates = {c: p[c].to_numpy() for c in PATIENT_COLUMNS[1:]}
    dates.update({c: v.reindex(idx).to_numpy() for c, v in zip(EVENT_DATE_COLUMNS, (last_assess, first_pd, first_local, recurrence))})
    return _endpoints_core(idx, dates, time_zero)


ENDPOINT_NAMES = ("os", "pfs", "lc", "ttr")
# the per-patient dates each endpoint reads besides time zero and the death date
ENDPOINT_INPUTS = {
    "os": ("rt_end", "last_alive_date", "last_assessment_date"),
    "pfs": ("first_progression_date", "last_assessment_date"),
    "lc": ("first_local_failure_date", "last_assessment_date"),
    "ttr": ("recurrence_date", "last_assessment_date"),
}


def endpoints_from_dates(patients: pd.DataFrame, time_zero: str = "rt_start", endpoints=ENDPOINT_NAMES) -> pd.DataFrame:
    """:func:`endpoints_frame` for patients whose event dates are already derived (one row each).

    ``patients``: the :data:`PATIENT_COLUMNS` plus ``last_assessment_date, first_progression_date,
    first_local_failure_date, recurrence_date`` (the dates :mod:`outcomes.response` derives and the clinic
    stores per course). Event dates before time zero are ignored, as assessments before time zero are in
    :func:`endpoints_frame`; otherwise the rules and the output are the same (a test checks they agree).
    Array arithmetic only, for cohorts of 100,000 patients. ``endpoints``: a subset of :data:`ENDPOINT_NAMES`;
    only their columns are returned (``last_alive_date`` with OS), so a caller may leave out the dates that
    only the others read (:data:`ENDPOINT_INPUTS`); a missing date column is taken as no date.
    """
    if time_zero not in TIME_ZERO_CHOICES:
        raise ValueError(f"time_zero must be one of {TIME_ZERO_CHOICES}")
    unknown = set(endpoints) - set(ENDPOINT_NAMES)
    if unknown:
        raise ValueError(f"unknown endpoints {sorted(unknown)}; use {ENDPOINT_NAMES}")
    idx = pd.Index(patients["patient_id"], name="patient_id")
    nat = np.full(len(idx), np.datetime64("NaT", "D"))
    dates = {c: (patients[c].to_numpy() if c in patients.columns else nat) for c in (*PATIENT_COLUMNS[1:], *EVENT_DATE_COLUMNS)}
    return _endpoints_core(idx, dates, time_zero, drop_before_t0=True, endpoints=tuple(endpoints))


_NAT_INT = np.iinfo(np.int64).min


def _day_numbers(values) -> np.ndarray:
    """Dates (datetime64 of any unit, or anything pandas parses) -> float days since 1970-01-01, NaN for NaT."""
    arr = np.asarray(values)
    if arr.dtype.kind != "M":
        arr = pd.to_datetime(pd.Series(values), errors="coerce").to_numpy()
    as_int = arr.astype("datetime64[D]").astype(np.int64)
    out = as_int.astype(np.float64)
    out[as_int == _NAT_INT] = np.nan
    return out


def _to_dates(days: np.ndarray) -> np.ndarray:
    out = np.full(days.shape, np.datetime64("NaT"), dtype="datetime64[D]")
    ok = ~np.isnan(days)
    out[ok] = days[ok].astype(np.int64).astype("datetime64[D]")
    return out.astype("datetime64[s]")


def _endpoints_core(idx: pd.Index, dates, time_zero: str, drop_before_t0: bool = False,
                    endpoints=ENDPOINT_NAMES) -> pd.DataFrame:
    """The endpoint rules on per-patient date arrays (``{column: array}``), as float day numbers.

    Only ``endpoints`` are computed (and ``last_alive_date`` with OS); the output keeps the column order of
    :func:`endpoints_frame`.
    """
    day = {c: _day_numbers(v) for c, v in dates.items()}
    n = len(idx)
    t0 = day["rt_start"] if time_zero == "rt_start" else day["diagnosis_date"]
    death = day["death_date"]
    la, fpd, floc, rec = (day[c] for c in EVENT_DATE_COLUMNS)
    if drop_before_t0:
        with np.errstate(invalid="ignore"):
            la, fpd, floc, rec = (np.where(x >= t0, x, np.nan) for x in (la, fpd, floc, rec))
    has_death, has_t0 = ~np.isnan(death), ~np.isnan(t0)
    with np.errstate(invalid="ignore"):
        bad_death = has_death & has_t0 & (death < t0)
    ok = has_t0 & ~bad_death
    issue = np.full(n, None, dtype=object)
    issue[bad_death] = "death before time zero"
    issue[~has_t0] = f"no {time_zero} date"

    def days(end):
        return np.where(ok, end - t0, np.nan)

    def event(flag):
        arr = pd.array(flag.astype(np.int64), dtype="Int64")
        arr[~ok] = pd.NA
        return arr

    out = {"patient_id": idx.to_numpy(), "time_zero": time_zero, "time_zero_date": _to_dates(t0)}
    with np.errstate(invalid="ignore"):
        if "os" in endpoints:
            # last date known alive: a patient seen on a date was alive on it, unless it is after the death date
            cands = np.stack([day["last_alive_date"], la, day["rt_end"]])
            cands = np.where(has_death & (cands > death), np.nan, cands)
            all_nan = np.isnan(cands).all(axis=0)
            last_alive = np.where(all_nan, np.nan, np.max(np.where(np.isnan(cands), -np.inf, cands), axis=0))
            os_end = np.where(has_death, death, np.where(last_alive > t0, last_alive, t0))
            out.update(os_days=days(os_end), os_event=event(has_death))
        if "pfs" in endpoints:
            pfs_pd_first = ~np.isnan(fpd) & (~has_death | (fpd <= death))
            pfs_death_first = has_death & ~pfs_pd_first
            pfs_end = np.where(pfs_pd_first, fpd, np.where(pfs_death_first, death, np.where(np.isnan(la), t0, la)))
            pfs_type = np.full(n, None, dtype=object)
            pfs_type[pfs_pd_first & ok] = "progression"
            pfs_type[pfs_death_first & ok] = "death"
            out.update(pfs_days=days(pfs_end), pfs_event=event(pfs_pd_first | pfs_death_first), pfs_event_type=pfs_type)
        if "lc" in endpoints or "ttr" in endpoints:
            censor_lc = np.fmin(death, la)
            censor_lc = np.where(np.isnan(censor_lc), t0, censor_lc)
            for k, first in (("lc", floc), ("ttr", rec)):
                if k in endpoints:
                    hit = ~np.isnan(first)
                    out.update({f"{k}_days": days(np.where(hit, first, censor_lc)), f"{k}_event": event(hit)})
    for k in ENDPOINT_NAMES:  # months next to days, in the documented column order
        if f"{k}_days" in out:
            out[f"{k}_months"] = out[f"{k}_days"] / DAYS_PER_MONTH
    order = ["patient_id", "time_zero", "time_zero_date"]
    for k in ENDPOINT_NAMES:
        if k in endpoints:
            order += [f"{k}_days", f"{k}_months", f"{k}_event"] + (["pfs_event_type"] if k == "pfs" else [])
    if "os" in endpoints:
        out["last_alive_date"] = _to_dates(np.where(ok, last_alive, np.nan))
        order.append("last_alive_date")
    out["issue"] = issue
    order.append("issue")
    return pd.DataFrame({c: out[c] for c in order})


def endpoints_from_records(
    patients: Iterable[dict], assessments: Iterable[dict] = (), time_zero: str = "rt_start"
) -> pd.DataFrame:
    """Same as :func:`endpoints_frame` from lists of dicts (what a Django ``.values()`` returns)."""
    return endpoints_frame(pd.DataFrame(list(patients)), pd.DataFrame(list(assessments)), time_zero)


def points_from_course(course, local: bool | None = None) -> list[AssessmentPoint]:
    """Assessment points (date, EFFECTIVE response) from a :class:`outcomes.response.CourseResponse`.

    ``local`` flags every PD as in-field (True) / out-of-field (False) / unknown (None); callers
    with per-assessment site information should build :class:`AssessmentPoint` themselves.
    """
    return [
        AssessmentPoint(a.date, a.response, local if a.response == "PD" else None) for a in course.assessments
    ]
