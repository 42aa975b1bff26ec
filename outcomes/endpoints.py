"""Survival endpoints (OS, PFS, local control, time to recurrence) from a patient's dated data.

Pure functions; no Django. Two entry points that implement the same rules (a test checks they agree):

* :func:`derive_endpoints` for one patient (plain dates and a list of assessment points);
* :func:`endpoints_frame` for a cohort from long pandas frames, vectorised with groupby (no Python
  loop per patient; used for exports and the 100,000-patient benchmark).

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
    la = last_assess.reindex(idx)
    fpd = first_pd.reindex(idx)
    floc = first_local.reindex(idx)
    rec = recurrence.reindex(idx)
    death = p["death_date"]

    issue = pd.Series(None, index=idx, dtype=object)
    issue[t0.isna()] = f"no {time_zero} date"
    bad_death = death.notna() & t0.notna() & (death < t0)
    issue[bad_death] = "death before time zero"
    ok = issue.isna()

    alive_cands = pd.concat([p["last_alive_date"], la, p["rt_end"]], axis=1)
    alive_cands = alive_cands.where(death.isna().to_numpy()[:, None] | alive_cands.le(death, axis=0))
    last_alive = alive_cands.max(axis=1)

    def days(x):
        return (x - t0).dt.days.astype(float)

    os_event = death.notna()
    os_end = death.where(os_event, last_alive.where(last_alive > t0, t0))
    os_days = days(os_end)

    pfs_pd_first = fpd.notna() & (death.isna() | (fpd <= death))
    pfs_death_first = death.notna() & ~pfs_pd_first
    pfs_end = fpd.where(pfs_pd_first, death.where(pfs_death_first, la.fillna(t0)))
    pfs_event = pfs_pd_first | pfs_death_first
    pfs_type = pd.Series(np.where(pfs_pd_first, "progression", np.where(pfs_death_first, "death", None)), index=idx)

    censor_lc = pd.concat([death, la], axis=1).min(axis=1).fillna(t0)
    lc_event = floc.notna()
    lc_days = days(floc.where(lc_event, censor_lc))
    ttr_event = rec.notna()
    ttr_days = days(rec.where(ttr_event, censor_lc))

    out = pd.DataFrame(
        {
            "time_zero": time_zero,
            "time_zero_date": t0,
            "os_days": os_days,
            "os_event": os_event.astype(int),
            "pfs_days": days(pfs_end),
            "pfs_event": pfs_event.astype(int),
            "pfs_event_type": pfs_type,
            "lc_days": lc_days,
            "lc_event": lc_event.astype(int),
            "ttr_days": ttr_days,
            "ttr_event": ttr_event.astype(int),
            "last_alive_date": last_alive,
            "issue": issue,
        },
        index=idx,
    )
    endpoint_cols = ["os_days", "os_event", "pfs_days", "pfs_event", "pfs_event_type", "lc_days", "lc_event",
                     "ttr_days", "ttr_event", "last_alive_date"]
    for c in endpoint_cols:
        if out[c].dtype.kind in "iub":
            out[c] = out[c].astype("Int64")
    out.loc[~ok, endpoint_cols] = None
    for k in ("os", "pfs", "lc", "ttr"):
        out.insert(out.columns.get_loc(f"{k}_days") + 1, f"{k}_months", out[f"{k}_days"] / DAYS_PER_MONTH)
    return out.reset_index()


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
