"""OS / PFS / local control / time to recurrence (DOMAIN.md section 5; Punt et al., JNCI 2007)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from outcomes.endpoints import DAYS_PER_MONTH, AssessmentPoint, derive_endpoints, endpoints_frame, endpoints_from_dates

T0 = dt.date(2024, 3, 4)  # RT start
DX = dt.date(2024, 1, 15)  # diagnosis, 49 days earlier


def d(n):
    return T0 + dt.timedelta(days=n)


def test_alive_patient_censored_at_last_known_alive():
    e = derive_endpoints(T0, DX, rt_end=d(40), last_alive_date=d(400),
                         assessments=[AssessmentPoint(d(90), "PR"), AssessmentPoint(d(300), "SD")])
    assert (e.os_days, e.os_event) == (400, 0)
    assert (e.pfs_days, e.pfs_event, e.pfs_event_type) == (300, 0, None)  # last assessment w/o progression
    assert e.os_months == pytest.approx(400 / 30.4375)
    assert e.time_zero == "rt_start" and e.time_zero_date == T0


def test_last_assessment_after_last_alive_date_extends_os():
    e = derive_endpoints(T0, last_alive_date=d(100), assessments=[AssessmentPoint(d(200), "SD")])
    assert (e.os_days, e.os_event, e.last_alive_date) == (200, 0, d(200))


def test_progression_then_death():
    e = derive_endpoints(T0, DX, death_date=d(500),
                         assessments=[AssessmentPoint(d(90), "PR"), AssessmentPoint(d(250), "PD", local=True)])
    assert (e.os_days, e.os_event) == (500, 1)
    assert (e.pfs_days, e.pfs_event, e.pfs_event_type) == (250, 1, "progression")
    assert (e.lc_days, e.lc_event) == (250, 1)
    assert (e.ttr_days, e.ttr_event) == (250, 0)  # no prior CR: progression, not recurrence


def test_death_without_progression_is_a_pfs_event():
    e = derive_endpoints(T0, death_date=d(200), assessments=[AssessmentPoint(d(90), "SD")])
    assert (e.pfs_days, e.pfs_event, e.pfs_event_type) == (200, 1, "death")
    assert (e.lc_days, e.lc_event) == (90, 0)


def test_time_zero_diagnosis_is_recorded_and_shifts_times():
    e = derive_endpoints(T0, DX, death_date=d(100), time_zero="diagnosis")
    assert e.time_zero == "diagnosis" and e.time_zero_date == DX
    assert e.os_days == 149


def test_recurrence_after_cr_with_ne_in_between():
    pts = [AssessmentPoint(d(90), "CR"), AssessmentPoint(d(180), "NE"), AssessmentPoint(d(270), "PD")]
    e = derive_endpoints(T0, last_alive_date=d(300), assessments=pts)
    assert (e.ttr_days, e.ttr_event) == (270, 1)
    assert (e.pfs_days, e.pfs_event) == (270, 1)


def test_data_issues_are_reported_not_guessed():
    assert derive_endpoints(None).issue == "no rt_start date"
    assert derive_endpoints(T0, death_date=d(-5)).issue == "death before time zero"


def _random_cohort(n, seed=0):
    rng = np.random.default_rng(seed)
    base = np.datetime64("2020-01-01")
    rt = base + rng.integers(0, 1500, n).astype("timedelta64[D]")
    dx = rt - rng.integers(10, 120, n).astype("timedelta64[D]")
    rt_end = rt + rng.integers(20, 50, n).astype("timedelta64[D]")
    dead = rng.random(n) < 0.5
    death = np.where(dead, rt + rng.integers(30, 1500, n).astype("timedelta64[D]"), np.datetime64("NaT"))
    last_alive = rt + rng.integers(0, 1600, n).astype("timedelta64[D]")
    patients = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "diagnosis_date": dx, "rt_start": rt,
                             "rt_end": rt_end, "death_date": death, "last_alive_date": last_alive})
    k = rng.integers(0, 8, n)
    pid = np.repeat(patients["patient_id"].to_numpy(), k)
    adate = np.repeat(rt, k) + rng.integers(-30, 1500, k.sum()).astype("timedelta64[D]")
    resp = rng.choice(["CR", "PR", "SD", "PD", "NE"], k.sum(), p=[0.2, 0.25, 0.3, 0.15, 0.1])
    local = rng.random(k.sum()) < 0.5
    assessments = pd.DataFrame({"patient_id": pid, "date": adate, "response": resp, "local": local})
    return patients, assessments


def _py(x):
    return None if pd.isna(x) else x.date()


@pytest.mark.parametrize("time_zero", ["rt_start", "diagnosis"])
def test_vectorised_frame_agrees_with_single_patient_rules(time_zero):
    patients, assessments = _random_cohort(400, seed=1)
    frame = endpoints_frame(patients, assessments, time_zero=time_zero).set_index("patient_id")
    by_pid = {k: v for k, v in assessments.groupby("patient_id")}
    for row in patients.itertuples(index=False):
        a = by_pid.get(row.patient_id)
        pts = [] if a is None else [AssessmentPoint(r.date.date(), r.response, bool(r.local)) for r in a.itertuples()]
        e = derive_endpoints(_py(row.rt_start), _py(row.diagnosis_date), _py(row.rt_end), _py(row.death_date),
                             _py(row.last_alive_date), pts, time_zero=time_zero)
        f = frame.loc[row.patient_id]
        for k in ("os", "pfs", "lc", "ttr"):
            assert f[f"{k}_days"] == getattr(e, f"{k}_days"), (row.patient_id, k)
            assert f[f"{k}_event"] == getattr(e, f"{k}_event"), (row.patient_id, k)
        assert (f["pfs_event_type"] or None) == e.pfs_event_type
    assert (frame["os_months"] == frame["os_days"] / DAYS_PER_MONTH).all()
    assert set(frame["time_zero"]) == {time_zero}


def test_frame_handles_large_cohorts_in_one_row_per_patient():
    patients, assessments = _random_cohort(20_000, seed=2)
    out = endpoints_frame(patients, assessments)
    assert len(out) == 20_000 and out["patient_id"].is_unique
    assert out["os_days"].notna().all() and (out["os_days"] >= 0).all()


def _derived_dates(patients, assessments, time_zero):
    """Per-patient event dates as the clinic stores them, from the assessments on or after time zero."""
    t0 = patients.set_index("patient_id")["rt_start" if time_zero == "rt_start" else "diagnosis_date"]
    rows = []
    for pid, a in assessments.groupby("patient_id"):
        a = a[a["date"] >= t0[pid]].sort_values("date", kind="mergesort")
        pd_rows = a[a["response"] == "PD"]
        rec, prev = pd.NaT, None
        for r in a.itertuples():
            if r.response == "NE":
                continue
            if r.response == "PD" and prev == "CR":
                rec = r.date
                break
            prev = r.response
        rows.append({"patient_id": pid, "last_assessment_date": a["date"].max(),
                     "first_progression_date": pd_rows["date"].min(),
                     "first_local_failure_date": pd_rows.loc[pd_rows["local"], "date"].min(), "recurrence_date": rec})
    return patients.merge(pd.DataFrame(rows), on="patient_id", how="left")


@pytest.mark.parametrize("time_zero", ["rt_start", "diagnosis"])
def test_endpoints_from_stored_dates_agree_with_the_assessment_frame(time_zero):
    patients, assessments = _random_cohort(300, seed=3)
    stored = _derived_dates(patients, assessments, time_zero)
    fast = endpoints_from_dates(stored, time_zero=time_zero)
    slow = endpoints_frame(patients, assessments, time_zero=time_zero)
    assert list(fast.columns) == list(slow.columns)
    pd.testing.assert_frame_equal(fast, slow, check_dtype=False, check_datetimelike_compat=True)


def test_stored_event_dates_before_time_zero_are_ignored():
    row = {"patient_id": "P1", "rt_start": pd.Timestamp("2024-03-01"), "rt_end": pd.Timestamp("2024-04-05"),
           "last_alive_date": pd.Timestamp("2024-12-01"), "first_progression_date": pd.Timestamp("2024-02-01"),
           "last_assessment_date": pd.Timestamp("2024-11-20")}
    e = endpoints_from_dates(pd.DataFrame([row])).iloc[0]
    assert (e["pfs_event"], e["pfs_days"]) == (0, 264.0)  # censored at the last assessment, 2024-11-20
    assert (e["os_event"], e["os_days"]) == (0, 275.0)


def test_points_from_course_feed_endpoints():
    from outcomes.endpoints import points_from_course
    from outcomes.response import Assessment, TargetLesion, evaluate_course

    b = Assessment(T0, (TargetLesion("l1", "pleura", False, 40),), non_target="absent")
    fus = [Assessment(d(60), (TargetLesion("l1", "pleura", False, 0),), non_target="absent"),
           Assessment(d(200), (TargetLesion("l1", "pleura", False, 0),), non_target="absent", new_lesions=True)]
    course = evaluate_course(b, fus)
    pts = points_from_course(course)
    assert [(p.date, p.response) for p in pts] == [(d(60), "CR"), (d(200), "PD")]
    e = derive_endpoints(T0, last_alive_date=d(300), assessments=pts)
    assert (e.pfs_days, e.pfs_event, e.ttr_days, e.ttr_event) == (200, 1, 200, 1)


def test_stats_modules_do_not_import_django():
    import subprocess
    import sys

    code = ("import sys; import outcomes.response, outcomes.endpoints, outcomes.survival, "
            "outcomes.toxicity_stats, outcomes.figures, outcomes.deidentify; "
            "print(any(m == 'django' or m.startswith('django.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__('pathlib').Path(__file__).resolve().parents[2]))
    assert out.stdout.strip() == "False"
